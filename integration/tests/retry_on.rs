//! Failures by kind, end to end through `eventor-coord`: a step's `retry_on` spends its
//! retries only on the classes it names (an exit code, a timeout, a command that could not
//! start, a lost host), checked by what actually ran (each attempt appends a line to a file)
//! and by `status --json`'s `failure_class`; an unknown class is refused before anything
//! runs.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::retries::job_command;
use crate::{coord, testbed, text, write};

/// A task as `status --json` shows it: step, status, attempt, failure class.
type Task = (String, String, i64, Option<String>);

fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(str::to_string).collect()
}

/// A flow that triggers `steps` (YAML lines of the `steps:` mapping, named in `names`) once.
/// Each step says `stop_on_exception: false`, so one step's failure does not stop the
/// others' retries.
fn flow(dir: &Path, steps: &str, names: &[&str]) -> String {
    let yaml = format!(
        "events: {{go: {{}}}}\nsteps:\n{steps}assocs: [{{event: go, targets: [{}]}}]\n\
         trigger: [{{event: go}}]\n",
        names.join(", ")
    );
    let path = write(dir, "kinds.yaml", &yaml);
    path.to_str().unwrap().to_string()
}

/// The tasks `eventor-coord ARGS` (a `status --json`) shows, sorted by step.
fn tasks(dir: &Path, args: &[&str]) -> Vec<Task> {
    let out = coord(dir, args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let object: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut tasks: Vec<_> = object["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["step"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
                t["attempt"].as_i64().unwrap(),
                t["failure_class"].as_str().map(str::to_string),
            )
        })
        .collect();
    tasks.sort();
    tasks
}

/// Runs `flow` as run `K` (it fails: one step is not retried) and answers its tasks and the
/// coordinator's stderr.
fn run_failing(dir: &Path, flow: &str) -> (Vec<Task>, String) {
    let out = coord(dir, &["run", flow, "--run-id", "K"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let status = tasks(dir, &["status", flow, "--run-id", "K", "--json"]);
    (status, stderr)
}

fn task(step: &str, status: &str, attempt: i64, class: Option<&str>) -> Task {
    (
        step.into(),
        status.into(),
        attempt,
        class.map(str::to_string),
    )
}

#[test]
fn retry_on_an_exit_code_retries_that_code_only() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow(
        dir.path(),
        "  flaky: {run: 'echo try >> flaky.txt; test -f once || { touch once; exit 75; }', \
           retries: 2, retry_on: [\"exit:75\"], stop_on_exception: false}\n  \
           buggy: {run: 'echo try >> buggy.txt; exit 3', retries: 2, retry_on: [\"exit:75\"], \
           stop_on_exception: false}\n",
        &["flaky", "buggy"],
    );
    let (tasks, stderr) = run_failing(dir.path(), &flow);
    assert_eq!(lines(&dir.path().join("flaky.txt")), ["try", "try"]);
    assert_eq!(
        lines(&dir.path().join("buggy.txt")),
        ["try"],
        "exit 3 is not retried"
    );
    assert_eq!(
        tasks,
        [
            task("buggy", "failure", 1, Some("exit:3")),
            task("flaky", "success", 2, None)
        ]
    );
    assert!(
        stderr.contains("attempt 1 failed (exit:3), not retried: retry_on is [exit:75]"),
        "{stderr}"
    );
}

#[test]
fn retry_on_timeout_retries_a_timed_out_attempt_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow(
        dir.path(),
        "  slow: {run: 'echo try >> slow.txt; test -f once || { touch once; sleep 30; }', \
           timeout: 1s, retries: 1, retry_on: [timeout], stop_on_exception: false}\n  \
           stuck: {run: 'echo try >> stuck.txt; sleep 30', timeout: 1s, retries: 2, \
           retry_on: [exit, signal], stop_on_exception: false}\n",
        &["slow", "stuck"],
    );
    let (tasks, stderr) = run_failing(dir.path(), &flow);
    assert_eq!(lines(&dir.path().join("slow.txt")), ["try", "try"]);
    assert_eq!(lines(&dir.path().join("stuck.txt")), ["try"]);
    assert_eq!(
        tasks,
        [
            task("slow", "success", 2, None),
            task("stuck", "failure", 1, Some("timeout"))
        ]
    );
    assert!(
        stderr.contains("not retried: retry_on is [exit, signal]"),
        "{stderr}"
    );
}

