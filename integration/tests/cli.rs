//! `eventor-coord run` on YAML flows: exit statuses, the store it leaves, errors it prints.

use std::time::{Duration, Instant};

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::{coord, example_flows, text, write};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

async fn open_store(path: std::path::PathBuf) -> Store {
    Store::open(&StoreLocation::Sqlite(path))
        .await
        .expect("open store")
}

#[tokio::test]
async fn linear_example_runs_and_records_every_transition() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let out = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--run-id", "r1"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "success");

    let store = open_store(dir.path().join("linear.run.db")).await;
    let run = store.latest_run("linear").await.unwrap().expect("run row");
    assert_eq!(&*run.key.run_id, "r1");
    assert_eq!(run.status, RunStatus::Success);
    let tasks = store.tasks(run.key.clone()).await.unwrap();
    let done: Vec<_> = tasks.iter().map(|t| (t.step.as_str(), t.status)).collect();
    assert_eq!(
        done,
        [
            ("s1", TaskStatus::Success),
            ("s2", TaskStatus::Success),
            ("s3", TaskStatus::Success)
        ]
    );
    assert!(tasks.iter().all(|t| t.pid.is_some() && t.attempt == 1));
    let triggers: Vec<_> = store.triggers(run.key).await.unwrap();
    let events: Vec<_> = triggers.iter().map(|t| t.event.as_str()).collect();
    assert_eq!(events, ["start", "s1_done", "s2_done"]);
}

#[test]
fn command_output_is_logged_with_step_and_sequence() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("two from s2"))
        .unwrap_or_else(|| panic!("no output line of s2 in:\n{stderr}"));
    assert!(
        line.contains("step=s2") && line.contains("sequence=1"),
        "{line}"
    );
    assert!(
        line.contains("stream=\"stdout\"") || line.contains("stream=stdout"),
        "{line}"
    );
    assert!(
        stderr.contains("Processing finished with: success"),
        "{stderr}"
    );
}

#[tokio::test]
async fn stop_on_exception_fails_the_run_and_starts_nothing_new() {
    let dir = tmp();
    let flow = example_flows().join("stop_on_exception.yaml");
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("failure: s2[1] (exited with status 3)"));

    let store = open_store(dir.path().join("stop_on_exception.run.db")).await;
    let run = store
        .latest_run("stop_on_exception")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Failure);
    let tasks = store.tasks(run.key).await.unwrap();
    let status = |step: &str| tasks.iter().find(|t| t.step == step).map(|t| t.status);
    assert_eq!(
        status("s1"),
        Some(TaskStatus::Success),
        "running tasks finish"
    );
    assert_eq!(status("s2"), Some(TaskStatus::Failure));
    assert_eq!(
        status("s3"),
        Some(TaskStatus::Ready),
        "created, never started"
    );
}

#[tokio::test]
async fn trigger_flag_runs_a_range_of_sequences_with_the_task_env() {
    let dir = tmp();
    let flow = write(
        dir.path(),
        "env.yaml",
        "config: {envvar_prefix: EV_}\n\
         events: {go: {}}\n\
         steps:\n  \
           record: {run: 'echo \"$EV_STEP_NAME $EV_STEP_SEQUENCE $EV_STEP_RECOVERY $EV_LOGGER_NAME $MODE\" >> seen.txt', env: {MODE: fast}}\n\
         assocs: [{event: go, targets: [record]}]\n",
    );
    let out = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--trigger", "go@3..5"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut seen: Vec<String> = std::fs::read_to_string(dir.path().join("seen.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "record 3 0 env.record_3 fast",
            "record 4 0 env.record_4 fast",
            "record 5 0 env.record_5 fast"
        ]
    );
}

