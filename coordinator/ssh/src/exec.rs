//! A remote command in an exec channel: stdin as `AsyncWrite` (EOF on shutdown or drop),
//! stdout as `AsyncRead`, stderr as lines, and the exit status.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::error::SshError;

/// Stdout chunks buffered ahead of the reader (each at most one SSH packet, ≤ 32 KiB);
/// beyond that the channel, and then the connection, wait for the reader.
const STDOUT_CHUNKS: usize = 32;
/// Stderr lines buffered ahead of the reader; further lines are dropped and counted,
/// so an unread stderr can never stall stdout (the agent protocol).
const STDERR_LINES: usize = 1024;
/// Longer stderr "lines" are cut here, so a peer without newlines cannot grow memory.
const MAX_LINE: usize = 16 * 1024;

/// A command started by [`Session::exec`](super::Session::exec). Its parts can be moved
/// out and used from different tasks, as with `tokio::process::Child`.
#[derive(Debug)]
pub struct ExecChannel {
    pub stdin: ExecStdin,
    pub stdout: ExecStdout,
    pub stderr: ExecStderr,
    pub exit: ExitWaiter,
}

/// How the remote command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    Code(u32),
    /// Killed by a signal (`name` without the `SIG` prefix, as SSH reports it).
    Signal {
        name: String,
        core_dumped: bool,
        message: String,
    },
}

impl ExitStatus {
    pub fn code(&self) -> Option<u32> {
        match self {
            ExitStatus::Code(c) => Some(*c),
            ExitStatus::Signal { .. } => None,
        }
    }

    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }
}

/// The command's standard input. `shutdown()` sends EOF; so does dropping it.
pub struct ExecStdin {
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    /// Dropped unused after a shutdown; sent on drop otherwise, asking the pump for EOF.
    eof_on_drop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for ExecStdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecStdin").finish_non_exhaustive()
    }
}

impl AsyncWrite for ExecStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            // russh's writer rejects empty writes; for callers an empty write is a no-op.
            return Poll::Ready(Ok(0));
        }
        self.writer.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.eof_on_drop.is_none() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.writer.as_mut().poll_shutdown(cx))?;
        self.eof_on_drop = None;
        Poll::Ready(Ok(()))
    }
}

impl Drop for ExecStdin {
    fn drop(&mut self) {
        if let Some(tx) = self.eof_on_drop.take() {
            let _ = tx.send(());
        }
    }
}

/// The command's standard output; EOF when the command closes it.
#[derive(Debug)]
pub struct ExecStdout {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl AsyncRead for ExecStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match ready!(self.chunks.poll_recv(cx)) {
                Some(chunk) => self.current = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.current.len().min(buf.remaining());
        buf.put_slice(&self.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// The command's standard error as lines (lossy UTF-8, without the newline).
#[derive(Debug)]
pub struct ExecStderr {
    lines: mpsc::Receiver<String>,
    dropped: Arc<AtomicU64>,
}

impl ExecStderr {
    /// The next line, or `None` once stderr is closed and drained.
    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.recv().await
    }

    /// Lines lost because nobody read them in time.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Resolves to the exit status. Read stdout to its end (or drop it) before waiting:
/// unread output holds the command up, as a pipe would.
#[derive(Debug)]
pub struct ExitWaiter {
    rx: oneshot::Receiver<Result<ExitStatus, SshError>>,
    host: String,
    command: String,
}

impl ExitWaiter {
    pub async fn wait(self) -> Result<ExitStatus, SshError> {
        match self.rx.await {
            Ok(result) => result,
            Err(_) => Err(SshError::ConnectionLost {
                host: self.host,
                command: self.command,
            }),
        }
    }
}

/// Names for errors.
#[derive(Debug, Clone)]
struct Label {
    host: String,
    command: String,
}

/// Opens a session channel, runs `command`, and starts the task that routes the
/// channel's messages to the returned parts.
pub(crate) async fn start(
    handle: &russh::client::Handle<super::host_key::ClientHandler>,
    host: &str,
    command: &str,
) -> Result<ExecChannel, SshError> {
    let label = Label {
        host: host.to_string(),
        command: command.to_string(),
    };
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|source| SshError::Channel {
            host: host.to_string(),
            source: Box::new(source),
        })?;
    let (read_half, write_half) = channel.split();
    write_half
        .exec(true, command)
        .await
        .map_err(|source| SshError::Exec {
            host: label.host.clone(),
            command: label.command.clone(),
            source: Box::new(source),
        })?;
    let (parts, pump, started) = wire(label, write_half);
    tokio::spawn(pump.run(read_half));
    match started.await {
        Ok(Ok(())) => Ok(parts),
        Ok(Err(e)) => Err(e),
        // The pump always answers before it ends; this is for completeness.
        Err(_) => Err(SshError::ConnectionLost {
            host: host.to_string(),
            command: command.to_string(),
        }),
    }
}

/// The public parts and the pump that feeds them.
fn wire(
    label: Label,
    write_half: ChannelWriteHalf<Msg>,
) -> (ExecChannel, Pump, oneshot::Receiver<Result<(), SshError>>) {
    let (stdout_tx, stdout_rx) = mpsc::channel(STDOUT_CHUNKS);
    let (stderr_tx, stderr_rx) = mpsc::channel(STDERR_LINES);
    let (eof_tx, eof_rx) = oneshot::channel();
    let (exit_tx, exit_rx) = oneshot::channel();
    let (started_tx, started_rx) = oneshot::channel();
    let dropped = Arc::new(AtomicU64::new(0));
    let parts = ExecChannel {
        stdin: ExecStdin {
            writer: Box::pin(write_half.make_writer()),
            eof_on_drop: Some(eof_tx),
        },
        stdout: ExecStdout {
            chunks: stdout_rx,
            current: Bytes::new(),
        },
        stderr: ExecStderr {
            lines: stderr_rx,
            dropped: dropped.clone(),
        },
        exit: ExitWaiter {
            rx: exit_rx,
            host: label.host.clone(),
            command: label.command.clone(),
        },
    };
    let pump = Pump {
        label,
        write_half,
        stdout: Some(stdout_tx),
        stderr: Some(stderr_tx),
        stderr_buf: LineBuffer::default(),
        dropped,
        eof_rx: Some(eof_rx),
        started: Some(started_tx),
        exit: exit_tx,
        status: None,
    };
    (parts, pump, started_rx)
}

/// Routes one channel's messages until the server closes it.
struct Pump {
    label: Label,
    /// Kept for the EOF sent when [`ExecStdin`] is dropped without a shutdown.
    write_half: ChannelWriteHalf<Msg>,
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<String>>,
    stderr_buf: LineBuffer,
    dropped: Arc<AtomicU64>,
    eof_rx: Option<oneshot::Receiver<()>>,
    started: Option<oneshot::Sender<Result<(), SshError>>>,
    exit: oneshot::Sender<Result<ExitStatus, SshError>>,
    status: Option<ExitStatus>,
}

impl Pump {
    async fn run(mut self, mut read_half: ChannelReadHalf) {
        let mut closed = false;
        loop {
            tokio::select! {
                asked = wait_eof_request(&mut self.eof_rx) => {
                    self.eof_rx = None;
                    if asked {
                        let _ = self.write_half.eof().await;
                    }
                }
                msg = read_half.wait() => match msg {
                    Some(ChannelMsg::Close) => { closed = true; break; }
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
            }
        }
        self.finish(closed);
    }

    async fn handle(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::Success => self.reply_started(Ok(())),
            ChannelMsg::Failure => self.reply_started(Err(SshError::ExecRefused {
                host: self.label.host.clone(),
                command: self.label.command.clone(),
            })),
            ChannelMsg::Data { data } => self.stdout(data).await,
            ChannelMsg::ExtendedData { data, ext: 1 } => self.stderr_bytes(&data),
            ChannelMsg::Eof => self.close_outputs(),
            ChannelMsg::ExitStatus { exit_status } => {
                self.status = Some(ExitStatus::Code(exit_status))
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                ..
            } => {
                self.status = Some(ExitStatus::Signal {
                    name: signal_text(&signal_name),
                    core_dumped,
                    message: error_message,
                })
            }
            _ => {}
        }
    }

