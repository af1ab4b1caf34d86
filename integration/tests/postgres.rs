//! `eventor-coord` on the shared Postgres store of the test bed (`scripts/testbed.sh up`):
//! runs side by side in one database, the run lock, a server restart mid-run, DATABASES
//! names, and passwords kept out of messages. Without `EVENTOR_PG_URL` these tests say they
//! were skipped, unless `EVENTOR_REQUIRE_PG=1` makes that a failure.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::{coord, spawn_coord, text, write};

/// The test bed's Postgres URL with a schema of this test's own, or `None` to skip.
fn pg_url(test: &str) -> Option<String> {
    match std::env::var("EVENTOR_PG_URL") {
        Ok(url) if !url.is_empty() => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            Some(format!("{url}?schema=e2e_{test}_{nanos}"))
        }
        _ if std::env::var("EVENTOR_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_URL is not set (scripts/testbed.sh up)")
        }
        _ => {
            eprintln!("skipped: EVENTOR_PG_URL is not set");
            None
        }
    }
}

async fn open(url: &str) -> Store {
    Store::open(&StoreLocation::parse(url).unwrap())
        .await
        .unwrap()
}

/// A flow of `n` sequences of one command step, `max` at a time.
fn fan_flow(dir: &Path, name: &str, command: &str, n: u32, max: u32) -> String {
    let yaml = format!(
        "name: {name}\nconfig: {{max_concurrent: {max}}}\nevents: {{go: {{}}}}\n\
         steps:\n  work: {{run: '{command}'}}\n\
         assocs: [{{event: go, targets: [work]}}]\n\
         trigger: [{{event: go, range: [1, {n}]}}]\n"
    );
    write(dir, &format!("{name}.yaml"), &yaml)
        .to_str()
        .unwrap()
        .to_string()
}

fn finish(child: Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stderr))
}

#[tokio::test]
async fn two_runs_share_one_database_without_seeing_each_other() {
    let _pg = crate::postgres_shared();
    let Some(url) = pg_url("shared") else { return };
    let dir = tempfile::tempdir().unwrap();
    let flow = fan_flow(dir.path(), "shared", "echo $EVENTOR_STEP_SEQUENCE", 20, 4);
    let a = spawn_coord(
        dir.path(),
        &["run", &flow, "--store", &url, "--run-id", "a"],
    );
    let b = spawn_coord(
        dir.path(),
        &["run", &flow, "--store", &url, "--run-id", "b"],
    );
    let (code_a, err_a) = finish(a);
    let (code_b, err_b) = finish(b);
    assert_eq!(code_a, Some(0), "{err_a}");
    assert_eq!(code_b, Some(0), "{err_b}");
    let store = open(&url).await;
    for run_id in ["a", "b"] {
        let history = store.run_history(run_id).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].status, RunStatus::Success);
        let tasks = store.tasks(history[0].key.clone()).await.unwrap();
        assert_eq!(tasks.len(), 20, "run {run_id} sees only its own tasks");
    }
}

