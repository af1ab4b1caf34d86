//! Steps as the API user defines them: what runs (closure, command, nothing), what it
//! triggers, and its per-step config; plus the per-task context a closure can read.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use crate::engine::program::RecoveryPolicy;
pub use eventor_store::TaskStatus;

/// What a closure step returns to the engine: its result as JSON, or an error text.
pub type StepResult = Result<serde_json::Value, String>;

type SyncFn = dyn Fn(&TaskContext) -> StepResult + Send + Sync;
type AsyncFn =
    dyn Fn(TaskContext) -> Pin<Box<dyn Future<Output = StepResult> + Send>> + Send + Sync;

/// What a step does when its task runs.
#[derive(Clone, Default)]
pub enum StepAction {
    /// Nothing: the task succeeds at once (useful as a join point).
    #[default]
    Nothing,
    /// A shell command; success is exit status 0.
    Command(String),
    /// A blocking closure, run on tokio's blocking pool.
    Sync(Arc<SyncFn>),
    /// An async closure, run on the runtime.
    Async(Arc<AsyncFn>),
}

impl std::fmt::Debug for StepAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepAction::Nothing => f.write_str("Nothing"),
            StepAction::Command(c) => f.debug_tuple("Command").field(c).finish(),
            StepAction::Sync(_) => f.write_str("Sync(..)"),
            StepAction::Async(_) => f.write_str("Async(..)"),
        }
    }
}

/// Per-step settings; `None` means "use the run's setting".
#[derive(Debug, Clone, Default)]
pub struct StepConfig {
    /// At most this many tasks of this step at once.
    pub max_concurrent: Option<usize>,
    /// Whether an unhandled failure of this step stops the flow.
    pub stop_on_exception: Option<bool>,
    /// Extra environment for command steps.
    pub env: BTreeMap<String, String>,
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
}

/// The events a step fires per status of its tasks.
#[derive(Debug, Clone, Default)]
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
        self.action = StepAction::Sync(Arc::new(move |ctx: &TaskContext| to_step_result(f(ctx))));
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
        let f = Arc::new(f);
        self.action = StepAction::Async(Arc::new(move |ctx: TaskContext| {
            let fut = f(ctx);
            Box::pin(async move { to_step_result(fut.await) })
        }));
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

fn to_step_result<R: Serialize, E: Display>(result: Result<R, E>) -> StepResult {
    match result {
        Ok(value) => serde_json::to_value(value).map_err(|e| format!("result is not JSON: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Who a task is: given to closures, and readable anywhere inside one with [`current_task`].
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub run_id: Arc<str>,
    pub step: Arc<str>,
    pub sequence: Arc<str>,
    pub recovery: i32,
    pub attempt: i32,
    pub logger_name: Arc<str>,
    /// The prefix of the task's environment variable names (default `EVENTOR_`).
    pub env_prefix: Arc<str>,
    /// Lets the task fire events of its own run.
    pub(crate) triggers: Option<TriggerSender>,
}

/// Sends triggers from running tasks to the driver. Unbounded on purpose: each call comes
/// from a running task's own code, and the driver drains them every turn.
#[derive(Debug, Clone)]
pub(crate) struct TriggerSender {
    pub(crate) events: Arc<std::collections::HashMap<String, crate::engine::program::EventId>>,
    pub(crate) sender: tokio::sync::mpsc::UnboundedSender<crate::engine::core::Input>,
}

/// Why a task could not fire an event.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("unknown event `{0}`")]
    UnknownEvent(String),
    #[error("the run is over: its driver no longer takes triggers")]
    RunOver,
}

impl TaskContext {
    /// Fires `event` in `sequence` in this task's run (for instance the start event with the
    /// next sequence, to iterate a loop). It takes effect at the driver's next turn.
    pub fn trigger_event(
        &self,
        event: &str,
        sequence: impl Into<String>,
    ) -> Result<(), TriggerError> {
        let sender = self.triggers.as_ref().ok_or(TriggerError::RunOver)?;
        let id = *sender
            .events
            .get(event)
            .ok_or_else(|| TriggerError::UnknownEvent(event.to_string()))?;
        let input = crate::engine::core::Input::Trigger {
            event: id,
            sequence: Arc::from(sequence.into().as_str()),
        };
        sender.sender.send(input).map_err(|_| TriggerError::RunOver)
    }

    /// The task's variables as a command sees them in its environment.
    pub fn env_vars(&self) -> [(String, String); 4] {
        let p = &self.env_prefix;
        [
            (format!("{p}STEP_NAME"), self.step.to_string()),
            (format!("{p}STEP_SEQUENCE"), self.sequence.to_string()),
            (format!("{p}STEP_RECOVERY"), self.recovery.to_string()),
            (format!("{p}LOGGER_NAME"), self.logger_name.to_string()),
        ]
    }
}

tokio::task_local! {
    static ASYNC_TASK: TaskContext;
}

thread_local! {
    static SYNC_TASK: std::cell::RefCell<Option<TaskContext>> = const { std::cell::RefCell::new(None) };
}

/// The task the calling closure runs for, or `None` outside a task. Concurrent tasks each see
/// their own (it is task-local, not process environment).
pub fn current_task() -> Option<TaskContext> {
    ASYNC_TASK
        .try_with(Clone::clone)
        .ok()
        .or_else(|| SYNC_TASK.with(|cell| cell.borrow().clone()))
}

/// Runs a blocking closure with `ctx` as the current task of this thread.
pub(crate) fn with_sync_task<T>(ctx: &TaskContext, f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SYNC_TASK.with(|cell| cell.borrow_mut().take());
        }
    }
    SYNC_TASK.with(|cell| *cell.borrow_mut() = Some(ctx.clone()));
    let _reset = Reset;
    f()
}

/// Runs a future with `ctx` as the current task.
pub(crate) async fn with_async_task<F: Future>(ctx: TaskContext, fut: F) -> F::Output {
    ASYNC_TASK.scope(ctx, fut).await
}
