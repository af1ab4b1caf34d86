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
use super::step::{DefinedStep, Step};
use crate::engine::program::{EventId, StepId, Target};
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
            names: HashMap::new(),
            assocs: Vec::new(),
            pools: Vec::new(),
            shared_pools: Vec::new(),
            triggers: Vec::new(),
            unstarted: Vec::new(),
            run_id,
            running: None,
            closed: false,
        })
    }

    /// Stops the run from outside when `interrupt` fires (see [`EventorOptions::interrupt`]).
    pub fn set_interrupt(&mut self, interrupt: crate::Interrupt) {
        self.options.interrupt = Some(interrupt);
    }

    /// The run's id (given in the options, or generated).
    pub fn run_id(&self) -> &str {
        &self.run_id
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
        self.claim_name(Arc::from(name.as_str()), Target::Event(id))?;
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
        self.claim_name(spec.name.clone(), Target::Step(id))?;
        self.steps.push(spec);
        Ok(self)
    }

    /// When `event` fires in a sequence, activates each target (a step or an event) in it,
    /// after `delay` if given.
    pub fn add_assoc<I, S>(
        &mut self,
        event: impl Into<String>,
        targets: I,
        delay: Option<Duration>,
    ) -> Result<&mut Self, EventorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let targets = targets
            .into_iter()
            .map(|name| self.shared_name(name.into()))
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
        match self.names.get(event.as_str()) {
            Some(Target::Event(_)) => {}
            _ => {
                return Err(EventorError::UnknownEvent {
                    context: "trigger_event".into(),
                    name: event,
                })
            }
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

    fn claim_name(&mut self, name: Arc<str>, target: Target) -> Result<(), EventorError> {
        if self.names.contains_key(&name) {
            return Err(EventorError::Duplicate(name.to_string()));
        }
        self.names.insert(name, target);
        Ok(())
    }

    /// `name` as the defined step or event of that name holds it, or a new copy.
    fn shared_name(&self, name: String) -> Arc<str> {
        match self.names.get_key_value(name.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(name),
        }
    }

    /// Releases the store and forgets the run. Further runs fail with [`EventorError::Closed`].
    pub fn close(&mut self) {
        self.running = None;
        self.closed = true;
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
