//! One task on the agent, from dispatch to `TaskFinished`: a command through the shared
//! command runner, or a named closure of the program; then the durable record, then the
//! report.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventor_protocol::{
    Dispatch, EndStatus, LogLevel, TaskEnd, TaskKey, ToCoordinator, Work, LEASE_STOP_GRACE,
};
use tokio::sync::mpsc;
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;

use super::durable::{self, Recorded, Recorder};
use super::output::{clip, OutputGate};
use super::writer::{dropped_text, Diagnostic, Outgoing};
use crate::command::{run_command, CommandSpec};
use crate::task::{
    end_of, join_error_text, with_async_task, with_sync_task, StepAction, StepResult, TaskContext,
};

/// The prefix of the task variables the agent sets itself (the prime's `env` may override
/// them, and should when its flow uses another prefix).
const ENV_PREFIX: &str = "EVENTOR_";

/// What every task of the agent shares.
pub(super) struct TaskEnv {
    pub out: mpsc::Sender<Outgoing>,
    pub store: Option<Recorder>,
    pub closures: HashMap<String, StepAction>,
    pub kill_grace: Duration,
    pub caps: TextCaps,
    pub tally: Arc<Tally>,
    /// This agent's trigger socket, for its tasks' commands to fire events in their run.
    pub trigger_socket: Option<Arc<str>>,
}

/// How long texts may be on the wire, derived from the prime's frame cap.
#[derive(Debug, Clone, Copy)]
pub(super) struct TextCaps {
    /// One line of output.
    pub line: usize,
    /// A `TaskFinished`'s result or error.
    pub field: usize,
}

/// Counts for the summary, updated by the tasks as they end.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub timed_out: AtomicU64,
    pub unrecorded: AtomicU64,
    pub lines_dropped: Arc<AtomicU64>,
}

