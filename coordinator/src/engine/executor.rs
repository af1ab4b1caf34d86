//! The executor: runs tasks (closures and commands) and reports back through a closed enum.
//!
//! The driver decides *what* starts; the executor only runs it and sends [`ExecEvent`]s on a
//! bounded channel. Commands run through the agent crate's runner, each in its own process
//! group; pinned steps go to the cluster through [`PinnedTasks`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use eventor_agent::closure_pool::{ClosurePool, Job};
use eventor_agent::command::{run_command, CommandSpec, LineBatch, OutputSink, OutputStream};
use eventor_agent::task::{join_error_text, with_async_task, StepAction, StepResult};
use eventor_agent::TaskContext;
use eventor_protocol::{OutputBatch, Stream, TaskKey, Work};

use super::core::{Outcome, TaskId};
use super::events::{ExecEvent, PinnedTasks};
use super::interrupt::Interrupt;
use crate::log::CentralOutput;

/// How the executor runs things (a config struct, not loose parameters).
#[derive(Debug, Clone, Copy)]
pub struct ExecutorConfig {
    /// Most threads running blocking closures at once.
    pub closure_threads: usize,
    /// How long a stopped command gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// How one step's tasks run: its action, and its settings only when it has any, so a plain
/// step costs its action and one word (a run keeps one per step, a million for a big flow).
#[derive(Debug, Clone, Default)]
pub struct StepRuntime {
    pub action: StepAction,
    pub settings: Option<Box<RunSettings>>,
}

/// Where and how a step's tasks run, beyond what they run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSettings {
    /// The hosts the step may run on; empty: this host.
    pub hosts: Vec<Arc<str>>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

/// The settings of a step given none.
static NO_SETTINGS: RunSettings = RunSettings {
    hosts: Vec::new(),
    env: Vec::new(),
    cwd: None,
    timeout: None,
};

impl StepRuntime {
    /// A step's runtime; default `settings` are not kept.
    pub fn new(action: StepAction, settings: RunSettings) -> StepRuntime {
        let settings = (settings != NO_SETTINGS).then(|| Box::new(settings));
        StepRuntime { action, settings }
    }

    pub fn settings(&self) -> &RunSettings {
        self.settings.as_deref().unwrap_or(&NO_SETTINGS)
    }

    /// The hosts the step may run on; empty: this host.
    pub fn hosts(&self) -> &[Arc<str>] {
        &self.settings().hosts
    }

    /// Whether its tasks run on this host's closure pool.
    pub fn runs_in_closure_pool(&self) -> bool {
        self.hosts().is_empty() && matches!(self.action, StepAction::Sync(_))
    }
}

/// Runs tasks: async work on the current tokio runtime, blocking closures on a bounded pool.
pub struct Executor {
    central: Option<CentralOutput>,
    pinned: Option<Arc<dyn PinnedTasks>>,
    events: mpsc::Sender<ExecEvent>,
    tracker: TaskTracker,
    closures: ClosurePool<TaskId, ExecEvent>,
    cancel: CancellationToken,
    kill_now: CancellationToken,
    kill_grace: Duration,
}

impl Executor {
    /// An executor whose commands are stopped when `interrupt` fires (and killed at once
    /// when it hurries), or at [`Executor::shutdown`].
    pub fn new(
        events: mpsc::Sender<ExecEvent>,
        interrupt: &Interrupt,
        config: ExecutorConfig,
        central: Option<CentralOutput>,
        pinned: Option<Arc<dyn PinnedTasks>>,
    ) -> Executor {
        Executor {
            central,
            pinned,
            closures: ClosurePool::new(config.closure_threads, events.clone(), ExecEvent::finished),
            events,
            tracker: TaskTracker::new(),
            cancel: interrupt.stop_token().child_token(),
            kill_now: interrupt.hurry_token().clone(),
            kill_grace: config.kill_grace,
        }
    }

