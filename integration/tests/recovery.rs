//! Runs that survive failure and crashes: recover, continue with delays, resource pools, and
//! `kill -9` of the coordinator at random moments followed by `--mode recover`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
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
        let expected = format!("no previous run to {mode} in sqlite:linear.run.db");
        assert!(
            text(&out.stderr).contains(&expected),
            "{}",
            text(&out.stderr)
        );
        assert!(started.elapsed() < Duration::from_secs(10), "never a hang");
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

/// A small xorshift generator: random kill points without another dependency.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Starts `eventor-coord run` and kills it with SIGKILL after `after` (if still running).
/// Returns its exit code when it finished by itself.
fn run_and_kill(dir: &Path, args: &[&str], after: Duration) -> Option<i32> {
    let mut child = Command::new(coord_binary())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    None
}

#[tokio::test]
async fn kill_9_at_random_moments_then_recover_finishes_without_duplicates() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-point seed {seed}");
    let mut random = Random(seed);
    for round in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let flow = write(dir.path(), "crash.yaml", &thirty_steps());
        let flow = flow.to_str().unwrap();
        let mut args = vec!["run", flow, "--run-id", "crash"];
        let mut kills = 0;
        let finished = loop {
            let after = Duration::from_millis(random.below(900));
            match run_and_kill(dir.path(), &args, after) {
                Some(code) => break code,
                None => kills += 1,
            }
            args = vec!["run", flow, "--run-id", "crash", "--mode", "recover"];
            assert!(kills < 60, "round {round}: never finished");
        };
        assert_eq!(
            finished, 0,
            "round {round} (seed {seed}) ended with {finished}"
        );
        check_crash_store(&dir.path().join("crash.run.db"), round, seed).await;
    }
}

/// After every kill the store is consistent; each recovery skipped exactly the steps that
/// had succeeded before it, and the last one has every step done.
async fn check_crash_store(db: &Path, round: usize, seed: u64) {
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
                    "round {round} seed {seed}: {} rerun after success",
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
