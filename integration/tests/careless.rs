//! Careless input gets exit 2 and a clear message, and loses nothing already stored: run
//! ids, flow names, stores, logs, loops, triggers; one run id has one coordinator even
//! through a symlink; triggers written into a running SQLite run are acted on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{coord, coord_binary, example_flows, text, wait_for, write};

fn linear() -> String {
    example_flows()
        .join("linear.yaml")
        .to_str()
        .unwrap()
        .to_string()
}

/// Runs `args`, expects exit 2 with `needle` in the message.
fn refused(dir: &Path, args: &[&str], needle: &str) {
    let out = coord(dir, args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {needle:?} not in {stderr}"
    );
}

#[test]
fn bad_run_ids_flow_names_loops_and_triggers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flow = linear();
    let long = "x".repeat(240);
    refused(dir.path(), &["run", &flow, "--run-id", ""], "run id");
    refused(
        dir.path(),
        &["run", &flow, "--run-id", "a\nb"],
        "control characters",
    );
    refused(dir.path(), &["run", &flow, "--run-id", &long], "240 bytes");
    refused(
        dir.path(),
        &["run", &flow, "--max-loops", "4294967296"],
        "max_loops",
    );
    refused(
        dir.path(),
        &["run", &flow, "--trigger", "start@@1"],
        "must not contain `@`",
    );
    let escape = write(
        dir.path(),
        "escape.yaml",
        "name: ../x/../../y\nsteps: {s: {}}\n",
    );
    refused(
        dir.path(),
        &["run", escape.to_str().unwrap()],
        "escape.yaml:1:7: name",
    );
    assert!(!dir.path().join("linear.run.db").exists(), "nothing stored");
}

#[test]
fn a_store_that_is_no_durable_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flow = linear();
    let folder = dir.path().display().to_string();
    refused(
        dir.path(),
        &["run", &flow, "--store", &folder],
        "is a directory",
    );
    let missing = dir.path().join("no/such/dir/x.db").display().to_string();
    refused(
        dir.path(),
        &["run", &flow, "--store", &missing],
        "directory does not exist",
    );
    refused(
        dir.path(),
        &["run", &flow, "--store", "sqlite::memory:"],
        "in-memory",
    );
    let notdb = write(dir.path(), "notdb", "hello, not a database\n");
    let notdb = notdb.to_str().unwrap();
    for args in [
        vec!["run", &flow, "--store", notdb],
        vec!["trigger", "--store", notdb, &flow, "start"],
        vec!["prune", &flow, "--store", notdb, "--older-than", "1d"],
    ] {
        refused(
            dir.path(),
            &args,
            &format!("{notdb}: is not an SQLite database"),
        );
    }
}

#[test]
fn logs_of_an_unknown_run_are_refused_and_each_run_id_has_its_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let flow = linear();
    refused(
        dir.path(),
        &["logs", &flow, "--run-id", "nope"],
        "no log of run nope",
    );
    for id in ["a b", "a_b"] {
        let out = coord(dir.path(), &["run", &flow, "--run-id", id]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let logs = std::fs::read_dir(dir.path().join("logs/linear"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .count();
    assert_eq!(logs, 2, "runs `a b` and `a_b` share no log");
}

/// A log folder that cannot be written means the run could not run (exit 4), and nothing
/// of it is stored; a store that cannot be reached, the same.
#[test]
fn an_unwritable_logdir_or_an_unreachable_store_could_not_run_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "not-a-dir", "");
    let logdir = file.to_str().unwrap();
    let out = coord(dir.path(), &["run", &linear(), "--logdir", logdir]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not writable"),
        "{}",
        text(&out.stderr)
    );
    // Port 9 (discard) has no Postgres behind it on this machine.
    let store = "postgres://nobody@127.0.0.1:9/eventor";
    let out = coord(dir.path(), &["run", &linear(), "--store", store]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !dir.path().join("linear.run.db").exists(),
        "no run row left `running`"
    );
}

/// A flow whose step `wait` runs until `release` exists, and whose event `poke` (fired
/// only from outside) runs `poked`.
const POKEABLE: &str = "name: poke\nevents: {go: {}, poke: {}}\nsteps:\n  \
    wait: {run: 'touch started; while [ ! -e release ]; do sleep 0.05; done'}\n  \
    poked: {run: 'touch poked'}\n\
    assocs: [{event: go, targets: [wait]}, {event: poke, targets: [poked]}]\n\
    trigger: [{event: go}]\n";

#[test]
fn one_run_id_has_one_coordinator_even_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "poke.yaml", POKEABLE);
    let flow = flow.to_str().unwrap();
    let mut first = Command::new(coord_binary())
        .args(["run", flow, "--run-id", "one", "--store", "real.db"])
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("started"));
    std::os::unix::fs::symlink("real.db", dir.path().join("alias.db")).unwrap();
    let args = [
        "run", flow, "--run-id", "one", "--mode", "continue", "--store", "alias.db",
    ];
    refused(dir.path(), &args, "already being run");
    write(dir.path(), "release", "");
    assert!(first.wait().unwrap().success());
}