impl Tally {
    fn count(&self, status: EndStatus) {
        let counter = match status {
            EndStatus::Success => &self.succeeded,
            EndStatus::Failure => &self.failed,
            EndStatus::Cancelled => &self.cancelled,
            EndStatus::TimedOut => &self.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a task tells the task loop.
#[derive(Debug)]
pub(super) enum TaskEvent {
    /// The task's work is over (its command exited): its slot is free for the next one
    /// while its end is being recorded, which may wait on the store.
    Ran { key: TaskKey },
    /// The task's `TaskFinished` is queued: it is over.
    Finished { key: TaskKey },
}

/// Why a task was stopped before it ended by itself.
#[derive(Debug, Clone)]
pub(super) enum StopReason {
    Cancelled(String),
    TimedOut(Duration),
    /// The agent's lease ran out with no coordinator: the task is stopped within
    /// [`LEASE_STOP_GRACE`], whatever the agent's own grace, since the coordinator counts on it.
    LeaseOut(Duration),
}

/// Stops one running task; the first reason given is the one reported.
#[derive(Debug, Clone, Default)]
pub(super) struct Stop {
    token: CancellationToken,
    /// Skips what is left of the grace period (SIGKILL now).
    kill_now: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl Stop {
    pub(super) fn stop(&self, reason: StopReason) {
        if let StopReason::LeaseOut(_) = reason {
            let kill_now = self.kill_now.clone();
            tokio::spawn(async move {
                tokio::time::sleep(LEASE_STOP_GRACE).await;
                kill_now.cancel();
            });
        }
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    fn reason(&self) -> Option<&StopReason> {
        self.reason.get()
    }
}

/// Runs one dispatched task to its end (then frees its slot), records and reports it.
pub(super) async fn run_task(
    env: Arc<TaskEnv>,
    dispatch: Dispatch,
    stop: Stop,
    events: mpsc::Sender<TaskEvent>,
) {
    let key = Arc::new(dispatch.key);
    let end = match dispatch.work {
        Work::Command {
            command,
            env: vars,
            cwd,
            timeout_ms,
        } => {
            let shell = Shell {
                command,
                vars,
                cwd: cwd.map(PathBuf::from),
                timeout: timeout_ms.map(Duration::from_millis),
            };
            run_shell(&env, &key, shell, &stop).await
        }
        Work::Closure { step } => run_closure(&env, &key, &step, &stop).await,
    };
    let ran = TaskEvent::Ran {
        key: (*key).clone(),
    };
    let _ = events.send(ran).await;
    let key_ran = (*key).clone();
    send(&env, ToCoordinator::TaskRan { key: key_ran }).await;
    finish(&env, &key, end).await;
    let _ = events
        .send(TaskEvent::Finished {
            key: (*key).clone(),
        })
        .await;
}

/// Records `end` in the store (when there is one), then sends `TaskFinished`.
pub(super) async fn finish(env: &TaskEnv, key: &TaskKey, end: TaskEnd) {
    match durable::record(env.store.as_ref(), key, &end).await {
        Recorded::NoStore | Recorded::Written => {}
        Recorded::Fenced(why) => {
            env.tally.unrecorded.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(task = %key, %why, "another writer decided this task first; reporting it anyway");
            let text = format!("not recorded, another writer decided first: {why}");
            diagnose(env, Some(key), LogLevel::Warn, text).await;
        }
        Recorded::Failed(why) => {
            env.tally.unrecorded.fetch_add(1, Ordering::Relaxed);
            tracing::error!(task = %key, %why, "cannot record the task's result in the store");
            let message = format!("cannot record the result in the store: {why}");
            send(
                env,
                ToCoordinator::Error {
                    key: Some(key.clone()),
                    message,
                },
            )
            .await;
        }
    }
    env.tally.count(end.status);
    send(env, finished_message(key, end, env.caps.field)).await;
}

fn finished_message(key: &TaskKey, end: TaskEnd, cap: usize) -> ToCoordinator {
    let (result, mut error) = match end.result {
        Some(result) if result.len() > cap => {
            // A cut JSON text is no JSON at all: say where the result is instead.
            let why = format!(
                "the result ({} bytes) is over what one frame may carry; the store has it \
                 if the agent has one",
                result.len()
            );
            (
                None,
                Some(end.error.map_or(why.clone(), |e| format!("{e}; {why}"))),
            )
        }
        result => (result, end.error),
    };
    if let Some(error) = error.as_mut() {
        clip(error, cap);
    }
    ToCoordinator::TaskFinished {
        key: key.clone(),
        end: TaskEnd {
            result,
            error,
            ..end
        },
    }
}

struct Shell {
    command: String,
    vars: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    timeout: Option<Duration>,
}

async fn run_shell(env: &TaskEnv, key: &Arc<TaskKey>, shell: Shell, stop: &Stop) -> TaskEnd {
    let spec = CommandSpec {
        command: shell.command,
        env: task_vars(key, env.trigger_socket.clone())
            .into_iter()
            .chain(shell.vars)
            .collect(),
        cwd: shell.cwd,
        // The agent keeps the clock itself, so it can report `TimedOut` rather than a
        // failure whose text merely says so.
        timeout: None,
        kill_grace: env.kill_grace,
        kill_now: Some(stop.kill_now.clone()),
    };
    let gate = Arc::new(OutputGate::new(
        env.out.clone(),
        key.clone(),
        env.tally.lines_dropped.clone(),
        env.caps.line,
    ));
    let out = env.out.clone();
    let started_key = key.clone();
    // Awaited by the runner before it reads any output: `TaskStarted` precedes every line.
    let started = move |pid: i64| async move {
        let message = ToCoordinator::TaskStarted {
            key: (*started_key).clone(),
            pid: u32::try_from(pid).unwrap_or(0),
        };
        let _ = out.send(Outgoing::Message(message)).await;
    };
    let run = run_command(&spec, stop.token.clone(), started, gate.sink());
    let end = within(shell.timeout, stop, run).await;
    let dropped = gate.take_pending();
    if dropped > 0 {
        diagnose(env, Some(key), LogLevel::Warn, dropped_text(dropped)).await;
    }
    command_end(end, stop.reason())
}

/// The task's own variables, before the prime's `env` (which wins on a clash).
fn task_vars(key: &TaskKey, trigger_socket: Option<Arc<str>>) -> Vec<(String, String)> {
    let context = TaskContext {
        trigger_socket,
        ..task_context(key)
    };
    context.env_vars()
}

/// Runs `work`, stopping it (as timed out) once `limit` passes.
async fn within<T>(limit: Option<Duration>, stop: &Stop, work: impl Future<Output = T>) -> T {
    let Some(limit) = limit else {
        return work.await;
    };
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => done,
        _ = tokio::time::sleep(limit) => {
            stop.stop(StopReason::TimedOut(limit));
            work.await
        }
    }
}

/// A command's end, or (the agent stopped it) the end its stop's reason gives.
fn command_end(end: TaskEnd, stopped: Option<&StopReason>) -> TaskEnd {
    match (end.succeeded(), stopped) {
        (true, _) | (false, None) => end,
        (false, Some(StopReason::Cancelled(why))) => TaskEnd::cancelled(why.clone()),
        (false, Some(StopReason::LeaseOut(lease))) => TaskEnd::failure(lease_text(*lease)),
        (false, Some(StopReason::TimedOut(after))) => TaskEnd::timed_out(format!(
            "timed out after {}",
            humantime::format_duration(*after)
        )),
    }
}

async fn run_closure(env: &TaskEnv, key: &Arc<TaskKey>, step: &str, stop: &Stop) -> TaskEnd {
    let Some(action) = env.closures.get(step).cloned() else {
        return TaskEnd::failure(format!("no closure step `{step}` in this program"));
    };
    let running = match action {
        StepAction::Command(command) => {
            let shell = Shell {
                command,
                vars: Vec::new(),
                cwd: None,
                timeout: None,
            };
            return run_shell(env, key, shell, stop).await;
        }
        StepAction::Nothing => None,
        StepAction::Sync(f) => {
            let ctx = task_context(key);
            Some(Running::Blocking(tokio::task::spawn_blocking(move || {
                with_sync_task(&ctx, || f(&ctx))
            })))
        }
        StepAction::Async(f) => {
            let ctx = task_context(key);
            Some(Running::Async(tokio::spawn(with_async_task(
                ctx.clone(),
                f(ctx),
            ))))
        }
    };
    let started = ToCoordinator::TaskStarted {
        key: (**key).clone(),
        pid: std::process::id(),
    };
    send(env, started).await;
    match running {
        None => closure_end(Ok(Ok(serde_json::Value::Null))),
        Some(running) => await_closure(env, key, running, stop).await,
    }
}

enum Running {
    Blocking(tokio::task::JoinHandle<StepResult>),
    Async(tokio::task::JoinHandle<StepResult>),
}

/// Waits for a closure. A cancel aborts an async one; a blocking one cannot be interrupted,
/// so it runs to its end and reports what it returned.
async fn await_closure(env: &TaskEnv, key: &TaskKey, running: Running, stop: &Stop) -> TaskEnd {
    match running {
        Running::Async(mut handle) => tokio::select! {
            joined = &mut handle => closure_end(joined),
            _ = stop.token.cancelled() => {
                handle.abort();
                let _ = handle.await;
                stopped_end(stop.reason())
            }
        },
        Running::Blocking(mut handle) => tokio::select! {
            joined = &mut handle => closure_end(joined),
            _ = stop.token.cancelled() => {
                let text = "a blocking closure cannot be stopped: waiting for it to return";
                diagnose(env, Some(key), LogLevel::Warn, text.to_string()).await;
                closure_end(handle.await)
            }
        },
    }
}

fn stop_text(reason: Option<&StopReason>) -> String {
    match reason {
        Some(StopReason::Cancelled(why)) => why.clone(),
        Some(StopReason::TimedOut(after)) => {
            format!("timed out after {}", humantime::format_duration(*after))
        }
        Some(StopReason::LeaseOut(lease)) => lease_text(*lease),
        None => "cancelled".to_string(),
    }
}

/// The end of a closure stopped for `reason`: a lease that ran out is a failure (nobody
/// cancelled the task), anything else a cancel.
fn stopped_end(reason: Option<&StopReason>) -> TaskEnd {
    match reason {
        Some(StopReason::LeaseOut(lease)) => TaskEnd::failure(lease_text(*lease)),
        other => TaskEnd::cancelled(stop_text(other)),
    }
}

/// The error of a task stopped because its agent's lease ran out.
fn lease_text(lease: Duration) -> String {
    let lease = humantime::format_duration(lease);
    format!("{}{lease}", eventor_protocol::NO_COORDINATOR)
}

fn closure_end(joined: Result<StepResult, JoinError>) -> TaskEnd {
    match joined {
        Ok(result) => end_of(result),
        Err(error) => TaskEnd::failure(join_error_text(error)),
    }
}

fn task_context(key: &TaskKey) -> TaskContext {
    TaskContext {
        run_id: Arc::from(key.run_id.as_str()),
        step: Arc::from(key.step.as_str()),
        sequence: Arc::from(key.sequence.as_str()),
        recovery: key.recovery,
        attempt: key.attempt,
        // The flow's name is not on the wire; the run id is the closest the agent knows.
        flow: Arc::from(key.run_id.as_str()),
        env_prefix: Arc::from(ENV_PREFIX),
        // Triggers from a remote task have no way back to the prime (yet).
        triggers: None,
        trigger_socket: None,
    }
}

async fn send(env: &TaskEnv, message: ToCoordinator) {
    let _ = env.out.send(Outgoing::Message(message)).await;
}

pub(super) async fn diagnose(env: &TaskEnv, task: Option<&TaskKey>, level: LogLevel, text: String) {
    let diagnostic = Diagnostic {
        task: task.cloned(),
        level,
        text,
    };
    let _ = env.out.send(Outgoing::Diagnostic(diagnostic)).await;
}
