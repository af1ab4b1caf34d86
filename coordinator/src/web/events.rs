//! The pages' live feeds, as server-sent events: the run list, one run's status, and a tail
//! of a run's central log. Each feed is a task writing into a bounded channel; it ends when
//! the page goes away, or after [`FEED_SPAN`]: the browser then reconnects after
//! [`RECONNECT`] (the log tail resumes from the `id` it last saw, so nothing is lost or sent
//! twice). Short-lived responses keep proxies and headless browsers (which wait for every
//! pending request before they call a page loaded) from holding one request forever.

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use eventor_store::{RunKey, Store};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::pages::{run_text, runs_text};
use super::App;
use crate::log::{log_path, LogFilter, LogLine};

/// How often the run list is read again (no store tells about new runs of every flow), and
/// a run's status on SQLite (which has no notifications).
const REREAD: Duration = Duration::from_secs(1);
/// On Postgres a run's page waits for the run's notifications, re-reading this often anyway.
const SAFETY_REREAD: Duration = Duration::from_secs(30);
/// How often a log being tailed is checked for new lines.
const LOG_POLL: Duration = Duration::from_millis(250);
/// How long one feed response lasts before the browser is told to reconnect.
const FEED_SPAN: Duration = Duration::from_secs(2);
/// How long the browser waits before it reconnects.
const RECONNECT: Duration = Duration::from_millis(1000);
/// How many lines of a log a new tail starts with.
const LOG_BACKLOG: usize = 500;
/// How much of a log's end a new tail reads for those lines: a page never reads a whole
/// log, however large.
const BACKLOG_BYTES: u64 = 1024 * 1024;
/// How much of a log a tail reads at once while it catches up.
const READ_CHUNK: u64 = 256 * 1024;

/// A channel's receiving end as the stream `Sse` wants.
pub(crate) struct Feed(mpsc::Receiver<Event>);

impl futures_core::Stream for Feed {
    type Item = Result<Event, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(Ok))
    }
}

/// A feed response whose events `produce` sends; it ends after [`FEED_SPAN`]. Beyond the
/// server's `--max-feeds` open at once, 503 with a `Retry-After`.
fn feed<F, Fut>(app: &App, produce: F) -> Response
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Ok(room) = app.feeds.clone().try_acquire_owned() else {
        let busy = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        let text = "too many live feeds open (--max-feeds): try again shortly\n";
        return (busy, [("retry-after", "2")], text).into_response();
    };
    let (tx, rx) = mpsc::channel(64);
    let retry = Event::default().retry(RECONNECT).comment("reconnect");
    let producing = produce(tx.clone());
    tokio::spawn(async move {
        if tx.send(retry).await.is_ok() {
            let _ = tokio::time::timeout(FEED_SPAN, producing).await;
        }
        drop(room);
    });
    Sse::new(Feed(rx))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Waits `wait`, or less if the page went away; answers whether it is still there.
