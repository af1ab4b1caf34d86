//! Steps that ride out failure (`retries:`, `retry_delay:`), end to end through
//! `eventor-coord`: every attempt runs before the failure trigger fires, a delayed retry
//! waits across a coordinator restart (also when a store of the previous schema held it as a
//! delay row), and a task whose host is cut off mid-step finishes on the other host.

use std::path::Path;
use std::time::{Duration, Instant};

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::cluster_run::{hosts_file_with, schema};
use crate::{coord, testbed, text, write};

async fn open(location: &str) -> Store {
    Store::open(&StoreLocation::parse(location).unwrap())
        .await
        .unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

#[tokio::test]
async fn a_failing_step_runs_every_attempt_before_its_failure_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "flaky.yaml",
        "events: {go: {}, gave_up: {}}\n\
         steps:\n  \
           flaky: {run: 'echo try >> ran.txt; exit 1', retries: 2, triggers: {failure: [gave_up]}}\n  \
           after: {run: 'echo after >> ran.txt'}\n\
         assocs: [{event: go, targets: [flaky]}, {event: gave_up, targets: [after]}]\n\
         trigger: [{event: go}]\n",
    );
    let out = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--run-id", "F"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        lines(&dir.path().join("ran.txt")),
        ["try", "try", "try", "after"],
        "three attempts, then the failure trigger"
    );
    let said = text(&out.stderr);
    for (failed, next) in [(1, 2), (2, 3)] {
        let line = format!("attempt {failed} failed (exit:1); retrying (attempt {next} of 3)");
        assert!(said.contains(&line), "no `{line}` in:\n{said}");
    }
    assert!(
        !said.contains("attempt 3 failed (exit:1); retrying"),
        "{said}"
    );
    let db = dir.path().join("flaky.run.db");
    let store = open(db.to_str().unwrap()).await;
    let run = store.run_history("F").await.unwrap().remove(0);
    let tasks = store.tasks(run.key.clone()).await.unwrap();
    let flaky = tasks.iter().find(|t| t.step == "flaky").unwrap();
    assert_eq!((flaky.status, flaky.attempt), (TaskStatus::Failure, 3));
    let retries = store.retries(run.key.clone()).await.unwrap();
    let seen: Vec<_> = retries
        .iter()
        .map(|r| (r.step, r.number, r.taken))
        .collect();
    assert_eq!(
        seen,
        [(0, 1, true), (0, 2, true)],
        "a row per retry: {retries:?}"
    );
    assert!(
        store.delays(run.key).await.unwrap().is_empty(),
        "a retry is no delay"
    );
}

/// A flow whose one step fails its first attempt and is retried 2 s later; the first run
/// makes one loop, so it stops with the retry pending.
fn pending_retry(dir: &Path) -> String {
    let flow = write(
        dir,
        "later.yaml",
        "events: {go: {}}\n\
         steps:\n  \
           once: {run: 'echo try >> ran.txt; test -f ok || { touch ok; exit 1; }', retries: 1, retry_delay: 2s}\n\
         assocs: [{event: go, targets: [once]}]\n\
         trigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap().to_owned();
    let first = coord(dir, &["run", &flow, "--run-id", "L", "--max-loops", "1"]);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first.stderr));
    flow
}

/// Takes the store back to the schema before retries had rows of their own (its down
/// migration), so it holds what that schema wrote: the pending retry as a delay row.
fn to_previous_schema(db: &Path) {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, QueryableByName, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    conn.batch_execute(include_str!(
        "../../shared-store/migrations/sqlite/2027-01-01-000000_retry_rows/down.sql"
    ))
    .unwrap();
    conn.batch_execute("DELETE FROM __diesel_schema_migrations WHERE version = '20270101000000'")
        .unwrap();
    let legacy = "SELECT count(*) AS n FROM delays \
        WHERE assoc = -1 AND sequence LIKE '%' || char(31) || '1' AND NOT fired";
    let found: Count = diesel::sql_query(legacy).get_result(&mut conn).unwrap();
    assert_eq!(found.n, 1, "the pending retry is a delay row again");
}

