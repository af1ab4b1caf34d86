//! `run`'s progress on stderr: tasks done / known, failures, active tasks per host and the
//! time so far, read from the run's store while it goes on. A bar (indicatif) on a terminal,
//! a plain line every few seconds otherwise, nothing with `--quiet`.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eventor::flow::FlowFile;
use eventor::report::graph::FlowGraph;
use eventor::report::{own_run_report, RunSelector};
use eventor_store::{Store, StoreLocation, TaskStatus};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The shortest wait between two reads of the store; a slow read (a huge run) waits longer.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The bar being drawn, so log lines can be written around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// stderr for the console log: with a bar on screen, each line is written above it.
pub struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    /// The whole of `buf` under stderr's lock: a console log line and a chunk of echoed
    /// task output (written from another thread) never cut into each other, even when
    /// stderr is a pipe that takes a chunk in parts.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().lock().write_all(buf)),
            None => std::io::stderr().lock().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The writer `init_logging` gives tracing.
pub fn stderr_writer() -> BarAwareStderr {
    BarAwareStderr
}

/// What the progress shows about: the run's store, id, and the hosts its steps are pinned to.
pub struct Watched {
    pub store: StoreLocation,
    pub run_id: String,
    pub pins: HashMap<String, String>,
    pub quiet: bool,
}

impl Watched {
    pub fn of(flow: &FlowFile, store: StoreLocation, run_id: &str, quiet: bool) -> Watched {
        Watched {
            store,
            run_id: run_id.to_string(),
            pins: FlowGraph::of_flow(flow).pins(),
            quiet,
        }
    }
}

/// The progress display of one run; [`Progress::finish`] takes it off the screen.
pub struct Progress {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(runtime: &tokio::runtime::Runtime, watched: Watched) -> Progress {
        let stop = CancellationToken::new();
        let task = (!watched.quiet).then(|| runtime.spawn(follow(watched, stop.clone())));
        Progress { stop, task }
    }

    pub fn finish(self, runtime: &tokio::runtime::Runtime) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = runtime.block_on(task);
        }
    }
}

/// One reading of the run.
struct Snapshot {
    done: u64,
    known: u64,
    failed: u64,
    active: BTreeMap<String, u64>,
}

impl Snapshot {
    fn message(&self) -> String {
        let active: Vec<String> = self
            .active
            .iter()
            .map(|(h, n)| format!("{h} {n}"))
            .collect();
        let active = if active.is_empty() {
            "none".to_string()
        } else {
            active.join(", ")
        };
        format!("{} failed, active: {active}", self.failed)
    }
}

async fn read(store: &Store, watched: &Watched) -> Option<Snapshot> {
    let selector = RunSelector {
        run_id: Some(watched.run_id.clone()),
        ..RunSelector::default()
    };
    let mut report = own_run_report(store, &selector).await.ok()?;
    report.fill_pinned_hosts(&watched.pins);
    let counts = report.counts();
    let mut active = BTreeMap::new();
    for task in report
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Active)
    {
        *active
            .entry(task.host.clone().unwrap_or_else(|| "prime".into()))
            .or_default() += 1;
    }
    Some(Snapshot {
        done: counts.done(),
        known: counts.total(),
        failed: counts.failure,
        active,
    })
}

/// Where the progress goes.
enum View {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl View {
    fn new() -> View {
        if !std::io::stderr().is_terminal() {
            return View::Lines {
                last: Instant::now(),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} tasks, {msg}");
        if let Ok(style) = style {
            bar.set_style(style);
        }
        if let Ok(mut slot) = BAR.lock() {
            *slot = Some(bar.clone());
        }
        View::Bar(bar)
    }

    fn show(&mut self, snapshot: &Snapshot, elapsed: Duration) {
        match self {
            View::Bar(bar) => {
                bar.set_length(snapshot.known);
                bar.set_position(snapshot.done);
                bar.set_message(snapshot.message());
            }
            View::Lines { last } if last.elapsed() >= LINE_EVERY => {
                *last = Instant::now();
                let _ = writeln!(
                    std::io::stderr(),
                    "eventor-coord: progress: {}/{} tasks done, {}, {}s",
                    snapshot.done,
                    snapshot.known,
                    snapshot.message(),
                    elapsed.as_secs()
                );
            }
            View::Lines { .. } => {}
        }
    }

    fn done(self) {
        if let View::Bar(bar) = self {
            if let Ok(mut slot) = BAR.lock() {
                *slot = None;
            }
            bar.finish_and_clear();
        }
    }
}

/// Reads the run now and then until stopped; each wait is at least five times the last read.
async fn follow(watched: Watched, stop: CancellationToken) {
    let started = Instant::now();
    let Some(store) = open_when_there(&watched.store, &stop).await else {
        return;
    };
    let mut view = View::new();
    let mut wait = FIRST_WAIT;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let read_at = Instant::now();
        if let Some(snapshot) = read(&store, &watched).await {
            view.show(&snapshot, started.elapsed());
        }
        wait = FIRST_WAIT.max(read_at.elapsed() * 5);
    }
    view.done();
}

/// The store once the run has made it (an SQLite file is never created here).
async fn open_when_there(location: &StoreLocation, stop: &CancellationToken) -> Option<Store> {
    loop {
        let there = match location {
            StoreLocation::Sqlite(path) => Path::new(path).exists(),
            StoreLocation::Postgres(_) => true,
        };
        if there {
            return Store::open(location).await.ok();
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(FIRST_WAIT) => {}
        }
    }
}
