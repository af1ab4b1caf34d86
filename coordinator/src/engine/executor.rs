//! The executor: runs tasks (closures and commands) and reports back through a closed enum.
//!
//! The driver decides *what* starts; the executor only runs it and sends [`ExecEvent`]s on a
//! bounded channel. Commands run through the agent crate's runner, each in its own process
//! group; pinned steps go to the cluster through [`PinnedTasks`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use eventor_agent::closure_pool::{ClosurePool, Job};
use eventor_agent::command::{run_command, CommandSpec, LineBatch, OutputSink, OutputStream};
use eventor_agent::task::{catch_panic, end_of, with_async_task, StepAction, StepResult};
use eventor_agent::TaskContext;
use eventor_protocol::{FailureClass, OutputBatch, Stream, TaskKey, Work};

use super::core::{TaskEnd, TaskId};
use super::events::{ExecEvent, PinnedTasks};
use super::interrupt::Interrupt;
use super::prime_env::PrimeEnv;
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
    /// The step's `env:`, its values' `${NAME}` expanded from the run's parameters when the
    /// run opens.
    pub env: Vec<(String, String)>,
    /// The step's `env_from_prime`, read from the prime's environment.
    pub from_prime: PrimeEnv,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

/// The settings of a step given none.
static NO_SETTINGS: RunSettings = RunSettings {
    hosts: Vec::new(),
    env: Vec::new(),
    from_prime: PrimeEnv::new(),
    cwd: None,
    timeout: None,
};

/// What every task of a run gets in its environment beyond its step's own.
#[derive(Debug, Default)]
pub struct RunEnv {
    /// The run's parameters, by name.
    pub params: Vec<(String, String)>,
    /// The hosts file's `env_from_prime`: for every task on a host.
    pub hosts_from_prime: PrimeEnv,
}

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
    /// Stops this host's commands: a child of the interrupt's stop, replaced by a fresh
    /// one each time this host is cut off ([`Interrupt::cut_here`]).
    cancel: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
    kill_now: CancellationToken,
    kill_grace: Duration,
    /// Carries out the interrupt's cuts; ends at [`Executor::shutdown`], which waits for its
    /// end: it holds the cluster, which the run takes back whole only after.
    cuts: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Why this host was last cut off: the error of the commands the cut stopped.
    cut_why: Arc<Mutex<Option<Arc<str>>>>,
    /// The run's parameters and the hosts' variables from the prime.
    run_env: Arc<RunEnv>,
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
        run_env: Arc<RunEnv>,
    ) -> Executor {
        let stop = interrupt.stop_token().clone();
        let cancel = Arc::new(Mutex::new(stop.child_token()));
        let cut_why = Arc::new(Mutex::new(None));
        let cuts = tokio::spawn(carry_out_cuts(
            interrupt.watch_here(),
            Cut {
                cancel: cancel.clone(),
                why: cut_why.clone(),
                stop: stop.clone(),
            },
            pinned.clone(),
        ));
        Executor {
            central,
            pinned,
            closures: ClosurePool::new(config.closure_threads, events.clone(), ExecEvent::finished),
            events,
            tracker: TaskTracker::new(),
            cancel,
            stop,
            kill_now: interrupt.hurry_token().clone(),
            kill_grace: config.kill_grace,
            cuts: Mutex::new(Some(cuts)),
            cut_why,
            run_env,
        }
    }

    /// The token that stops a command started now.
    fn command_cancel(&self) -> CancellationToken {
        self.cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts `task`; its end arrives later as [`ExecEvent::Finished`]. `may_wait`: its
    /// step would retry a host failure (a pinned task then waits out a quarantine).
    pub fn start(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext, may_wait: bool) {
        if !step.hosts().is_empty() && !matches!(step.action, StepAction::Nothing) {
            return self.start_remote(task, step, ctx, may_wait);
        }
        match &step.action {
            StepAction::Nothing => self.spawn(task, async { Ok(serde_json::Value::Null) }),
            StepAction::Async(f) => {
                let fut = with_async_task(ctx.clone(), f(ctx));
                self.spawn_guarded(task, async move { end_of(fut.await) })
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
                    env: task_env(&self.run_env, step, &ctx),
                    cwd: step.settings().cwd.clone(),
                    timeout: step.settings().timeout,
                    kill_grace: self.kill_grace,
                    kill_now: Some(self.kill_now.clone()),
                };
                let events = self.events.clone();
                let cancel = self.command_cancel();
                let started = move |pid| async move {
                    let _ = events.send(ExecEvent::Started { task, pid }).await;
                };
                let output = log_output(ctx, self.central.clone());
                let (stop, why) = (self.stop.clone(), self.cut_why.clone());
                self.spawn_guarded(task, async move {
                    let end = run_command(&spec, cancel.clone(), started, output).await;
                    cut_end(end, &cancel, &stop, &why)
                });
            }
        }
    }

    /// Closures handed to the closure pool that have not returned yet.
    pub fn closures_pending(&self) -> usize {
        self.closures.pending()
    }

    /// Hands a pinned step's task to a host's agent.
    fn start_remote(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext, may_wait: bool) {
        let Some(pinned) = &self.pinned else {
            let error = "the step is pinned to other hosts, but the run has no hosts";
            return self.spawn(task, std::future::ready(Err(error.to_string())));
        };
        // The prime's trigger socket is of no use on another host.
        let ctx = TaskContext {
            trigger_socket: None,
            ..ctx
        };
        let work = match &step.action {
            StepAction::Command(command) => Work::Command {
                command: command.clone(),
                env: remote_env(&self.run_env, step, &ctx),
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
        pinned.start(task, step.hosts(), work, &ctx, may_wait);
    }

    /// Runs a future that cannot panic (ours) and reports its end.
    fn spawn(
        &self,
        task: TaskId,
        fut: impl std::future::Future<Output = StepResult> + Send + 'static,
    ) {
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let _ = events
                .send(ExecEvent::finished(task, end_of(fut.await)))
                .await;
        });
    }

    /// Runs a task's future and always reports its end: if the runner panics (say, a log
    /// write to a closed stderr), the task fails instead of the run waiting forever for an
    /// end that never comes.
    fn spawn_guarded(
        &self,
        task: TaskId,
        runner: impl std::future::Future<Output = TaskEnd> + Send + 'static,
    ) {
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let end = catch_panic(runner).await.unwrap_or_else(TaskEnd::failure);
            let _ = events.send(ExecEvent::finished(task, end)).await;
        });
    }

    /// Stops the tasks on other hosts (local commands stop through the interrupt's token).
    pub fn interrupt(&self) {
        if let Some(pinned) = &self.pinned {
            pinned.cancel_all();
        }
    }

    /// Stops every running task (commands get SIGTERM, then SIGKILL) and waits for them.
    pub async fn shutdown(&self) {
        let cuts = self.cuts.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(cuts) = cuts {
            // An aborted task's future is dropped only when the runtime gets to it: wait for
            // that, so its hold on the cluster is gone when this returns.
            cuts.abort();
            let _ = cuts.await;
        }
        self.command_cancel().cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Carries out the interrupt's cuts of this host: cut, this host's commands are stopped
/// (their token is cancelled and a fresh one made for later commands) and the hosts let go;
/// back, the hosts are brought back.
async fn carry_out_cuts(
    mut here: tokio::sync::watch::Receiver<Option<Arc<str>>>,
    cut: Cut,
    pinned: Option<Arc<dyn PinnedTasks>>,
) {
    while here.changed().await.is_ok() {
        let why = here.borrow_and_update().clone();
        match why {
            Some(why) => {
                *cut.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                let fresh = cut.stop.child_token();
                let mut current = cut.cancel.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::replace(&mut *current, fresh).cancel();
                drop(current);
                if let Some(pinned) = &pinned {
                    pinned.let_go(&why);
                }
            }
            None => {
                if let Some(pinned) = &pinned {
                    pinned.bring_back();
                }
            }
        }
    }
}

/// What a cut of this host works on.
struct Cut {
    /// The token of this host's commands, replaced at each cut.
    cancel: Arc<Mutex<CancellationToken>>,
    /// Why this host was last cut off.
    why: Arc<Mutex<Option<Arc<str>>>>,
    /// The run's stop: a fresh token is its child.
    stop: CancellationToken,
}

/// A command's end, its error saying the cut stopped it when it did (a stop of the run
/// says so itself, at the driver).
fn cut_end(
    mut end: TaskEnd,
    cancel: &CancellationToken,
    stop: &CancellationToken,
    why: &Mutex<Option<Arc<str>>>,
) -> TaskEnd {
    if !end.succeeded() && cancel.is_cancelled() && !stop.is_cancelled() {
        if let Some(why) = why.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            end.error = Some(format!("interrupted by {why}"));
            end = end.classed(FailureClass::Interrupted);
        }
    }
    end
}

