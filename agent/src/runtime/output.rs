//! A command's output on its way to the writer: batches of lines, each line cut to a cap,
//! queued on the bounded outbound channel, waiting for room (so a slow prime slows the
//! command down through its pipe, and memory stays bounded). A batch that cannot be queued
//! at all (the writer is gone) is dropped and its lines counted, and the count travels with
//! the next batch that gets through (or is reported before `TaskFinished`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use eventor_protocol::{Stream, TaskKey};
use tokio::sync::mpsc;

use super::writer::{Outgoing, OutputLines};
use crate::command::{OutputSink, OutputStream};
use crate::lines::LineBatch;

/// One task's gate onto the outbound channel.
pub(super) struct OutputGate {
    out: mpsc::Sender<Outgoing>,
    key: Arc<TaskKey>,
    /// Lines dropped since the last one that got through.
    pending: AtomicU64,
    /// Every line this agent dropped, across tasks (for the summary).
    total: Arc<AtomicU64>,
    line_cap: usize,
}

impl OutputGate {
    pub(super) fn new(
        out: mpsc::Sender<Outgoing>,
        key: Arc<TaskKey>,
        total: Arc<AtomicU64>,
        line_cap: usize,
    ) -> OutputGate {
        OutputGate {
            out,
            key,
            pending: AtomicU64::new(0),
            total,
            line_cap,
        }
    }

    /// The sink `run_command` calls for every batch; the reader waits for each.
    pub(super) fn sink(self: &Arc<Self>) -> OutputSink {
        let gate = self.clone();
        Arc::new(move |stream, lines| {
            let gate = gate.clone();
            Box::pin(async move { gate.offer(stream, lines).await })
        })
    }

    async fn offer(&self, stream: OutputStream, lines: LineBatch) {
        let lines = clip_lines(lines, self.line_cap);
        let count = lines.len() as u64;
        let dropped_before = self.pending.swap(0, Ordering::AcqRel);
        let batch = OutputLines {
            key: self.key.clone(),
            stream: match stream {
                OutputStream::Stdout => Stream::Stdout,
                OutputStream::Stderr => Stream::Stderr,
            },
            lines,
            time: eventor_store::now_micros(),
            dropped_before,
        };
        if self.out.send(Outgoing::Output(batch)).await.is_err() {
            // Give back the count this batch was to carry, plus its own lines.
            self.pending
                .fetch_add(dropped_before + count, Ordering::AcqRel);
            self.total.fetch_add(count, Ordering::Relaxed);
        }
    }

    /// Lines dropped after the last one that got through; called once the command is over.
    pub(super) fn take_pending(&self) -> u64 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

/// The batch with each line cut to `max` bytes (the same batch when none is longer).
fn clip_lines(lines: LineBatch, max: usize) -> LineBatch {
    if lines.longest() <= max {
        return lines;
    }
    let mut clipped = LineBatch::default();
    for line in lines.lines() {
        let mut line = line.to_string();
        clip(&mut line, max);
        clipped.push(&line);
    }
    clipped
}

/// Cuts `text` to at most `max` bytes (on a character boundary), saying how much was cut.
pub(super) fn clip(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    // " … [", twenty digits and " bytes cut]".
    const MARKER_ROOM: usize = 40;
    let mut cut = max.saturating_sub(MARKER_ROOM);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let removed = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!(" … [{removed} bytes cut]"));
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        let mut short = "abc".to_string();
        clip(&mut short, 10);
        assert_eq!(short, "abc");

        let mut long = "é".repeat(100);
        clip(&mut long, 64);
        assert!(long.len() <= 64, "{}", long.len());
        assert!(long.ends_with("bytes cut]"), "{long}");
    }
}
