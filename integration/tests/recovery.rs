//! Runs that survive failure and crashes: recover, continue with delays, resource pools, and
//! the coordinator killed at each of its commit boundaries (crash points) followed by
//! `--mode recover`.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use eventor_store::{RunMode, RunStatus, Store, StoreLocation, TaskRecord, TaskStatus};

use crate::{coord, coord_binary, example_flows, text, write};

async fn store_at(path: &Path) -> Store {
    Store::open(&StoreLocation::Sqlite(path.to_path_buf()))
        .await
        .expect("open store")
}

fn status_of<'a>(tasks: &'a [TaskRecord], step: &str) -> Option<&'a TaskRecord> {
    tasks.iter().find(|t| t.step == step)
}

#[tokio::test]
async fn recover_skips_what_succeeded_and_reruns_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let flow = example_flows().join("recovery.yaml");
    let flow = flow.to_str().unwrap();
    write(dir.path(), "input.txt", "-4\n");
    let first = coord(dir.path(), &["run", flow, "--run-id", "sq"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));

    write(dir.path(), "input.txt", "16\n");
    let second = coord(dir.path(), &["run", flow, "--mode", "recover"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    assert_eq!(
        ran, "square\nsquare_root\ndivide\n",
        "square ran once, in the first run"
    );

    let store = store_at(&dir.path().join("recovery.run.db")).await;
    let history = store.run_history("sq").await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0].status, history[1].status),
        (RunStatus::Failure, RunStatus::Success)
    );
    assert_eq!(history[1].mode, RunMode::Recover);
    let tasks = store.tasks(history[1].key.clone()).await.unwrap();
    let square = status_of(&tasks, "square").unwrap();
    assert_eq!((square.status, square.attempt), (TaskStatus::Skipped, 1));
    let root = status_of(&tasks, "square_root").unwrap();
    assert_eq!((root.status, root.attempt), (TaskStatus::Success, 2));
    let divide = status_of(&tasks, "divide").unwrap();
    assert_eq!((divide.status, divide.attempt), (TaskStatus::Success, 1));

    // Recovering from recovery 0 again (not the latest) reruns square_root once more.
    write(dir.path(), "input.txt", "9\n");
    let third = coord(
        dir.path(),
        &[
            "run",
            flow,
            "--mode",
            "recover",
            "--run-id",
            "sq",
            "--recovery",
            "0",
        ],
    );
    assert_eq!(third.status.code(), Some(0), "{}", text(&third.stderr));
    let history = store.run_history("sq").await.unwrap();
    assert_eq!(history.len(), 3);
    let tasks = store.tasks(history[2].key.clone()).await.unwrap();
    assert_eq!(status_of(&tasks, "square_root").unwrap().attempt, 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("root.txt"))
            .unwrap()
            .trim(),
        "3"
    );
}

