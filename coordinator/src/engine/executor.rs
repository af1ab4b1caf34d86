//! The executor: runs tasks (closures and commands) and reports back through a closed enum.
//!
//! The driver decides *what* starts; the executor only runs it and sends [`ExecEvent`]s on a
//! bounded channel. Commands run in their own process group so that a timeout or a cancel
//! stops the whole tree: SIGTERM to the group, a grace period, then SIGKILL.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::closure_pool::{panic_message, ClosurePool, Job};
use super::core::{Outcome, TaskId};
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

/// How one step's tasks run.
#[derive(Debug, Clone, Default)]
pub struct StepRuntime {
    pub action: StepAction,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

/// Runs tasks: async work on the current tokio runtime, blocking closures on a bounded pool.
pub struct Executor {
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
    ) -> Executor {
        Executor {
            closures: ClosurePool::new(config.closure_threads, events.clone()),
            events,
            tracker: TaskTracker::new(),
            cancel,
            kill_grace: config.kill_grace,
        }
    }

    /// Starts `task`; its end arrives later as [`ExecEvent::Finished`].
    pub fn start(&self, task: TaskId, step: &StepRuntime, ctx: TaskContext) {
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
                let run = CommandRun {
                    task,
                    command: command.clone(),
                    step: step.clone(),
                    ctx,
                    events: self.events.clone(),
                    cancel: self.cancel.clone(),
                    kill_grace: self.kill_grace,
                };
                self.spawn_guarded(task, run.run());
            }
        }
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
                .unwrap_or_else(|e| failure(panic_text(e)));
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
        },
        Err(error) => failure(error),
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => format!("step panicked: {}", panic_message(&*payload)),
        Err(e) => format!("step was cancelled: {e}"),
    }
}

/// One command task in flight.
struct CommandRun {
    task: TaskId,
    command: String,
    step: StepRuntime,
    ctx: TaskContext,
    events: mpsc::Sender<ExecEvent>,
    cancel: CancellationToken,
    kill_grace: Duration,
}

/// Why a command stopped before exiting by itself.
enum Interrupt {
    TimedOut(Duration),
    Cancelled,
}

impl CommandRun {
    async fn run(self) -> Outcome {
        let mut child = match self.build().spawn() {
            Ok(child) => child,
            Err(e) => return failure(format!("cannot start `{}`: {e}", self.command)),
        };
        let pid = child.id().map(i64::from).unwrap_or(-1);
        let _ = self
            .events
            .send(ExecEvent::Started {
                task: self.task,
                pid,
            })
            .await;
        let readers = self.forward_output(&mut child);
        let interrupted = tokio::select! {
            status = child.wait() => Ok(status),
            _ = sleep_or_forever(self.step.timeout) => Err(Interrupt::TimedOut(self.step.timeout.unwrap_or_default())),
            _ = self.cancel.cancelled() => Err(Interrupt::Cancelled),
        };
        let outcome = match interrupted {
            Ok(Ok(status)) => exit_outcome(status),
            Ok(Err(e)) => failure(format!("cannot wait for `{}`: {e}", self.command)),
            Err(why) => {
                stop_group(&mut child, pid, self.kill_grace).await;
                failure(match why {
                    Interrupt::TimedOut(after) => {
                        format!("timed out after {}", humantime::format_duration(after))
                    }
                    Interrupt::Cancelled => "cancelled".to_string(),
                })
            }
        };
        // A background grandchild may keep the pipes open; do not wait on it forever.
        let _ = tokio::time::timeout(Duration::from_secs(1), readers).await;
        outcome
    }

    fn build(&self) -> Command {
        let mut cmd = match simple_argv(&self.command) {
            Some(argv) => {
                let mut cmd = Command::new(argv[0]);
                cmd.args(&argv[1..]);
                cmd
            }
            None => {
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c").arg(&self.command);
                cmd
            }
        };
        cmd.envs(self.step.env.iter().map(|(k, v)| (k, v)))
            .envs(self.ctx.env_vars())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &self.step.cwd {
            cmd.current_dir(cwd);
        }
        cmd
    }

    fn forward_output(
        &self,
        child: &mut tokio::process::Child,
    ) -> impl std::future::Future<Output = ()> {
        let out = child
            .stdout
            .take()
            .map(|s| log_lines(s, self.ctx.clone(), "stdout"));
        let err = child
            .stderr
            .take()
            .map(|s| log_lines(s, self.ctx.clone(), "stderr"));
        async move {
            let out = async {
                if let Some(f) = out {
                    f.await
                }
            };
            let err = async {
                if let Some(f) = err {
                    f.await
                }
            };
            tokio::join!(out, err);
        }
    }
}

/// Splits a command that needs no shell (no quotes, globs, redirections, variables) into
/// words, so it runs without the cost of starting `/bin/sh` first.
fn simple_argv(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./,:+@%".contains(c);
    let words: Vec<&str> = command.split_ascii_whitespace().collect();
    let simple = !words.is_empty()
        && words.iter().all(|w| w.chars().all(plain))
        && command.chars().all(|c| plain(c) || c == ' ');
    simple.then_some(words)
}

async fn log_lines(stream: impl AsyncRead + Unpin, ctx: TaskContext, stream_name: &'static str) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(
            target: "eventor::output",
            step = %ctx.step,
            sequence = %ctx.sequence,
            stream = stream_name,
            "{line}"
        );
    }
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// SIGTERM to the command's process group, then SIGKILL if it outlives the grace period.
async fn stop_group(child: &mut tokio::process::Child, pid: i64, grace: Duration) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if pid <= 0 {
        return;
    }
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children of the group that ignored SIGTERM must not outlive the task either.
    let _ = killpg(group, Signal::SIGKILL);
}

fn exit_outcome(status: std::process::ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome {
            success: true,
            result: Some("0".to_string()),
            error: None,
        },
        (Some(code), _) => Outcome {
            success: false,
            result: Some(code.to_string()),
            error: Some(format!("exited with status {code}")),
        },
        (None, Some(signal)) => failure(format!("killed by signal {signal}")),
        (None, None) => failure("ended without a status".to_string()),
    }
}

fn failure(error: String) -> Outcome {
    Outcome {
        success: false,
        result: None,
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::simple_argv;

    #[test]
    fn only_plain_words_skip_the_shell() {
        assert_eq!(simple_argv("true"), Some(vec!["true"]));
        assert_eq!(
            simple_argv("/bin/echo a-b c"),
            Some(vec!["/bin/echo", "a-b", "c"])
        );
        for needs_shell in [
            "echo $HOME",
            "a > b",
            "a | b",
            "X=1 cmd",
            "echo 'x y'",
            "a; b",
            "",
        ] {
            assert_eq!(simple_argv(needs_shell), None, "{needs_shell}");
        }
    }
}
