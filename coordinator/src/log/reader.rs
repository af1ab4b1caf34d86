//! Reading the central log: `eventor-coord logs [--follow]`, filtered by host and step.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use super::format::{LogLine, END_MARKER, FILE_BUFFER, START_MARKER};
use super::CentralLogError;

/// How often a follower looks for new bytes (a user-facing tail, not the engine).
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// A follower emits a "line" this long even without its newline, bounding its memory.
const MAX_LINE: usize = 1024 * 1024;

/// Which records `logs` prints; markers are always printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only this host.
    pub host: Option<String>,
    /// Only this step (`s1`), or this task (`s1[3]`).
    pub step: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, line: &LogLine<'_>) -> bool {
        let LogLine::Record { host, task, .. } = line else {
            return true;
        };
        let host_ok = self.host.as_deref().is_none_or(|want| want == *host);
        let step_ok = self.step.as_deref().is_none_or(|want| {
            if want.contains('[') {
                want == *task
            } else {
                line.step() == Some(want)
            }
        });
        host_ok && step_ok
    }
}

/// The hosts and steps a central log's records name, to check a filter against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogNames {
    pub hosts: std::collections::BTreeSet<String>,
    pub steps: std::collections::BTreeSet<String>,
}

/// The names of every record of the log at `path`; a log that is not there names none.
pub fn log_names(path: &Path) -> Result<LogNames, CentralLogError> {
    use std::io::BufRead;
    let mut names = LogNames::default();
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(source) => {
            return Err(CentralLogError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut reader = std::io::BufReader::with_capacity(FILE_BUFFER, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line);
        let read = read.map_err(|source| CentralLogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if read == 0 {
            return Ok(names);
        }
        let text = String::from_utf8_lossy(&line);
        let parsed = LogLine::parse(text.trim_end_matches('\n'));
        if let LogLine::Record { host, .. } = parsed {
            if !names.hosts.contains(host) {
                names.hosts.insert(host.to_string());
            }
        }
        if let Some(step) = parsed.step() {
            if !names.steps.contains(step) {
                names.steps.insert(step.to_string());
            }
        }
    }
}

/// How [`print_log`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintSummary {
    /// Lines printed (records and markers).
    pub printed: u64,
    /// The outcome in the last end marker, if the run had ended.
    pub outcome: Option<String>,
}

/// Prints the lines of the log at `path` that `filter` lets through to `out`.
///
/// Without `follow` it prints what is there and returns. With `follow` it then keeps
/// printing lines as they are appended, like `tail -f`, and returns once the run has
/// ended (the last marker is an end marker), already or later; a follower of a run that
/// never ends returns only when its future is dropped (Ctrl-C). It also waits for a log
/// that does not exist yet, and starts over if the file is truncated.
pub async fn print_log(
    path: &Path,
    filter: &LogFilter,
    follow: bool,
    out: impl Write,
) -> Result<PrintSummary, CentralLogError> {
    let gone = follow.then(CancellationToken::new);
    print_log_until(path, filter, gone, out).await
}

/// [`print_log`]; following (`gone` given) it also returns, after printing what is there,
/// once `gone` is cancelled: the run's coordinator went away without ending the log.
pub async fn print_log_until(
    path: &Path,
    filter: &LogFilter,
    gone: Option<CancellationToken>,
    mut out: impl Write,
) -> Result<PrintSummary, CentralLogError> {
    let mut tail = Tail::new(path, filter, gone);
    let result = tail.run(&mut out).await;
    out.flush().map_err(CentralLogError::Output)?;
    result?;
    Ok(PrintSummary {
        printed: tail.printed,
        outcome: tail.outcome.take().filter(|_| tail.ended),
    })
}

/// The reading state of [`print_log`].
struct Tail<'f> {
    path: PathBuf,
    filter: &'f LogFilter,
    follow: bool,
    /// Cancelled when the writer of a followed log is gone.
    gone: CancellationToken,
    pending: Vec<u8>,
    printed: u64,
    ended: bool,
    outcome: Option<String>,
}

impl<'f> Tail<'f> {
    fn new(path: &Path, filter: &'f LogFilter, gone: Option<CancellationToken>) -> Tail<'f> {
        Tail {
            path: path.to_path_buf(),
            filter,
            follow: gone.is_some(),
            gone: gone.unwrap_or_default(),
            pending: Vec::new(),
            printed: 0,
            ended: false,
            outcome: None,
        }
    }

    async fn run(&mut self, out: &mut impl Write) -> Result<(), CentralLogError> {
        let Some(mut file) = self.open().await? else {
            return Ok(());
        };
        let mut offset = 0u64;
        let mut chunk = vec![0u8; FILE_BUFFER];
        loop {
            let n = file
                .read(&mut chunk)
                .await
                .map_err(|e| self.read_error(e))?;
            if n > 0 {
                offset += n as u64;
                self.take(&chunk[..n], out)?;
                continue;
            }
            if !self.follow {
                return self.finish_partial(out);
            }
            if self.ended || self.gone.is_cancelled() {
                return Ok(());
            }
            out.flush().map_err(CentralLogError::Output)?;
            // Woken early when the writer is gone: one more read takes what it left.
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = self.gone.cancelled() => {}
            }
            if self.truncated(offset).await? {
                file.seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(|e| self.read_error(e))?;
                offset = 0;
                self.pending.clear();
            }
        }
    }

    /// The file, or (following) the file once it exists; `None` if it never will.
    async fn open(&self) -> Result<Option<tokio::fs::File>, CentralLogError> {
        loop {
            match tokio::fs::File::open(&self.path).await {
                Ok(file) => return Ok(Some(file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.follow => {
                    tokio::time::sleep(FOLLOW_POLL).await;
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
    }

    async fn truncated(&self, offset: u64) -> Result<bool, CentralLogError> {
        let len = tokio::fs::metadata(&self.path)
            .await
            .map_err(|e| self.read_error(e))?
            .len();
        Ok(len < offset)
    }

    /// Prints every whole line in `pending + bytes`, keeping the unfinished rest.
    fn take(&mut self, bytes: &[u8], out: &mut impl Write) -> Result<(), CentralLogError> {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + end]).into_owned();
            self.line(&line, out)?;
            start += end + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() >= MAX_LINE {
            let line = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            self.line(&line, out)?;
        }
        Ok(())
    }

    fn finish_partial(&mut self, out: &mut impl Write) -> Result<(), CentralLogError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.line(&line, out)
    }

    fn line(&mut self, text: &str, out: &mut impl Write) -> Result<(), CentralLogError> {
        let parsed = LogLine::parse(text);
        if let LogLine::Marker(_) = parsed {
            self.note_marker(text);
        }
        if !self.filter.matches(&parsed) {
            return Ok(());
        }
        writeln!(out, "{text}").map_err(CentralLogError::Output)?;
        self.printed += 1;
        Ok(())
    }

    fn note_marker(&mut self, text: &str) {
        if let Some(rest) = text.strip_prefix(END_MARKER) {
            self.ended = true;
            self.outcome = rest.split_once(": ").map(|(_, o)| o.to_string());
        } else if text.starts_with(START_MARKER) {
            self.ended = false;
            self.outcome = None;
        }
    }

    fn read_error(&self, source: std::io::Error) -> CentralLogError {
        CentralLogError::Read {
            path: self.path.clone(),
            source,
        }
    }
}