/// A command's environment: the run's parameters, the step's own variables, those it takes
/// from the prime, then the task's (which win).
fn task_env(run: &RunEnv, step: &StepRuntime, ctx: &TaskContext) -> Vec<(String, String)> {
    let settings = step.settings();
    let params = run.params.iter().cloned();
    let env = params.chain(settings.env.iter().cloned());
    env.chain(settings.from_prime.vars())
        .chain(ctx.env_vars())
        .collect()
}

/// A host's command's environment: [`task_env`] with the hosts file's variables from the
/// prime before the task's own (they reach the agent inside the session's `Dispatch`).
fn remote_env(run: &RunEnv, step: &StepRuntime, ctx: &TaskContext) -> Vec<(String, String)> {
    let settings = step.settings();
    let params = run.params.iter().cloned();
    let env = params.chain(settings.env.iter().cloned());
    env.chain(run.hosts_from_prime.vars())
        .chain(settings.from_prime.vars())
        .chain(ctx.env_vars())
        .collect()
}

/// Command output goes to the log, tagged with the task's step and sequence, and to the
/// run's central log when it has one (waiting for its writer: backpressure, not loss).
fn log_output(ctx: TaskContext, central: Option<CentralOutput>) -> OutputSink {
    Arc::new(move |stream: OutputStream, lines: LineBatch| {
        let batch = output_batch(&ctx, stream, lines);
        let host = central.as_ref().map_or("", |c| &c.host);
        crate::log::console_output(central.as_ref(), host, &batch);
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
