//! Steering a run from anywhere: `eventor-coord cancel` from another process stops a running
//! run as Ctrl-C would (on SQLite and on Postgres, its prime's command and node1's stopped,
//! the run stored interrupted, its coordinator exiting 130, `status` naming who cancelled);
//! `run --mode recover --rerun STEP` reruns a task that succeeded and leaves the others
//! alone; `run --dry-run` prints the plan and creates or changes nothing in the store.

use std::path::Path;
use std::time::{Duration, Instant};

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::cluster_run::{hosts_file, schema};
use crate::interrupts::{gone_within, running, unique};
use crate::{coord, finish_coord, spawn_coord, testbed, text, write};

/// A flow whose step `here` runs on the prime and `there` on node1; each marks that it
/// started, then sleeps `marker` seconds (a length no other test uses), then marks `after`.
fn two_sleepers(dir: &Path, marker: &str) -> String {
    let out = dir.display();
    let flow = format!(
        "name: steer\nevents: {{go: {{}}}}\nsteps:\n  \
         here: {{run: 'touch {out}/here.started; sleep {marker}; touch {out}/here.after'}}\n  \
         there: {{run: 'touch {out}/there.started; sleep {marker}; touch {out}/there.after', \
         host: node1}}\n\
         assocs: [{{event: go, targets: [here, there]}}]\ntrigger: [{{event: go}}]\n"
    );
    let path = write(dir, "steer.yaml", &flow);
    path.to_str().unwrap().to_string()
}

/// Waits (at most 30 s) for `path`, a step's sign that it started; a coordinator that ended
/// first fails the test with its output.
fn started_or_ended(child: &mut std::process::Child, path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the run ended ({status}) before {}:\n{err}", path.display());
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the two sleepers with `store_args`, cancels the run from another process once
/// both commands run, and checks what happened: the coordinator's exit status, that the
/// commands are gone, the stored run and tasks, what `status` says, and that a second
/// cancel (the run no longer running) writes nothing and exits 1.
async fn cancel_stops_the_run(dir: &Path, store_args: &[&str], url: &str, marker: &str) {
    let flow = two_sleepers(dir, marker);
    let mut run = vec!["run", flow.as_str(), "--run-id", "c"];
    run.extend_from_slice(store_args);
    let mut child = spawn_coord(dir, &run);
    for started in ["here.started", "there.started"] {
        started_or_ended(&mut child, &dir.join(started));
    }

    let mut cancel = vec!["cancel", flow.as_str(), "--run-id", "c"];
    cancel.extend_from_slice(store_args);
    let asked = coord(dir, &cancel);
    assert_eq!(asked.status.code(), Some(0), "{}", text(&asked.stderr));
    assert!(text(&asked.stdout).contains("cancel of run c recovery 0 requested"));
    let cancelled_at = Instant::now();
    let (code, output) = finish_coord(child, Duration::from_secs(60));
    let took = cancelled_at.elapsed();
    eprintln!("the run stopped {took:?} after the cancel was stored");
    assert_eq!(code, Some(130), "{output}");
    // Well within SQLite's old 30 s look: the request was noticed at once.
    assert!(
        took < Duration::from_secs(10),
        "stopped {took:?} after the cancel"
    );
    assert!(
        output.contains("cancelled by eventor-coord cancel ("),
        "{output}"
    );
    assert!(
        gone_within(marker, Duration::from_secs(10)),
        "a command outlived the cancel: {} still running",
        running(marker)
    );
    assert!(!dir.join("here.after").exists() && !dir.join("there.after").exists());

    let store = Store::open(&StoreLocation::parse(url).unwrap())
        .await
        .unwrap();
    let stored = store.latest_run("steer").await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Interrupted);
    let tasks = store.tasks(stored.key.clone()).await.unwrap();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(
        tasks.iter().all(|t| t.status == TaskStatus::Failure),
        "{tasks:?}"
    );
    let here = tasks.iter().find(|t| t.step == "here").unwrap();
    let error = here.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("cancelled by eventor-coord cancel ("),
        "{error}"
    );

    let mut status = vec!["status", flow.as_str(), "--run-id", "c"];
    status.extend_from_slice(store_args);
    let shown = text(&coord(dir, &status).stdout);
    assert!(
        shown.contains("interrupted (cancelled by eventor-coord cancel ("),
        "{shown}"
    );

    let requests = store.requests_after(stored.key.clone(), 0).await.unwrap();
    let again = coord(dir, &cancel);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("is not running"));
    let after = store.requests_after(stored.key, 0).await.unwrap();
    assert_eq!(
        requests.len(),
        after.len(),
        "a cancel of a stopped run wrote a request"
    );
}

