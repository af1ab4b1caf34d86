//! The Postgres store through a server restart in the middle of a run: commits go on after a
//! reconnect, nothing is lost or applied twice, the subscription and the run lock come back.
//!
//! Needs the testbed (`scripts/testbed.sh up --pg`, then `. $EVENTOR_TESTBED_DIR/env`): the
//! test restarts the server with `scripts/testbed.sh pg-restart`. A test binary of its own,
//! so the restart disturbs no other test (cargo runs test binaries one after another).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::PgSchema;
use eventor_store::*;

/// `scripts/testbed.sh` of the workspace (or `EVENTOR_TESTBED_SCRIPT`).
fn testbed_script() -> PathBuf {
    match std::env::var_os("EVENTOR_TESTBED_SCRIPT") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed.sh"),
    }
}

/// The server URL, when the testbed that can restart it is up.
fn testbed_url() -> Option<String> {
    let url = common::pg_url()?;
    if std::env::var_os("EVENTOR_TESTBED_DIR").is_none() {
        let required = std::env::var("EVENTOR_REQUIRE_PG").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "EVENTOR_REQUIRE_PG=1 but the testbed env is not sourced"
        );
        eprintln!("skipped: EVENTOR_TESTBED_DIR is not set (source the testbed env)");
        return None;
    }
    Some(url)
}

fn restart_server() {
    let script = testbed_script();
    let status = Command::new(&script)
        .arg("pg-restart")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "{} pg-restart: {status}",
        script.display()
    );
}

fn step(i: usize) -> Arc<str> {
    Arc::from(format!("s{i}"))
}

/// Finishes step `i`, fires its event and starts step `i + 1`: one scheduler turn.
fn turn(run: &RunKey, i: usize) -> Batch {
    let sequence: Arc<str> = Arc::from("1");
    let changes = vec![
        Change::TaskTransition {
            step: step(i),
            sequence: sequence.clone(),
            attempt: 1,
            from: TaskStatus::Active,
            to: TaskStatus::Success,
            result: None,
            error: None,
            failure_class: None,
            at: 2,
        },
        Change::Trigger {
            event: step(i),
            sequence: sequence.clone(),
            at: 2,
        },
        Change::TaskCreated {
            step: step(i + 1),
            sequence,
            status: TaskStatus::Active,
            attempt: 1,
            host: None,
            at: 2,
        },
    ];
    Batch {
        run: run.clone(),
        changes,
        writer: Writer::Coordinator,
    }
}

/// Commits turns until told to stop; every commit must succeed. Returns the turns done.
async fn writer(store: Store, run: RunKey, done: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = store.commit(turn(&run, i)).await {
            panic!("turn {i} failed: {e} ({e:?})");
        }
        i += 1;
        done.store(i, Ordering::Relaxed);
    }
}

async fn wait_until(what: &str, deadline: Duration, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_on_through_a_server_restart() {
    let Some(url) = testbed_url() else {
        return;
    };
    // Shows the reconnect log lines (run with --nocapture to see them).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("eventor_store=info")
        .with_test_writer()
        .try_init();
    let schema = PgSchema::fresh(&url);
    let store = Store::open(&schema.location).await.unwrap();
    let watcher = Store::open(&schema.location).await.unwrap();
    let run = RunKey {
        run_id: Arc::from("R"),
        recovery: 0,
    };
    let new_run = NewRun {
        key: run.clone(),
        name: "restart".into(),
        mode: RunMode::Restart,
        host: "here".into(),
        program: "{}".into(),
        started_at: 1,
        params: Default::default(),
        env_from_prime: Vec::new(),
    };
    store.begin_run(new_run).await.unwrap();
    let first = Change::TaskCreated {
        step: step(0),
        sequence: Arc::from("1"),
        status: TaskStatus::Active,
        attempt: 1,
        host: None,
        at: 1,
    };
    store
        .commit(Batch {
            run: run.clone(),
            changes: vec![first],
            writer: Writer::Coordinator,
        })
        .await
        .unwrap();
    let mut guard = store.lock_run("R").await.unwrap();
    let mut wakes = watcher.subscribe(run.clone()).await.unwrap();

    let (done, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let writing = tokio::spawn(writer(
        store.clone(),
        run.clone(),
        done.clone(),
        stop.clone(),
    ));
    wait_until("turns before the restart", Duration::from_secs(30), || {
        done.load(Ordering::Relaxed) >= 50
    })
    .await;

    let before = done.load(Ordering::Relaxed);
    tokio::task::spawn_blocking(restart_server).await.unwrap();
    let restarted = done.load(Ordering::Relaxed);
    wait_until("turns after the restart", Duration::from_secs(60), || {
        done.load(Ordering::Relaxed) >= restarted + 50
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writing.await.expect("every commit succeeded");
    let turns = done.load(Ordering::Relaxed);
    eprintln!("turns: {before} before the restart, {turns} in all");

    // Each turn applied exactly once: one success per finished step, one active step, one
    // trigger per turn — a turn applied twice would have been refused (fenced), not doubled.
    let tasks = watcher.tasks(run.clone()).await.unwrap();
    assert_eq!(tasks.len(), turns + 1);
    let active: Vec<_> = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Active)
        .map(|t| t.step.as_str())
        .collect();
    assert_eq!(active, [format!("s{turns}")]);
    assert_eq!(watcher.triggers(run.clone()).await.unwrap().len(), turns);

    // The subscription came back and hears a write made after the restart. A wake pending
    // now may predate the restart (or be the reconnect's own), so drain those first, then
    // commit one more turn from another handle than the watcher's and expect its wake.
    let mut drained = 0;
    while tokio::time::timeout(Duration::from_millis(500), wakes.next())
        .await
        .is_ok()
    {
        drained += 1;
        assert!(drained < 100, "the subscription wakes without end");
    }
    store.commit(turn(&run, turns)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), wakes.next())
        .await
        .expect("the subscription wakes for a write after the restart");
    // The run lock was taken again: another coordinator is still refused.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rival = watcher.lock_run("R").await;
    assert!(
        matches!(rival, Err(StoreError::RunLocked { .. })),
        "{rival:?}"
    );
    let lost = tokio::time::timeout(Duration::from_millis(100), guard.lost()).await;
    assert!(lost.is_err(), "the guard still holds the run");
    drop((guard, store, watcher));
    schema.drop_now().await;
}
