//! The one writer: it owns the channel to the prime, turns [`Outgoing`] items into frames,
//! sends a heartbeat when it has been quiet for an interval, and notices a broken or stalled
//! channel. After a loss it keeps draining its queue, so no task ever waits on a prime that
//! is gone: an agent that may be re-adopted holds the frames for the next prime
//! ([`Held`]), any other discards them. A re-adopting prime gets `Adopted` first (the tasks
//! whose ends no prime has read), then the held frames in order, then the live ones.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eventor_protocol::{
    FrameWriter, Heartbeat, LogLevel, LogRecord, Micros, OutputBatch, ProtocolError, Stream,
    TaskEnd, TaskKey, ToCoordinator,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::held::{Held, HELD_BYTES};
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
    /// The task loop found the prime gone: write nothing more to it (hold, or discard).
    Hold,
    /// A new prime re-adopted the agent: write to it from now on.
    Resume(Resumed),
}

/// The channel to a prime that re-adopted the agent.
pub(super) struct Resumed {
    pub sink: FrameWriter<crate::stdio::Writer>,
    /// Set when this channel is lost in turn.
    pub loss: Arc<WriteLoss>,
}

impl std::fmt::Debug for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resumed")
    }
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
    /// Where held frames spill once the agent may be re-adopted; `None`: after a loss
    /// frames are discarded.
    pub spill: Option<PathBuf>,
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
pub(super) async fn run(
    writer: FrameWriter<crate::stdio::Writer>,
    mut items: mpsc::Receiver<Outgoing>,
    config: WriterConfig,
    loss: Arc<WriteLoss>,
) -> WriterReport {
    let mut state = Writer {
        frame_config: *writer.config(),
        sink: Some(writer),
        held: None,
        open: BTreeSet::new(),
        finished_held: Vec::new(),
        config,
        loss,
        beats: 0,
        last_write: Instant::now(),
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
        if let Outgoing::Resume(resumed) = item {
            state.resume(resumed).await;
            continue;
        }
        state.take(item);
        while state.queued() < FLUSH_AT {
            match items.try_recv() {
                Ok(Outgoing::Resume(resumed)) => {
                    state.flush().await;
                    state.resume(resumed).await;
                }
                Ok(item) => state.take(item),
                Err(_) => break,
            }
        }
        state.flush().await;
    }
    state.finish().await;
    state.report
}

struct Writer {
    /// The live channel; `None` once lost (until a prime re-adopts the agent).
    sink: Option<FrameWriter<crate::stdio::Writer>>,
    frame_config: eventor_protocol::FrameConfig,
    /// Frames kept for the next prime while there is no live channel.
    held: Option<Held>,
    /// Tasks started (or answered) whose end no prime has read: re-adoption reports them.
    open: BTreeSet<TaskKey>,
    /// Tasks whose end is among the held frames.
    finished_held: Vec<TaskKey>,
    config: WriterConfig,
    loss: Arc<WriteLoss>,
    beats: u64,
    last_write: Instant,
    report: WriterReport,
}

impl Writer {
    fn heartbeat_due(&self) -> Option<Instant> {
        let interval = self.config.heartbeat.filter(|_| self.sink.is_some())?;
        Some(self.last_write + interval)
    }

    fn queued(&self) -> usize {
        self.sink.as_ref().map_or(0, FrameWriter::queued)
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

    /// Encodes one item into the write buffer, or holds it, or discards it once the channel
    /// is lost and nobody can re-adopt the agent.
    fn take(&mut self, item: Outgoing) {
        if self.sink.is_none() && self.held.is_none() {
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
            Outgoing::Hold => self.hold(),
            // Handled by `run`, which awaits it.
            Outgoing::Resume(_) => {}
        }
    }

    /// No more writes to the channel: frames are held from now on, for an agent that may be
    /// re-adopted. Any other goes on writing until the channel fails (a prime that only
    /// closed its end may still read).
    fn hold(&mut self) {
        let Some(spill) = self.config.spill.clone() else {
            return;
        };
        if self.sink.take().is_some() {
            self.held = Some(Held::new(spill, self.frame_config));
        }
    }

    /// The channel failed: frames are held (or discarded) from now on.
    fn drop_sink(&mut self) {
        self.hold();
        self.sink = None;
    }

    /// A prime re-adopted the agent: `Adopted`, what was held, then live frames.
    async fn resume(&mut self, resumed: Resumed) {
        self.drop_sink();
        self.loss = resumed.loss;
        let tasks: Vec<TaskKey> = self.open.iter().cloned().collect();
        let held = self.held.take();
        let mut sink = resumed.sink;
        let dropped = held.as_ref().map_or(0, |h| h.dropped_lines);
        let mut first = vec![ToCoordinator::Adopted { tasks }];
        if dropped > 0 {
            let text = format!("{dropped} output lines dropped while no coordinator was attached (over {} MiB held)", HELD_BYTES >> 20);
            first.push(ToCoordinator::Log(self.record(None, LogLevel::Warn, text)));
        }
        let sent = write_held(&mut sink, &first, held).await;
        match sent {
            Ok(()) => {
                for key in self.finished_held.drain(..) {
                    self.open.remove(&key);
                }
                self.sink = Some(sink);
                self.last_write = Instant::now();
            }
            Err(error) => {
                self.sink = Some(sink);
                self.lose(error);
            }
        }
    }

    fn queue_output(&mut self, output: OutputLines) {
        if let Some(held) = self.held.as_mut().filter(|h| h.full()) {
            held.dropped_lines += output.lines.len() as u64;
            return;
        }
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
        self.note_open(message);
        let queued = match (&mut self.sink, &mut self.held) {
            (Some(sink), _) => sink.queue_frame(message),
            (None, Some(held)) => held.push(message),
            (None, None) => {
                self.report.discarded += 1;
                return;
            }
        };
        match queued {
            Ok(()) => self.report.frames += 1,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot send a message to the coordinator");
                if let Some(smaller) = without_result(message, &error) {
                    self.queue(&smaller);
                }
            }
        }
    }

