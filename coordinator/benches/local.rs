//! Local engine benchmark: `cargo bench -p eventor --bench local` prints a table.
//!
//! Each case runs in a child process of its own (this binary re-executed with
//! `EVENTOR_BENCH_CASE`), so its peak RSS is its own. Every transition is committed to an
//! SQLite store (WAL, synchronous=NORMAL) before the engine acts on it, as in production.

use std::process::Command;
use std::time::{Duration, Instant};

use eventor::{Eventor, EventorConfig, EventorOptions, Step, StoreLocation};

const CHAIN: usize = 10_000;
const FAN_OUT: usize = 100_000;
const COMMANDS: usize = 1_000;
const PG_FAN_OUT: usize = 20_000;

fn main() {
    if let Ok(case) = std::env::var("EVENTOR_BENCH_CASE") {
        run_case(&case);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` support
    }
    println!("| case | n | wall | per item | peak RSS |");
    println!("|---|---:|---:|---:|---:|");
    let mut cases = vec!["chain", "fanout", "commands"];
    if std::env::var_os("EVENTOR_PG_URL").is_some() {
        cases.push("pgfanout");
    }
    for case in cases {
        let out = Command::new(std::env::current_exe().expect("own path"))
            .env("EVENTOR_BENCH_CASE", case)
            .output()
            .expect("run bench case");
        if !out.status.success() {
            eprintln!("{case} failed: {}", String::from_utf8_lossy(&out.stderr));
            std::process::exit(1);
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    let shell = shell_loop(COMMANDS);
    println!(
        "| shell loop: /bin/true | {COMMANDS} | {} | {} | - |",
        fmt(shell),
        fmt(shell / COMMANDS as u32)
    );
}

fn run_case(case: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (n, wall) = match case {
        "chain" => (CHAIN, chain(&dir)),
        "fanout" => (FAN_OUT, fan_out(&dir)),
        "commands" => (COMMANDS, commands(&dir)),
        "pgfanout" => (PG_FAN_OUT, pg_fan_out()),
        other => panic!("unknown case {other}"),
    };
    let label = match case {
        "chain" => "chain of no-op closures",
        "fanout" => "fan-out of no-op closures",
        "pgfanout" => "Postgres: fan-out of no-op closures, max_concurrent 64",
        _ => "`true` commands, max_concurrent 2",
    };
    println!(
        "| {label} | {n} | {} | {} | {} MB |",
        fmt(wall),
        fmt(wall / n as u32),
        peak_rss_mb()
    );
}

fn options(dir: &tempfile::TempDir, name: &str, max_concurrent: i64) -> EventorOptions {
    EventorOptions {
        name: name.to_string(),
        store: Some(StoreLocation::Sqlite(dir.path().join("bench.run.db"))),
        config: EventorConfig {
            max_concurrent,
            ..EventorConfig::default()
        },
        ..EventorOptions::default()
    }
}

/// s0 → s1 → … each started by the previous one's success event.
fn chain(dir: &tempfile::TempDir) -> Duration {
    let mut ev = Eventor::new(options(dir, "chain", -1)).expect("eventor");
    for i in 0..CHAIN {
        ev.add_event(format!("e{i}"), None).expect("event");
    }
    for i in 0..CHAIN {
        let mut step = Step::new(format!("s{i}")).func(|_| Ok::<_, String>(()));
        if i + 1 < CHAIN {
            step = step.on_success(format!("e{}", i + 1));
        }
        ev.add_step(step).expect("step");
        ev.add_assoc(format!("e{i}"), [format!("s{i}")], None)
            .expect("assoc");
    }
    ev.trigger_event("e0", "1").expect("trigger");
    timed_run(ev)
}

/// One event starts every step at once.
fn fan_out(dir: &tempfile::TempDir) -> Duration {
    let mut ev = Eventor::new(options(dir, "fanout", -1)).expect("eventor");
    ev.add_event("start", None).expect("event");
    let mut targets = Vec::with_capacity(FAN_OUT);
    for i in 0..FAN_OUT {
        let name = format!("s{i}");
        ev.add_step(Step::new(name.clone()).func(|_| Ok::<_, String>(())))
            .expect("step");
        targets.push(name);
    }
    ev.add_assoc("start", targets, None).expect("assoc");
    ev.trigger_event("start", "1").expect("trigger");
    timed_run(ev)
}

/// The fan-out on the shared Postgres store (fsync on), 64 at a time, in a fresh schema.
fn pg_fan_out() -> Duration {
    let url = std::env::var("EVENTOR_PG_URL").expect("EVENTOR_PG_URL");
    let schema = format!("bench_{}", std::process::id());
    let location = StoreLocation::parse(&format!("{url}?schema={schema}")).expect("pg url");
    let options = EventorOptions {
        name: "pgfanout".to_string(),
        store: Some(location),
        config: EventorConfig {
            max_concurrent: 64,
            ..EventorConfig::default()
        },
        ..EventorOptions::default()
    };
    let mut ev = Eventor::new(options).expect("eventor");
    ev.add_event("start", None).expect("event");
    let mut targets = Vec::with_capacity(PG_FAN_OUT);
    for i in 0..PG_FAN_OUT {
        let name = format!("s{i}");
        ev.add_step(Step::new(name.clone()).func(|_| Ok::<_, String>(())))
            .expect("step");
        targets.push(name);
    }
    ev.add_assoc("start", targets, None).expect("assoc");
    ev.trigger_event("start", "1").expect("trigger");
    timed_run(ev)
}

/// One `true` step in COMMANDS sequences, two at a time.
fn commands(dir: &tempfile::TempDir) -> Duration {
    let mut ev = Eventor::new(options(dir, "commands", 2)).expect("eventor");
    ev.add_event("start", None).expect("event");
    ev.add_step(Step::new("t").command("true")).expect("step");
    ev.add_assoc("start", ["t"], None).expect("assoc");
    for seq in 1..=COMMANDS {
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

fn shell_loop(n: usize) -> Duration {
    let started = Instant::now();
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"
        ))
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