#[tokio::test]
async fn cancel_from_another_process_stops_an_sqlite_run_here_and_on_node1() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, _) = hosts_file(dir.path(), &bed, &schema("cancel_sqlite"));
    // The test hosts share this machine's files: node1's agent records in the same file.
    let db = dir.path().join("steer.run.db");
    let url = format!("sqlite:{}", db.display());
    let args = ["--hosts", hosts.as_str(), "--store", url.as_str()];
    cancel_stops_the_run(dir.path(), &args, &url, &unique(48)).await;
}

#[tokio::test]
async fn cancel_from_another_process_stops_a_postgres_run_here_and_on_node1() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    // The store is the hosts file's `store:`, for the run and the cancel alike.
    let (hosts, url) = hosts_file(dir.path(), &bed, &schema("cancel_pg"));
    let args = ["--hosts", hosts.as_str()];
    cancel_stops_the_run(dir.path(), &args, &url, &unique(49)).await;
}

#[test]
fn cancel_of_an_unknown_run_names_it_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path());
    let first = coord(dir.path(), &["run", &flow, "--run-id", "r"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let asked = coord(dir.path(), &["cancel", &flow, "--run-id", "nosuch"]);
    assert_eq!(asked.status.code(), Some(2));
    assert!(
        text(&asked.stderr).contains("no run nosuch"),
        "{}",
        text(&asked.stderr)
    );
}

/// `a` then (on its success) `b`, and `c` apart, and `spare`, which nothing starts; each
/// appends a line to its own file, so the files count the runs of each command.
fn chain(dir: &Path) -> String {
    let out = dir.display();
    let flow = format!(
        "name: chain\nevents: {{go: {{}}, a_done: {{}}}}\nsteps:\n  \
         a: {{run: 'echo ran >> {out}/a.txt', triggers: {{success: [a_done]}}}}\n  \
         b: {{run: 'echo ran >> {out}/b.txt'}}\n  \
         c: {{run: 'echo ran >> {out}/c.txt', acquires: {{db: 1}}}}\n  \
         spare: {{run: 'echo ran >> {out}/spare.txt'}}\n\
         resources: {{db: 2}}\n\
         assocs: [{{event: go, targets: [a, c]}}, {{event: a_done, targets: [b]}}]\n\
         trigger: [{{event: go}}]\n"
    );
    let path = write(dir, "chain.yaml", &flow);
    path.to_str().unwrap().to_string()
}

fn runs_of(dir: &Path, step: &str) -> usize {
    let lines = std::fs::read_to_string(dir.join(format!("{step}.txt"))).unwrap_or_default();
    lines.lines().count()
}

#[tokio::test]
async fn rerun_runs_a_succeeded_task_again_and_leaves_the_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path());
    let first = coord(dir.path(), &["run", &flow, "--run-id", "r"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));

    let typo = coord(
        dir.path(),
        &["run", &flow, "--mode", "recover", "--rerun", "aa"],
    );
    assert_eq!(typo.status.code(), Some(2));
    let said = text(&typo.stderr);
    assert!(said.contains("no step `aa`; did you mean `a`?"), "{said}");
    let restart = coord(dir.path(), &["run", &flow, "--rerun", "a"]);
    assert_eq!(restart.status.code(), Some(2));
    assert!(text(&restart.stderr).contains("--rerun needs --mode recover"));

    let again = coord(
        dir.path(),
        &["run", &flow, "--mode", "recover", "--rerun", "a@1"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let counts = ["a", "b", "c"].map(|step| runs_of(dir.path(), step));
    // `a` ran twice; `b` (triggered again by a's success) and `c` succeeded before: skipped.
    assert_eq!(counts, [2, 1, 1]);
    let location = StoreLocation::Sqlite(dir.path().join("chain.run.db"));
    let store = Store::open(&location).await.unwrap();
    let run = store.latest_run("chain").await.unwrap().unwrap();
    assert_eq!(run.key.recovery, 1);
    let tasks = store.tasks(run.key).await.unwrap();
    let of = |step: &str| {
        let task = tasks.iter().find(|t| t.step == step).unwrap();
        (task.status, task.attempt)
    };
    assert_eq!(of("a"), (TaskStatus::Success, 2));
    assert_eq!(of("b"), (TaskStatus::Skipped, 1));
    assert_eq!(of("c"), (TaskStatus::Skipped, 1));
}

/// Every row count of a run's store that a run or recovery would change.
async fn footprint(store: &Store) -> (usize, usize, usize) {
    let runs = store.runs(None).await.unwrap();
    let mut tasks = 0;
    let mut triggers = 0;
    for run in &runs {
        tasks += store.tasks(run.key.clone()).await.unwrap().len();
        triggers += store.triggers(run.key.clone()).await.unwrap().len();
    }
    (runs.len(), tasks, triggers)
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_touches_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let flow = chain(dir.path());
    let db = dir.path().join("chain.run.db");
    let plan = coord(
        dir.path(),
        &["run", &flow, "--dry-run", "--trigger", "go@1..2"],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let printed = text(&plan.stdout);
    let expected = "start triggers (2):\n  go[1]\n  go[2]\n\
                    steps (4, in the order the start triggers reach them):\n  \
                    a      host prime  pools -\n  \
                    c      host prime  pools db:1\n  \
                    b      host prime  pools -\n  \
                    spare  host prime  pools -  (not reached from the start triggers)\n";
    assert!(printed.ends_with(expected), "{printed}");
    assert!(!db.exists(), "a dry run created the store");
    assert!(!dir.path().join("logs").exists(), "a dry run wrote a log");
    assert_eq!(runs_of(dir.path(), "a"), 0, "a dry run ran a command");

    let first = coord(dir.path(), &["run", &flow, "--run-id", "r"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let store = Store::open(&StoreLocation::Sqlite(db.clone()))
        .await
        .unwrap();
    let before = footprint(&store).await;
    let plan = coord(
        dir.path(),
        &[
            "run",
            &flow,
            "--dry-run",
            "--mode",
            "recover",
            "--rerun",
            "a",
        ],
    );
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let printed = text(&plan.stdout);
    for line in [
        "recovers run r from recovery 0 as recovery 1",
        "start triggers (1):\n  go[1]\n",
        "  rerun  a[1]  was success (--rerun)\n",
        "  skip   b[1]  was success\n",
        "  skip   c[1]  was success\n",
    ] {
        assert!(printed.contains(line), "{line:?} not in:\n{printed}");
    }
    assert_eq!(
        footprint(&store).await,
        before,
        "a dry run changed the store"
    );
    assert_eq!(runs_of(dir.path(), "a"), 1, "a dry run ran a command");
}

/// A cancel is for the coordinator that held the run: a later `--mode continue` of the same
/// recovery (whose request rows it shares) carries on rather than being cancelled again.
#[test]
fn a_continue_after_a_cancel_is_not_cancelled_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display();
    let marker = unique(50);
    let flow = write(
        dir.path(),
        "nap.yaml",
        &format!(
            "name: nap\nevents: {{go: {{}}, again: {{}}}}\nsteps:\n  \
             nap: {{run: 'touch {out}/started; sleep {marker}', stop_on_exception: false}}\n  \
             more: {{run: 'echo ran >> {out}/more.txt'}}\n\
             assocs: [{{event: go, targets: [nap]}}, {{event: again, targets: [more]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let mut child = spawn_coord(dir.path(), &["run", flow, "--run-id", "n"]);
    started_or_ended(&mut child, &dir.path().join("started"));
    let asked = coord(dir.path(), &["cancel", flow]);
    assert_eq!(asked.status.code(), Some(0), "{}", text(&asked.stderr));
    let (code, output) = finish_coord(child, Duration::from_secs(60));
    assert_eq!(code, Some(130), "{output}");

    let args = [
        "run",
        flow,
        "--mode",
        "continue",
        "--run-id",
        "n",
        "--trigger",
        "again",
    ];
    let carried = coord(dir.path(), &args);
    let said = text(&carried.stderr);
    assert!(!said.contains("stopping the run"), "{said}");
    assert_ne!(carried.status.code(), Some(130), "{said}");
    assert_eq!(runs_of(dir.path(), "more"), 1, "{said}");
}
