//! `eventor-coord run` on YAML flows: exit statuses, the store it leaves, errors it prints.

use std::time::{Duration, Instant};

use eventor::log::LogLine;
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

/// A task's output line is echoed on stderr as the central log writes it
/// (`TIME HOST STEP[SEQ] STREAM TEXT`): the very line of the log file, before the outcome.
#[test]
fn command_output_is_echoed_as_the_central_log_writes_it() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let out = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--run-id", "e1"],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let (at, line) = stderr
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("two from s2"))
        .unwrap_or_else(|| panic!("no output line of s2 in:\n{stderr}"));
    match LogLine::parse(line) {
        LogLine::Record {
            host,
            task,
            stream,
            text,
            ..
        } => assert_eq!(
            (host, task, stream, text),
            ("prime", "s2[1]", "stdout", "two from s2")
        ),
        other => panic!("not a log line: {other:?}"),
    }
    let log = std::fs::read_to_string(dir.path().join("logs/linear/e1.log")).unwrap();
    assert!(
        log.lines().any(|l| l == line),
        "{line:?} not in the log:\n{log}"
    );
    let finished = stderr
        .lines()
        .position(|l| l.contains("Processing finished with: success"))
        .unwrap_or_else(|| panic!("no outcome in:\n{stderr}"));
    assert!(
        at < finished,
        "the echo comes before the outcome:\n{stderr}"
    );
}

/// A flood of output (200,000 lines) is echoed whole and in order, as many lines as the
/// log holds; `--quiet` and `--log-level warn` echo none of it.
#[test]
fn a_flood_of_output_is_echoed_whole_and_in_order() {
    let dir = tmp();
    let flow = write(
        dir.path(),
        "flood.yaml",
        "name: flood\nevents: {go: {}}\nsteps: {flood: {run: 'seq 1 200000'}}\n\
         assocs: [{event: go, targets: [flood]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let out = coord(dir.path(), &["run", flow, "--run-id", "f1"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let echoed = |stderr: &str| -> Vec<u64> {
        let lines = stderr.lines().map(LogLine::parse);
        let numbers = lines.filter_map(|l| match l {
            LogLine::Record {
                host: "prime",
                task: "flood[1]",
                stream: "stdout",
                text,
                ..
            } => Some(text.parse().unwrap_or_else(|_| panic!("{text:?}"))),
            _ => None,
        });
        numbers.collect()
    };
    let numbers = echoed(&text(&out.stderr));
    assert!(
        numbers.iter().copied().eq(1..=200_000),
        "{} lines",
        numbers.len()
    );
    for quiet in [&["--quiet"][..], &["--log-level", "warn"]] {
        let run = [&["run", flow, "--run-id", "f2", "--replace"][..], quiet].concat();
        // (RUST_LOG would override --quiet's and --log-level's console level.)
        let out = std::process::Command::new(crate::coord_binary())
            .args(&run)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        assert_eq!(echoed(&text(&out.stderr)), [0u64; 0], "{quiet:?}");
        let log = std::fs::read_to_string(dir.path().join("logs/flood/f2.log")).unwrap();
        assert_eq!(
            log.lines().filter(|l| l.contains(" flood[1] ")).count(),
            200_000
        );
    }
}

#[tokio::test]
async fn stop_on_exception_fails_the_run_and_starts_nothing_new() {
    let dir = tmp();
    let flow = example_flows().join("stop_on_exception.yaml");
    let out = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("failure: s2[1] (exited with status 3; last stderr: bad input)"),
        "{}",
        text(&out.stdout)
    );

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
        None,
        "not created after the stop (as the original)"
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