#[tokio::test]
async fn a_second_coordinator_of_the_same_run_is_refused() {
    let _pg = crate::postgres_shared();
    let Some(url) = pg_url("lock") else { return };
    let dir = tempfile::tempdir().unwrap();
    let flow = fan_flow(dir.path(), "lock", "sleep 2", 1, 1);
    let first = spawn_coord(
        dir.path(),
        &["run", &flow, "--store", &url, "--run-id", "x"],
    );
    let store = open(&url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.run_history("x").await.unwrap().is_empty() {
        if Instant::now() > deadline {
            let mut first = first;
            first.kill().ok();
            panic!("the first run never started: {:?}", finish(first));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = coord(
        dir.path(),
        &[
            "run", &flow, "--store", &url, "--run-id", "x", "--mode", "continue",
        ],
    );
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("run x is already being run by another coordinator"),
        "{}",
        text(&second.stderr)
    );
    let (code, err) = finish(first);
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test]
async fn a_postgres_restart_mid_run_loses_and_repeats_nothing() {
    // Alone: every other test of the shared Postgres waits until the server is back.
    let _pg = crate::postgres_exclusive();
    let Some(url) = pg_url("restart") else { return };
    let dir = tempfile::tempdir().unwrap();
    let flow = fan_flow(
        dir.path(),
        "restart",
        "echo $EVENTOR_STEP_SEQUENCE >> ran.txt; sleep 0.1",
        40,
        4,
    );
    let run = spawn_coord(
        dir.path(),
        &["run", &flow, "--store", &url, "--run-id", "r"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/testbed.sh");
    let restart = Command::new(script).arg("pg-restart").output().unwrap();
    assert!(
        restart.status.success(),
        "pg-restart: {}",
        text(&restart.stderr)
    );
    let (code, stderr) = finish(run);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("reconnect"),
        "the reconnect is logged:\n{stderr}"
    );

    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    let mut seqs: Vec<u32> = ran.lines().map(|l| l.parse().unwrap()).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=40).collect::<Vec<_>>(),
        "each sequence ran exactly once"
    );
    let store = open(&url).await;
    let run = store.run_history("r").await.unwrap().remove(0);
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(tasks.len(), 40);
    assert!(tasks
        .iter()
        .all(|t| t.status == TaskStatus::Success && t.attempt == 1));
}

#[tokio::test]
async fn a_databases_entry_names_the_store() {
    let _pg = crate::postgres_shared();
    let Some(url) = pg_url("named") else { return };
    let location = StoreLocation::parse(&url).unwrap();
    let StoreLocation::Postgres(pg) = &location else {
        panic!("not postgres")
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "eventor.yaml",
        &format!(
            "EVENTOR:\n  DATABASES:\n    shared:\n      dbtype: postgresql\n      host: {}\n      port: {}\n      user: {}\n      database: {}\n      schema: {}\n",
            pg.host, pg.port, pg.user, pg.database, pg.schema
        ),
    );
    let flow = fan_flow(dir.path(), "named", "true", 3, 2);
    let args = [
        "run",
        &flow,
        "--config",
        config.to_str().unwrap(),
        "--store",
        "shared",
        "--run-id",
        "n",
    ];
    let out = coord(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let history = open(&url).await.run_history("n").await.unwrap();
    assert_eq!(history.len(), 1, "the run went to the named schema");
}

#[test]
fn a_password_never_appears_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let flow = fan_flow(dir.path(), "secret", "true", 1, 1);
    // Nothing listens on port 1: the connection fails, and the error must not leak.
    let url = "postgres://postgres:sekrit-pw@127.0.0.1:1/eventor";
    let started = Instant::now();
    let out = coord(dir.path(), &["run", &flow, "--store", url]);
    assert_ne!(out.status.code(), Some(0));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("sekrit-pw"), "{all}");
    assert!(all.contains("****") || all.contains("127.0.0.1:1"), "{all}");
    assert!(started.elapsed() < Duration::from_secs(90), "never a hang");
}

#[tokio::test]
async fn a_trigger_from_another_program_reaches_the_running_coordinator_at_once() {
    let _pg = crate::postgres_shared();
    let Some(url) = pg_url("notify") else { return };
    let dir = tempfile::tempdir().unwrap();
    // `wait` runs until `note` has run (30 s at most), so the run is still going when the
    // trigger comes, and `note` runs at once only if the notification woke the run: the
    // fallback re-scan comes 30 s after the run started, past the 15 s allowed below.
    let flow = write(
        dir.path(),
        "notify.yaml",
        "events: {start: {}, extra: {}}\n\
         steps:\n  wait: {run: 'for i in $(seq 600); do test -e ran.txt && exit 0; sleep 0.05; done; exit 1'}\n  note: {run: 'echo extra >> ran.txt'}\n\
         assocs: [{event: start, targets: [wait]}, {event: extra, targets: [note]}]\n\
         trigger: [{event: start}]\n",
    );
    let flow = flow.to_str().unwrap();
    let run = spawn_coord(dir.path(), &["run", flow, "--store", &url, "--run-id", "t"]);
    let store = open(&url).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.run_history("t").await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = Instant::now();
    let out = coord(
        dir.path(),
        &["trigger", flow, "extra", "--store", &url, "--run-id", "t"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "triggered extra[1] in run t recovery 0"
    );
    while !dir.path().join("ran.txt").exists() {
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "the notification did not wake the run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, stderr) = finish(run);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("triggered from outside the run"),
        "{stderr}"
    );
}