#[test]
fn a_trigger_written_into_a_running_sqlite_run_is_acted_on() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "poke.yaml", POKEABLE);
    let flow = flow.to_str().unwrap();
    let mut run = Command::new(coord_binary())
        .args(["run", flow, "--run-id", "p"])
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("started"));
    let poke = coord(
        dir.path(),
        &["trigger", flow, "poke", "poke@1", "--run-id", "p"],
    );
    assert_eq!(poke.status.code(), Some(0), "{}", text(&poke.stderr));
    assert_eq!(
        text(&poke.stdout),
        "triggered poke[1] in run p recovery 0\n",
        "once"
    );
    write(dir.path(), "release", "");
    assert!(run.wait().unwrap().success());
    assert!(
        dir.path().join("poked").exists(),
        "the trigger was acted on before the end"
    );
}

#[tokio::test]
async fn a_run_whose_hosts_are_unreachable_is_recorded_failed_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // An address of the test subnet nobody answers on, with a short connect timeout.
    let ssh = write(
        dir.path(),
        "ssh_config",
        "Host ghost\n  HostName 10.213.0.254\n  ConnectTimeout 1\n  ConnectionAttempts 1\n",
    );
    let hosts = write(
        dir.path(),
        "hosts.yaml",
        &format!("ssh_config: {}\nhosts:\n  ghost: {{}}\n", ssh.display()),
    );
    let flow = write(
        dir.path(),
        "far.yaml",
        "events: {go: {}}\nsteps: {s: {run: 'true', host: ghost}}\n\
         assocs: [{event: go, targets: [s]}]\ntrigger: [{event: go}]\n",
    );
    let args = [
        "run",
        "--hosts",
        hosts.to_str().unwrap(),
        flow.to_str().unwrap(),
    ];
    let out = coord(dir.path(), &[&args[..], &["--run-id", "far"]].concat());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ghost: connect"),
        "the cause is named: {stderr}"
    );
    let store = eventor_store::Store::open(&eventor_store::StoreLocation::Sqlite(
        dir.path().join("far.run.db"),
    ))
    .await
    .unwrap();
    let run = store.latest_run("far").await.unwrap().unwrap();
    assert_eq!(
        run.status,
        eventor_store::RunStatus::Failure,
        "not left running"
    );
}

#[test]
fn logs_follow_ends_when_the_runs_coordinator_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "poke.yaml", POKEABLE);
    let flow = flow.to_str().unwrap();
    let mut run = Command::new(coord_binary())
        .args(["run", flow, "--run-id", "gone"])
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("started"));
    let mut follow = Command::new(coord_binary())
        .args(["logs", flow, "--run-id", "gone", "--follow"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    run.kill().unwrap(); // SIGKILL: no end marker is ever written
    run.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = follow.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the follower never noticed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
}