#[test]
fn logs_into_a_closed_pipe_end_quietly_with_exit_0() {
    use std::io::Read;
    let dir = tmp();
    let flow = write(
        dir.path(),
        "loud.yaml",
        "events: {go: {}}\nsteps:\n  talk: {run: 'seq 1 100000'}\n\
         assocs: [{event: go, targets: [talk]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let run = coord(dir.path(), &["run", flow, "--run-id", "P", "--quiet"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    // `logs | head -c 100`: the reader takes a little, then goes away.
    let mut logs = crate::spawn_coord(dir.path(), &["logs", flow, "--run-id", "P"]);
    let mut first = [0u8; 100];
    logs.stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(logs.stdout.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = logs.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "logs hung on a closed pipe");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut said = String::new();
    logs.stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{said}");
    assert_eq!(said, "", "nothing said about the pipe");
}

#[test]
fn logs_refuses_a_step_or_host_the_run_does_not_have_naming_the_known_ones() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let flow = flow.to_str().unwrap();
    let run = coord(dir.path(), &["run", flow, "--run-id", "L"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let step = coord(dir.path(), &["logs", flow, "--step", "s9"]);
    assert_eq!(step.status.code(), Some(2), "{}", text(&step.stderr));
    assert!(
        text(&step.stderr).contains(
            "--step s9: the run has no step `s9`; did you mean `s1`? (known: s1, s2, s3)"
        ),
        "{}",
        text(&step.stderr)
    );
    let task = coord(dir.path(), &["logs", flow, "--step", "nosuch[1]"]);
    assert_eq!(task.status.code(), Some(2), "{}", text(&task.stderr));
    let host = coord(dir.path(), &["logs", flow, "--host", "node9"]);
    assert_eq!(host.status.code(), Some(2), "{}", text(&host.stderr));
    // The prime writes its lines as `prime`, the name `status` gives it.
    let prime = "prime";
    assert!(
        text(&host.stderr).contains(&format!(
            "--host node9: the run has no host `node9` (known: {prime})"
        )),
        "{}",
        text(&host.stderr)
    );
    let here = coord(
        dir.path(),
        &["logs", flow, "--host", prime, "--step", "s2[1]"],
    );
    assert_eq!(here.status.code(), Some(0), "{}", text(&here.stderr));
    assert!(text(&here.stdout).contains(" s2[1] stdout two from s2"));
}

#[test]
fn typos_of_events_steps_and_hosts_get_a_did_you_mean_in_the_users_words() {
    let dir = tmp();
    let flow = example_flows().join("linear.yaml");
    let flow = flow.to_str().unwrap();
    let run = coord(dir.path(), &["run", flow, "--trigger", "strat"]);
    let said = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{said}");
    assert!(
        said.contains("--trigger strat: ")
            && said.contains("has no event `strat`; did you mean `start`?"),
        "{said}"
    );
    assert!(!said.contains("trigger_event"), "no internal names: {said}");
    let trigger = coord(dir.path(), &["trigger", flow, "strat@2", "--store", "x.db"]);
    assert_eq!(trigger.status.code(), Some(2));
    assert!(text(&trigger.stderr).contains("did you mean `start`?"));
    let typo = write(
        dir.path(),
        "typo.yaml",
        "events: {start: {}, s1_done: {}}\nsteps:\n  s1: {run: 'true', triggers: {success: s1_dnoe}}\n",
    );
    let out = coord(dir.path(), &["run", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown event `s1_dnoe`; did you mean `s1_done`?"),
        "{}",
        text(&out.stderr)
    );
    let hosts = write(
        dir.path(),
        "hosts.yaml",
        "hosts:\n  node1: {}\n  node2: {}\n",
    );
    let pinned = write(
        dir.path(),
        "pinned.yaml",
        "events: {go: {}}\nsteps:\n  s1: {run: 'true', host: nod1}\n\
         assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go}]\n",
    );
    let args = [
        "run",
        pinned.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
    ];
    let out = coord(dir.path(), &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("pinned to host `nod1`, which ")
            && text(&out.stderr).contains("does not name; did you mean `node1`?"),
        "{}",
        text(&out.stderr)
    );
}

/// A recovery writes its flow's graph only for the run it recovers: none for an id that
/// names no run (refused, exit 2), none for a fresh id it never used.
#[test]
fn a_recovery_leaves_no_graph_for_an_unused_run_id() {
    let dir = tmp();
    let flow = crate::write(
        dir.path(),
        "f.yaml",
        "name: f\nevents: {go: {}}\nsteps:\n  s1: {run: 'exit 3'}\n\
         assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let first = coord(dir.path(), &["run", flow, "--run-id", "A"]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    let nosuch = coord(
        dir.path(),
        &["run", flow, "--mode", "recover", "--run-id", "nosuch"],
    );
    assert_eq!(nosuch.status.code(), Some(2), "{}", text(&nosuch.stderr));
    let again = coord(dir.path(), &["run", flow, "--mode", "recover"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    let mut graphs: Vec<String> = std::fs::read_dir(dir.path().join("logs/f"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".graph.json"))
        .collect();
    graphs.sort();
    assert_eq!(graphs, ["A.graph.json"]);
}
