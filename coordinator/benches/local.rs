//! Local engine benchmark: `cargo bench -p eventor --bench local` prints a table.
//!
//! Each case runs in a child process of its own (this binary re-executed with
//! `EVENTOR_BENCH_CASE`), so its peak RSS is its own. Every transition is committed to an
//! SQLite store (WAL, synchronous=NORMAL) before the engine acts on it, as in production.

use std::process::Command;
use std::time::{Duration, Instant};

use std::sync::{Arc, OnceLock};

use eventor::{
    Eventor, EventorConfig, EventorOptions, MaxConcurrent, RunMode, Step, StoreLocation,
};

const COMMANDS: usize = 1_000;

/// Every case as `name:n`; each runs in a process of its own.
const CASES: &[&str] = &[
    "chain:1000",
    "chain:10000",
    "fanout:10000",
    "fanout:100000",
    // A million tasks: the peak RSS column is the point (about 510 MB; it must stay under
    // 1 GB), and its time should stay within 12x of the 100,000 case.
    "fanout:1000000",
    "commands1:1000",
    "commands2:1000",
    // The cost of a command step must stay flat as the run grows: 20,000 within 1.2x of ten
    // times 2,000.
    "commands2:2000",
    "commands2:20000",
    "recover:10000",
    // The floor under every chain step: one bare SQLite commit in the store's own mode.
    "commit:10000",
    // A chain step's own three statements on a bare connection to the store's schema.
    "stepsql:10000",
];

