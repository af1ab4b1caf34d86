//! The agent's channel as a link sees it: its boxed streams (the same over an SSH exec and
//! over the unit tests' in-memory pipes), where its stderr lines come from, and the lines
//! kept from before the handshake ended. Shared by the link's start and its loops.

use eventor_protocol::{FrameReader, FrameWriter};
use eventor_ssh::{ExecStderr, ExitStatus};
use tokio::io::{AsyncRead, AsyncWrite};
#[cfg(test)]
use tokio::sync::mpsc;
use tokio::sync::watch;

/// Agent stderr lines kept from before the handshake ends (the oldest go first).
const EARLY_LINES: usize = 256;

pub(super) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub(super) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
pub(super) type ExitWatch = watch::Receiver<Option<Result<ExitStatus, String>>>;

/// The agent's streams, as the link uses them: boxed, so the link's tasks are the same
/// over an SSH channel and over the in-memory pipes of the unit tests.
pub(super) struct Channel {
    pub(super) reader: FrameReader<BoxRead>,
    pub(super) writer: FrameWriter<BoxWrite>,
    pub(super) stderr: StderrSource,
    pub(super) exit: ExitWatch,
}

/// Where the agent's stderr lines come from.
pub(super) enum StderrSource {
    Ssh(ExecStderr),
    #[cfg(test)]
    Lines(mpsc::Receiver<String>),
}

impl StderrSource {
    pub(super) async fn next_line(&mut self) -> Option<String> {
        match self {
            StderrSource::Ssh(stderr) => stderr.next_line().await,
            #[cfg(test)]
            StderrSource::Lines(lines) => lines.recv().await,
        }
    }

    pub(super) fn dropped_lines(&self) -> u64 {
        match self {
            StderrSource::Ssh(stderr) => stderr.dropped_lines(),
            #[cfg(test)]
            StderrSource::Lines(_) => 0,
        }
    }
}

/// The agent's stderr lines from before the handshake ended: the last [`EARLY_LINES`].
#[derive(Debug, Default)]
pub(super) struct Early(pub(super) std::collections::VecDeque<String>);

impl Early {
    pub(super) fn push(&mut self, line: String) {
        if self.0.len() == EARLY_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }
}
