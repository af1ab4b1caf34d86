//! Writing the central log: one bounded channel, one writer task, buffered and flushed
//! whenever the channel runs dry; the same formatted lines echoed on a console when asked
//! ([`super::console`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventor_protocol::{LogRecord, OutputBatch};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::console::{Console, ConsoleEcho};
use super::format::{
    format_batch, format_record, log_path, now_text, END_MARKER, FILE_BUFFER, START_MARKER,
};
use super::CentralLogError;

/// Records handled in one go before the writer yields back to the channel.
const BATCH: usize = 4096;
/// Bytes of batched output queued ahead of the writer, in units of [`BUDGET_UNIT`].
const BUDGET_UNITS: u32 = 8192;
const BUDGET_UNIT: usize = 1024;

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

enum Entry {
    /// A record, echoed on the console (when the log echoes) if `echo`.
    Record { record: LogRecord, echo: bool },
    /// Lines from one host, holding their share of the byte budget until written.
    Output {
        host: Arc<str>,
        batch: OutputBatch,
        _budget: OwnedSemaphorePermit,
    },
    Close {
        outcome: String,
        done: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle for writing records; hand one to every producer.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Entry>,
    budget: Arc<Semaphore>,
    echoes: bool,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").finish_non_exhaustive()
    }
}

impl LogSink {
    /// Queues `record`, waiting while the channel is full. `false` once the log is closed.
    pub async fn record(&self, record: LogRecord) -> bool {
        let echo = false;
        self.tx.send(Entry::Record { record, echo }).await.is_ok()
    }

    /// [`record`](Self::record) of a task's record that the console shows as it shows the
    /// task's output (a host's closure step's logging): echoed when the log echoes.
    pub async fn task_record(&self, record: LogRecord) -> bool {
        let echo = true;
        self.tx.send(Entry::Record { record, echo }).await.is_ok()
    }

    /// Whether this log echoes task output on the console itself
    /// ([`ConsoleOutput::Direct`](super::ConsoleOutput::Direct)): producers then send no
    /// `eventor::output` events.
    pub fn echoes(&self) -> bool {
        self.echoes
    }

    /// Queues `record` from a thread that is not the runtime's (a closure step's), waiting
    /// while the channel is full; on a runtime thread, where it must not block, only when
    /// there is room. `false` when it was not queued.
    pub fn record_blocking(&self, record: LogRecord) -> bool {
        let entry = Entry::Record {
            record,
            echo: false,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            return self.tx.try_send(entry).is_ok();
        }
        self.tx.blocking_send(entry).is_ok()
    }

    /// Queues the lines of `batch` from `host`, waiting for room and for their bytes'
    /// share of the budget. `false` once the log is closed.
    pub async fn output(&self, host: Arc<str>, batch: OutputBatch) -> bool {
        let units = (batch.text.len() / BUDGET_UNIT + 1).min(BUDGET_UNITS as usize) as u32;
        let Ok(budget) = self.budget.clone().acquire_many_owned(units).await else {
            return false;
        };
        let entry = Entry::Output {
            host,
            batch,
            _budget: budget,
        };
        self.tx.send(entry).await.is_ok()
    }
}

/// The run's central log file and its writer task (or only a direct console echo:
/// [`CentralLog::open_to`] without a folder).
#[derive(Debug)]
pub struct CentralLog {
    path: Option<PathBuf>,
    sink: LogSink,
    writer: JoinHandle<Result<u64, CentralLogError>>,
}