fn main() {
    // Commands run under a keeper, as in `eventor-coord`.
    eventor::supervise_commands();
    if let Ok(case) = std::env::var("EVENTOR_BENCH_CASE") {
        run_case(&case);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` support
    }
    println!("| case | n | wall | per item | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    let mut cases = CASES.to_vec();
    if std::env::var_os("EVENTOR_PG_URL").is_some() {
        cases.push("pgfanout:20000");
    }
    let mut walls = std::collections::HashMap::new();
    for case in cases {
        let out = Command::new(std::env::current_exe().expect("own path"))
            .env("EVENTOR_BENCH_CASE", case)
            .output()
            .expect("run bench case");
        if !out.status.success() {
            eprintln!("{case} failed: {}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        walls.insert(case, wall_of(&text));
    }
    for width in [1, 2] {
        let shell = shell_loop(COMMANDS, width);
        println!(
            "| {width} shell loop(s) side by side: /bin/true | {COMMANDS} | {} | {} | - |",
            fmt(shell),
            fmt(shell / COMMANDS as u32)
        );
        let case = if width == 1 {
            "commands1:1000"
        } else {
            "commands2:1000"
        };
        if let Some(Some(engine)) = walls.get(case) {
            let ratio = engine.as_secs_f64() / shell.as_secs_f64();
            println!("| ratio: engine / shell at width {width} | | {ratio:.2}x | | |");
        }
    }
    // Each row: (a's wall / an) over (b's wall / bn).
    let ratios = [
        (
            "a chain step / a bare commit",
            "chain:10000",
            10_000,
            "commit:10000",
            10_000,
        ),
        (
            "a chain step's SQL alone / a bare commit",
            "stepsql:10000",
            10_000,
            "commit:10000",
            10_000,
        ),
        (
            "a chain step / its SQL alone",
            "chain:10000",
            10_000,
            "stepsql:10000",
            10_000,
        ),
        (
            "20,000 commands / 10 x 2,000",
            "commands2:20000",
            10,
            "commands2:2000",
            1,
        ),
    ];
    for (label, a, an, b, bn) in ratios {
        let ratio = match (walls.get(a), walls.get(b)) {
            (Some(Some(a)), Some(Some(b))) => {
                format!("{:.2}x", (*a / an).as_secs_f64() / (*b / bn).as_secs_f64())
            }
            _ => "-".to_string(),
        };
        println!("| ratio: {label} | | {ratio} | | |");
    }
}

/// A case's wall time, read back from its table row (the child process prints it).
fn wall_of(row: &str) -> Option<Duration> {
    let cell = row.split('|').nth(3)?.trim();
    let (value, unit) = cell.split_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let seconds = match unit {
        "s" => value,
        "ms" => value / 1e3,
        _ => value / 1e6,
    };
    Some(Duration::from_secs_f64(seconds))
}

fn run_case(case: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (name, n) = case.split_once(':').expect("name:n");
    let n: usize = n.parse().expect("n");
    let (label, wall) = match name {
        "chain" => ("chain of no-op closures", chain(&dir, n)),
        "fanout" => ("fan-out of no-op closures", fan_out(&dir, n)),
        "commands1" => ("`true` commands, max_concurrent 1", commands(&dir, n, 1)),
        "commands2" => ("`true` commands, max_concurrent 2", commands(&dir, n, 2)),
        "commit" => (
            "bare SQLite commits of a one-row transaction (WAL, synchronous=NORMAL)",
            bare_commits(&dir, n),
        ),
        "stepsql" => (
            "bare SQLite commits of a chain step's three statements, store's schema and page size, SQLite's own VFS",
            bare_step_commits(&dir, n),
        ),
        "recover" => (
            "recover a chain failed at 90%: until that step starts",
            recover(&dir, n),
        ),
        "pgfanout" => (
            "Postgres: fan-out of no-op closures, max_concurrent 64",
            pg_fan_out(n),
        ),
        other => panic!("unknown case {other}"),
    };
    let per_item = if name == "recover" {
        "-".to_string()
    } else {
        fmt(wall / n as u32)
    };
    println!(
        "| {label} | {n} | {} | {per_item} | {} MB |",
        fmt(wall),
        peak_rss_mb()
    );
}

/// Options for a bench run; `max_concurrent` 0 is no limit.
fn options(dir: &tempfile::TempDir, name: &str, max_concurrent: usize) -> EventorOptions {
    EventorOptions {
        name: name.to_string(),
        store: Some(StoreLocation::Sqlite(dir.path().join("bench.run.db"))),
        config: EventorConfig {
            max_concurrent: MaxConcurrent::at_most(max_concurrent),
            ..EventorConfig::default()
        },
        ..EventorOptions::default()
    }
}

/// s0 → s1 → … each started by the previous one's success event.
fn chain(dir: &tempfile::TempDir, n: usize) -> Duration {
    let mut ev = chain_flow(options(dir, "chain", 0), n, None);
    ev.trigger_event("e0", "1").expect("trigger");
    timed_run(ev)
}

/// Step `at` of a chain notes when it starts, and fails while `fail` is set.
#[derive(Clone)]
struct Probe {
    at: usize,
    started: Arc<OnceLock<Instant>>,
    fail: bool,
}

fn chain_flow(options: EventorOptions, n: usize, probe: Option<Probe>) -> Eventor {
    let mut ev = Eventor::new(options).expect("eventor");
    for i in 0..n {
        ev.add_event(format!("e{i}"), None).expect("event");
    }
    for i in 0..n {
        let probe = probe.clone().filter(|p| p.at == i);
        let mut step = Step::new(format!("s{i}")).func(move |_| match &probe {
            Some(p) => {
                p.started.get_or_init(Instant::now);
                if p.fail {
                    Err("failing on purpose".to_string())
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        });
        if i + 1 < n {
            step = step.on_success(format!("e{}", i + 1));
        }
        ev.add_step(step).expect("step");
        ev.add_assoc(format!("e{i}"), [format!("s{i}")], None)
            .expect("assoc");
    }
    ev
}

/// A chain whose step at 90% fails; then a recovery: the time from its start until that
/// step starts again (everything before it is skipped, not run).
fn recover(dir: &tempfile::TempDir, n: usize) -> Duration {
    let at = n * 9 / 10;
    let probe = |fail| Probe {
        at,
        started: Arc::new(OnceLock::new()),
        fail,
    };
    let mut first = chain_flow(options(dir, "recover", 0), n, Some(probe(true)));
    first.trigger_event("e0", "1").expect("trigger");
    assert!(!first.run(-1).expect("run").is_success());
    first.close();

    let again = probe(false);
    let started = Instant::now();
    let recovering = EventorOptions {
        run_mode: RunMode::Recover,
        ..options(dir, "recover", 0)
    };
    let mut second = chain_flow(recovering, n, Some(again.clone()));
    second.trigger_event("e0", "1").expect("trigger");
    assert!(second.run(-1).expect("recover").is_success());
    *again.started.get().expect("the failed step ran again") - started
}

/// One event starts every step at once.
fn fan_out(dir: &tempfile::TempDir, n: usize) -> Duration {
    timed_run(fan_out_flow(options(dir, "fanout", 0), n))
}

/// The fan-out on the shared Postgres store (fsync on), 64 at a time, in a fresh schema.
fn pg_fan_out(n: usize) -> Duration {
    let url = std::env::var("EVENTOR_PG_URL").expect("EVENTOR_PG_URL");
    let schema = format!("bench_{}", std::process::id());
    // The URL may carry parameters of its own (`?sslmode=disable`).
    let joint = if url.contains('?') { '&' } else { '?' };
    let location = StoreLocation::parse(&format!("{url}{joint}schema={schema}")).expect("pg url");
    let options = EventorOptions {
        name: "pgfanout".to_string(),
        store: Some(location),
        config: EventorConfig {
            max_concurrent: MaxConcurrent::at_most(64),
            ..EventorConfig::default()
        },
        ..EventorOptions::default()
    };
    timed_run(fan_out_flow(options, n))
}

fn fan_out_flow(options: EventorOptions, n: usize) -> Eventor {
    let mut ev = Eventor::new(options).expect("eventor");
    ev.add_event("start", None).expect("event");
    let mut targets = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("s{i}");
        ev.add_step(Step::new(name.clone()).func(|_| Ok::<_, String>(())))
            .expect("step");
        targets.push(name);
    }
    ev.add_assoc("start", targets, None).expect("assoc");
    ev.trigger_event("start", "1").expect("trigger");
    ev
}

/// One `true` step in `n` sequences, `width` at a time.
fn commands(dir: &tempfile::TempDir, n: usize, width: usize) -> Duration {
    let mut ev = Eventor::new(options(dir, "commands", width)).expect("eventor");
    ev.add_event("start", None).expect("event");
    ev.add_step(Step::new("t").command("true")).expect("step");
    ev.add_assoc("start", ["t"], None).expect("assoc");
    for seq in 1..=n {
        ev.trigger_event("start", seq.to_string()).expect("trigger");
    }
    timed_run(ev)
}

fn timed_run(mut ev: Eventor) -> Duration {
    if std::env::var_os("EVENTOR_BENCH_DEBUG").is_some() {
        eprintln!("rss before run: {} MB", rss_mb("VmRSS:"));
    }
    let started = Instant::now();
    let outcome = ev.run(-1).expect("run");
    let wall = started.elapsed();
    assert!(outcome.is_success(), "bench flow failed: {outcome}");
    wall
}

/// `n` one-row transactions committed one after another on a bare SQLite connection in the
/// store's mode: what a chain step's commit cannot go below.
fn bare_commits(dir: &tempfile::TempDir, n: usize) -> Duration {
    let path = dir.path().join("bare.db");
    let table = "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)";
    bare_transactions(&path, table, &["INSERT INTO t (v) VALUES (?1)"], n)
}

/// `n` transactions of a chain step's own three statements (its end, the next step's trigger,
/// the next task), on a bare connection to a file with the store's schema and page size: what
/// the step's commit costs in SQLite alone, before any engine work. The connection writes
/// through SQLite's own VFS, not the store's, which gathers a commit's WAL writes into one.
fn bare_step_commits(dir: &tempfile::TempDir, n: usize) -> Duration {
    let path = dir.path().join("steps.db");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let location = eventor_store::StoreLocation::Sqlite(path.clone());
    drop(
        runtime
            .block_on(eventor_store::Store::open(&location))
            .expect("store"),
    );
    let run = "INSERT INTO runs (run_id, recovery, name, mode, status, host, program, started_at) \
               VALUES ('20261207T125842-ccb3', 0, 'n', 'restart', 'running', 'h', '{}', 0)";
    let step = [
        // ?1: this step's number, ?2: the next one's; a run id of the form the engine makes.
        "UPDATE tasks SET status = 'success', result = 'null', error = NULL, \
         failure_class = NULL, updated_at = ?2 WHERE run_id = '20261207T125842-ccb3' \
         AND recovery = 0 AND step = 's' || ?1 AND sequence = '1' AND status = 'active' AND attempt = 1",
        "INSERT INTO triggers (id, run_id, recovery, event, sequence, created_at) \
         VALUES (?2 * 2, '20261207T125842-ccb3', 0, 'e' || ?2, '1', ?2)",
        "INSERT INTO tasks (id, run_id, recovery, step, sequence, status, attempt, host, \
         created_at, updated_at) VALUES (?2 * 2 + 1, '20261207T125842-ccb3', 0, 's' || ?2, '1', \
         'active', 1, NULL, ?2, ?2)",
    ];
    bare_transactions(&path, run, &step, n)
}

/// Runs `setup`, then `n` transactions of `statements` (each bound with `?1` = i and, when it
/// has one, `?2` = i + 1), on one bare SQLite connection in the store's mode (WAL,
/// synchronous=NORMAL, foreign keys on, SQLite's own automatic checkpoint).
fn bare_transactions(
    path: &std::path::Path,
    setup: &str,
    statements: &[&str],
    n: usize,
) -> Duration {
    use libsqlite3_sys as ffi;
    use std::ffi::CString;
    let path = CString::new(path.to_str().expect("utf-8 path")).expect("path");
    let mut db = std::ptr::null_mut();
    // SAFETY: plain use of the SQLite C API on one connection owned here; every statement
    // is NUL-terminated, prepared on it and finalized before it is closed.
    unsafe {
        assert_eq!(ffi::sqlite3_open(path.as_ptr(), &mut db), ffi::SQLITE_OK);
        let exec = |sql: &str| {
            let sql = CString::new(sql).expect("sql");
            let rc = ffi::sqlite3_exec(
                db,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            assert_eq!(rc, ffi::SQLITE_OK, "{sql:?}");
        };
        exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
        exec(setup);
        let prepared: Vec<_> = statements
            .iter()
            .map(|sql| {
                let sql = CString::new(*sql).expect("sql");
                let mut stmt = std::ptr::null_mut();
                let rc =
                    ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut());
                assert_eq!(rc, ffi::SQLITE_OK, "{sql:?}");
                stmt
            })
            .collect();
        let started = Instant::now();
        for i in 0..n {
            exec("BEGIN");
            for &stmt in &prepared {
                ffi::sqlite3_bind_int64(stmt, 1, i as i64);
                if ffi::sqlite3_bind_parameter_count(stmt) > 1 {
                    ffi::sqlite3_bind_int64(stmt, 2, i as i64 + 1);
                }
                assert_eq!(ffi::sqlite3_step(stmt), ffi::SQLITE_DONE);
                ffi::sqlite3_reset(stmt);
            }
            exec("COMMIT");
        }
        let wall = started.elapsed();
        prepared.into_iter().for_each(|stmt| {
            ffi::sqlite3_finalize(stmt);
        });
        ffi::sqlite3_close(db);
        wall
    }
}

/// `width` shell loops side by side, running `/bin/true` `n` times in all: the baseline at
/// the same concurrency as the engine's row.
fn shell_loop(n: usize, width: usize) -> Duration {
    let each = n / width;
    let one = format!("i=0; while [ $i -lt {each} ]; do /bin/true; i=$((i+1)); done");
    let script = vec![format!("( {one} ) &"); width].join(" ") + " wait";
    let started = Instant::now();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .expect("shell loop");
    assert!(status.success());
    started.elapsed()
}

fn peak_rss_mb() -> u64 {
    rss_mb("VmHWM:")
}

fn rss_mb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else if d >= Duration::from_millis(1) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    }
}