#[test]
fn recover_or_continue_without_a_previous_run_is_bad_input() {
    for mode in ["recover", "continue"] {
        let dir = tempfile::tempdir().unwrap();
        let flow = example_flows().join("linear.yaml");
        let started = Instant::now();
        let out = coord(dir.path(), &["run", flow.to_str().unwrap(), "--mode", mode]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let expected = format!("no previous run of flow linear to {mode} in sqlite:linear.run.db");
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );
        assert!(started.elapsed() < Duration::from_secs(10), "never a hang");
        let args = [
            "run",
            flow.to_str().unwrap(),
            "--mode",
            mode,
            "--run-id",
            "nosuch",
        ];
        let out = coord(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let expected = format!("no run nosuch to {mode} in sqlite:linear.run.db");
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn continue_with_one_loop_runs_only_what_became_due() {
    let dir = tempfile::tempdir().unwrap();
    let flow = example_flows().join("delays.yaml");
    let flow = flow.to_str().unwrap();
    let first = coord(dir.path(), &["run", flow, "--max-loops", "1"]);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first.stderr));
    assert!(text(&first.stdout).starts_with("incomplete: 1 outstanding, next due at "));
    // Nothing is due yet: a continue does nothing and says so.
    let early = coord(
        dir.path(),
        &["run", flow, "--mode", "continue", "--max-loops", "1"],
    );
    assert_eq!(early.status.code(), Some(3), "{}", text(&early.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ran.txt")).unwrap(),
        "s1\n"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let out = coord(
            dir.path(),
            &["run", flow, "--mode", "continue", "--max-loops", "1"],
        );
        match out.status.code() {
            Some(0) => break,
            Some(3) => assert!(Instant::now() < deadline, "never finished"),
            other => panic!("continue exited {other:?}: {}", text(&out.stderr)),
        }
    }
    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    assert_eq!(
        ran, "s1\ns2\ns3\n",
        "each step ran exactly once across invocations"
    );
    let store = store_at(&dir.path().join("delays.run.db")).await;
    let run = store.latest_run("delays").await.unwrap().unwrap();
    assert_eq!((run.key.recovery, run.status), (0, RunStatus::Success));
    let delays = store.delays(run.key.clone()).await.unwrap();
    assert_eq!(delays.len(), 2);
    assert!(delays.iter().all(|d| d.fired));
    let start_triggers = store.triggers(run.key).await.unwrap();
    let starts = start_triggers.iter().filter(|t| t.event == "start").count();
    assert_eq!(
        starts, 1,
        "re-triggering the start event on continue does nothing"
    );
}

#[tokio::test]
async fn a_continuous_run_sleeps_until_its_delays_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let flow = example_flows().join("delays.yaml");
    let started = Instant::now();
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "two 2 s delays took only {took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ran.txt")).unwrap(),
        "s1\ns2\ns3\n"
    );
}

#[test]
fn a_pool_of_two_runs_at_most_two_tasks_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let flow = example_flows().join("resources.yaml");
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let spans = std::fs::read_to_string(dir.path().join("spans.txt")).unwrap();
    let mut events: Vec<(u128, i32)> = spans
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let delta = if parts[0] == "start" { 1 } else { -1 };
            (parts[2].parse().unwrap(), delta)
        })
        .collect();
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    assert_eq!(most, 2, "spans:\n{spans}");
}

#[test]
fn asking_more_than_a_pool_holds_is_a_definition_error() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "greedy.yaml",
        "resources: {db: 2}\nevents: {go: {}}\nsteps:\n  s1: {run: 'true', acquires: {db: 3}}\n",
    );
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("greedy.yaml:4"),
        "{}",
        text(&out.stderr)
    );
}

/// A 30-step flow: a chain of 10, then a fan-out of 10 joined by an AND, then a chain of 10.
fn thirty_steps() -> String {
    let mut yaml = String::from("name: crash\nevents:\n  start: {}\n");
    for i in 1..=30 {
        yaml += &format!("  d{i}: {{}}\n");
    }
    let fan: Vec<String> = (11..=20).map(|i| format!("d{i}")).collect();
    yaml += &format!("  fan_done: {{expr: \"{}\"}}\n", fan.join(" & "));
    yaml += "steps:\n";
    for i in 1..=30 {
        yaml += &format!(
            "  s{i}: {{run: 'echo s{i} >> ran.txt; sleep 0.03', triggers: {{success: [d{i}]}}}}\n"
        );
    }
    yaml += "assocs:\n  - {event: start, targets: [s1]}\n";
    for i in 1..10 {
        yaml += &format!("  - {{event: d{i}, targets: [s{}]}}\n", i + 1);
    }
    let fan_steps: Vec<String> = (11..=20).map(|i| format!("s{i}")).collect();
    yaml += &format!("  - {{event: d10, targets: [{}]}}\n", fan_steps.join(", "));
    yaml += "  - {event: fan_done, targets: [s21]}\n";
    for i in 21..30 {
        yaml += &format!("  - {{event: d{i}, targets: [s{}]}}\n", i + 1);
    }
    yaml += "trigger:\n  - {event: start}\n";
    yaml
}

