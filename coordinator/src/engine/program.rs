//! The compiled, immutable flow the scheduling core runs: names resolved to dense ids.

use std::sync::Arc;

use eventor_agent::MaxConcurrent;
use std::time::Duration;

use eventor_protocol::{FailureClass, FailureKind};
use eventor_store::TaskStatus;

/// Index of an event in [`Program::events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u32);

/// Index of a step in [`Program::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepId(pub u32);

/// Index of an association in [`Program::assocs`]; stored with delays, so it must be stable for
/// a given flow definition (it is the association's position in definition order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssocId(pub u32);

/// An expression over events, with names resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Event(EventId),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// True when the expression holds over the events for which `fired` is true.
    pub fn eval(&self, fired: &impl Fn(EventId) -> bool) -> bool {
        match self {
            Cond::Event(e) => fired(*e),
            Cond::And(all) => all.iter().all(|c| c.eval(fired)),
            Cond::Or(any) => any.iter().any(|c| c.eval(fired)),
            Cond::Not(c) => !c.eval(fired),
        }
    }

    /// Every event the expression mentions (with repeats).
    pub fn events(&self, out: &mut Vec<EventId>) {
        match self {
            Cond::Event(e) => out.push(*e),
            Cond::And(cs) | Cond::Or(cs) => cs.iter().for_each(|c| c.events(out)),
            Cond::Not(c) => c.events(out),
        }
    }
}

/// What an association activates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Event(EventId),
    Step(StepId),
}

#[derive(Debug, Clone)]
pub struct EventDef {
    pub name: Arc<str>,
    pub cond: Option<Cond>,
    /// Expression events whose expression mentions this event.
    pub dependents: Vec<EventId>,
    /// Associations whose source is this event.
    pub assocs: Vec<AssocId>,
}

/// The statuses a step can fire events on; `complete` is success and failure together.
/// Boxed slices, not vectors: a program keeps one per status per step for its run, and a
/// million steps make the eight bytes of each spare capacity field count.
#[derive(Debug, Clone, Default)]
pub struct StepTriggers {
    pub ready: Box<[EventId]>,
    pub active: Box<[EventId]>,
    pub success: Box<[EventId]>,
    pub failure: Box<[EventId]>,
    pub complete: Box<[EventId]>,
}

impl StepTriggers {
    /// The events to fire when a task reaches `status`.
    pub fn on(&self, status: TaskStatus) -> (&[EventId], &[EventId]) {
        match status {
            TaskStatus::Ready => (&self.ready, &[]),
            TaskStatus::Active => (&self.active, &[]),
            TaskStatus::Success | TaskStatus::Skipped => (&self.success, &*self.complete),
            TaskStatus::Failure => (&self.failure, &*self.complete),
        }
    }

    /// A failure is handled (does not stop the flow) when some trigger reacts to it.
    pub fn handles_failure(&self) -> bool {
        !self.failure.is_empty() || !self.complete.is_empty()
    }
}

/// Index of a resource pool in [`Program::pools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u32);

#[derive(Debug, Clone)]
pub struct PoolDef {
    #[allow(dead_code)] // read through Debug: a program dump names its pools
    pub name: Arc<str>,
    pub capacity: u32,
    /// Held in the store and shared by every run on it: its units are granted by the store
    /// (`Effect::Acquire`), not counted here.
    pub shared: bool,
}

/// What a recovery does with a task whose previous run ended a given way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoverAction {
    /// Do not run it again: record it `skipped` and go on as if it succeeded.
    Skip,
    /// Run it again.
    #[default]
    Rerun,
}

/// Per-step recovery policy, by the task's status in the recoveries before: the default
/// skips what succeeded and reruns everything else (as the original). Skip means "do not
/// run it again and go on as if it succeeded", whatever the earlier status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryPolicy {
    pub ready: RecoverAction,
    pub active: RecoverAction,
    pub success: RecoverAction,
    pub failure: RecoverAction,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            ready: RecoverAction::Rerun,
            active: RecoverAction::Rerun,
            success: RecoverAction::Skip,
            failure: RecoverAction::Rerun,
        }
    }
}

