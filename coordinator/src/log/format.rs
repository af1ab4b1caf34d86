//! The central log's line format: one record per line, markers, and where the file lives.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventor_protocol::{LogRecord, Micros, OutputBatch, Stream, TaskKey};

/// The file buffer (and a reader's chunk): one IO per this many bytes under a flood.
pub(super) const FILE_BUFFER: usize = 64 * 1024;
pub(super) const MARKER: &str = "-- ";
pub(super) const END_MARKER: &str = "-- end of run ";
pub(super) const START_MARKER: &str = "-- start of run ";

/// `<logdir>/<flow>/<run_id>.log`, with characters that could leave the directory (or
/// confuse a shell) in the flow name and run id replaced by `_`.
pub fn log_path(logdir: &Path, flow: &str, run_id: &str) -> PathBuf {
    logdir
        .join(path_component(flow))
        .join(format!("{}.log", path_component(run_id)))
}

/// `name` as one file name, escaped one to one (`%XX` per byte of anything else than
/// letters, digits and `._-+@=,`, and of a leading dot), so two run ids never share a log.
pub(super) fn path_component(name: &str) -> String {
    use std::fmt::Write as _;
    let plain = |i: usize, c: char| {
        (c.is_ascii_alphanumeric() || "._-+@=,".contains(c)) && !(i == 0 && c == '.')
    };
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.char_indices() {
        if plain(i, c) {
            out.push(c);
            continue;
        }
        let mut bytes = [0; 4];
        for byte in c.encode_utf8(&mut bytes).bytes() {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

pub(super) fn now_text() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

/// Appends `record` as one line (with its newline) to `out`.
pub fn format_record(out: &mut String, record: &LogRecord) {
    push_prefix(
        out,
        record.time,
        &record.host,
        record.task.as_ref(),
        record.stream,
    );
    push_text(out, &record.text);
}

/// Appends every line of `batch`, from `host`, one record per line; answers how many.
pub fn format_batch(out: &mut String, host: &str, batch: &OutputBatch) -> u64 {
    let mut prefix = String::with_capacity(96);
    push_prefix(
        &mut prefix,
        batch.time,
        host,
        Some(&batch.task),
        batch.stream,
    );
    // Lines never hold the `\n` between them, so one search of the batch for `\r` tells
    // whether any line needs escaping: this runs once per 64 KiB of a flood.
    let text = batch.text.as_str();
    let plain = memchr::memchr(b'\r', text.as_bytes()).is_none();
    let (mut start, mut lines) = (0, 0);
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain([text.len()]);
    for end in ends {
        out.push_str(&prefix);
        let line = &text[start..end];
        if plain {
            out.push_str(line);
            out.push('\n');
        } else {
            push_text(out, line);
        }
        start = end + 1;
        lines += 1;
    }
    lines
}

/// The fields before the text, each followed by its space.
fn push_prefix(out: &mut String, time: Micros, host: &str, task: Option<&TaskKey>, stream: Stream) {
    use std::fmt::Write as _;
    let micros = u64::try_from(time).unwrap_or(0);
    let time = UNIX_EPOCH + Duration::from_micros(micros);
    let _ = write!(out, "{} ", humantime::format_rfc3339_micros(time));
    push_field(out, host);
    out.push(' ');
    match task {
        Some(key) => {
            push_field(out, &key.step);
            out.push('[');
            push_field(out, &key.sequence);
            out.push(']');
        }
        None => out.push('-'),
    }
    out.push(' ');
    out.push_str(stream_name(stream));
    out.push(' ');
}

/// The text with `\r` and `\n` escaped, and the line end.
fn push_text(out: &mut String, text: &str) {
    // Byte searches (word at a time), not a char pattern: this runs once per line of a flood.
    let bytes = text.as_bytes();
    if !bytes.contains(&b'\n') && !bytes.contains(&b'\r') {
        out.push_str(text);
    } else {
        for c in text.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

pub(super) fn stream_name(stream: Stream) -> &'static str {
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