/// Runs `eventor-coord ARGS` with the crash points `failpoints` armed (`FAILPOINTS`, the
/// `fail` crate's syntax: `after-commit=3*off->return` aborts right after the 4th commit).
fn run_with_crash_points(dir: &Path, args: &[&str], failpoints: &str) -> ExitStatus {
    Command::new(coord_binary())
        .args(args)
        .current_dir(dir)
        .env("FAILPOINTS", failpoints)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

/// Asserts that the coordinator died at its crash point (SIGABRT), not by finishing.
fn assert_crashed(status: ExitStatus, at: &str) {
    assert_eq!(
        status.signal(),
        Some(6),
        "{at}: expected a crash, got {status}"
    );
}

/// The crash points a run can die at, in the order a run meets them: before and after a
/// recovery's run row, and after the N-th commit of a batch (which, by commit-before-act,
/// is also between a task's start and its end).
const CRASH_ROUNDS: &[&str] = &[
    "after-commit=3*off->return",
    "before-recovery-row=return",
    "after-recovery-row=return",
    "after-recovery-row=return",
    "after-commit=return",
    "after-commit=6*off->return",
    "after-recovery-row=return",
    "after-commit=12*off->return",
];

#[tokio::test]
async fn crash_at_each_commit_boundary_then_recover_reruns_no_success() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "crash.yaml", &thirty_steps());
    let flow = flow.to_str().unwrap();
    let first = ["run", flow, "--run-id", "crash"];
    let recover = ["run", flow, "--run-id", "crash", "--mode", "recover"];
    for (round, point) in CRASH_ROUNDS.iter().enumerate() {
        let args: &[&str] = if round == 0 { &first } else { &recover };
        assert_crashed(run_with_crash_points(dir.path(), args, point), point);
    }
    let last = coord(dir.path(), &recover);
    assert_eq!(last.status.code(), Some(0), "{}", text(&last.stderr));
    check_crash_store(&dir.path().join("crash.run.db")).await;
    check_ran_as_recorded(dir.path()).await;
}

/// The commands' own record (`ran.txt`, one line per start) against the stored rows: a step
/// ran at most once per recovery in which its task was started (active, success or
/// failure), so nothing recorded as skipped ran, and nothing ran after it succeeded.
async fn check_ran_as_recorded(dir: &Path) {
    let ran = std::fs::read_to_string(dir.join("ran.txt")).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in ran.lines() {
        *runs.entry(line).or_default() += 1;
    }
    let store = store_at(&dir.join("crash.run.db")).await;
    let mut started: HashMap<String, usize> = HashMap::new();
    for run in store.run_history("crash").await.unwrap() {
        for task in store.tasks(run.key.clone()).await.unwrap() {
            let ran = !matches!(task.status, TaskStatus::Skipped | TaskStatus::Ready);
            *started.entry(task.step).or_default() += usize::from(ran);
        }
    }
    for i in 1..=30 {
        let step = format!("s{i}");
        let count = runs.get(step.as_str()).copied().unwrap_or(0);
        let rows = started.get(&step).copied().unwrap_or(0);
        assert!(count >= 1, "{step} never ran");
        assert!(
            count <= rows,
            "{step} ran {count} times, started in {rows} rows"
        );
    }
}