#[tokio::test]
async fn a_retry_stored_as_a_delay_row_runs_on_continue_after_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let flow = pending_retry(dir.path());
    let failed_by = Instant::now();
    let db = dir.path().join("later.run.db");
    to_previous_schema(&db);
    std::thread::sleep(Duration::from_secs(2).saturating_sub(failed_by.elapsed()));
    let args = [
        "run",
        &flow,
        "--run-id",
        "L",
        "--mode",
        "continue",
        "--max-loops",
        "1",
    ];
    let due = coord(dir.path(), &args);
    assert_eq!(due.status.code(), Some(0), "{}", text(&due.stderr));
    assert_eq!(lines(&dir.path().join("ran.txt")), ["try", "try"]);
    let store = open(db.to_str().unwrap()).await;
    let run = store.run_history("L").await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Success);
    let task = store.tasks(run.key.clone()).await.unwrap().remove(0);
    assert_eq!((task.status, task.attempt), (TaskStatus::Success, 2));
    let retries = store.retries(run.key).await.unwrap();
    let seen: Vec<_> = retries
        .iter()
        .map(|r| (r.step, r.number, r.taken))
        .collect();
    assert_eq!(seen, [(0, 1, true)], "the moved row, taken: {retries:?}");
}

#[tokio::test]
async fn a_retry_stored_as_a_delay_row_reruns_on_recover_after_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let flow = pending_retry(dir.path());
    let db = dir.path().join("later.run.db");
    to_previous_schema(&db);
    let args = [
        "run",
        &flow,
        "--run-id",
        "L",
        "--mode",
        "recover",
        "--max-loops",
        "1",
    ];
    let recovered = coord(dir.path(), &args);
    assert_eq!(
        recovered.status.code(),
        Some(0),
        "{}",
        text(&recovered.stderr)
    );
    assert_eq!(lines(&dir.path().join("ran.txt")), ["try", "try"]);
    let store = open(db.to_str().unwrap()).await;
    let history = store.run_history("L").await.unwrap();
    let first = store.retries(history[0].key.clone()).await.unwrap();
    assert_eq!(
        first.len(),
        1,
        "the moved row stays with its recovery: {first:?}"
    );
    let task = store.tasks(history[1].key.clone()).await.unwrap().remove(0);
    assert_eq!((task.status, task.attempt), (TaskStatus::Success, 3));
}

#[tokio::test]
async fn a_delayed_retry_waits_across_a_restart_and_runs_on_continue() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "later.yaml",
        "events: {go: {}}\n\
         steps:\n  \
           once: {run: 'echo try >> ran.txt; test -f ok || { touch ok; exit 1; }', retries: 1, retry_delay: 3s}\n\
         assocs: [{event: go, targets: [once]}]\n\
         trigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let first = coord(
        dir.path(),
        &["run", flow, "--run-id", "L", "--max-loops", "1"],
    );
    assert_eq!(first.status.code(), Some(3), "{}", text(&first.stderr));
    let failed_at = Instant::now();
    assert!(
        text(&first.stdout).starts_with("incomplete: 1 outstanding, next due at "),
        "{}",
        text(&first.stdout)
    );
    // Not due yet: a continue runs nothing and is still incomplete.
    let early = [
        "run",
        flow,
        "--run-id",
        "L",
        "--mode",
        "continue",
        "--max-loops",
        "1",
    ];
    let again = coord(dir.path(), &early);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again.stderr));
    assert_eq!(lines(&dir.path().join("ran.txt")).len(), 1);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(failed_at.elapsed()));
    let due = coord(dir.path(), &early);
    assert_eq!(due.status.code(), Some(0), "{}", text(&due.stderr));
    assert_eq!(lines(&dir.path().join("ran.txt")), ["try", "try"]);
    let db = dir.path().join("later.run.db");
    let store = open(db.to_str().unwrap()).await;
    let run = store.run_history("L").await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Success);
    let task = store.tasks(run.key).await.unwrap().remove(0);
    assert_eq!((task.status, task.attempt), (TaskStatus::Success, 2));
}