#[test]
fn a_command_that_cannot_start_is_a_start_failure() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow(
        dir.path(),
        "  missing: {run: 'echo try >> missing.txt; no-such-program-e2e', retries: 1, \
           retry_on: [start], stop_on_exception: false}\n  \
           absent: {run: no-such-program-e2e, retries: 2, retry_on: [exit, timeout], \
           stop_on_exception: false}\n",
        &["missing", "absent"],
    );
    let (tasks, _) = run_failing(dir.path(), &flow);
    assert_eq!(
        lines(&dir.path().join("missing.txt")),
        ["try", "try"],
        "a start failure is retried under retry_on: [start]"
    );
    assert_eq!(
        tasks,
        [
            task("absent", "failure", 1, Some("start")),
            task("missing", "failure", 2, Some("start"))
        ]
    );
}

#[test]
fn an_unknown_failure_class_is_refused_naming_where_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let flow = flow(
        dir.path(),
        "  s: {run: 'echo try >> ran.txt', retries: 1, retry_on: [timeout, hostlost]}\n",
        &["s"],
    );
    let out = coord(dir.path(), &["run", &flow, "--run-id", "U"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kinds.yaml:3:")
            && stderr.contains(
                "steps.s.retry_on[1]: unknown failure class `hostlost`; did you mean `host_lost`?"
            ),
        "{stderr}"
    );
    assert!(!dir.path().join("ran.txt").exists(), "nothing ran");
}

/// Starts one job on the test bed (see `retries::job_command`), with the coordinator's
/// log at info.
fn start(
    dir: &Path,
    bed: &std::collections::HashMap<String, String>,
    name: &str,
    job: &str,
    run: &str,
) -> (std::process::Child, String) {
    let (mut command, url) = job_command(dir, bed, name, job, run);
    command.env("RUST_LOG", "info");
    (command.spawn().expect("start eventor-coord"), url)
}

/// Waits (at most 30 s) until the job's command wrote its first line to `path`; a
/// coordinator that ends first, or takes longer, fails the test with its output.
fn started(mut run: std::process::Child, path: &Path) -> std::process::Child {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lines(path).is_empty() {
        let over = std::time::Instant::now() > deadline;
        if over || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            let (code, output) = crate::finish_coord(run, Duration::from_secs(10));
            panic!("the job never started (coordinator: {code:?}):\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    run
}

/// The job's task as `status --json` shows it.
fn job_task(dir: &Path, name: &str, url: &str, run: &str) -> Task {
    let flow = dir.join(format!("{name}.yaml"));
    let flow = flow.to_str().unwrap();
    tasks(
        dir,
        &["status", flow, "--store", url, "--run-id", run, "--json"],
    )
    .remove(0)
}

#[test]
fn retry_on_host_lost_moves_a_cut_off_hosts_task_to_the_other_host() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let job = format!(
        "{{run: 'echo $(hostname -I) >> {out}/rec.txt; test -e {out}/first && exit 0; \
          touch {out}/first; sleep 120', hosts: [node1, node2], retries: 1, \
          retry_on: [host_lost]}}"
    );
    let (run, url) = start(dir.path(), &bed, "on_lost", &job, "HL");
    let rec = dir.path().join("rec.txt");
    let run = started(run, &rec);
    let first = lines(&rec).remove(0);
    let veth = if first == bed["EVENTOR_NODE1_ADDR"] {
        "EVENTOR_NODE1_VETH"
    } else {
        "EVENTOR_NODE2_VETH"
    };
    let _cut = crate::LinkCut::new(&bed[veth]);
    let (code, stdout) = crate::finish_coord(run, Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stdout}");
    let ran = lines(&rec);
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_ne!(ran[0], ran[1], "the retry ran on the other host: {ran:?}");
    assert_eq!(
        job_task(dir.path(), "on_lost", &url, "HL"),
        task("job", "success", 2, None)
    );
}

#[test]
fn a_lost_host_is_not_retried_when_retry_on_leaves_it_out() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let job = format!(
        "{{run: 'echo try >> {out}/ran.txt; sleep 120', host: node1, retries: 2, \
          retry_on: [exit, timeout]}}"
    );
    let (run, url) = start(dir.path(), &bed, "off_lost", &job, "NL");
    let run = started(run, &dir.path().join("ran.txt"));
    let cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let (code, output) = crate::finish_coord(run, Duration::from_secs(90));
    drop(cut);
    assert_eq!(code, Some(1), "{output}");
    assert_eq!(lines(&dir.path().join("ran.txt")), ["try"], "no retry");
    assert!(
        output.contains("attempt 1 failed (host_lost), not retried: retry_on is [exit, timeout]"),
        "{output}"
    );
    assert_eq!(
        job_task(dir.path(), "off_lost", &url, "NL"),
        task("job", "failure", 1, Some("host_lost"))
    );
}
