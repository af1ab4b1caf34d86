//! The executor: runs tasks (closures and commands) and reports back through a closed enum.
//!
//! The driver decides *what* starts; the executor only runs it and sends [`ExecEvent`]s on a
//! bounded channel. Commands run through [`super::command`], each in its own process group.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use eventor_protocol::{LogLevel, LogRecord, Stream, TaskKey};

use super::closure_pool::{panic_message, ClosurePool, Job};
use super::command::{run_command, CommandSpec, OutputSink, OutputStream};
use super::core::{Outcome, TaskId};
use super::remote::{Remote, RemoteWork};
use crate::cluster::central_log::LogSink;
use crate::step::{with_async_task, StepAction, StepResult, TaskContext};

/// What the executor tells the driver.
#[derive(Debug)]
pub enum ExecEvent {
    Started { task: TaskId, pid: i64 },
    Finished { task: TaskId, outcome: Outcome },
}

/// How the executor runs things (a config struct, not loose parameters).
#[derive(Debug, Clone, Copy)]
pub struct ExecutorConfig {
    /// Most threads running blocking closures at once.
    pub closure_threads: usize,
    /// How long a stopped command gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// Where command output goes besides the console log: the run's central log, as records of
/// this host.
#[derive(Clone)]
pub struct CentralOutput {
    pub sink: LogSink,
    pub host: Arc<str>,
}

/// How one step's tasks run.
#[derive(Debug, Clone, Default)]
pub struct StepRuntime {
    pub action: StepAction,
    /// The hosts the step may run on; empty: this host.
    pub hosts: Vec<Arc<str>>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

/// Runs tasks: async work on the current tokio runtime, blocking closures on a bounded pool.
pub struct Executor {
    central: Option<CentralOutput>,
    remote: Option<Arc<Remote>>,
    events: mpsc::Sender<ExecEvent>,
    tracker: TaskTracker,
    closures: ClosurePool,
    cancel: CancellationToken,
    kill_grace: Duration,
}

impl Executor {
    pub fn new(
        events: mpsc::Sender<ExecEvent>,
        cancel: CancellationToken,
        config: ExecutorConfig,
        central: Option<CentralOutput>,
        remote: Option<Arc<Remote>>,
    ) -> Executor {
        Executor {
            central,
            remote,
            closures: ClosurePool::new(config.closure_threads, events.clone()),
            events,
            tracker: TaskTracker::new(),
            cancel,
            kill_grace: config.kill_grace,
        }
    }

    /// Starts `task`; its end arrives later as [`ExecEvent::Finished`].
    pub fn start(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext) {
        if !step.hosts.is_empty() && !matches!(step.action, StepAction::Nothing) {
            return self.start_remote(task, step, ctx);
        }
        match &step.action {
            StepAction::Nothing => self.spawn(task, async { Ok(serde_json::Value::Null) }),
            StepAction::Async(f) => {
                let fut = with_async_task(ctx.clone(), f(ctx));
                self.spawn_guarded(task, async move { outcome_of(fut.await) })
            }
            StepAction::Sync(f) => self.closures.submit(Job {
                task,
                f: f.clone(),
                ctx,
                token: self.tracker.token(),
            }),
            StepAction::Command(command) => {
                let spec = CommandSpec {
                    command: command.clone(),
                    env: step.env.iter().cloned().chain(ctx.env_vars()).collect(),
                    cwd: step.cwd.clone(),
                    timeout: step.timeout,
                    kill_grace: self.kill_grace,
                };
                let events = self.events.clone();
                let cancel = self.cancel.clone();
                let started = move |pid| async move {
                    let _ = events.send(ExecEvent::Started { task, pid }).await;
                };
                let output = log_output(ctx, self.central.clone());
                self.spawn_guarded(task, async move {
                    run_command(&spec, cancel, started, output).await
                });
            }
        }
    }

    /// Hands a pinned step's task to a host's agent.
    fn start_remote(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext) {
        let Some(remote) = &self.remote else {
            let error = "the step is pinned to other hosts, but the run has no hosts";
            return self.spawn(task, std::future::ready(Err(error.to_string())));
        };
        let work = match &step.action {
            StepAction::Command(command) => RemoteWork::Command {
                command: command.clone(),
                env: step.env.iter().cloned().chain(ctx.env_vars()).collect(),
                cwd: step.cwd.as_ref().map(|p| p.display().to_string()),
                timeout: step.timeout,
            },
            _ => RemoteWork::Closure {
                step: ctx.step.to_string(),
            },
        };
        remote.start(task, &step.hosts, work, &ctx);
    }

    /// Runs a future that cannot panic (ours) and reports its end.
    fn spawn(
        &self,
        task: TaskId,
        fut: impl std::future::Future<Output = StepResult> + Send + 'static,
    ) {
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let outcome = outcome_of(fut.await);
            let _ = events.send(ExecEvent::Finished { task, outcome }).await;
        });
    }

    /// Runs a task's future in a task of its own and always reports its end: if the runner
    /// panics (say, a log write to a closed stderr), the task fails instead of the run
    /// waiting forever for an end that never comes.
    fn spawn_guarded(
        &self,
        task: TaskId,
        runner: impl std::future::Future<Output = Outcome> + Send + 'static,
    ) {
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let outcome = tokio::spawn(runner)
                .await
                .unwrap_or_else(|e| Outcome::failure(panic_text(e)));
            let _ = events.send(ExecEvent::Finished { task, outcome }).await;
        });
    }

    /// Stops every running task (commands get SIGTERM, then SIGKILL) and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

pub(super) fn outcome_of(result: StepResult) -> Outcome {
    match result {
        Ok(value) => Outcome {
            success: true,
            result: Some(value.to_string()),
            error: None,
            recorded: false,
        },
        Err(error) => Outcome::failure(error),
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => format!("step panicked: {}", panic_message(&*payload)),
        Err(e) => format!("step was cancelled: {e}"),
    }
}

/// Command output goes to the log, tagged with the task's step and sequence, and to the
/// run's central log when it has one (waiting for its writer: backpressure, not loss).
fn log_output(ctx: TaskContext, central: Option<CentralOutput>) -> OutputSink {
    Arc::new(move |stream: OutputStream, line: String| {
        tracing::info!(
            target: "eventor::output",
            step = %ctx.step,
            sequence = %ctx.sequence,
            stream = stream.as_str(),
            "{line}"
        );
        let record = central
            .as_ref()
            .map(|c| (c.sink.clone(), output_record(&ctx, &c.host, stream, line)));
        Box::pin(async move {
            if let Some((sink, record)) = record {
                sink.record(record).await;
            }
        })
    })
}

fn output_record(ctx: &TaskContext, host: &str, stream: OutputStream, text: String) -> LogRecord {
    let (level, stream) = match stream {
        OutputStream::Stdout => (LogLevel::Info, Stream::Stdout),
        OutputStream::Stderr => (LogLevel::Warn, Stream::Stderr),
    };
    LogRecord {
        time: eventor_store::now_micros(),
        level,
        host: host.to_string(),
        task: Some(TaskKey {
            run_id: ctx.run_id.to_string(),
            step: ctx.step.to_string(),
            sequence: ctx.sequence.to_string(),
            recovery: ctx.recovery,
            attempt: ctx.attempt,
        }),
        stream,
        text,
    }
}
