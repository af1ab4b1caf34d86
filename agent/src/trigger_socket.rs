//! The way back from a task to its own run: a private Unix socket where a task's command
//! (through `eventor-coord trigger EVENT…`, with no flow, store or run id) fires events in
//! the run it belongs to, as a closure does with `TaskContext::trigger_event`.
//!
//! The socket sits in the private den (see [`crate::adopt`]: 0700, ours), so only the
//! run's user reaches it; its path is in the task's environment ([`TRIGGER_SOCKET_VAR`]),
//! which holds no secret. One connection carries one request: lines `EVENT\tSEQUENCE`, then
//! the end of the writing half; the answer is one line per request line, `ok` or
//! `error: WHY`, in order. An event is fired (handed to the run's driver, which fires each
//! (event, sequence) once) before its `ok` is written, and a task's command is still
//! running while it waits for that answer, so its run cannot end before acting on it.

use std::future::Future;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::task::TriggerSink;

pub use crate::task::TRIGGER_SOCKET_VAR;

/// A request is at most this long; longer ones are cut (and their last line refused).
const MAX_REQUEST: u64 = 1 << 20;

/// Where the socket's events go: the run's driver on the prime, or (on a host) the prime
/// over the protocol. Answers `Err` with why the run did not take the event.
pub trait Fire: Send + Sync + 'static {
    fn fire(&self, event: String, sequence: String) -> Answer;

    /// The run's status as one line of JSON (`status --json` inside a task, the original's
    /// `count_todos`); `Err` where it cannot be told.
    fn status(&self) -> StatusAnswer {
        let why = "the run's status is not available here".to_string();
        Box::pin(std::future::ready(Err(why)))
    }
}

/// The run's answer to one event, once it has it.
pub type Answer = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The run's status, or why not.
pub type StatusAnswer = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// The request line that asks for the run's status instead of firing an event.
const STATUS_REQUEST: &str = "?status";

/// The run's driver, on the prime: it takes the event at once.
#[derive(Debug)]
pub struct ToDriver(pub Arc<dyn TriggerSink>);

impl Fire for ToDriver {
    fn fire(&self, event: String, sequence: String) -> Answer {
        let taken = self.0.trigger(&event, Arc::from(sequence.as_str()));
        Box::pin(std::future::ready(taken.map_err(|e| e.to_string())))
    }
}

/// A run's trigger socket, served while this is alive; the file goes with it.
#[derive(Debug)]
pub struct TriggerSocket {
    path: PathBuf,
    serving: tokio::task::JoinHandle<()>,
}

impl TriggerSocket {
    /// Listens on the socket `name` in the private directory `dir` (see
    /// [`crate::adopt::private_den`]), handing each event to `sink`.
    pub async fn open(dir: &Path, name: &str, sink: Arc<dyn Fire>) -> io::Result<TriggerSocket> {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        let serving = tokio::spawn(serve(listener, sink));
        Ok(TriggerSocket { path, serving })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TriggerSocket {
    fn drop(&mut self) {
        self.serving.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: UnixListener, sink: Arc<dyn Fire>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(answer(stream, sink.clone()));
    }
}

/// Reads one request and answers each of its lines.
async fn answer(stream: UnixStream, sink: Arc<dyn Fire>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST)).lines();
    let mut answers = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == STATUS_REQUEST {
            let status = match sink.status().await {
                Ok(json) => json.replace('\n', " "),
                Err(why) => format!("error: {why}"),
            };
            answers.push_str(&status);
            answers.push('\n');
            continue;
        }
        let answer = match line.split_once('\t') {
            Some((event, sequence)) => {
                match sink.fire(event.to_string(), sequence.to_string()).await {
                    Ok(()) => "ok".to_string(),
                    Err(why) => format!("error: {why}"),
                }
            }
            None => "error: expected EVENT<tab>SEQUENCE".to_string(),
        };
        answers.push_str(&answer);
        answers.push('\n');
    }
    let _ = write.write_all(answers.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// The task's run's status through the socket at `path`: its JSON, or the run's reason why
/// not.
pub fn status(path: &Path) -> io::Result<Result<String, String>> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.write_all(format!("{STATUS_REQUEST}\n").as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    io::BufReader::new(stream).read_line(&mut answer)?;
    let answer = answer.trim_end().to_string();
    Ok(match answer.strip_prefix("error: ") {
        Some(why) => Err(why.to_string()),
        None if answer.is_empty() => Err("the run answered nothing (is it over?)".to_string()),
        None => Ok(answer),
    })
}

/// Fires `triggers` (event, sequence) through the socket at `path`: each one's answer, in
/// order (`Err` with the run's reason for one it refused).
pub fn fire(path: &Path, triggers: &[(String, String)]) -> io::Result<Vec<Result<(), String>>> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    let mut request = String::new();
    for (event, sequence) in triggers {
        request.push_str(&format!("{event}\t{sequence}\n"));
    }
    stream.write_all(request.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let answers: Vec<String> = io::BufReader::new(stream)
        .lines()
        .collect::<io::Result<_>>()?;
    if answers.len() != triggers.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the run answered only part of the request (is it over?)",
        ));
    }
    let each = answers
        .into_iter()
        .map(|answer| match answer.strip_prefix("error: ") {
            Some(why) => Err(why.to_string()),
            None => Ok(()),
        });
    Ok(each.collect())
}

