//! The prime's lease on its run (Postgres): a prime cut off from the store stops its own
//! command before the store frees the run, and once a recovery took the run over, the old
//! prime exits non-zero when its link comes back, having written nothing more.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use eventor_store::{RunRecord, Store, StoreLocation, TaskRecord, TriggerRecord};

use crate::cluster_run::schema;
use crate::{coord, testbed, text, write};

/// A flow whose one step appends `start <recovery> <ns>` to `record`, then (unless `done`
/// exists) sleeps; on SIGTERM it appends `end <recovery> <ns>` and exits.
fn recorded_sleeper(dir: &Path) -> String {
    let out = dir.display();
    let step = format!(
        "echo start $EVENTOR_STEP_RECOVERY $(date +%s%N) >> {out}/record; \
         trap \"echo end $EVENTOR_STEP_RECOVERY \\$(date +%s%N) >> {out}/record; exit 143\" TERM; \
         test -e {out}/done && exit 0; sleep 60.{pid} & wait",
        pid = std::process::id()
    );
    let flow = format!(
        "name: leased\nevents: {{go: {{}}}}\nsteps:\n  nap: {{run: '{step}'}}\n\
         assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go}}]\n"
    );
    write(dir, "leased.yaml", &flow)
        .to_str()
        .unwrap()
        .to_string()
}

/// The time (ns) of the record line `what <recovery>`, if written yet.
fn recorded(dir: &Path, what: &str, recovery: i32) -> Option<u128> {
    let record = std::fs::read_to_string(dir.join("record")).unwrap_or_default();
    let prefix = format!("{what} {recovery} ");
    let line = record.lines().find(|l| l.starts_with(&prefix))?;
    line[prefix.len()..].trim().parse().ok()
}

/// Waits (at most `limit`) until `ready` holds, looking every 50 ms.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// Every row of the run `run_id`: its recoveries, and each one's tasks and triggers.
type Rows = Vec<(RunRecord, Vec<TaskRecord>, Vec<TriggerRecord>)>;

fn rows(url: &str, run_id: &str) -> Rows {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(&StoreLocation::parse(url).unwrap())
            .await
            .unwrap();
        let mut rows = Vec::new();
        for run in store.run_history(run_id).await.unwrap() {
            let tasks = store.tasks(run.key.clone()).await.unwrap();
            let triggers = store.triggers(run.key.clone()).await.unwrap();
            rows.push((run, tasks, triggers));
        }
        rows
    })
}