/// Waits until `path` holds at least `n` lines; answers them.
fn wait_for_lines(path: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let found = lines(path);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {found:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One line of a command's own record: `start TIME HOST` or `end TIME`.
fn record_times(path: &Path, what: &str) -> Vec<(f64, String)> {
    let parse = |line: &str| {
        let mut words = line.split_whitespace();
        (words.next()? == what).then_some(())?;
        let time: f64 = words.next()?.parse().ok()?;
        Some((time, words.next().unwrap_or("").to_string()))
    };
    lines(path).iter().filter_map(|l| parse(l)).collect()
}

/// The retry of a task whose host was cut off starts on the other host only once the
/// cut-off attempt is dead: its agent stopped it when its lease ran out (the command's own
/// record has its end), and the prime waited out that lease and its margin.
#[tokio::test]
async fn a_cut_off_hosts_task_is_retried_elsewhere_only_after_its_attempt_stopped() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    // The first attempt runs until it is stopped (its TERM trap writes its end); the retry
    // ends at once.
    let job = format!(
        "{{run: 'echo start $(date +%s.%N) $(hostname -I) >> {out}/rec.txt; \
          if [ -e {out}/first ]; then echo end $(date +%s.%N) >> {out}/rec.txt; exit 0; fi; \
          touch {out}/first; trap \"echo end $(date +%s.%N) >> {out}/rec.txt; exit 143\" TERM; \
          sleep 120 & wait', hosts: [node1, node2], retries: 1}}"
    );
    let (run, url) = start_job(dir.path(), &bed, "retry_host", &job, "M");
    let rec = dir.path().join("rec.txt");
    wait_for_lines(&rec, 1, Duration::from_secs(30));
    let first_host = record_times(&rec, "start").remove(0).1;
    let (cut_host, other) = if first_host == bed["EVENTOR_NODE1_ADDR"] {
        ("EVENTOR_NODE1_VETH", "EVENTOR_NODE2_ADDR")
    } else {
        ("EVENTOR_NODE2_VETH", "EVENTOR_NODE1_ADDR")
    };
    let _cut = crate::LinkCut::new(&bed[cut_host]);
    let cut = Instant::now();
    wait_for_lines(&rec, 4, Duration::from_secs(60));
    let moved_after = cut.elapsed();
    let starts = record_times(&rec, "start");
    let ends = record_times(&rec, "end");
    assert_eq!(starts.len(), 2, "{:?}", lines(&rec));
    assert_eq!(
        starts[1].1,
        bed[other],
        "the retry runs on the other host: {:?}",
        lines(&rec)
    );
    let first_end = ends[0].0;
    assert!(
        starts[1].0 > first_end,
        "the retry started at {} beside the first attempt (stopped at {first_end})",
        starts[1].0
    );
    let (code, stdout) = crate::finish_coord(run, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stdout}");
    eprintln!("MEASURE host loss to the task running elsewhere (lease 1s): {moved_after:?}");
    let store = open(&url).await;
    let run = store.run_history("M").await.unwrap().remove(0);
    let task = store.tasks(run.key).await.unwrap().remove(0);
    assert_eq!((task.status, task.attempt), (TaskStatus::Success, 2));
}

#[tokio::test]
async fn a_host_pinned_task_whose_host_stays_away_fails_after_its_retries() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let job = format!(
        "{{run: 'echo try >> {out}/ran.txt; sleep 30', host: node1, retries: 2, retry_delay: 1s}}"
    );
    let (run, _) = start_job(dir.path(), &bed, "retry_pinned", &job, "H");
    wait_for_lines(&dir.path().join("ran.txt"), 1, Duration::from_secs(30));
    let _cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let (code, stdout) = crate::finish_coord(run, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("no link to any of"), "{stdout}");
}

/// Starts a run of one step, `job` (its YAML mapping), triggered once, on the test bed's
/// hosts with the store in schema `name`; answers the coordinator and the store's URL.
fn start_job(
    dir: &Path,
    bed: &std::collections::HashMap<String, String>,
    name: &str,
    job: &str,
    run_id: &str,
) -> (std::process::Child, String) {
    let (mut command, url) = job_command(dir, bed, name, job, run_id);
    (command.spawn().expect("start eventor-coord"), url)
}