#[tokio::test]
async fn max_loops_one_stops_at_a_delay_not_yet_due_with_exit_3() {
    let dir = tmp();
    let flow = example_flows().join("delays.yaml");
    let out = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--max-loops", "1"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("incomplete: 1 outstanding, next due at "),
        "{stdout}"
    );
    let store = open_store(dir.path().join("delays.run.db")).await;
    let run = store.latest_run("delays").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Incomplete);
    let tasks = store.tasks(run.key.clone()).await.unwrap();
    assert_eq!(tasks.len(), 1, "s1 ran; s2 waits for its delay");
    assert_eq!(tasks[0].status, TaskStatus::Success);
    assert_eq!(store.delays(run.key).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_timeout_stops_the_whole_process_group() {
    let dir = tmp();
    let flow = write(
        dir.path(),
        "slow.yaml",
        "events: {go: {}}\n\
         steps:\n  \
           slow: {run: 'sleep 30 & echo $! > bg.pid; wait', timeout: 1s}\n\
         assocs: [{event: go, targets: [slow]}]\n\
         trigger: [{event: go}]\n",
    );
    let started = Instant::now();
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("timed out after 1s"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout did not stop the step"
    );
    let pid: i32 = std::fs::read_to_string(dir.path().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
    assert!(
        !alive,
        "the background child {pid} outlived its step's timeout"
    );
}

#[test]
fn bad_flow_files_exit_2_naming_file_line_and_field() {
    let cases = [
        (
            "events: {go: {}}\nsteps: {s1: {run: 'true'}}\nassocs:\n  - {event: go, targets: [s9]}\n",
            "bad.yaml:4",
            "assocs[0].targets[0]",
        ),
        (
            "events:\n  go: {}\n  both: {expr: 'go & nope'}\n",
            "bad.yaml:3",
            "events.both.expr",
        ),
        (
            "events: {go: {}}\nsteps:\n  s1: {run: 'true', tiemout: 3s}\n",
            "bad.yaml:3",
            "steps.s1",
        ),
        (
            "events: {go: {}}\nsteps:\n  s1: {run: 'true', timeout: 3 parsecs}\n",
            "bad.yaml:3",
            "steps.s1.timeout",
        ),
    ];
    for (yaml, place, field) in cases {
        let dir = tmp();
        let flow = write(dir.path(), "bad.yaml", yaml);
        let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{stderr}");
        assert!(
            stderr.contains(place) && stderr.contains(field),
            "{yaml}\nwanted {place} {field} in:\n{stderr}"
        );
        assert!(
            !dir.path().join("bad.run.db").exists(),
            "a bad flow must not create a store"
        );
    }
}

#[test]
fn bad_flags_exit_2() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    for args in [
        vec!["run", flow.to_str().unwrap(), "--trigger", "start@5..2"],
        vec!["run", flow.to_str().unwrap(), "--trigger", "nosuch"],
        vec!["run", flow.to_str().unwrap(), "--mode", "sideways"],
        vec!["run", "missing.yaml"],
    ] {
        let out = coord(dir.path(), &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error"), "{args:?}");
    }
}

#[test]
fn help_describes_every_flag_of_run() {
    let dir = tmp();
    let out = coord(dir.path(), &["run", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--store",
        "--run-id",
        "--max-loops",
        "--trigger",
        "--config",
        "--mode",
    ] {
        assert!(help.contains(flag), "run --help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn a_config_file_in_the_original_shape_sets_the_limits() {
    let dir = tmp();
    std::env::set_var("EVENTOR_TEST_PREFIX", "CFG_");
    let config = write(
        dir.path(),
        "eventor.yaml",
        "EVENTOR:\n  max_concurrent: 1\n  stop_on_exception: false\n  envvar_prefix: $EVENTOR_TEST_PREFIX\n",
    );
    let flow = write(
        dir.path(),
        "cfg.yaml",
        "events: {go: {}}\n\
         steps:\n  \
           a: {run: 'echo $CFG_STEP_NAME >> order.txt; exit 1'}\n  \
           b: {run: 'echo $CFG_STEP_NAME >> order.txt'}\n\
         assocs: [{event: go, targets: [a, b]}]\n\
         trigger: [{event: go}]\n",
    );
    let args = [
        "run",
        flow.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let out = coord(dir.path(), &args);
    // a fails unhandled (the run fails) but does not stop b, since stop_on_exception is off.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let order = std::fs::read_to_string(dir.path().join("order.txt")).unwrap();
    assert_eq!(
        order, "a\nb\n",
        "max_concurrent 1 runs them one after the other"
    );
}

#[test]
fn a_closed_stderr_does_not_hang_the_run() {
    use std::io::{BufRead, BufReader};
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let mut child = std::process::Command::new(crate::coord_binary())
        .args(["run", flow.to_str().unwrap()])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `eventor-coord run … 2>&1 | head -1` does.
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "eventor-coord hung after its stderr closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn big_output_and_shell_builtins_run_as_commands() {
    let dir = tmp();
    let flow = write(
        dir.path(),
        "out.yaml",
        "config: {stop_on_exception: false}\n\
         events: {go: {}}\n\
         steps:\n  \
           big: {run: 'seq 1 200000', timeout: 60s}\n  \
           four: {run: 'exit 4'}\n\
         assocs: [{event: go, targets: [big, four]}]\n\
         trigger: [{event: go}]\n",
    );
    let out = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--log-level", "warn"],
    );
    // `four` fails (the run fails), but `big` must not hang on a full pipe.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "failure: four[1] (exited with status 4)"
    );
}

#[test]
fn logs_prints_the_central_log_and_filters_by_step() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let flow = flow.to_str().unwrap();
    let run = coord(dir.path(), &["run", flow, "--run-id", "L"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(dir.path().join("logs/linear/L.log").exists());
    let all = text(&coord(dir.path(), &["logs", flow]).stdout);
    let records: Vec<&str> = all.lines().filter(|l| !l.starts_with("-- ")).collect();
    assert_eq!(records.len(), 3, "{all}");
    assert!(records[1].ends_with(" s2[1] stdout two from s2"), "{all}");
    assert!(
        all.lines()
            .last()
            .unwrap()
            .starts_with("-- end of run L: success"),
        "{all}"
    );
    let only = text(&coord(dir.path(), &["logs", flow, "--run-id", "L", "--step", "s3"]).stdout);
    let records: Vec<&str> = only.lines().filter(|l| !l.starts_with("-- ")).collect();
    assert_eq!(records.len(), 1, "{only}");
    assert!(records[0].ends_with(" s3[1] stdout three"), "{only}");
}

#[test]
fn logs_follow_sees_lines_while_the_run_goes_on() {
    use std::io::{BufRead, BufReader};
    let dir = tmp();
    let flow = write(
        dir.path(),
        "slow.yaml",
        "events: {go: {}}\nsteps:\n  talk: {run: 'echo early; sleep 2; echo late'}\n\
         assocs: [{event: go, targets: [talk]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let mut run = std::process::Command::new(crate::coord_binary())
        .args(["run", flow, "--run-id", "F"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut follow = std::process::Command::new(crate::coord_binary())
        .args(["logs", flow, "--run-id", "F", "--follow"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let started = Instant::now();
    let early = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.ends_with("stdout early")))
        .unwrap()
        .unwrap();
    assert!(
        run.try_wait().unwrap().is_none(),
        "`early` was seen while the run was still going: {early}"
    );
    let rest: Vec<String> = lines.map(Result::unwrap).collect(); // ends at the end marker
    assert!(rest.iter().any(|l| l.ends_with("stdout late")), "{rest:?}");
    assert!(
        rest.last().unwrap().starts_with("-- end of run F: success"),
        "{rest:?}"
    );
    assert!(follow.wait().unwrap().success());
    assert!(run.wait().unwrap().success());
    assert!(started.elapsed() < Duration::from_secs(30));
}