/// Waits (at most `limit`) for `child` to exit.
fn exit_of(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_cut_off_prime_stops_its_command_and_leaves_a_taken_over_run_unwritten() {
    let Some(bed) = testbed() else { return };
    let Some(netns) = bed.get("EVENTOR_NODE1_NETNS").filter(|n| !n.is_empty()) else {
        eprintln!("skipped: the test bed has no network namespaces");
        return;
    };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let flow = recorded_sleeper(dir.path());
    let store = format!(
        "{}?schema={}&dead_after=3s",
        bed["EVENTOR_PG_URL_BRIDGE"],
        schema("lease")
    );
    let stderr = std::fs::File::create(dir.path().join("prime.err")).unwrap();
    crate::bridge_reachable_from(netns);
    let mut prime = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(crate::coord_binary())
        .args(["run", &flow, "--store", &store, "--run-id", "z"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    started_or_say_why(dir.path());
    wait_until("the step started", Duration::from_secs(30), || {
        recorded(dir.path(), "start", 0).is_some()
    });
    let outcome = || {
        let listed = coord(dir.path(), &["runs", &flow, "--store", &store, "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        rows[0]["outcome"].as_str().unwrap_or("none").to_string()
    };
    assert_eq!(outcome(), "running");

    let cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let stopped = wait_until(
        "the cut-off prime stops its command",
        Duration::from_secs(20),
        || recorded(dir.path(), "end", 0).is_some(),
    );
    assert_ne!(
        outcome(),
        "abandoned",
        "stopped before the store freed the run"
    );
    wait_until("the store frees the run", Duration::from_secs(20), || {
        outcome() == "abandoned"
    });
    write(dir.path(), "done", "");
    let recover = coord(
        dir.path(),
        &[
            "run", &flow, "--store", &store, "--mode", "recover", "--run-id", "z",
        ],
    );
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let (end, again) = (
        recorded(dir.path(), "end", 0).unwrap(),
        recorded(dir.path(), "start", 1).expect("the recovery reran the step"),
    );
    assert!(
        end < again,
        "the old command ended before the recovery's started"
    );
    let taken_over = rows(&store, "z");
    assert_eq!(taken_over.len(), 2, "recovery 0 and the recovery");

    drop(cut);
    let status = exit_of(&mut prime, Duration::from_secs(60));
    if status.is_none() {
        let _ = prime.kill();
    }
    let err = std::fs::read_to_string(dir.path().join("prime.err")).unwrap();
    let status = status.unwrap_or_else(|| panic!("the old prime never exited:\n{err}"));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("run taken over by another coordinator"),
        "{err}"
    );
    let after = rows(&store, "z");
    assert_eq!(
        after, taken_over,
        "the old prime wrote nothing after the takeover"
    );
    eprintln!("the cut-off prime stopped its command {stopped:?} after the cut (dead_after=3s)");
}

#[test]
fn a_prime_whose_store_comes_back_before_it_frees_the_run_goes_on_to_its_end() {
    let Some(bed) = testbed() else { return };
    let Some(netns) = bed.get("EVENTOR_NODE1_NETNS").filter(|n| !n.is_empty()) else {
        eprintln!("skipped: the test bed has no network namespaces");
        return;
    };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display();
    // Each attempt records its start and its stop; it ends once `done` exists.
    let step = format!(
        "echo start $EVENTOR_STEP_ATTEMPT $(date +%s%N) >> {out}/record; \
         trap \"echo end $EVENTOR_STEP_ATTEMPT \\$(date +%s%N) >> {out}/record; exit 143\" TERM; \
         while [ ! -e {out}/done ]; do sleep 0.05; done"
    );
    let flow = write(
        dir.path(),
        "back.yaml",
        &format!(
            "name: back\nevents: {{go: {{}}}}\nsteps:\n  nap: {{run: '{step}', retries: 1}}\n\
             assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let store = format!(
        "{}?schema={}&dead_after=4s",
        bed["EVENTOR_PG_URL_BRIDGE"],
        schema("lease_back")
    );
    let stderr = std::fs::File::create(dir.path().join("prime.err")).unwrap();
    crate::bridge_reachable_from(netns);
    let mut prime = std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(crate::coord_binary())
        .args([
            "run",
            flow.to_str().unwrap(),
            "--store",
            &store,
            "--run-id",
            "b",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_until("the step started", Duration::from_secs(30), || {
        recorded(dir.path(), "start", 1).is_some()
    });
    let cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let stopped = wait_until(
        "the cut-off prime stops its command",
        Duration::from_secs(20),
        || recorded(dir.path(), "end", 1).is_some(),
    );
    // Back before the store frees the run (dead_after 4 s): the lock is confirmed again.
    drop(cut);
    wait_until(
        "the run goes on: its retry starts",
        Duration::from_secs(30),
        || recorded(dir.path(), "start", 2).is_some(),
    );
    write(dir.path(), "done", "");
    let status = exit_of(&mut prime, Duration::from_secs(60));
    if status.is_none() {
        let _ = prime.kill();
    }
    let err = std::fs::read_to_string(dir.path().join("prime.err")).unwrap();
    let status = status.unwrap_or_else(|| panic!("the prime never ended:\n{err}"));
    assert_eq!(status.code(), Some(0), "the run went on to its end:\n{err}");
    let (end, again) = (
        recorded(dir.path(), "end", 1).unwrap(),
        recorded(dir.path(), "start", 2).unwrap(),
    );
    assert!(
        end < again,
        "the first attempt stopped before the retry started"
    );
    let history = rows(&store, "b");
    assert_eq!(history.len(), 1, "no recovery: the same run went on");
    let task = &history[0].1[0];
    assert_eq!(
        (task.status, task.attempt),
        (eventor_store::TaskStatus::Success, 2),
        "{task:?}"
    );
    assert_eq!(history[0].0.status, eventor_store::RunStatus::Success);
    eprintln!("MEASURE lock back: the cut-off prime stopped its command {stopped:?} after the cut, then went on");
}

/// Waits (at most 60 s) for the step's record; if it never comes, fails with what the prime
/// said (its stderr in `prime.err`).
fn started_or_say_why(dir: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !dir.join("record").exists() {
        if std::time::Instant::now() > deadline {
            let said = std::fs::read_to_string(dir.join("prime.err")).unwrap_or_default();
            panic!("the step never started; the prime said:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
