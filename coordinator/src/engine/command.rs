//! Running one shell command as a task: its own process group, the task's environment,
//! output line by line to a sink, and a timeout or cancel that stops the whole group
//! (SIGTERM, a grace period, then SIGKILL). Shared by the local executor and the agent.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::core::Outcome;

/// What to run and how.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub command: String,
    /// The whole extra environment: the step's own variables and the task's.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub timeout: Option<Duration>,
    /// How long the group gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
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

/// Where output lines go.
pub type OutputSink = Arc<dyn Fn(OutputStream, String) + Send + Sync>;

/// Why a command stopped before exiting by itself.
enum Interrupt {
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
) -> Outcome
where
    F: FnOnce(i64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut child = match build(spec).spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::failure(format!("cannot start `{}`: {e}", spec.command)),
    };
    let pid = child.id().map(i64::from).unwrap_or(-1);
    started(pid).await;
    let readers = forward_output(&mut child, output);
    let interrupted = tokio::select! {
        status = child.wait() => Ok(status),
        _ = sleep_or_forever(spec.timeout) => Err(Interrupt::TimedOut(spec.timeout.unwrap_or_default())),
        _ = cancel.cancelled() => Err(Interrupt::Cancelled),
    };
    let outcome = match interrupted {
        Ok(Ok(status)) => exit_outcome(status),
        Ok(Err(e)) => Outcome::failure(format!("cannot wait for `{}`: {e}", spec.command)),
        Err(why) => {
            stop_group(&mut child, pid, spec.kill_grace).await;
            Outcome::failure(match why {
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

fn build(spec: &CommandSpec) -> Command {
    let mut cmd = match simple_argv(&spec.command) {
        Some(argv) => {
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
        None => {
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c").arg(&spec.command);
            cmd
        }
    };
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    cmd
}

fn forward_output(
    child: &mut tokio::process::Child,
    output: OutputSink,
) -> impl std::future::Future<Output = ()> {
    let out = child
        .stdout
        .take()
        .map(|s| read_lines(s, output.clone(), OutputStream::Stdout));
    let err = child
        .stderr
        .take()
        .map(|s| read_lines(s, output, OutputStream::Stderr));
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
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        output(which, line);
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
        (None, Some(signal)) => Outcome::failure(format!("killed by signal {signal}")),
        (None, None) => Outcome::failure("ended without a status".to_string()),
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
