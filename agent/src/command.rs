//! Running one shell command as a task: under the program's keeper (see `supervisor.rs`)
//! when it has a supervisor, in a process group of its own, with the task's environment, output in
//! batches of lines to a sink, and a timeout or cancel that stops the whole group (SIGTERM,
//! a grace period, then SIGKILL). Shared by the local executor and the agent.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

pub use crate::lines::{LineBatch, MAX_LINE_BYTES};
use crate::task::TaskEnd;

/// What to run and how. Its `Debug` names the variables, never their values (some are
/// secrets from the prime's environment).
#[derive(Clone)]
pub struct CommandSpec {
    pub command: String,
    /// The whole extra environment: the step's own variables and the task's.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// How long the group gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Cancelled when a stopped command should get SIGKILL at once, skipping the grace.
    pub kill_now: Option<CancellationToken>,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("CommandSpec")
            .field("command", &self.command)
            .field("env", &names)
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("kill_grace", &self.kill_grace)
            .finish_non_exhaustive()
    }
}

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Where output goes, a batch of lines at a time. The reader awaits each batch's future
/// before it reads on, so a slow consumer slows the command down (its pipe fills) instead
/// of piling lines up.
pub type OutputSink =
    Arc<dyn Fn(OutputStream, LineBatch) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Why a command stopped before exiting by itself.
enum StoppedBy {
    TimedOut(Duration),
    Cancelled,
}

/// Runs `spec` to its end. `started` gets the process id once it runs; every output line
/// goes to `output`. Cancelling `cancel` stops the command's process group.
pub async fn run_command<F, Fut>(
    spec: &CommandSpec,
    cancel: CancellationToken,
    started: F,
    output: OutputSink,
) -> TaskEnd
where
    F: FnOnce(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut running = match spawn(spec).await {
        Ok(running) => running,
        Err(e) => {
            let error = format!("{}`{}`: {e}", eventor_protocol::CANNOT_START, spec.command);
            return TaskEnd::failure(error);
        }
    };
    let pid = running.pid();
    started(pid).await;
    // Output is read while the command runs: a pipe holds only 64 KiB, and a command
    // blocked on a full pipe never exits.
    let tail = Arc::new(std::sync::Mutex::new(StderrTail::default()));
    let readers = match running.output() {
        Ok((out, err)) => forward_output(out, err, output, tail.clone()),
        Err(e) => {
            stop_running(&mut running, pid, Stop::at_once()).await;
            let error = format!("cannot read the output of `{}`: {e}", spec.command);
            return TaskEnd::failure(error);
        }
    };
    tokio::pin!(readers);
    let deadline = sleep_or_forever(spec.timeout);
    tokio::pin!(deadline);
    let mut drained = false;
    let interrupted = loop {
        tokio::select! {
            status = running.wait() => break Ok(status),
            _ = &mut readers, if !drained => drained = true,
            _ = &mut deadline => break Err(StoppedBy::TimedOut(spec.timeout.unwrap_or_default())),
            _ = cancel.cancelled() => break Err(StoppedBy::Cancelled),
        }
    };
    let end = match interrupted {
        Ok(Ok(status)) => exit_end(status),
        Ok(Err(e)) => TaskEnd::failure(format!("cannot wait for `{}`: {e}", spec.command)),
        Err(why) => {
            let stop = Stop {
                grace: spec.kill_grace,
                kill_now: spec.kill_now.as_ref(),
            };
            stop_running(&mut running, pid, stop).await;
            match why {
                StoppedBy::TimedOut(after) => TaskEnd::timed_out(format!(
                    "timed out after {}",
                    humantime::format_duration(after)
                )),
                StoppedBy::Cancelled => TaskEnd::cancelled("cancelled"),
            }
        }
    };
    // A background grandchild may keep the pipes open; do not wait on it forever.
    if !drained {
        let _ = tokio::time::timeout(Duration::from_secs(1), readers).await;
    }
    let tail = std::mem::take(&mut *tail.lock().unwrap_or_else(|p| p.into_inner()));
    tail.explain(end)
}