    /// Keeps [`Self::open`]: what a re-adopting prime must be told it still waits for.
    fn note_open(&mut self, message: &ToCoordinator) {
        match message {
            ToCoordinator::TaskStarted { key, .. } => {
                self.open.insert(key.clone());
            }
            ToCoordinator::TaskFinished { key, .. } if self.sink.is_some() => {
                self.open.remove(key);
            }
            ToCoordinator::TaskFinished { key, .. } => {
                self.open.insert(key.clone());
                self.finished_held.push(key.clone());
            }
            _ => {}
        }
    }

    async fn flush(&mut self) {
        let Some(sink) = self.sink.as_mut().filter(|s| s.queued() > 0) else {
            return;
        };
        let flushed = match self.config.stall_after {
            Some(limit) => tokio::time::timeout(limit, sink.flush())
                .await
                .unwrap_or_else(|_| Err(stalled(limit))),
            None => sink.flush().await,
        };
        match flushed {
            Ok(()) => self.last_write = Instant::now(),
            Err(error) => self.lose(error),
        }
    }

    fn lose(&mut self, error: ProtocolError) {
        let reason = error_chain(&error);
        tracing::warn!(%reason, "the channel to the coordinator is lost");
        self.drop_sink();
        self.loss.lose(reason);
    }

    /// Flushes what is left and closes our end, so the prime reads a clean end of stream.
    async fn finish(&mut self) {
        self.flush().await;
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let limit = self.config.stall_after.unwrap_or(Duration::from_secs(10));
        if let Ok(Err(error)) = tokio::time::timeout(limit, sink.shutdown()).await {
            tracing::debug!(error = %error_chain(&error), "closing the channel failed");
        }
    }
}

/// Writes `first`, then the held frames as they were encoded, and flushes.
async fn write_held(
    sink: &mut FrameWriter<crate::stdio::Writer>,
    first: &[ToCoordinator],
    held: Option<Held>,
) -> Result<(), ProtocolError> {
    for message in first {
        sink.queue_frame(message)?;
    }
    sink.flush().await?;
    let Some(held) = held else {
        return Ok(());
    };
    let mut bytes = held.drain().map_err(ProtocolError::Io)?;
    let config = *sink.config();
    let placeholder: crate::stdio::Writer = Box::new(tokio::io::sink());
    let mut raw =
        std::mem::replace(sink, FrameWriter::with_config(placeholder, config)).into_inner();
    let written = async {
        while let Some(chunk) = bytes.next_chunk()? {
            raw.write_all(&chunk).await?;
        }
        raw.flush().await
    }
    .await;
    *sink = FrameWriter::with_config(raw, config);
    written.map_err(ProtocolError::Io)
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
    let ToCoordinator::TaskFinished { key, end } = message else {
        return None;
    };
    end.result.as_ref()?;
    Some(ToCoordinator::TaskFinished {
        key: key.clone(),
        end: TaskEnd {
            result: None,
            error: Some(format!("the task's report could not be sent: {error}")),
            ..end.clone()
        },
    })
}

/// The text of the record that stands for `count` dropped lines.
pub(super) fn dropped_text(count: u64) -> String {
    let lines = if count == 1 { "line" } else { "lines" };
    format!("{count} output {lines} dropped: the channel to the coordinator was full")
}