    fn reply_started(&mut self, result: Result<(), SshError>) {
        if let Some(tx) = self.started.take() {
            let _ = tx.send(result);
        }
    }

    async fn stdout(&mut self, data: Bytes) {
        let Some(tx) = &self.stdout else { return };
        // A reader that went away just means nobody wants the rest.
        if tx.send(data).await.is_err() {
            self.stdout = None;
        }
    }

    fn stderr_bytes(&mut self, data: &[u8]) {
        for line in self.stderr_buf.push(data) {
            self.stderr_line(line);
        }
    }

    fn stderr_line(&mut self, line: String) {
        let Some(tx) = &self.stderr else { return };
        match tx.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(host = %self.label.host, command = %self.label.command,
                        "stderr not read fast enough; dropping lines");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.stderr = None,
        }
    }

    fn close_outputs(&mut self) {
        if let Some(rest) = self.stderr_buf.finish() {
            self.stderr_line(rest);
        }
        self.stdout = None;
        self.stderr = None;
    }

    fn finish(mut self, closed: bool) {
        self.close_outputs();
        let label = self.label.clone();
        let lost = || SshError::ConnectionLost {
            host: label.host.clone(),
            command: label.command.clone(),
        };
        self.reply_started(Err(lost()));
        let result = match (self.status.take(), closed) {
            (Some(status), _) => Ok(status),
            (None, true) => Err(SshError::NoExitStatus {
                host: label.host.clone(),
                command: label.command.clone(),
            }),
            (None, false) => Err(lost()),
        };
        let _ = self.exit.send(result);
    }
}

/// `TERM`, `KILL`, … (russh keeps its own `name()` private).
fn signal_text(sig: &russh::Sig) -> String {
    match sig {
        russh::Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

/// `true` when [`ExecStdin`] was dropped without a shutdown; never resolves once
/// answered, so the select loop stops asking.
async fn wait_eof_request(rx: &mut Option<oneshot::Receiver<()>>) -> bool {
    match rx {
        Some(rx) => rx.await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Splits a byte stream into lines, cutting overlong ones.
#[derive(Debug, Default)]
struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in data {
            if b == b'\n' {
                lines.push(self.take());
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    lines.push(self.take());
                }
            }
        }
        lines
    }

    fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_join_and_cut() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"one\r\ntw"), vec!["one"]);
        assert_eq!(b.push(b"o\n\nthr"), vec!["two", ""]);
        assert_eq!(b.finish().as_deref(), Some("thr"));
        assert_eq!(b.finish(), None);
        let long = vec![b'x'; MAX_LINE + 5];
        let lines = b.push(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(b.finish().map(|s| s.len()), Some(5));
        assert_eq!(b.push(&[0xff, b'\n']), vec!["\u{fffd}"]);
    }
}
