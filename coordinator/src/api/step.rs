//! Steps as the API user defines them: what runs (closure, command, nothing), what it
//! triggers, and its per-step config.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::Serialize;

pub use crate::engine::program::{RecoveryPolicy, RetryMatch, RetryOn};
use eventor_agent::{MaxConcurrent, StepAction, TaskContext};
pub use eventor_protocol::{FailureClass, FailureKind};
pub use eventor_store::TaskStatus;

/// Per-step settings; `None` means "use the run's setting".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepConfig {
    /// At most this many tasks of this step at once.
    pub max_concurrent: MaxConcurrent,
    /// Whether an unhandled failure of this step stops the flow.
    pub stop_on_exception: Option<bool>,
    /// Extra environment for command steps.
    pub env: BTreeMap<String, String>,
    /// Variables copied from the prime's environment into the step's tasks, here and on
    /// hosts (secrets: never stored, logged or shown; a name the prime lacks is refused).
    pub env_from_prime: Vec<String>,
    /// A command still running after this long is stopped and fails.
    pub timeout: Option<Duration>,
    /// The working directory of command steps.
    pub cwd: Option<PathBuf>,
    /// What a recovery does with this step's tasks, by their previous outcome.
    pub recovery: RecoveryPolicy,
    /// The hosts (names in the hosts file) a task may run on, the least busy first; empty:
    /// this host. Pinned commands run through each host's agent.
    pub hosts: Vec<String>,
    /// Units to take from resource pools before a task starts: all of them, or the task waits.
    pub acquires: Vec<(String, u32)>,
    /// Units given back when a task ends; `None`: what it acquired. `Some(vec![])` gives back
    /// nothing (another step releases them).
    pub releases: Option<Vec<(String, u32)>>,
    /// Further attempts after a failed one (a failure, a timeout or a lost host); 0: none. A
    /// task pinned to several hosts retries on the least busy one still up.
    pub retries: u32,
    /// How long after a failed attempt its retry starts (durable: a retry due while no
    /// coordinator runs happens on the next continue).
    pub retry_delay: Duration,
    /// The failures `retries` are spent on (`RetryOn(vec![RetryMatch::Kind(FailureKind::Timeout)])`);
    /// empty: every class. A failure of another class fails the task at once.
    pub retry_on: RetryOn,
}

/// The events a step fires per status of its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triggers {
    pub ready: Vec<String>,
    pub active: Vec<String>,
    pub success: Vec<String>,
    pub failure: Vec<String>,
    /// Fired on success and on failure.
    pub complete: Vec<String>,
}

/// A step definition, built fluently: `Step::new("s1").command("make").on_success("s1_done")`.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub action: StepAction,
    pub triggers: Triggers,
    pub config: StepConfig,
}

impl Step {
    /// A step that does nothing until given an action.
    pub fn new(name: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            action: StepAction::Nothing,
            triggers: Triggers::default(),
            config: StepConfig::default(),
        }
    }

    /// Runs `command` with `/bin/sh -c` (or directly when it needs no shell).
    pub fn command(mut self, command: impl Into<String>) -> Step {
        self.action = StepAction::Command(command.into());
        self
    }

    /// Runs a blocking closure; its `Ok` value is stored as JSON, its `Err` as the error.
    pub fn func<F, R, E>(mut self, f: F) -> Step
    where
        F: Fn(&TaskContext) -> Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Display,
    {
        self.action = StepAction::sync(f);
        self
    }

    /// Runs an async closure on the runtime.
    pub fn async_func<F, Fut, R, E>(mut self, f: F) -> Step
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize,
        E: Display,
    {
        self.action = StepAction::future(f);
        self
    }

    /// Fires `event` when a task reaches `status`.
    pub fn on(mut self, status: TaskStatus, event: impl Into<String>) -> Step {
        let list = match status {
            TaskStatus::Ready => &mut self.triggers.ready,
            TaskStatus::Active => &mut self.triggers.active,
            TaskStatus::Success | TaskStatus::Skipped => &mut self.triggers.success,
            TaskStatus::Failure => &mut self.triggers.failure,
        };
        list.push(event.into());
        self
    }

    pub fn on_success(self, event: impl Into<String>) -> Step {
        self.on(TaskStatus::Success, event)
    }

    pub fn on_failure(self, event: impl Into<String>) -> Step {
        self.on(TaskStatus::Failure, event)
    }

    /// Fires `event` on success and on failure.
    pub fn on_complete(mut self, event: impl Into<String>) -> Step {
        self.triggers.complete.push(event.into());
        self
    }

    pub fn config(mut self, config: StepConfig) -> Step {
        self.config = config;
        self
    }
}

/// A step as the `Eventor` keeps it until a run compiles it: its name shared with the
/// compiled program, its triggers and settings only when they are not the defaults. A plain
/// step then costs a few words, not a whole [`Step`] (~350 bytes): a flow of a million steps
/// is held whole for its run.
#[derive(Clone)]
pub(crate) struct DefinedStep {
    pub name: Arc<str>,
    pub action: StepAction,
    triggers: Option<Box<Triggers>>,
    config: Option<Box<StepConfig>>,
}

/// What a step without triggers fires.
static NO_TRIGGERS: Triggers = Triggers {
    ready: Vec::new(),
    active: Vec::new(),
    success: Vec::new(),
    failure: Vec::new(),
    complete: Vec::new(),
};

/// The settings of a step given none.
static DEFAULT_CONFIG: LazyLock<StepConfig> = LazyLock::new(StepConfig::default);

impl DefinedStep {
    pub fn new(step: Step) -> DefinedStep {
        let Step {
            name,
            action,
            triggers,
            config,
        } = step;
        DefinedStep {
            name: Arc::from(name),
            action,
            triggers: (triggers != NO_TRIGGERS).then(|| Box::new(triggers)),
            config: (config != *DEFAULT_CONFIG).then(|| Box::new(config)),
        }
    }

    pub fn triggers(&self) -> &Triggers {
        self.triggers.as_deref().unwrap_or(&NO_TRIGGERS)
    }

    pub fn config(&self) -> &StepConfig {
        self.config.as_deref().unwrap_or(&DEFAULT_CONFIG)
    }
}