impl RecoveryPolicy {
    /// What to do with a task whose latest earlier status was `status`.
    pub fn for_status(&self, status: eventor_store::TaskStatus) -> RecoverAction {
        use eventor_store::TaskStatus::*;
        match status {
            Ready => self.ready,
            Active => self.active,
            Success | Skipped => self.success,
            Failure => self.failure,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct StepDef {
    pub name: Arc<str>,
    pub triggers: StepTriggers,
    /// At most this many tasks of the step at once (`None`: no per-step limit).
    pub max_concurrent: MaxConcurrent,
    pub stop_on_exception: bool,
    pub recovery: RecoveryPolicy,
    /// Units taken from pools before a task starts (all or nothing).
    pub acquires: Box<[(PoolId, u32)]>,
    /// Units given back when a task ends.
    pub releases: Box<[(PoolId, u32)]>,
    /// Further attempts after a failed one.
    pub retry: RetryPolicy,
}

/// How a step's failed attempts are retried: `retries` further attempts, each `delay` after
/// the attempt before it ended, spent only on the failures `on` names (by default every
/// class: a failure, a timeout or a lost host each use one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    pub retries: u32,
    pub delay: Duration,
    pub on: RetryOn,
}

/// The failures a step's retries are spent on (`retry_on:`); empty means every class.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryOn(pub Vec<RetryMatch>);

/// One entry of `retry_on`: a kind of failure (`exit`: any non-zero exit), or one exit code
/// (`exit:75`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMatch {
    Kind(FailureKind),
    ExitCode(i32),
}

impl RetryOn {
    /// Whether a failure of `class` is retried (every class when the list is empty).
    pub fn covers(&self, class: &FailureClass) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|m| match (m, class) {
                (RetryMatch::ExitCode(want), FailureClass::Exit(Some(code))) => want == code,
                (RetryMatch::ExitCode(_), _) => false,
                (RetryMatch::Kind(kind), class) => *kind == class.kind(),
            })
    }
}

impl std::fmt::Display for RetryOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<String> = self.0.iter().map(RetryMatch::to_string).collect();
        write!(f, "[{}]", words.join(", "))
    }
}

impl RetryMatch {
    /// The words `retry_on` accepts, for a "did you mean".
    pub fn words() -> Vec<&'static str> {
        FailureKind::ALL.iter().map(|k| k.as_str()).collect()
    }

    /// `exit`, `exit:75`, `timeout`, …; `None` for anything else.
    pub fn parse(word: &str) -> Option<RetryMatch> {
        match word.strip_prefix("exit:") {
            Some(code) => code.parse().ok().map(RetryMatch::ExitCode),
            None => FailureKind::parse(word).map(RetryMatch::Kind),
        }
    }
}

impl std::fmt::Display for RetryMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryMatch::Kind(kind) => f.write_str(kind.as_str()),
            RetryMatch::ExitCode(code) => write!(f, "exit:{code}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AssocDef {
    pub event: EventId,
    pub targets: Vec<Target>,
    pub delay: Option<Duration>,
}

/// A whole flow, ready for the core.
#[derive(Debug, Clone, Default)]
pub struct Program {
    #[allow(dead_code)] // read through Debug: a program dump names its flow
    pub name: Arc<str>,
    pub events: Vec<EventDef>,
    pub steps: Vec<StepDef>,
    pub assocs: Vec<AssocDef>,
    pub pools: Vec<PoolDef>,
    /// At most this many tasks at once in the whole run (`None`: unlimited).
    pub max_concurrent: MaxConcurrent,
}

impl Program {
    /// Per event, whether it is an entry of the flow: nothing in it fires the event (no
    /// association targets it, no step status triggers it, it has no expression), so only
    /// a trigger from outside (the start triggers, `trigger_event`) does. A recovery replays
    /// exactly these; the rest follow from them again. One pass over the flow.
    pub fn entries(&self) -> Vec<bool> {
        let mut entry: Vec<bool> = self.events.iter().map(|e| e.cond.is_none()).collect();
        let mut fired = |event: &EventId| entry[event.0 as usize] = false;
        for assoc in &self.assocs {
            for target in &assoc.targets {
                if let Target::Event(event) = target {
                    fired(event);
                }
            }
        }
        for step in &self.steps {
            let t = &step.triggers;
            for list in [&t.ready, &t.active, &t.success, &t.failure, &t.complete] {
                list.iter().for_each(&mut fired);
            }
        }
        entry
    }
    pub fn event(&self, id: EventId) -> &EventDef {
        &self.events[id.0 as usize]
    }

    pub fn step(&self, id: StepId) -> &StepDef {
        &self.steps[id.0 as usize]
    }

    pub fn assoc(&self, id: AssocId) -> &AssocDef {
        &self.assocs[id.0 as usize]
    }

    /// Fills in each event's `dependents` and `assocs` from the expressions and associations.
    pub fn link(&mut self) {
        for event in &mut self.events {
            event.dependents.clear();
            event.assocs.clear();
        }
        let mut mentioned = Vec::new();
        for index in 0..self.events.len() {
            mentioned.clear();
            if let Some(cond) = &self.events[index].cond {
                cond.events(&mut mentioned);
            }
            mentioned.sort();
            mentioned.dedup();
            for source in &mentioned {
                self.events[source.0 as usize]
                    .dependents
                    .push(EventId(index as u32));
            }
        }
        for (index, assoc) in self.assocs.iter().enumerate() {
            self.events[assoc.event.0 as usize]
                .assocs
                .push(AssocId(index as u32));
        }
    }
}
