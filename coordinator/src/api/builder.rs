//! The `Eventor` and how a flow is defined on it: events, steps, associations, pools and
//! the triggers a run starts with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use eventor_store::StoreLocation;

use super::error::EventorError;
use super::names;
use super::options::EventorOptions;
pub use super::state::Eventor;
use super::state::{FlowNames, TargetKind};
use super::step::{DefinedStep, Step};
use crate::engine::program::{EventId, StepId};
use crate::expr::Expr;

impl Eventor {
    pub fn new(options: EventorOptions) -> Result<Eventor, EventorError> {
        let refuse = |what, value: &str, why| EventorError::BadName {
            what,
            value: value.to_string(),
            why,
        };
        names::check_flow_name(&options.name)
            .map_err(|why| refuse("flow name", &options.name, why))?;
        if let Some(id) = &options.run_id {
            names::check_run_id(id).map_err(|why| refuse("run id", id, why))?;
        }
        let run_id: Arc<str> = match &options.run_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(generate_run_id().as_str()),
        };
        Ok(Eventor {
            options,
            events: Vec::new(),
            steps: Vec::new(),
            names: FlowNames::default(),
            assocs: Vec::new(),
            pools: Vec::new(),
            shared_pools: Vec::new(),
            triggers: Vec::new(),
            unstarted: Vec::new(),
            run_id,
            params: Default::default(),
            running: None,
            closed: false,
        })
    }

    /// Declares a run parameter, seen by every task as an environment variable: its value
    /// is given with [`EventorOptions::params`](super::EventorOptions::params), else kept
    /// from the run's stored values (recover, continue), else `default`; with no default it
    /// is required.
    pub fn declare_param(
        &mut self,
        name: &str,
        default: Option<&str>,
    ) -> Result<&mut Self, EventorError> {
        super::params::check_param_name(name).map_err(|why| EventorError::BadName {
            what: "parameter",
            value: name.to_string(),
            why,
        })?;
        if self.params.contains_key(name) {
            return Err(EventorError::Duplicate(name.to_string()));
        }
        self.params
            .insert(name.to_string(), default.map(str::to_string));
        Ok(self)
    }

    /// Stops the run from outside when `interrupt` fires (see [`EventorOptions::interrupt`]).
    pub fn set_interrupt(&mut self, interrupt: crate::Interrupt) {
        self.options.interrupt = Some(interrupt);
    }

    /// The run's id (given in the options, or generated).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether a run was opened (its mode found it, or a fresh one was stored): from then
    /// on [`Self::run_id`] is the id of a stored run.
    pub fn has_opened(&self) -> bool {
        self.running.is_some()
    }

    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// Where the store is.
    pub fn store_location(&self) -> StoreLocation {
        self.options.store.clone().unwrap_or_else(|| {
            StoreLocation::Sqlite(PathBuf::from(format!("{}.run.db", self.options.name)))
        })
    }

    /// Defines an event; with an expression, it fires when the expression holds in a sequence.
    pub fn add_event(
        &mut self,
        name: impl Into<String>,
        expr: Option<Expr>,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        let id = EventId(self.events.len() as u32);
        claim_name(&mut self.names.events, Arc::from(name.as_str()), id)?;
        self.events.push((name, expr));
        Ok(self)
    }

    /// Defines an expression event from text such as `"s1_done & (s2_done | s2_failed)"`.
    pub fn add_event_expr(
        &mut self,
        name: impl Into<String>,
        expr: &str,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        let parsed = Expr::parse(expr).map_err(|e| EventorError::BadExpression {
            event: name.clone(),
            message: e.to_string(),
        })?;
        self.add_event(name, Some(parsed))
    }

    pub fn add_step(&mut self, step: Step) -> Result<&mut Self, EventorError> {
        let id = StepId(self.steps.len() as u32);
        let spec = DefinedStep::new(step);
        claim_name(&mut self.names.steps, spec.name.clone(), id)?;
        self.steps.push(spec);
        Ok(self)
    }

    /// When `event` fires in a sequence, activates each target (a step or an event) in it,
    /// after `delay` if given. A target is a name (`"s1"`), or [`AssocTarget::Step`] or
    /// [`AssocTarget::Event`] for a name that is both.
    pub fn add_assoc<I, S>(
        &mut self,
        event: impl Into<String>,
        targets: I,
        delay: Option<Duration>,
    ) -> Result<&mut Self, EventorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<AssocTarget>,
    {
        let targets = targets
            .into_iter()
            .map(|target| {
                let (kind, name) = match target.into() {
                    AssocTarget::Named(name) => (TargetKind::Either, name),
                    AssocTarget::Step(name) => (TargetKind::Step, name),
                    AssocTarget::Event(name) => (TargetKind::Event, name),
                };
                (kind, self.shared_name(name))
            })
            .collect();
        self.assocs.push((event.into(), targets, delay));
        Ok(self)
    }

    /// Defines a resource pool of `capacity` units that steps acquire from.
    pub fn add_resource_pool(
        &mut self,
        name: impl Into<String>,
        capacity: u32,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        if self.pools.iter().any(|(n, _)| *n == name) {
            return Err(EventorError::DuplicatePool(name));
        }
        self.pools.push((name, capacity));
        Ok(self)
    }

    /// Adds a pool shared by every run on the store (every coordinator using the same
    /// Postgres schema or SQLite file): its `units` are granted by the store, all of a task's
    /// or none, and given back when the task ends. Every flow sharing it must declare the
    /// same units.
    pub fn add_shared_resource_pool(
        &mut self,
        name: impl Into<String>,
        units: u32,
    ) -> Result<&mut Self, EventorError> {
        let name = name.into();
        self.add_resource_pool(name.clone(), units)?;
        self.shared_pools.push(name);
        Ok(self)
    }

    /// Fires `event` in `sequence` when the run starts (or at once, if it is running).
    pub fn trigger_event(
        &mut self,
        event: impl Into<String>,
        sequence: impl Into<String>,
    ) -> Result<&mut Self, EventorError> {
        let event = event.into();
        let sequence = sequence.into();
        names::check_sequence(&sequence).map_err(|why| EventorError::BadName {
            what: "sequence",
            value: sequence.clone(),
            why,
        })?;
        if self.names.event(&event).is_none() {
            return Err(EventorError::UnknownEvent {
                context: "trigger_event".into(),
                name: event,
            });
        }
        self.triggers.push((event, Arc::from(sequence.as_str())));
        Ok(self)
    }

    /// Fires `event` in `sequence` when a recovery or continue finds that the run never
    /// stored a start of its own (it died before its first commit). A new run ignores it.
    pub fn start_if_unstarted(
        &mut self,
        event: impl Into<String>,
        sequence: impl Into<String>,
    ) -> Result<&mut Self, EventorError> {
        let (event, sequence) = (event.into(), sequence.into());
        self.trigger_event(event.clone(), sequence.clone())?;
        let queued = self.triggers.pop().expect("trigger_event queued it");
        debug_assert_eq!(queued.0, event);
        self.unstarted.push(queued);
        Ok(self)
    }

    /// `name` as the defined step or event of that name holds it, or a new copy.
    fn shared_name(&self, name: String) -> Arc<str> {
        self.names.shared(&name).unwrap_or_else(|| Arc::from(name))
    }

    /// Releases the store and forgets the run. Further runs fail with [`EventorError::Closed`].
    pub fn close(&mut self) {
        self.running = None;
        self.closed = true;
    }
}

