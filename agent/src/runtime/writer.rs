//! The one writer: it owns the channel to the prime, turns [`Outgoing`] items into frames,
//! sends a heartbeat when it has been quiet for an interval, and notices a broken or stalled
//! channel. After a loss it keeps draining its queue (discarding), so no task ever waits on
//! a prime that is gone.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventor_protocol::{
    FrameWriter, Heartbeat, LogLevel, LogRecord, Micros, OutputBatch, ProtocolError, Stream,
    TaskKey, ToCoordinator,
};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lines::LineBatch;
use crate::util::{error_chain, sleep_until};

/// Frames queued beyond this many bytes are flushed before more are taken from the channel.
const FLUSH_AT: usize = 64 * 1024;

/// What the agent's tasks hand the writer: the closed set of things that become frames.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A message sent as is (`TaskStarted`, `TaskFinished`, `Error`).
    Message(ToCoordinator),
    /// Lines of a command's output.
    Output(OutputLines),
    /// The agent's own logging worth the prime's attention.
    Diagnostic(Diagnostic),
}

/// Lines of a command's output, read together.
#[derive(Debug)]
pub(super) struct OutputLines {
    pub key: Arc<TaskKey>,
    pub stream: Stream,
    pub lines: LineBatch,
    pub time: Micros,
    /// Lines of this task dropped just before these (the writer was gone).
    pub dropped_before: u64,
}

/// A `Stream::Agent` record; the writer adds the host and the time.
#[derive(Debug)]
pub(super) struct Diagnostic {
    pub task: Option<TaskKey>,
    pub level: LogLevel,
    pub text: String,
}

/// How the writer behaves.
#[derive(Debug, Clone)]
pub(super) struct WriterConfig {
    /// The host's name in the cluster, put in every log record.
    pub host: String,
    /// Send a heartbeat after this long without a frame; `None`: never.
    pub heartbeat: Option<Duration>,
    /// A flush still not done after this long means the prime stopped reading.
    pub stall_after: Option<Duration>,
    /// The prime reads 1.2's [`ToCoordinator::Output`] (else each line is a `Log`) and
    /// [`ToCoordinator::TaskRan`] (else it is not sent).
    pub output_batches: bool,
}

/// Shared between the writer and the task loop: set once, when the channel is lost.
#[derive(Debug, Default)]
pub(super) struct WriteLoss {
    token: CancellationToken,
    reason: OnceLock<String>,
}

impl WriteLoss {
    fn lose(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Resolves once the channel is lost.
    pub(super) async fn lost(&self) {
        self.token.cancelled().await
    }

    /// Why the channel was lost.
    pub(super) fn reason(&self) -> String {
        self.reason.get().cloned().unwrap_or_default()
    }
}

/// What the writer did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct WriterReport {
    /// Frames written.
    pub frames: u64,
    /// Items discarded after the channel was lost.
    pub discarded: u64,
}

/// Runs until every sender of `items` is gone, then flushes and closes the channel.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    writer: FrameWriter<W>,
    mut items: mpsc::Receiver<Outgoing>,
    config: WriterConfig,
    loss: Arc<WriteLoss>,
) -> WriterReport {
    let mut state = Writer {
        writer,
        config,
        loss,
        beats: 0,
        last_write: Instant::now(),
        alive: true,
        report: WriterReport::default(),
    };
    loop {
        let item = tokio::select! {
            biased;
            item = items.recv() => item,
            _ = sleep_until(state.heartbeat_due()) => {
                state.heartbeat().await;
                continue;
            }
        };
        let Some(item) = item else { break };
        state.take(item);
        while state.writer.queued() < FLUSH_AT {
            match items.try_recv() {
                Ok(item) => state.take(item),
                Err(_) => break,
            }
        }
        state.flush().await;
    }
    state.finish().await;
    state.report
}

struct Writer<W> {
    writer: FrameWriter<W>,
    config: WriterConfig,
    loss: Arc<WriteLoss>,
    beats: u64,
    last_write: Instant,
    alive: bool,
    report: WriterReport,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn heartbeat_due(&self) -> Option<Instant> {
        let interval = self.config.heartbeat.filter(|_| self.alive)?;
        Some(self.last_write + interval)
    }

    async fn heartbeat(&mut self) {
        let beat = Heartbeat {
            seq: self.beats,
            sent_at: eventor_store::now_micros(),
        };
        self.beats += 1;
        self.queue(&ToCoordinator::Heartbeat(beat));
        self.flush().await;
    }

