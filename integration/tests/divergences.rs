//! Where we parted from the original and came back: its example config file (an in-memory
//! entry with driver options), no task made after `stop_on_exception` stopped the flow, and
//! an event and a step of one name (a target naming both says which), each through the CLI
//! and the commands' own record.

use std::path::Path;

use eventor_store::{RunKey, Store, StoreLocation, TaskStatus};

use crate::{coord, text, write};

/// What the steps wrote, one line each, in order.
fn ran(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ran.txt")).unwrap_or_default()
}

/// s1 -> s2, each writing its name to ran.txt.
const PAIR: &str = "name: pair\n\
    events: {start: {}, s1_done: {}}\n\
    steps:\n  \
      s1: {run: 'echo s1 >> ran.txt', triggers: {success: [s1_done]}}\n  \
      s2: {run: 'echo s2 >> ran.txt'}\n\
    assocs: [{event: start, targets: [s1]}, {event: s1_done, targets: [s2]}]\n\
    trigger: [{event: start}]\n";

/// The shape of the original's example `runly.conf`: the store the run uses, an in-memory
/// SQLite entry with driver options, a Postgres entry with a driver, one with a key we do not
/// know.
fn runly_conf(dir: &Path) -> String {
    format!(
        "EVENTOR:\n    max_concurrent: -1\n    stop_on_exception: True\n    DATABASES:\n        \
         default: {{dialect: sqlite, database: {db}}}\n        \
         memory:\n            dialect: sqlite\n            query: {{cache: shared}}\n        \
         pg: {{dialect: postgresql, drivername: psycopg2, host: nowhere}}\n        \
         typo: {{dialect: postgresql, hostname: nowhere}}\n    \
         default_db: default\n",
        db = dir.join("runly.db").display(),
    )
}

#[test]
fn the_originals_example_config_runs_with_warnings_and_its_unused_entries_stop_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "pair.yaml", PAIR);
    let config = write(dir.path(), "runly.conf", &runly_conf(dir.path()));
    let (flow, config) = (flow.to_str().unwrap(), config.to_str().unwrap());
    let out = coord(dir.path(), &["run", flow, "--config", config]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(ran(dir.path()), "s1\ns2\n");
    assert!(dir.path().join("runly.db").exists(), "default_db's file");
    for key in ["DATABASES.memory.query", "DATABASES.pg.drivername"] {
        let warning = format!("warning: {config}:");
        let line = stderr.lines().find(|l| l.contains(key));
        assert!(
            line.is_some_and(|l| l.contains(&warning) && l.contains("has no effect here")),
            "no warning naming {key}: {stderr}"
        );
    }
}

#[test]
fn a_selected_entry_that_cannot_be_used_is_bad_input_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "pair.yaml", PAIR);
    let config = write(dir.path(), "runly.conf", &runly_conf(dir.path()));
    let (flow, config) = (flow.to_str().unwrap(), config.to_str().unwrap());
    let cases = [
        (
            "memory",
            "7:13: EVENTOR.DATABASES.memory: an SQLite entry needs `file`",
        ),
        (
            "typo",
            "10:37: EVENTOR.DATABASES.typo.hostname: unknown key; did you mean `host`?",
        ),
    ];
    for (store, want) in cases {
        let out = coord(
            dir.path(),
            &["run", flow, "--config", config, "--store", store],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{store}: {stderr}");
        assert!(
            stderr.contains(&format!("{config}:{want}")),
            "{store}: {stderr}"
        );
    }
    assert_eq!(ran(dir.path()), "", "no step ran");
}

/// s1 and s2 start together; s2 fails while `fail` exists and s1 runs on a second after it,
/// then fires s1_done, whose step s3 skips a recovered `ready` task.
const STOPPED: &str = "name: stopped\n\
    events: {start: {}, s1_done: {}}\n\
    steps:\n  \
      s1: {run: 'until test -e s2_ended; do sleep 0.02; done; sleep 1; echo s1 >> ran.txt', \
           triggers: {success: [s1_done]}}\n  \
      s2: {run: 'echo s2 >> ran.txt; touch s2_ended; test ! -e fail'}\n  \
      s3: {run: 'echo s3 >> ran.txt', recovery: {ready: skip}}\n\
    assocs: [{event: start, targets: [s1, s2]}, {event: s1_done, targets: [s3]}]\n\
    trigger: [{event: start}]\n";