async fn pause(tx: &mpsc::Sender<Event>, wait: Duration) -> bool {
    tokio::select! {
        _ = tx.closed() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// `runs` events: every run of the store, sent again whenever anything in it changed. All
/// pages share one reader ([`watch_runs`]).
pub(crate) async fn runs_events(State(app): State<Arc<App>>) -> Response {
    let mut runs = app.runs.subscribe();
    let shared = app.clone();
    feed(&shared, |tx| async move {
        loop {
            let mut text = runs.borrow_and_update().clone();
            if text.is_empty() {
                // The first page: read now rather than wait for the shared reader.
                text = runs_text(&app).await.unwrap_or_default();
            }
            if !text.is_empty() && !send(&tx, "runs", &text).await {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                changed = runs.changed() => if changed.is_err() { return },
            }
        }
    })
}

/// Reads the run list every [`REREAD`] while any page follows it, and publishes it when it
/// changed: one store read a second however many pages are open, none when none is.
pub(crate) async fn watch_runs(app: std::sync::Weak<App>) {
    loop {
        let Some(app) = app.upgrade() else { return };
        if app.runs.receiver_count() > 0 {
            if let Ok(text) = runs_text(&app).await {
                app.runs.send_if_modified(|last| {
                    let changed = *last != text;
                    *last = text;
                    changed
                });
            }
        }
        drop(app);
        tokio::time::sleep(REREAD).await;
    }
}

async fn send(tx: &mpsc::Sender<Event>, name: &str, data: &str) -> bool {
    tx.send(Event::default().event(name).data(data))
        .await
        .is_ok()
}

/// `status` events: one run's page data, sent again whenever it changed. On Postgres the
/// run's notifications wake it; on SQLite it re-reads every second.
pub(crate) async fn run_events(
    State(app): State<Arc<App>>,
    Path((run_id, recovery)): Path<(String, i32)>,
) -> Response {
    let key = RunKey {
        run_id: Arc::from(run_id.as_str()),
        recovery,
    };
    let shared = app.clone();
    feed(&shared, |tx| async move {
        let mut subscription = match &app.store {
            Store::Postgres(_) => Some(run_changes(&app, key)),
            Store::Sqlite(_) => None,
        };
        let mut last = String::new();
        loop {
            let text = run_text(&app, &run_id, recovery)
                .await
                .unwrap_or_else(|_| String::from("null"));
            if text != last && !send(&tx, "status", &text).await {
                return;
            }
            last = text;
            let woken = match subscription.as_mut() {
                Some(changes) => tokio::select! {
                    _ = tx.closed() => false,
                    changed = changes.changed() => changed.is_ok(),
                    _ = tokio::time::sleep(SAFETY_REREAD) => true,
                },
                None => pause(&tx, REREAD).await,
            };
            if !woken {
                return;
            }
        }
    })
}

/// How long a run's shared listener outlives its last page (feeds reconnect every
/// [`FEED_SPAN`], so it must outlast the gap between two of them).
const LISTENER_LINGER: Duration = Duration::from_secs(10);

/// A counter of `key`'s writes, from the one listener the pages following that run share:
/// however many pages follow a run, the store holds one listening session for it.
pub(crate) fn run_changes(app: &Arc<App>, key: RunKey) -> tokio::sync::watch::Receiver<u64> {
    let mut watchers = app.run_watchers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(changes) = watchers.get(&key) {
        return changes.subscribe();
    }
    let (changes, seen) = tokio::sync::watch::channel(0);
    watchers.insert(key.clone(), changes.clone());
    tokio::spawn(listen_for(Arc::downgrade(app), key, changes));
    seen
}

/// The shared listener of one run: counts its notifications until no page has followed it
/// for [`LISTENER_LINGER`] (or the store cannot listen: the pages re-read on their own).
async fn listen_for(
    app: std::sync::Weak<App>,
    key: RunKey,
    changes: tokio::sync::watch::Sender<u64>,
) {
    let subscribed = match app.upgrade() {
        Some(app) => app.store.subscribe(key.clone()).await.ok(),
        None => None,
    };
    let Some(mut subscription) = subscribed else {
        // Dropped with the map's copy: the pages' feeds end and their next ones try again.
        if let Some(app) = app.upgrade() {
            let mut watchers = app.run_watchers.lock().unwrap_or_else(|p| p.into_inner());
            watchers.remove(&key);
        }
        return;
    };
    loop {
        tokio::select! {
            _ = subscription.next() => changes.send_modify(|n| *n += 1),
            _ = tokio::time::sleep(LISTENER_LINGER) => {
                if unwatched(&app, &key, &changes) {
                    return;
                }
            }
        }
    }
}

/// Forgets the run's listener when no page follows it (checked under the map's lock, so a
/// page that just joined keeps it); whether it was forgotten.
fn unwatched(
    app: &std::sync::Weak<App>,
    key: &RunKey,
    changes: &tokio::sync::watch::Sender<u64>,
) -> bool {
    let Some(app) = app.upgrade() else {
        return true;
    };
    let mut watchers = app.run_watchers.lock().unwrap_or_else(|p| p.into_inner());
    if changes.receiver_count() > 0 {
        return false;
    }
    watchers.remove(key);
    true
}

/// The filter of a log tail: `?host=node1&step=s1`.
#[derive(Debug, Deserialize)]
pub(crate) struct LogQuery {
    host: Option<String>,
    step: Option<String>,
}

/// `log` events: the run's central log, its last lines and then every new one, like
/// `logs --follow`, only the records of the host and step asked for. Each event's id is the
/// byte offset after its line, so a reconnecting browser resumes where it was.
pub(crate) async fn log_events(
    State(app): State<Arc<App>>,
    Path((run_id, _recovery)): Path<(String, i32)>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let flow = match app.store.run_history(&run_id).await {
        Ok(history) => history.last().map(|r| r.name.clone()),
        Err(_) => None,
    };
    let Some(flow) = flow else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            format!("no run {run_id}\n"),
        )
            .into_response();
    };
    let filter = LogFilter {
        host: query.host.filter(|h| !h.is_empty()),
        step: query.step.filter(|s| !s.is_empty()),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let path = log_path(&app.logdir, &flow, &run_id);
    feed(&app, move |tx| tail(path, filter, resume, tx))
}

/// Sends the file's matching lines as they are written, until the page goes away; from
/// `resume` (a byte offset) if given, else starting with the last [`LOG_BACKLOG`] of the
/// lines in the log's last [`BACKLOG_BYTES`]. The file is read from where the tail is, a
/// [`READ_CHUNK`] at a time, so a log of any size costs a tail no more memory than that.
async fn tail(path: PathBuf, filter: LogFilter, resume: Option<u64>, tx: mpsc::Sender<Event>) {
    let (mut offset, mut first) = match resume {
        Some(offset) => (offset, false),
        None => (backlog_start(&path).await, true),
    };
    loop {
        let read = if first { BACKLOG_BYTES } else { READ_CHUNK };
        let (lines, more) = read_new(&path, &mut offset, read).await;
        let lines: Vec<(String, u64)> = lines
            .into_iter()
            .filter(|(line, _)| filter.matches(&LogLine::parse(line)))
            .collect();
        let skip = if first {
            lines.len().saturating_sub(LOG_BACKLOG)
        } else {
            0
        };
        first = false;
        for (line, end) in &lines[skip..] {
            let event = Event::default().event("log").id(end.to_string()).data(line);
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if !more && !pause(&tx, LOG_POLL).await {
            return;
        }
    }
}

/// Where a new tail starts: the first whole line of the log's last [`BACKLOG_BYTES`].
async fn backlog_start(path: &std::path::Path) -> u64 {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return 0;
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len <= BACKLOG_BYTES {
        return 0;
    }
    // The byte before the window tells whether the window starts a line.
    let from = len - BACKLOG_BYTES - 1;
    let window = read_at(&mut file, from, BACKLOG_BYTES + 1).await;
    match window.ok().and_then(|w| w.iter().position(|&b| b == b'\n')) {
        Some(newline) => from + newline as u64 + 1,
        None => len,
    }
}

/// Up to `limit` bytes of `file` from `offset`.
async fn read_at(file: &mut tokio::fs::File, offset: u64, limit: u64) -> std::io::Result<Vec<u8>> {
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// The complete lines written since `offset`, at most `limit` bytes of them, each with the
/// offset after it; `offset` moves past them (a line still being written is read again
/// next time). Also whether more was there to read. A `limit` holding no line end at all
/// (no line of the central log is that long) is passed on as one line, so a tail never
/// stops on it.
async fn read_new(
    path: &std::path::Path,
    offset: &mut u64,
    limit: u64,
) -> (Vec<(String, u64)>, bool) {
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return (Vec::new(), false);
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0; // the log was replaced
    }
    let limit = limit.min(len - *offset);
    let more = len - *offset > limit;
    let Ok(bytes) = read_at(&mut file, *offset, limit).await else {
        return (Vec::new(), false);
    };
    let Some(last) = bytes.iter().rposition(|&b| b == b'\n') else {
        if !more || bytes.is_empty() {
            return (Vec::new(), false);
        }
        *offset += bytes.len() as u64;
        return (
            vec![(String::from_utf8_lossy(&bytes).into_owned(), *offset)],
            true,
        );
    };
    let mut lines = Vec::new();
    for raw in bytes[..last].split(|&b| b == b'\n') {
        *offset += raw.len() as u64 + 1;
        lines.push((String::from_utf8_lossy(raw).into_owned(), *offset));
    }
    (lines, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(dir: &tempfile::TempDir, hole: u64, tail: &str) -> PathBuf {
        let path = dir.path().join("run.log");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(hole).unwrap();
        drop(file);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, tail.as_bytes()).unwrap();
        path
    }

    #[tokio::test]
    async fn a_new_tail_starts_at_a_whole_line_near_the_end_of_a_large_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(&dir, 64 * 1024 * 1024, "\nfirst\nsecond\n");
        let start = backlog_start(&path).await;
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(start, len - "first\nsecond\n".len() as u64);
        let mut offset = start;
        let (lines, more) = read_new(&path, &mut offset, BACKLOG_BYTES).await;
        let texts: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!((texts, more), (vec!["first", "second"], false));
        assert_eq!((lines[1].1, offset), (len, len));
    }

    #[tokio::test]
    async fn lines_are_read_a_chunk_at_a_time_and_a_line_being_written_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(&dir, 0, "aa\nbb\ncc\nunfinished");
        let mut offset = 0;
        let (lines, more) = read_new(&path, &mut offset, 7).await;
        assert_eq!(lines, vec![("aa".into(), 3), ("bb".into(), 6)]);
        assert!(more);
        let (lines, _) = read_new(&path, &mut offset, 7).await;
        assert_eq!(lines, vec![("cc".into(), 9)]);
        let (lines, more) = read_new(&path, &mut offset, 64).await;
        assert_eq!((lines, more, offset), (Vec::new(), false, 9));
    }

    #[tokio::test]
    async fn a_chunk_without_any_line_end_is_passed_on_rather_than_stuck_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_of(&dir, 0, "0123456789\nx\n");
        let mut offset = 0;
        let (lines, more) = read_new(&path, &mut offset, 4).await;
        assert_eq!((lines, more), (vec![("0123".into(), 4)], true));
    }
}
