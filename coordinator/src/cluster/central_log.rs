//! The run's central log: every host's task output and agent logging in one file,
//! `<logdir>/<flow>/<run_id>.log`, and the reader behind `eventor-coord logs`.
//!
//! # Line format
//!
//! One record per line, five fields separated by single spaces; the last runs to the end
//! of the line:
//!
//! ```text
//! 2026-11-29T21:22:05.236001Z node2 s1[3] stdout text of the line…
//! TIME                        HOST  TASK  STREAM TEXT
//! ```
//!
//! - TIME: when the agent read the line, RFC 3339 in UTC with microseconds.
//! - HOST: the host's cluster name.
//! - TASK: `step[sequence]`, or `-` for the agent's own logging.
//! - STREAM: `stdout`, `stderr` or `agent`.
//! - TEXT: the line as the task wrote it; a carriage return or newline inside it is
//!   written as `\r` or `\n`, so a record never spans two lines.
//!
//! HOST, step and sequence never contain a space: whitespace, control characters, `\`,
//! `[` and `]` in them are written as `\u{hex}`, so `split(' ')` with a limit of five
//! always finds the fields ([`LogLine::parse`]). Lines that start with `-- ` are markers
//! from the log itself, not records:
//!
//! ```text
//! -- start of run <run_id> at <time>
//! -- <n> records dropped before <time>: the central log could not keep up
//! -- end of run <run_id>: <outcome>
//! ```
//!
//! A recovery of a run appends to the same file, so a file may hold several start/end
//! pairs; a run is over when the last marker is an end marker.
//!
//! # Writing
//!
//! Records go through one bounded channel to one writer task, which formats them into a
//! buffered file and flushes whenever the channel runs dry and at least every
//! [`CentralLogConfig::flush_every`] under load, so a follower sees lines promptly while
//! a flood still costs one write per buffer. [`LogSink::record`] waits for room
//! (backpressure); [`LogSink::try_record`] never waits: when the channel is full it drops
//! the record and counts it, and the writer reports the count in a marker line at its
//! next flush. Memory is bounded either way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventor_protocol::{LogRecord, Stream};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Records handled in one go before the writer yields back to the channel.
const BATCH: usize = 4096;
/// The file buffer; one write per this many bytes under a flood.
const FILE_BUFFER: usize = 64 * 1024;
/// How often a follower looks for new bytes (a user-facing tail, not the engine).
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// A follower emits a "line" this long even without its newline, bounding its memory.
const MAX_LINE: usize = 1024 * 1024;
const MARKER: &str = "-- ";
const END_MARKER: &str = "-- end of run ";
const START_MARKER: &str = "-- start of run ";

/// Channel size and flush period of a [`CentralLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentralLogConfig {
    /// Records queued ahead of the writer; beyond it `record` waits and `try_record` drops.
    pub capacity: usize,
    /// Longest a written line may sit in the buffer while records keep coming.
    pub flush_every: Duration,
}

impl Default for CentralLogConfig {
    fn default() -> Self {
        CentralLogConfig {
            capacity: 8192,
            flush_every: Duration::from_millis(100),
        }
    }
}

/// Why the central log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CentralLogError {
    #[error("creating the log {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the log {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the log {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing log lines to the output")]
    Output(#[source] std::io::Error),
    #[error("the log writer of {} ended unexpectedly", path.display())]
    WriterGone { path: PathBuf },
}

/// `<logdir>/<flow>/<run_id>.log`, with characters that could leave the directory (or
/// confuse a shell) in the flow name and run id replaced by `_`.
pub fn log_path(logdir: &Path, flow: &str, run_id: &str) -> PathBuf {
    logdir
        .join(path_component(flow))
        .join(format!("{}.log", path_component(run_id)))
}