#[tokio::test]
async fn a_recovery_that_died_before_acting_is_not_the_next_ones_base() {
    let dir = tempfile::tempdir().unwrap();
    let flow = "name: hole\nevents: {start: {}, s1_done: {}}\nsteps:\n  \
                s1: {run: 'echo s1 >> ran.txt', triggers: {success: [s1_done]}}\n  \
                s2: {run: 'echo s2 >> ran.txt; exit 3'}\n\
                assocs: [{event: start, targets: [s1]}, {event: s1_done, targets: [s2]}]\n\
                trigger: [{event: start}]\n";
    let flow = write(dir.path(), "hole.yaml", flow);
    let flow = flow.to_str().unwrap();
    let first = coord(dir.path(), &["run", flow, "--run-id", "h"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let recover = ["run", flow, "--run-id", "h", "--mode", "recover"];
    for _ in 0..2 {
        let status = run_with_crash_points(dir.path(), &recover, "after-recovery-row=return");
        assert_crashed(status, "after-recovery-row");
    }
    let last = coord(dir.path(), &recover);
    assert_eq!(last.status.code(), Some(1), "{}", text(&last.stderr));
    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    assert_eq!(
        ran, "s1\ns2\ns2\n",
        "s1 succeeded in the first run: never again"
    );
    let store = store_at(&dir.path().join("hole.run.db")).await;
    let history = store.run_history("h").await.unwrap();
    assert_eq!(
        history.len(),
        4,
        "the first run, two empty recoveries, the last"
    );
    let tasks = store.tasks(history[3].key.clone()).await.unwrap();
    let s1 = status_of(&tasks, "s1").unwrap();
    assert_eq!((s1.status, s1.attempt), (TaskStatus::Skipped, 1));
    assert_eq!(status_of(&tasks, "s2").unwrap().attempt, 2);
}

/// After every crash the store is consistent; each recovery skipped exactly the steps that
/// had succeeded before it, and the last one has every step done.
async fn check_crash_store(db: &Path) {
    let store = store_at(db).await;
    let history = store.run_history("crash").await.unwrap();
    let mut succeeded: HashMap<String, i32> = HashMap::new();
    for run in &history {
        let tasks = store.tasks(run.key.clone()).await.unwrap();
        let mut seen = std::collections::HashSet::new();
        for task in &tasks {
            assert!(seen.insert(&task.step), "duplicate task row {}", task.step);
            let before = succeeded.get(&task.step).copied();
            if before.is_some() {
                assert_eq!(
                    task.status,
                    TaskStatus::Skipped,
                    "{} rerun after success",
                    task.step
                );
            } else {
                assert_ne!(
                    task.status,
                    TaskStatus::Skipped,
                    "{} skipped without success",
                    task.step
                );
            }
            if matches!(task.status, TaskStatus::Success | TaskStatus::Skipped) {
                succeeded.insert(task.step.clone(), run.key.recovery);
            }
            assert!(task.attempt >= 1 && task.attempt <= run.key.recovery + 1);
        }
    }
    let last = history.last().unwrap();
    assert_eq!(last.status, RunStatus::Success);
    let tasks = store.tasks(last.key.clone()).await.unwrap();
    assert_eq!(tasks.len(), 30);
    assert!(tasks
        .iter()
        .all(|t| matches!(t.status, TaskStatus::Success | TaskStatus::Skipped)));
}

#[tokio::test]
async fn a_trigger_written_while_nothing_runs_is_acted_on_by_continue() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "later.yaml",
        "events: {start: {}, extra: {}}\n\
         steps:\n  first: {run: 'echo first >> ran.txt'}\n  note: {run: 'echo extra >> ran.txt'}\n\
         assocs: [{event: start, targets: [first]}, {event: extra, targets: [note]}]\n\
         trigger: [{event: start}]\n",
    );
    let flow = flow.to_str().unwrap();
    let first = coord(dir.path(), &["run", flow]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let sent = coord(dir.path(), &["trigger", flow, "extra@1..2", "start"]);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
    let said = text(&sent.stdout);
    assert!(said.contains("start[1] already fired"), "{said}");
    assert!(said.contains("triggered extra[2]"), "{said}");
    let unknown = coord(dir.path(), &["trigger", flow, "nosuch"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.stderr));

    let resumed = coord(dir.path(), &["run", flow, "--mode", "continue"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    assert_eq!(
        ran, "first\nextra\nextra\n",
        "first ran once; note once per sequence"
    );
    let store = store_at(&dir.path().join("later.run.db")).await;
    let run = store.latest_run("later").await.unwrap().unwrap();
    assert_eq!(store.tasks(run.key).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_run_that_died_before_storing_its_start_is_recovered_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "crash.yaml", &thirty_steps());
    let flow = flow.to_str().unwrap();
    let first = ["run", flow, "--run-id", "early"];
    assert_crashed(
        run_with_crash_points(dir.path(), &first, "after-run-row=return"),
        "row",
    );
    let recover = coord(
        dir.path(),
        &["run", flow, "--run-id", "early", "--mode", "recover"],
    );
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let store = store_at(&dir.path().join("crash.run.db")).await;
    let history = store.run_history("early").await.unwrap();
    let tasks = store.tasks(history[1].key.clone()).await.unwrap();
    assert_eq!(
        tasks.len(),
        30,
        "the recovery ran the whole flow from its start"
    );
}
