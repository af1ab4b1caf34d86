//! The task vocabulary shared by every place a task runs: what a step does ([`StepAction`]),
//! who a task is ([`TaskContext`], readable inside a closure with [`current_task`]), and how
//! it ended ([`TaskEnd`], the protocol's, made from a closure's result by [`end_of`]).

use std::fmt::{self, Display};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use eventor_protocol::TaskEnd;
use serde::Serialize;

/// What a closure step returns: its result as JSON, or an error text.
pub type StepResult = Result<serde_json::Value, String>;

/// A blocking closure step.
pub type SyncFn = dyn Fn(&TaskContext) -> StepResult + Send + Sync;
/// An async closure step.
pub type AsyncFn =
    dyn Fn(TaskContext) -> Pin<Box<dyn Future<Output = StepResult> + Send>> + Send + Sync;

/// What a step does when its task runs.
#[derive(Clone, Default)]
pub enum StepAction {
    /// Nothing: the task succeeds at once (useful as a join point).
    #[default]
    Nothing,
    /// A shell command; success is exit status 0.
    Command(String),
    /// A blocking closure, run on a bounded pool of threads.
    Sync(Arc<SyncFn>),
    /// An async closure, run on the runtime.
    Async(Arc<AsyncFn>),
}

impl StepAction {
    /// A blocking closure; its `Ok` value is kept as JSON, its `Err` as the error text.
    pub fn sync<F, R, E>(f: F) -> StepAction
    where
        F: Fn(&TaskContext) -> Result<R, E> + Send + Sync + 'static,
        R: Serialize,
        E: Display,
    {
        StepAction::Sync(Arc::new(move |ctx: &TaskContext| to_step_result(f(ctx))))
    }

    /// An async closure.
    pub fn future<F, Fut, R, E>(f: F) -> StepAction
    where
        F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize,
        E: Display,
    {
        let f = Arc::new(f);
        StepAction::Async(Arc::new(move |ctx: TaskContext| {
            let fut = f(ctx);
            Box::pin(async move { to_step_result(fut.await) })
        }))
    }
}

impl fmt::Debug for StepAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepAction::Nothing => f.write_str("Nothing"),
            StepAction::Command(c) => f.debug_tuple("Command").field(c).finish(),
            StepAction::Sync(_) => f.write_str("Sync(..)"),
            StepAction::Async(_) => f.write_str("Async(..)"),
        }
    }
}

fn to_step_result<R: Serialize, E: Display>(result: Result<R, E>) -> StepResult {
    match result {
        Ok(value) => serde_json::to_value(value).map_err(|e| format!("result is not JSON: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A closure's result as a task's end: its JSON text, or a failure with its error.
pub fn end_of(result: StepResult) -> TaskEnd {
    match result {
        Ok(value) => TaskEnd::success(Some(value.to_string())),
        Err(error) => TaskEnd::failure(error),
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

/// Runs `fut`, answering a panic in it as the panic's text instead of letting it unwind
/// further: what running it as a task of its own and joining that gives, without a second
/// task to spawn and wake for every step.
pub fn catch_panic<F: Future>(fut: F) -> CatchPanic<F> {
    CatchPanic { fut: Box::pin(fut) }
}

/// The future of [`catch_panic`].
pub struct CatchPanic<F> {
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = self.fut.as_mut();
        // Unwind safety: a future that panicked is dropped without being polled again.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(polled) => polled.map(Ok),
            Err(payload) => {
                std::task::Poll::Ready(Err(format!("step panicked: {}", panic_message(&*payload))))
            }
        }
    }
}

/// Why a spawned task's future did not return: its panic, or its cancellation.
pub fn join_error_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => format!("step panicked: {}", panic_message(&*payload)),
        Err(error) => format!("step was cancelled: {error}"),
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
    /// The flow's name.
    pub flow: Arc<str>,
    /// The prefix of the task's environment variable names (default `EVENTOR_`).
    pub env_prefix: Arc<str>,
    /// Where [`TaskContext::trigger_event`] goes: the run's driver; `None` where there is
    /// no way back to it (a task on a remote agent).
    pub triggers: Option<Arc<dyn TriggerSink>>,
    /// Where a command of the task fires events in its run (`eventor-coord trigger`): the
    /// run's trigger socket ([`crate::trigger_socket`]); `None` where there is none.
    pub trigger_socket: Option<Arc<str>>,
}

/// The variable that tells a task's command where its run's trigger socket is (see
/// [`crate::trigger_socket`]).
pub const TRIGGER_SOCKET_VAR: &str = "EVENTOR_TRIGGER_SOCKET";

/// Takes the events a running task fires in its own run.
pub trait TriggerSink: Send + Sync + fmt::Debug {
    /// Fires `event` in `sequence`; it takes effect at the driver's next turn.
    fn trigger(&self, event: &str, sequence: Arc<str>) -> Result<(), TriggerError>;
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
        let sink = self.triggers.as_ref().ok_or(TriggerError::RunOver)?;
        sink.trigger(event, Arc::from(sequence.into().as_str()))
    }

    /// The task's logger name as the original named it: `<flow>.<step>_<sequence>`.
    pub fn logger_name(&self) -> String {
        format!("{}.{}_{}", self.flow, self.step, self.sequence)
    }

    /// The task's variables as a command sees them in its environment: who it is, its run
    /// and flow, and (where there is one) its way back to the run.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let p = &self.env_prefix;
        let mut vars: Vec<(String, String)> = self.identity_vars().into();
        vars.push((format!("{p}LOGGER_NAME"), self.logger_name()));
        vars.push((format!("{p}FLOW"), self.flow.to_string()));
        if let Some(socket) = &self.trigger_socket {
            vars.push((TRIGGER_SOCKET_VAR.to_string(), socket.to_string()));
        }
        vars
    }

    /// The variables of [`TaskContext::env_vars`] that name this attempt of this task in
    /// this run and no other: a process whose environment holds them all was started for
    /// it (a recovery stops only such orphans).
    pub fn identity_vars(&self) -> [(String, String); 5] {
        let p = &self.env_prefix;
        [
            (format!("{p}RUN_ID"), self.run_id.to_string()),
            (format!("{p}STEP_NAME"), self.step.to_string()),
            (format!("{p}STEP_SEQUENCE"), self.sequence.to_string()),
            (format!("{p}STEP_RECOVERY"), self.recovery.to_string()),
            (format!("{p}STEP_ATTEMPT"), self.attempt.to_string()),
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
pub fn with_sync_task<T>(ctx: &TaskContext, f: impl FnOnce() -> T) -> T {
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
pub async fn with_async_task<F: Future>(ctx: TaskContext, fut: F) -> F::Output {
    ASYNC_TASK.scope(ctx, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commands_variables_name_its_recovery_and_attempt() {
        let ctx = TaskContext {
            run_id: Arc::from("r"),
            step: Arc::from("s"),
            sequence: Arc::from("7"),
            recovery: 2,
            attempt: 3,
            flow: Arc::from("f"),
            env_prefix: Arc::from("EV_"),
            triggers: None,
            trigger_socket: None,
        };
        let vars = ctx.env_vars();
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("EV_RUN_ID"), Some("r"));
        assert_eq!(get("EV_STEP_RECOVERY"), Some("2"));
        assert_eq!(get("EV_STEP_ATTEMPT"), Some("3"));
        assert_eq!(get("EV_LOGGER_NAME"), Some("f.s_7"));
    }
}