fn path_component(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-+@=,".contains(c);
    let mut out: String = name
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

enum Entry {
    Record(LogRecord),
    Close {
        outcome: String,
        done: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle for writing records; hand one to every producer.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Entry>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Counts {
    /// Dropped since the writer last reported them.
    unreported: AtomicU64,
    /// Dropped in all.
    dropped: AtomicU64,
}

impl LogSink {
    /// Queues `record`, waiting while the channel is full. `false` once the log is closed.
    pub async fn record(&self, record: LogRecord) -> bool {
        self.tx.send(Entry::Record(record)).await.is_ok()
    }

    /// Queues `record` if there is room; otherwise drops and counts it (the log says how
    /// many later). `false` when the record was not queued.
    pub fn try_record(&self, record: LogRecord) -> bool {
        match self.tx.try_send(Entry::Record(record)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counts.unreported.fetch_add(1, Ordering::Relaxed);
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Records dropped by `try_record` so far.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }
}

/// The run's central log file and its writer task.
#[derive(Debug)]
pub struct CentralLog {
    path: PathBuf,
    sink: LogSink,
    writer: JoinHandle<Result<u64, CentralLogError>>,
}

/// What [`CentralLog::close`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTotals {
    /// Record lines written.
    pub written: u64,
    /// Records dropped because the channel was full.
    pub dropped: u64,
}

impl CentralLog {
    /// Opens (appending) `<logdir>/<flow>/<run_id>.log`, creating the directories, and
    /// starts the writer, which first writes a start marker. Needs a tokio runtime.
    pub async fn open(
        logdir: &Path,
        flow: &str,
        run_id: &str,
    ) -> Result<CentralLog, CentralLogError> {
        Self::open_with(logdir, flow, run_id, CentralLogConfig::default()).await
    }

    /// [`open`](Self::open) with another channel size or flush period.
    pub async fn open_with(
        logdir: &Path,
        flow: &str,
        run_id: &str,
        config: CentralLogConfig,
    ) -> Result<CentralLog, CentralLogError> {
        let path = log_path(logdir, flow, run_id);
        let file = create(&path).await?;
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let counts = Arc::new(Counts::default());
        let writer = Writer {
            out: BufWriter::with_capacity(FILE_BUFFER, file),
            path: path.clone(),
            run_id: run_id.to_string(),
            counts: counts.clone(),
            flush_every: config.flush_every,
            line: String::with_capacity(256),
            written: 0,
        };
        let writer = tokio::spawn(writer.run(rx));
        Ok(CentralLog {
            path,
            sink: LogSink { tx, counts },
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle for producers.
    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    /// See [`LogSink::record`].
    pub async fn record(&self, record: LogRecord) -> bool {
        self.sink.record(record).await
    }

    /// See [`LogSink::try_record`].
    pub fn try_record(&self, record: LogRecord) -> bool {
        self.sink.try_record(record)
    }

    /// Writes everything queued so far, the dropped count if any, and the end marker
    /// `-- end of run <run_id>: <outcome>`, flushes and syncs the file, and stops the
    /// writer. Records sent through other sinks afterwards are refused.
    pub async fn close(self, outcome: &str) -> Result<LogTotals, CentralLogError> {
        let (done, answered) = oneshot::channel();
        let close = Entry::Close {
            outcome: outcome.to_string(),
            done,
        };
        let sent = self.sink.tx.send(close).await.is_ok();
        let gone = || CentralLogError::WriterGone {
            path: self.path.clone(),
        };
        if sent {
            let _ = answered.await;
        }
        let written = self.writer.await.map_err(|_| gone())??;
        Ok(LogTotals {
            written,
            dropped: self.sink.dropped(),
        })
    }
}

async fn create(path: &Path) -> Result<tokio::fs::File, CentralLogError> {
    let err = |source| CentralLogError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(err)?;
    }
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
        .map_err(err)
}

/// The one task that owns the file.
struct Writer {
    out: BufWriter<tokio::fs::File>,
    path: PathBuf,
    run_id: String,
    counts: Arc<Counts>,
    flush_every: Duration,
    /// Reused for every line, so formatting allocates nothing in the steady state.
    line: String,
    written: u64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Entry>) -> Result<u64, CentralLogError> {
        let start = format!("{START_MARKER}{} at {}\n", self.run_id, now_text());
        self.write(start.as_bytes()).await?;
        self.flush().await?;
        let mut last_flush = Instant::now();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(entry) = next.take() {
                match entry {
                    Entry::Record(record) => self.record(&record).await?,
                    Entry::Close { outcome, done } => return self.close(&outcome, done).await,
                }
                handled += 1;
                if last_flush.elapsed() >= self.flush_every {
                    self.flush().await?;
                    last_flush = Instant::now();
                }
                if handled < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            // The channel ran dry (or a batch is done): let followers see it now.
            self.flush().await?;
            last_flush = Instant::now();
        }
        // Every sink and the log itself were dropped without a close.
        self.flush().await?;
        Ok(self.written)
    }

    async fn record(&mut self, record: &LogRecord) -> Result<(), CentralLogError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        format_record(&mut line, record);
        let result = self.write(line.as_bytes()).await;
        self.line = line;
        self.written += 1;
        result
    }

    async fn close(
        mut self,
        outcome: &str,
        done: oneshot::Sender<()>,
    ) -> Result<u64, CentralLogError> {
        let outcome = outcome.replace(['\n', '\r'], " ");
        let end = format!("{END_MARKER}{}: {outcome}\n", self.run_id);
        self.report_drops().await?;
        self.write(end.as_bytes()).await?;
        self.out.flush().await.map_err(|e| self.write_error(e))?;
        self.out
            .get_ref()
            .sync_data()
            .await
            .map_err(|e| self.write_error(e))?;
        let _ = done.send(());
        Ok(self.written)
    }

    /// Flushes the buffer, after noting any records dropped since the last flush.
    async fn flush(&mut self) -> Result<(), CentralLogError> {
        self.report_drops().await?;
        self.out.flush().await.map_err(|e| self.write_error(e))
    }

    async fn report_drops(&mut self) -> Result<(), CentralLogError> {
        let n = self.counts.unreported.swap(0, Ordering::Relaxed);
        if n == 0 {
            return Ok(());
        }
        let line = format!(
            "{MARKER}{n} records dropped before {}: the central log could not keep up\n",
            now_text()
        );
        self.write(line.as_bytes()).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CentralLogError> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| self.write_error(e))
    }

    fn write_error(&self, source: std::io::Error) -> CentralLogError {
        CentralLogError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Appends `record` as one line (with its newline) to `out`.
pub fn format_record(out: &mut String, record: &LogRecord) {
    use std::fmt::Write as _;
    let micros = u64::try_from(record.time).unwrap_or(0);
    let time = UNIX_EPOCH + Duration::from_micros(micros);
    let _ = write!(out, "{} ", humantime::format_rfc3339_micros(time));
    push_field(out, &record.host);
    out.push(' ');
    match &record.task {
        Some(key) => {
            push_field(out, &key.step);
            out.push('[');
            push_field(out, &key.sequence);
            out.push(']');
        }
        None => out.push('-'),
    }
    out.push(' ');
    out.push_str(stream_name(record.stream));
    out.push(' ');
    for c in record.text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\n');
}

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Agent => "agent",
    }
}

/// A name field: never empty, never a separator or a bracket.
fn push_field(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    if text.is_empty() {
        out.push('-');
        return;
    }
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || "\\[]".contains(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// One line of a central log, split into its fields (still escaped as written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLine<'a> {
    Record {
        time: &'a str,
        host: &'a str,
        /// `step[sequence]` or `-`.
        task: &'a str,
        stream: &'a str,
        text: &'a str,
    },
    /// A `-- …` line; the text after the dashes.
    Marker(&'a str),
    /// Anything else (a line cut short by a crash, a file that is not a central log).
    Other(&'a str),
}

impl<'a> LogLine<'a> {
    pub fn parse(line: &'a str) -> LogLine<'a> {
        if let Some(marker) = line.strip_prefix(MARKER) {
            return LogLine::Marker(marker);
        }
        let mut fields = line.splitn(5, ' ');
        let mut next = || fields.next();
        match (next(), next(), next(), next(), next()) {
            (Some(time), Some(host), Some(task), Some(stream), text) => LogLine::Record {
                time,
                host,
                task,
                stream,
                text: text.unwrap_or(""),
            },
            _ => LogLine::Other(line),
        }
    }

    /// The step name of a record's task field (before `[`), if it has one.
    pub fn step(&self) -> Option<&'a str> {
        match self {
            LogLine::Record { task, .. } if *task != "-" => task.split('[').next(),
            _ => None,
        }
    }
}

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
    mut out: impl Write,
) -> Result<PrintSummary, CentralLogError> {
    let mut tail = Tail::new(path, filter, follow);
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
    pending: Vec<u8>,
    printed: u64,
    ended: bool,
    outcome: Option<String>,
}

impl<'f> Tail<'f> {
    fn new(path: &Path, filter: &'f LogFilter, follow: bool) -> Tail<'f> {
        Tail {
            path: path.to_path_buf(),
            filter,
            follow,
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
            if self.ended {
                return Ok(());
            }
            out.flush().map_err(CentralLogError::Output)?;
            tokio::time::sleep(FOLLOW_POLL).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use eventor_protocol::{LogLevel, TaskKey};

    fn record(host: &str, task: Option<(&str, &str)>, stream: Stream, text: &str) -> LogRecord {
        LogRecord {
            time: 1_795_987_325_236_001,
            level: LogLevel::Info,
            host: host.into(),
            task: task.map(|(step, sequence)| TaskKey {
                run_id: "r".into(),
                step: step.into(),
                sequence: sequence.into(),
                recovery: 0,
                attempt: 1,
            }),
            stream,
            text: text.into(),
        }
    }

    fn line_of(r: &LogRecord) -> String {
        let mut s = String::new();
        format_record(&mut s, r);
        s
    }

    #[test]
    fn formats_the_documented_line() {
        let r = record(
            "node2",
            Some(("s1", "3")),
            Stream::Stdout,
            "text… with  spaces",
        );
        assert_eq!(
            line_of(&r),
            "2026-11-29T21:22:05.236001Z node2 s1[3] stdout text… with  spaces\n"
        );
        let r = record("node1", None, Stream::Agent, "a\nb\rc");
        assert_eq!(
            line_of(&r),
            "2026-11-29T21:22:05.236001Z node1 - agent a\\nb\\rc\n"
        );
    }

    #[test]
    fn odd_names_cannot_break_the_fields() {
        let r = record("", Some(("my step[x]", "a b")), Stream::Stderr, "");
        let line = line_of(&r);
        assert_eq!(
            line,
            "2026-11-29T21:22:05.236001Z - my\\u{20}step\\u{5b}x\\u{5d}[a\\u{20}b] stderr \n"
        );
        match LogLine::parse(line.trim_end_matches('\n')) {
            LogLine::Record {
                host,
                task,
                stream,
                text,
                ..
            } => {
                assert_eq!((host, stream, text), ("-", "stderr", ""));
                assert_eq!(task, "my\\u{20}step\\u{5b}x\\u{5d}[a\\u{20}b]");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn filters_by_host_and_step() {
        let by = |host: Option<&str>, step: Option<&str>| LogFilter {
            host: host.map(str::to_string),
            step: step.map(str::to_string),
        };
        let line = "2026-11-29T21:22:05.236001Z node2 s1[3] stdout hi";
        let parsed = LogLine::parse(line);
        assert!(by(None, None).matches(&parsed));
        assert!(by(Some("node2"), Some("s1")).matches(&parsed));
        assert!(by(None, Some("s1[3]")).matches(&parsed));
        assert!(!by(None, Some("s1[4]")).matches(&parsed));
        assert!(!by(None, Some("s")).matches(&parsed));
        assert!(!by(Some("node1"), None).matches(&parsed));
        let agent = LogLine::parse("2026-11-29T21:22:05.236001Z node2 - agent hi");
        assert!(!by(None, Some("s1")).matches(&agent));
        assert!(by(Some("x"), Some("y")).matches(&LogLine::parse("-- end of run r: success")));
    }

    #[test]
    fn path_components_stay_inside_the_log_dir() {
        assert_eq!(
            log_path(Path::new("/l"), "../etc", "a/b c"),
            PathBuf::from("/l/_.._etc/a_b_c.log")
        );
        assert_eq!(
            log_path(Path::new("l"), "", "r1"),
            PathBuf::from("l/_/r1.log")
        );
    }
}