/// A started command: under this program's keeper, or run directly by a program without a
/// supervisor.
enum Running {
    Kept(crate::supervisor::Kept),
    Direct(tokio::process::Child),
}

/// One of a command's output streams.
type Stream = Box<dyn AsyncRead + Unpin + Send>;

impl Running {
    /// The pid that leads the command's group.
    fn pid(&self) -> i64 {
        match self {
            Running::Kept(kept) => i64::from(kept.pid),
            Running::Direct(child) => child.id().map(i64::from).unwrap_or(-1),
        }
    }

    /// Its stdout and stderr, taken once.
    fn output(&mut self) -> std::io::Result<(Option<Stream>, Option<Stream>)> {
        use tokio::net::unix::pipe::Receiver;
        match self {
            Running::Kept(kept) => {
                let stream = |pipe: Option<std::io::PipeReader>| -> std::io::Result<_> {
                    let receiver = pipe
                        .map(|p| Receiver::from_owned_fd(p.into()))
                        .transpose()?;
                    Ok(receiver.map(|r| Box::new(r) as Stream))
                };
                Ok((stream(kept.stdout.take())?, stream(kept.stderr.take())?))
            }
            Running::Direct(child) => {
                let out = child.stdout.take().map(|s| Box::new(s) as Stream);
                let err = child.stderr.take().map(|s| Box::new(s) as Stream);
                Ok((out, err))
            }
        }
    }

    /// Its end: the command's own status, once nothing it left running is left (under the
    /// keeper) or once it exited (directly).
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Running::Kept(kept) => (&mut kept.ended)
                .await
                .map(std::process::ExitStatus::from_raw)
                .map_err(|_| std::io::Error::other("the command keeper is gone")),
            Running::Direct(child) => child.wait().await,
        }
    }
}

/// Starts the command under this program's keeper when it has a supervisor, else directly.
async fn spawn(spec: &CommandSpec) -> std::io::Result<Running> {
    let path = spec.env.iter().rev().find(|(k, _)| k == "PATH");
    let command = crate::shell::remembered(&spec.command, path.map(|(_, v)| v.into()));
    let kept =
        crate::supervisor::start_kept(&command, &spec.env, spec.cwd.as_deref(), spec.kill_grace);
    if let Some(kept) = kept.await {
        return Ok(Running::Kept(kept?));
    }
    let child = crate::shell::start_either(&command, |cmd| {
        let mut cmd = configure(cmd.into(), spec);
        // If the runner dies without stopping it (kill -9), the command goes too, though
        // not what it started. The signal follows the thread that forks: commands are
        // started from the runtime's worker threads, which live as long as the runtime.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it runs
        // in the child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        cmd.stdin(Stdio::null()).spawn()
    })?;
    Ok(Running::Direct(child))
}

/// The environment, directory, output pipes and process group of a command run directly.
fn configure(mut cmd: Command, spec: &CommandSpec) -> Command {
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd
}