/// Defines `name` in one namespace (events, or steps), where it must be new.
fn claim_name<Id>(
    names: &mut HashMap<Arc<str>, Id>,
    name: Arc<str>,
    id: Id,
) -> Result<(), EventorError> {
    if names.contains_key(&name) {
        return Err(EventorError::Duplicate(name.to_string()));
    }
    names.insert(name, id);
    Ok(())
}

/// What an association activates: a step or an event, by name. A bare name (from `&str` or
/// `String`) is whichever the flow defines; a name defined as both a step and an event must
/// say which, as the flow file's `{step: NAME}` and `{event: NAME}` do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssocTarget {
    Named(String),
    Step(String),
    Event(String),
}

impl AssocTarget {
    pub fn name(&self) -> &str {
        match self {
            AssocTarget::Named(name) | AssocTarget::Step(name) | AssocTarget::Event(name) => name,
        }
    }
}

impl From<&str> for AssocTarget {
    fn from(name: &str) -> Self {
        AssocTarget::Named(name.to_string())
    }
}

impl From<String> for AssocTarget {
    fn from(name: String) -> Self {
        AssocTarget::Named(name)
    }
}

impl From<&String> for AssocTarget {
    fn from(name: &String) -> Self {
        AssocTarget::Named(name.clone())
    }
}

impl From<&AssocTarget> for AssocTarget {
    fn from(target: &AssocTarget) -> Self {
        target.clone()
    }
}

/// A readable id that sorts by time: `20261129T210235-3f9a`.
fn generate_run_id() -> String {
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':', 'Z'], "");
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{stamp}-{salt:04x}")
}