/// [`start_job`]'s command, not started yet.
pub(crate) fn job_command(
    dir: &Path,
    bed: &std::collections::HashMap<String, String>,
    name: &str,
    job: &str,
    run_id: &str,
) -> (std::process::Command, String) {
    // The shortest lease, so a cut-off host's task is called dead as soon as the rules allow.
    let (hosts, url) = hosts_file_with(dir, bed, &schema(name), "lease: 1s\n");
    let flow = write(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "events: {{go: {{}}}}\nsteps:\n  job: {job}\n\
             assocs: [{{event: go, targets: [job]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let args = [
        "run",
        "--hosts",
        &hosts,
        flow.to_str().unwrap(),
        "--run-id",
        run_id,
    ];
    (crate::coord_command(dir, &args), url)
}

/// Polls the run's only task in the store until `done` says yes; answers it.
async fn wait_for_task(
    store: &Store,
    run_id: &str,
    done: impl Fn(&eventor_store::TaskRecord) -> bool,
    within: Duration,
) -> eventor_store::TaskRecord {
    let deadline = Instant::now() + within;
    loop {
        let runs = store.run_history(run_id).await.unwrap_or_default();
        if let Some(run) = runs.into_iter().next() {
            let tasks = store.tasks(run.key).await.unwrap_or_default();
            if let Some(task) = tasks.into_iter().find(&done) {
                return task;
            }
        }
        assert!(Instant::now() < deadline, "run {run_id}: no such task");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_host_that_comes_back_takes_later_tasks() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let job = format!("{{run: 'hostname -I >> {out}/where.txt; sleep 3', host: node1, retries: 60, retry_delay: 1s}}");
    let (run, url) = start_job(dir.path(), &bed, "retry_back", &job, "B");
    let where_ = dir.path().join("where.txt");
    wait_for_lines(&where_, 1, Duration::from_secs(30));
    let store = open(&url).await;
    let cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    // The loss is seen, and a retry while the host is away fails at once, saying why.
    let away = |t: &eventor_store::TaskRecord| {
        t.attempt >= 3
            && t.error
                .as_deref()
                .is_some_and(|e| e.contains("reconnecting"))
    };
    let failed = wait_for_task(&store, "B", away, Duration::from_secs(60)).await;
    assert!(
        failed.error.as_deref().unwrap().contains("node1 lost"),
        "{failed:?}"
    );
    drop(cut);
    let back = Instant::now();
    let second = wait_for_lines(&where_, 2, Duration::from_secs(40)).remove(1);
    assert_eq!(
        second.trim(),
        bed["EVENTOR_NODE1_ADDR"],
        "runs on node1 again"
    );
    eprintln!(
        "MEASURE link up to a task running on the host again: {:?}",
        back.elapsed()
    );
    let (code, stdout) = crate::finish_coord(run, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{stdout}");
    let done = |t: &eventor_store::TaskRecord| t.status == TaskStatus::Success;
    let task = wait_for_task(&store, "B", done, Duration::from_secs(5)).await;
    assert!(task.attempt >= 3, "{task:?}");
}

/// A lost host's agent may still record its task's end (it was cut off from the prime, and
/// got back to the store first): its end stands, instead of the prime's late write being
/// refused and the run aborted.
#[tokio::test]
async fn an_end_recorded_by_a_cut_off_agent_wins_over_the_loss() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let job = format!("{{run: 'echo started >> {out}/ran.txt; sleep 3', host: node1}}");
    let (mut command, url) = job_command(dir.path(), &bed, "late_end", &job, "E");
    let run = command
        .env("FAILPOINTS", "lost-before-record=sleep(10000)")
        .spawn()
        .unwrap();
    wait_for_lines(&dir.path().join("ran.txt"), 1, Duration::from_secs(30));
    // The command ends while node1 is cut off; its agent keeps trying the store. The prime
    // sees the loss after 5 s and is held 10 s before recording it; the link is back after
    // 7 s, so the agent records the success first.
    let cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    drop(cut);
    let (code, stdout) = crate::finish_coord(run, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stdout}");
    let store = open(&url).await;
    let run = store.run_history("E").await.unwrap().remove(0);
    let task = store.tasks(run.key).await.unwrap().remove(0);
    assert_eq!(
        (task.status, task.attempt),
        (TaskStatus::Success, 1),
        "{task:?}"
    );
}