/// How a command's request to its run went wrong.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// A word is not `EVENT[@SEQ|@FROM..TO]`.
    #[error("{word}: {why}")]
    BadWord { word: String, why: String },
    /// The run did not take these (an unknown event, a run that is over).
    #[error("the run refused {}", .0.join("; "))]
    Refused(Vec<String>),
    /// The socket could not be reached or answered only part of the request.
    #[error("cannot reach the task's run to trigger in it")]
    Unreachable(#[source] io::Error),
}

impl FireError {
    /// The exit status a command line gives it: 2 for the user's words, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            FireError::BadWord { .. } | FireError::Refused(_) => 2,
            FireError::Unreachable(_) => 1,
        }
    }
}

/// Fires the events `words` (each `EVENT[@SEQ|@FROM..TO]`) through the socket at `path`:
/// one line per event taken, for the command's output.
pub fn fire_words(path: &Path, words: &[String]) -> Result<Vec<String>, FireError> {
    let mut wanted = Vec::new();
    for word in words {
        let pairs = parse_spec(word, MAX_RANGE).map_err(|why| FireError::BadWord {
            word: word.clone(),
            why,
        })?;
        wanted.extend(pairs);
    }
    let answers = fire(path, &wanted).map_err(FireError::Unreachable)?;
    let mut taken = Vec::new();
    let mut refused = Vec::new();
    for ((event, sequence), answer) in wanted.iter().zip(answers) {
        match answer {
            Ok(()) => taken.push(format!("triggered {event}[{sequence}] in this task's run")),
            Err(why) => refused.push(format!("{event}[{sequence}]: {why}")),
        }
    }
    match refused.is_empty() {
        true => Ok(taken),
        false => Err(FireError::Refused(refused)),
    }
}

/// The most sequences one `EVENT@FROM..TO` names.
pub const MAX_RANGE: u64 = 100_000;

/// `EVENT`, `EVENT@SEQ` or `EVENT@FROM..TO` (at most `max_range` sequences) as (event,
/// sequence) pairs; sequence 1 when none is given.
pub fn parse_spec(text: &str, max_range: u64) -> Result<Vec<(String, String)>, String> {
    let (event, sequences) = match text.split_once('@') {
        None => (text, vec!["1".to_string()]),
        Some((event, spec)) => (event, parse_sequences(spec, max_range)?),
    };
    if event.is_empty() {
        return Err("the event name is empty".to_string());
    }
    Ok(sequences
        .into_iter()
        .map(|s| (event.to_string(), s))
        .collect())
}

fn parse_sequences(spec: &str, max_range: u64) -> Result<Vec<String>, String> {
    let Some((from, to)) = spec.split_once("..") else {
        if spec.is_empty() {
            return Err("the sequence is empty".to_string());
        }
        return Ok(vec![spec.to_string()]);
    };
    let number = |text: &str, what: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("range {what} {text:?} is not a number"))
    };
    let (from, to) = (number(from, "start")?, number(to, "end")?);
    if from > to {
        return Err(format!("range {from}..{to} is empty (start after end)"));
    }
    if to - from >= max_range {
        return Err(format!(
            "range {from}..{to} is too long (at most {max_range} sequences)"
        ));
    }
    Ok((from..=to).map(|n| n.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TriggerError;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Sink(Mutex<Vec<(String, String)>>);

    impl TriggerSink for Sink {
        fn trigger(&self, event: &str, sequence: Arc<str>) -> Result<(), TriggerError> {
            if event == "nosuch" {
                return Err(TriggerError::UnknownEvent(event.into()));
            }
            self.0
                .lock()
                .unwrap()
                .push((event.into(), sequence.to_string()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_request_fires_each_event_in_order_and_says_which_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let sink = Arc::new(Sink::default());
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(serve(listener, Arc::new(ToDriver(sink.clone()))));
        let wanted = [("next", "2"), ("nosuch", "1"), ("next", "3")]
            .map(|(e, s)| (e.to_string(), s.to_string()));
        let answers = tokio::task::spawn_blocking(move || fire(&path, &wanted))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            answers,
            vec![Ok(()), Err("unknown event `nosuch`".to_string()), Ok(())]
        );
        let fired = sink.0.lock().unwrap().clone();
        assert_eq!(
            fired,
            [("next".into(), "2".into()), ("next".into(), "3".into())]
        );
    }
}
