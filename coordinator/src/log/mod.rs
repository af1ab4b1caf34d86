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
//! a flood still costs one write per buffer. [`LogSink::record`] and [`LogSink::output`]
//! (a batch of lines, written with its fields formatted once) wait for room (backpressure:
//! a slow disk slows the producers); batches also wait for a byte budget, so memory stays
//! bounded whatever their size, and nothing is dropped.
//!
//! # The console
//!
//! A run shows its tasks' output lines on a console as [`ConsoleOutput`] says: by default
//! as `eventor::output` tracing events ([`trace_output`]), or with
//! [`ConsoleOutput::Direct`] as the very lines the writer formats for the file, gathered
//! into 64 KiB chunks that a thread of their own writes to the [`ConsoleEcho`]'s writer: no
//! event per line. `eventor-coord run` echoes directly.

mod console;
mod format;
mod reader;
mod task_log;
mod writer;

use std::path::PathBuf;

pub use console::{ConsoleEcho, ConsoleOutput};
pub use format::{format_batch, format_record, log_path, LogLine};
pub use reader::{log_names, print_log, print_log_until, LogFilter, LogNames, PrintSummary};
pub use task_log::task_log;
pub(crate) use task_log::TaskLogs;
pub use writer::{CentralLog, CentralLogConfig, CentralOutput, LogSink, LogTotals};

/// The host name of the prime's own tasks in the console and the central log, as `status`,
/// `runs` and the web page name it.
pub const PRIME: &str = "prime";

/// Each line of `batch` as an event of the `eventor::output` target (the console's view of
/// task output; a subscriber that does not show it costs a check per batch).
pub fn trace_output(host: &str, batch: &eventor_protocol::OutputBatch) {
    if !tracing::enabled!(target: "eventor::output", tracing::Level::INFO) {
        return;
    }
    let (step, sequence) = (&batch.task.step, &batch.task.sequence);
    for line in batch.lines() {
        tracing::info!(target: "eventor::output", host = %host, step = %step,
            sequence = %sequence, stream = format::stream_name(batch.stream), "{line}");
    }
}

/// A batch's lines to the console the run's way: nothing when its log echoes them itself
/// (the writer does, as it writes them), else as events ([`trace_output`]).
pub(crate) fn console_output(
    central: Option<&CentralOutput>,
    host: &str,
    batch: &eventor_protocol::OutputBatch,
) {
    if !central.is_some_and(|c| c.sink.echoes()) {
        trace_output(host, batch);
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

#[cfg(test)]
mod tests {
    use super::*;
    use eventor_protocol::{LogLevel, TaskKey};
    use eventor_protocol::{LogRecord, Stream};
    use std::path::Path;

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
    fn a_batch_is_a_record_per_line() {
        let r = record("node2", Some(("s1", "3")), Stream::Stderr, "");
        // With a `\r` (escaped line by line) and without (written as it came).
        for lines in [
            &["one", "", "two\rthree"][..],
            &["one", "", "two", ""],
            &[""],
        ] {
            let batch = eventor_protocol::OutputBatch {
                task: r.task.clone().unwrap(),
                stream: r.stream,
                time: r.time,
                text: lines.join("\n"),
            };
            let mut text = String::new();
            let count = format_batch(&mut text, "node2", &batch);
            let one_by_one: String = lines
                .iter()
                .map(|t| {
                    line_of(&LogRecord {
                        text: t.to_string(),
                        ..r.clone()
                    })
                })
                .collect();
            assert_eq!((text, count), (one_by_one, lines.len() as u64));
        }
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
            PathBuf::from("/l/%2E.%2Fetc/a%2Fb%20c.log")
        );
        assert_eq!(
            log_path(Path::new("l"), "", "r1"),
            PathBuf::from("l/%/r1.log")
        );
        assert_ne!(
            log_path(Path::new("l"), "f", "a b"),
            log_path(Path::new("l"), "f", "a_b"),
            "two run ids, two logs"
        );
    }
}