    /// Starts `task`; its end arrives later as [`ExecEvent::Finished`].
    pub fn start(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext) {
        if !step.hosts().is_empty() && !matches!(step.action, StepAction::Nothing) {
            return self.start_remote(task, step, ctx);
        }
        match &step.action {
            StepAction::Nothing => self.spawn(task, async { Ok(serde_json::Value::Null) }),
            StepAction::Async(f) => {
                let fut = with_async_task(ctx.clone(), f(ctx));
                self.spawn_guarded(task, async move { Outcome::from(fut.await) })
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
                    env: task_env(step, &ctx),
                    cwd: step.settings().cwd.clone(),
                    timeout: step.settings().timeout,
                    kill_grace: self.kill_grace,
                    kill_now: Some(self.kill_now.clone()),
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

    /// Closures handed to the closure pool that have not returned yet.
    pub fn closures_pending(&self) -> usize {
        self.closures.pending()
    }

    /// Hands a pinned step's task to a host's agent.
    fn start_remote(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext) {
        let Some(pinned) = &self.pinned else {
            let error = "the step is pinned to other hosts, but the run has no hosts";
            return self.spawn(task, std::future::ready(Err(error.to_string())));
        };
        let work = match &step.action {
            StepAction::Command(command) => Work::Command {
                command: command.clone(),
                env: task_env(step, &ctx),
                cwd: step
                    .settings()
                    .cwd
                    .as_ref()
                    .map(|p| p.display().to_string()),
                timeout_ms: step.settings().timeout.map(|t| t.as_millis() as u64),
            },
            _ => Work::Closure {
                step: ctx.step.to_string(),
            },
        };
        pinned.start(task, step.hosts(), work, &ctx);
    }

    /// Runs a future that cannot panic (ours) and reports its end.
    fn spawn(
        &self,
        task: TaskId,
        fut: impl std::future::Future<Output = StepResult> + Send + 'static,
    ) {
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let outcome = Outcome::from(fut.await);
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
                .unwrap_or_else(|e| Outcome::failure(join_error_text(e)));
            let _ = events.send(ExecEvent::Finished { task, outcome }).await;
        });
    }

    /// Stops the tasks on other hosts (local commands stop through the interrupt's token).
    pub fn interrupt(&self) {
        if let Some(pinned) = &self.pinned {
            pinned.cancel_all();
        }
    }

    /// Lets go of the hosts: their agents' leases run (see [`PinnedTasks::let_go`]).
    pub fn let_go(&self, reason: &str) {
        if let Some(pinned) = &self.pinned {
            pinned.let_go(reason);
        }
    }

    /// Stops every running task (commands get SIGTERM, then SIGKILL) and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A command's environment: the step's own variables, then the task's (which win).
fn task_env(step: &StepRuntime, ctx: &TaskContext) -> Vec<(String, String)> {
    let env = step.settings().env.iter().cloned();
    env.chain(ctx.env_vars()).collect()
}

/// Command output goes to the log, tagged with the task's step and sequence, and to the
/// run's central log when it has one (waiting for its writer: backpressure, not loss).
fn log_output(ctx: TaskContext, central: Option<CentralOutput>) -> OutputSink {
    Arc::new(move |stream: OutputStream, lines: LineBatch| {
        let batch = output_batch(&ctx, stream, lines);
        let host = central.as_ref().map_or("", |c| &c.host);
        crate::log::trace_output(host, &batch);
        let sink = central.as_ref().map(|c| (c.sink.clone(), c.host.clone()));
        Box::pin(async move {
            if let Some((sink, host)) = sink {
                sink.output(host, batch).await;
            }
        })
    })
}

fn output_batch(ctx: &TaskContext, stream: OutputStream, lines: LineBatch) -> OutputBatch {
    let stream = match stream {
        OutputStream::Stdout => Stream::Stdout,
        OutputStream::Stderr => Stream::Stderr,
    };
    OutputBatch {
        task: TaskKey {
            run_id: ctx.run_id.to_string(),
            step: ctx.step.to_string(),
            sequence: ctx.sequence.to_string(),
            recovery: ctx.recovery,
            attempt: ctx.attempt,
        },
        stream,
        time: eventor_store::now_micros(),
        text: lines.into_text(),
    }
}