fn forward_output(
    out: Option<Stream>,
    err: Option<Stream>,
    output: OutputSink,
    tail: Arc<std::sync::Mutex<StderrTail>>,
) -> impl std::future::Future<Output = ()> {
    let out = out.map(|s| read_lines(s, output.clone(), OutputStream::Stdout));
    let err = err.map(|s| read_stderr(s, output, tail));
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

async fn read_lines(stream: impl AsyncRead + Unpin, output: OutputSink, which: OutputStream) {
    crate::lines::read_batches(stream, |batch| output(which, batch)).await;
}

/// Stderr goes out as any output, and its last lines are kept for a failure's error.
async fn read_stderr(
    stream: impl AsyncRead + Unpin,
    output: OutputSink,
    tail: Arc<std::sync::Mutex<StderrTail>>,
) {
    crate::lines::read_batches(stream, |batch| {
        tail.lock().unwrap_or_else(|p| p.into_inner()).keep(&batch);
        output(OutputStream::Stderr, batch)
    })
    .await;
}

/// The last lines a command wrote on stderr, each clipped: a failed task's error carries
/// them, so `status` and the web page say why without the log.
#[derive(Default)]
struct StderrTail {
    lines: std::collections::VecDeque<String>,
}

impl StderrTail {
    /// Lines kept.
    const LINES: usize = 5;
    /// Bytes kept of each.
    const CLIP: usize = 200;

    fn keep(&mut self, batch: &LineBatch) {
        let skip = batch.len().saturating_sub(Self::LINES);
        for line in batch.lines().skip(skip) {
            if self.lines.len() == Self::LINES {
                self.lines.pop_front();
            }
            self.lines.push_back(clip(line.trim_end(), Self::CLIP));
        }
    }

    /// `end` with the kept lines after its error, when it failed with one.
    fn explain(self, mut end: TaskEnd) -> TaskEnd {
        let lines: Vec<String> = self.lines.into_iter().filter(|l| !l.is_empty()).collect();
        if let (false, Some(error), false) = (end.succeeded(), end.error.as_mut(), lines.is_empty())
        {
            error.push_str("; last stderr: ");
            error.push_str(&lines.join(" | "));
        }
        end
    }
}

/// `line` cut to at most `max` bytes, at a character boundary, marked when cut.
fn clip(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_string();
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// How a started command is stopped.
struct Stop<'a> {
    /// How long the group gets between SIGTERM and SIGKILL.
    grace: Duration,
    kill_now: Option<&'a CancellationToken>,
}

impl Stop<'_> {
    /// No grace at all.
    fn at_once() -> Stop<'static> {
        Stop {
            grace: Duration::ZERO,
            kill_now: None,
        }
    }
}

/// How long a keeper gets past the grace to end a command's tree before the runner kills
/// the command's group itself.
const KEEPER_LATE: Duration = Duration::from_secs(5);

async fn stop_running(running: &mut Running, pid: i64, stop: Stop<'_>) {
    match running {
        Running::Kept(kept) => stop_kept(kept, stop).await,
        Running::Direct(child) => stop_group(child, pid, stop).await,
    }
}

/// The keeper stops the command's group and what it started (SIGTERM, the grace, SIGKILL);
/// asked to hurry, it kills at once.
async fn stop_kept(kept: &mut crate::supervisor::Kept, stop: Stop<'_>) {
    kept.stop();
    let hurry = async {
        match stop.kill_now {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        waited = tokio::time::timeout(stop.grace + KEEPER_LATE, &mut kept.ended) => waited.is_ok(),
        _ = hurry => false,
    };
    if ended {
        return;
    }
    kept.kill_now();
    if tokio::time::timeout(KEEPER_LATE, &mut kept.ended)
        .await
        .is_err()
    {
        // The keeper does not answer: the group, at least, goes.
        let group = nix::unistd::Pid::from_raw(kept.pid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
}

/// SIGTERM to a directly run command's group, then SIGKILL if it outlives the grace period.
async fn stop_group(child: &mut tokio::process::Child, pid: i64, stop: Stop<'_>) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if pid <= 0 {
        return;
    }
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let hurry = async {
        match stop.kill_now {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let exited = tokio::select! {
        waited = tokio::time::timeout(stop.grace, child.wait()) => waited.is_ok(),
        _ = hurry => false,
    };
    if !exited {
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // A group whose leader exited may still hold members, some that ignored SIGTERM.
    let _ = killpg(group, Signal::SIGKILL);
}

fn exit_end(status: std::process::ExitStatus) -> TaskEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => TaskEnd::exited(code),
        (None, Some(signal)) => {
            TaskEnd::failure(format!("{}{signal}", eventor_protocol::KILLED_BY_SIGNAL))
        }
        (None, None) => TaskEnd::failure("ended without a status"),
    }
}