    /// Encodes one item into the write buffer (or discards it once the channel is lost).
    fn take(&mut self, item: Outgoing) {
        if !self.alive {
            self.report.discarded += 1;
            return;
        }
        match item {
            Outgoing::Message(ToCoordinator::TaskRan { .. }) if !self.config.output_batches => {}
            Outgoing::Message(message) => self.queue(&message),
            Outgoing::Output(lines) => self.queue_output(lines),
            Outgoing::Diagnostic(diagnostic) => {
                let record = self.record(diagnostic.task, diagnostic.level, diagnostic.text);
                self.queue(&ToCoordinator::Log(record));
            }
        }
    }

    fn queue_output(&mut self, output: OutputLines) {
        if output.dropped_before > 0 {
            let record = self.record(
                Some((*output.key).clone()),
                LogLevel::Warn,
                dropped_text(output.dropped_before),
            );
            self.queue(&ToCoordinator::Log(record));
        }
        if self.config.output_batches {
            let batch = OutputBatch {
                task: (*output.key).clone(),
                stream: output.stream,
                time: output.time,
                text: output.lines.into_text(),
            };
            return self.queue(&ToCoordinator::Output(batch));
        }
        // By the protocol's convention: stdout is Info, stderr Warn.
        let level = match output.stream {
            Stream::Stderr => LogLevel::Warn,
            Stream::Stdout | Stream::Agent => LogLevel::Info,
        };
        for line in output.lines.lines() {
            let record = LogRecord {
                time: output.time,
                level,
                host: self.config.host.clone(),
                task: Some((*output.key).clone()),
                stream: output.stream,
                text: line.to_string(),
            };
            self.queue(&ToCoordinator::Log(record));
        }
    }

    fn record(&self, task: Option<TaskKey>, level: LogLevel, text: String) -> LogRecord {
        LogRecord {
            time: eventor_store::now_micros(),
            level,
            host: self.config.host.clone(),
            task,
            stream: Stream::Agent,
            text,
        }
    }

    /// A message that does not encode (over the cap) is logged and skipped, except a
    /// `TaskFinished`, which goes out without its result so the prime still learns the end.
    fn queue(&mut self, message: &ToCoordinator) {
        match self.writer.queue_frame(message) {
            Ok(()) => self.report.frames += 1,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot send a message to the coordinator");
                if let Some(smaller) = without_result(message, &error) {
                    self.queue(&smaller);
                }
            }
        }
    }

    async fn flush(&mut self) {
        if !self.alive || self.writer.queued() == 0 {
            return;
        }
        let flushed = match self.config.stall_after {
            Some(limit) => tokio::time::timeout(limit, self.writer.flush())
                .await
                .unwrap_or_else(|_| Err(stalled(limit))),
            None => self.writer.flush().await,
        };
        match flushed {
            Ok(()) => self.last_write = Instant::now(),
            Err(error) => self.lose(error),
        }
    }

    fn lose(&mut self, error: ProtocolError) {
        let reason = error_chain(&error);
        tracing::warn!(%reason, "the channel to the coordinator is lost");
        self.alive = false;
        self.loss.lose(reason);
    }

    /// Flushes what is left and closes our end, so the prime reads a clean end of stream.
    async fn finish(&mut self) {
        self.flush().await;
        if !self.alive {
            return;
        }
        let limit = self.config.stall_after.unwrap_or(Duration::from_secs(10));
        if let Ok(Err(error)) = tokio::time::timeout(limit, self.writer.shutdown()).await {
            tracing::debug!(error = %error_chain(&error), "closing the channel failed");
        }
    }
}

fn stalled(limit: Duration) -> ProtocolError {
    ProtocolError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the coordinator read nothing for {}",
            humantime::format_duration(limit)
        ),
    ))
}

/// The same `TaskFinished` without its result, when the result is what made it too large.
fn without_result(message: &ToCoordinator, error: &ProtocolError) -> Option<ToCoordinator> {
    let ToCoordinator::TaskFinished {
        key,
        status,
        exit_code,
        result: Some(_),
        ..
    } = message
    else {
        return None;
    };
    Some(ToCoordinator::TaskFinished {
        key: key.clone(),
        status: *status,
        exit_code: *exit_code,
        result: None,
        error: Some(format!("the task's report could not be sent: {error}")),
    })
}

/// The text of the record that stands for `count` dropped lines.
pub(super) fn dropped_text(count: u64) -> String {
    let lines = if count == 1 { "line" } else { "lines" };
    format!("{count} output {lines} dropped: the channel to the coordinator was full")
}