#[tokio::test]
async fn after_a_stop_on_exception_no_task_is_made_and_a_recovery_runs_the_step_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "stopped.yaml", STOPPED);
    let flow = flow.to_str().unwrap();
    write(dir.path(), "fail", "");
    let first = coord(dir.path(), &["run", flow, "--run-id", "r"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    assert_eq!(ran(dir.path()), "s2\ns1\n", "s1 ran on after s2 failed");
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("stopped.run.db")))
        .await
        .unwrap();
    let key = RunKey {
        run_id: "r".into(),
        recovery: 0,
    };
    let mut tasks: Vec<(String, TaskStatus)> = (store.tasks(key.clone()).await.unwrap())
        .into_iter()
        .map(|t| (t.step, t.status))
        .collect();
    tasks.sort();
    let want = [("s1", TaskStatus::Success), ("s2", TaskStatus::Failure)];
    let want: Vec<(String, TaskStatus)> = want.iter().map(|(s, t)| (s.to_string(), *t)).collect();
    assert_eq!(tasks, want, "no s3 task after the stop");
    let triggers = store.triggers(key).await.unwrap();
    assert!(
        triggers.iter().any(|t| t.event == "s1_done"),
        "s1's trigger is recorded: {triggers:?}"
    );
    let status = coord(dir.path(), &["status", flow, "--run-id", "r", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let shown: Vec<&str> = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(shown.len(), 2, "status shows no ready task: {status:#}");
    assert!(!shown.contains(&"ready"), "{status:#}");

    std::fs::remove_file(dir.path().join("fail")).unwrap();
    let again = coord(
        dir.path(),
        &["run", flow, "--run-id", "r", "--mode", "recover"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let record = ran(dir.path());
    let mut lines: Vec<&str> = record.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["s1", "s2", "s2", "s3"],
        "s2 reruns and s3, never run, runs as new; s1 is not run again"
    );
    let recovered = RunKey {
        run_id: "r".into(),
        recovery: 1,
    };
    let tasks = store.tasks(recovered).await.unwrap();
    let s3 = tasks.iter().find(|t| t.step == "s3").expect("an s3 task");
    assert_eq!((s3.status, s3.attempt), (TaskStatus::Success, 1));
}

/// The original's way: each step fires an event of its own name. `fin` is reached through
/// the event form, then its step through the step form.
const SAME_NAMES: &str = "name: same\n\
    events: {start: {}, s1: {}, s2: {}, fin: {}}\n\
    steps:\n  \
      s1: {run: 'echo s1 >> ran.txt', triggers: {success: [s1]}}\n  \
      s2: {run: 'echo s2 >> ran.txt', triggers: {success: [s2]}}\n  \
      fin: {run: 'echo fin >> ran.txt'}\n\
    assocs:\n  \
      - {event: start, targets: [{step: s1}]}\n  \
      - {event: s1, targets: {step: s2}}\n  \
      - {event: s2, targets: [{event: fin}]}\n  \
      - {event: fin, targets: [{step: fin}]}\n\
    trigger: [{event: start}]\n";

#[tokio::test]
async fn an_event_and_a_step_of_one_name_run_when_targets_say_which() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "same.yaml", SAME_NAMES);
    let flow = flow.to_str().unwrap();
    let check = coord(dir.path(), &["check", flow]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let out = coord(dir.path(), &["run", flow, "--run-id", "r"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(ran(dir.path()), "s1\ns2\nfin\n");
    let store = Store::open(&StoreLocation::Sqlite(dir.path().join("same.run.db")))
        .await
        .unwrap();
    let key = RunKey {
        run_id: "r".into(),
        recovery: 0,
    };
    let triggers = store.triggers(key).await.unwrap();
    let fired: Vec<&str> = triggers.iter().map(|t| t.event.as_str()).collect();
    assert_eq!(fired, ["start", "s1", "s2", "fin"]);
}

#[test]
fn a_bare_target_naming_an_event_and_a_step_is_bad_input_asking_which() {
    let dir = tempfile::tempdir().unwrap();
    let bare = SAME_NAMES.replace("targets: [{step: s1}]", "targets: [s1]");
    let flow = write(dir.path(), "same.yaml", &bare);
    let flow = flow.to_str().unwrap();
    for command in ["check", "run"] {
        let out = coord(dir.path(), &[command, flow]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        let want = format!(
            "{flow}:8:30: assocs[0].targets[0]: `s1` is both a step and an event: write \
             {{step: s1}} or {{event: s1}}"
        );
        assert!(stderr.contains(&want), "{command}: {stderr}");
    }
    assert!(!dir.path().join("same.run.db").exists(), "nothing stored");
    assert_eq!(ran(dir.path()), "");
}