/// What [`CentralLog::close`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTotals {
    /// Record lines written.
    pub written: u64,
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
        Ok(Self::start(Some((path, file)), run_id, config, None))
    }

    /// The run's log as a run's options ask for it: the file
    /// `<logdir>/<flow>/<run_id>.log` when `logdir` is given, and the direct console echo
    /// of task output when `echo` is (formatted once for both); `None` when neither.
    pub async fn open_to(
        logdir: Option<&Path>,
        flow: &str,
        run_id: &str,
        config: CentralLogConfig,
        echo: Option<&ConsoleEcho>,
    ) -> Result<Option<CentralLog>, CentralLogError> {
        let file = match logdir {
            Some(logdir) => {
                let path = log_path(logdir, flow, run_id);
                let file = create(&path).await?;
                Some((path, file))
            }
            None if echo.is_none() => return Ok(None),
            None => None,
        };
        Ok(Some(Self::start(file, run_id, config, echo)))
    }

    /// Starts the writer (and the console's thread).
    fn start(
        file: Option<(PathBuf, tokio::fs::File)>,
        run_id: &str,
        config: CentralLogConfig,
        echo: Option<&ConsoleEcho>,
    ) -> CentralLog {
        let (path, out) = match file {
            Some((path, file)) => (
                Some(path),
                Some(BufWriter::with_capacity(FILE_BUFFER, file)),
            ),
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let writer = Writer {
            out,
            console: echo.map(Console::start),
            path: path.clone().unwrap_or_default(),
            run_id: run_id.to_string(),
            flush_every: config.flush_every,
            line: String::with_capacity(256),
            written: 0,
        };
        let writer = tokio::spawn(writer.run(rx));
        CentralLog {
            path,
            sink: LogSink {
                tx,
                budget: Arc::new(Semaphore::new(BUDGET_UNITS as usize)),
                echoes: echo.is_some(),
            },
            writer,
        }
    }

    /// The file; an empty path for a log that only echoes on the console.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The file; `None` for a log that only echoes on the console.
    pub fn file(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A handle for producers.
    pub fn sink(&self) -> LogSink {
        self.sink.clone()
    }

    /// See [`LogSink::record`].
    pub async fn record(&self, record: LogRecord) -> bool {
        self.sink.record(record).await
    }

    /// Writes everything queued so far and stops the writer without an end marker: the run
    /// goes on, and opens its log again (a recovery's re-adopted output came first). Every
    /// other sink must be gone.
    pub async fn release(self) -> Result<LogTotals, CentralLogError> {
        let gone = CentralLogError::WriterGone {
            path: self.path.clone().unwrap_or_default(),
        };
        drop(self.sink);
        let written = self.writer.await.map_err(|_| gone)??;
        Ok(LogTotals { written })
    }

    /// Writes everything queued so far and the end marker
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
            path: self.path.clone().unwrap_or_default(),
        };
        if sent {
            let _ = answered.await;
        }
        let written = self.writer.await.map_err(|_| gone())??;
        Ok(LogTotals { written })
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

/// The one task that owns the file (if any) and feeds the console echo (if any).
struct Writer {
    out: Option<BufWriter<tokio::fs::File>>,
    console: Option<Console>,
    /// The file's (empty without one).
    path: PathBuf,
    run_id: String,
    flush_every: Duration,
    /// Reused for every line, so formatting allocates nothing in the steady state.
    line: String,
    written: u64,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Entry>) -> Result<u64, CentralLogError> {
        if self.out.is_some() {
            let start = format!("{START_MARKER}{} at {}\n", self.run_id, now_text());
            self.write(start.as_bytes()).await?;
            self.flush().await?;
        }
        let mut last_flush = Instant::now();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            let mut handled = 0;
            while let Some(entry) = next.take() {
                match entry {
                    Entry::Record { record, echo } => self.record(&record, echo).await?,
                    Entry::Output { host, batch, .. } => self.output(&host, &batch).await?,
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
        if let Some(console) = self.console.take() {
            console.finish().await;
        }
        Ok(self.written)
    }

    async fn record(&mut self, record: &LogRecord, echo: bool) -> Result<(), CentralLogError> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        format_record(&mut line, record);
        let result = self.write(line.as_bytes()).await;
        if let Some(console) = self.console.as_mut().filter(|_| echo) {
            console.push(line.as_bytes()).await;
        }
        self.line = line;
        self.written += 1;
        result
    }

    async fn output(&mut self, host: &str, batch: &OutputBatch) -> Result<(), CentralLogError> {
        let mut text = std::mem::take(&mut self.line);
        text.clear();
        let lines = format_batch(&mut text, host, batch);
        let result = self.write(text.as_bytes()).await;
        if let Some(console) = &mut self.console {
            console.push(text.as_bytes()).await;
        }
        self.line = text;
        self.written += lines;
        result
    }

    async fn close(
        mut self,
        outcome: &str,
        done: oneshot::Sender<()>,
    ) -> Result<u64, CentralLogError> {
        if let Some(console) = self.console.take() {
            console.finish().await;
        }
        if self.out.is_some() {
            let outcome = outcome.replace(['\n', '\r'], " ");
            let end = format!("{END_MARKER}{}: {outcome}\n", self.run_id);
            self.write(end.as_bytes()).await?;
        }
        if let Some(out) = &mut self.out {
            let flushed = out.flush().await;
            let synced = match flushed {
                Ok(()) => out.get_ref().sync_data().await,
                Err(e) => Err(e),
            };
            synced.map_err(|e| self.write_error(e))?;
        }
        let _ = done.send(());
        Ok(self.written)
    }

    /// Flushes the buffer, and hands the console what was gathered for it.
    async fn flush(&mut self) -> Result<(), CentralLogError> {
        if let Some(console) = &mut self.console {
            console.send().await;
        }
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        out.flush().await.map_err(|e| self.write_error(e))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), CentralLogError> {
        let Some(out) = &mut self.out else {
            return Ok(());
        };
        out.write_all(bytes).await.map_err(|e| self.write_error(e))
    }

    fn write_error(&self, source: std::io::Error) -> CentralLogError {
        CentralLogError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// Where a task's output goes besides the console: the run's central log, as records of
/// this host.
#[derive(Clone)]
pub struct CentralOutput {
    pub sink: LogSink,
    pub host: Arc<str>,
}
