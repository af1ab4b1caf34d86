//! What a supervisor guarantees, whichever program it is (`super::PROGRAM`): the command's
//! exit code and killing signal come back as if it ran directly, the pid the runner gets
//! leads the command's group, and whatever the command leaves running, in its group or out
//! of it (`setsid`), is stopped when it ends or is cancelled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventor_agent::command::{run_command, CommandSpec, OutputSink};
use eventor_agent::TaskEnd;

use super::procs::alive;
use tokio_util::sync::CancellationToken;

fn supervised() {
    eventor_agent::supervisor::supervise_commands_with(PathBuf::from(super::PROGRAM));
}

fn spec(command: &str) -> CommandSpec {
    CommandSpec {
        command: command.to_string(),
        env: Vec::new(),
        cwd: None,
        timeout: None,
        kill_grace: Duration::from_secs(5),
        kill_now: None,
    }
}

/// An output sink that collects every line, and what it collected.
fn collected() -> (OutputSink, Arc<std::sync::Mutex<String>>) {
    let lines = Arc::new(std::sync::Mutex::new(String::new()));
    let seen = lines.clone();
    let output: OutputSink = Arc::new(move |_, batch| {
        for line in batch.lines() {
            seen.lock().unwrap().push_str(line);
        }
        Box::pin(async {})
    });
    (output, lines)
}

fn no_output() -> OutputSink {
    Arc::new(|_, _| Box::pin(async {}))
}

/// Runs `command` under a supervisor to its end; also returns the pid the runner got.
async fn run(command: &str, cancel: CancellationToken) -> (TaskEnd, i64) {
    supervised();
    let pid = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let seen = pid.clone();
    let started = move |p: i64| {
        seen.store(p, std::sync::atomic::Ordering::SeqCst);
        async {}
    };
    let outcome = run_command(&spec(command), cancel, started, no_output()).await;
    (outcome, pid.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test]
async fn a_supervised_commands_exit_code_comes_back_as_its_own() {
    let (ok, _) = run("true", CancellationToken::new()).await;
    assert!(ok.succeeded(), "{ok:?}");
    assert_eq!(ok.result.as_deref(), Some("0"));
    let (failed, _) = run("exit 3", CancellationToken::new()).await;
    assert!(!failed.succeeded());
    assert_eq!(failed.result.as_deref(), Some("3"));
    assert_eq!(failed.error.as_deref(), Some("exited with status 3"));
    let (missing, _) = run("no-such-program-anywhere", CancellationToken::new()).await;
    assert_eq!(missing.result.as_deref(), Some("127"));
}

#[tokio::test]
async fn a_supervised_command_killed_by_a_signal_is_reported_killed_by_it() {
    for (signal, number) in [("KILL", 9), ("SEGV", 11), ("TERM", 15)] {
        let (outcome, _) = run(&format!("kill -{signal} $$"), CancellationToken::new()).await;
        assert!(!outcome.succeeded());
        assert_eq!(
            outcome.error.as_deref(),
            Some(&*format!("killed by signal {number}")),
            "{signal}"
        );
    }
}

#[tokio::test]
async fn the_runner_gets_the_pid_that_leads_the_commands_group() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("group");
    let (outcome, pid) = run(
        &format!("cut -d' ' -f5 /proc/$$/stat > {}", out.display()),
        CancellationToken::new(),
    )
    .await;
    assert!(outcome.succeeded(), "{outcome:?}");
    let group = std::fs::read_to_string(&out).unwrap();
    assert_eq!(group.trim(), pid.to_string());
}

/// A command that starts a sleep in its group and one out of it (`setsid`), writes their
/// pids to files in `dir`, then waits or, with `and_exit`, exits at once.
fn leaves_two_sleeps(dir: &Path, and_exit: bool) -> String {
    let d = dir.display();
    let end = if and_exit { "exit 0" } else { "wait" };
    format!(
        "sleep 300 & echo $! > {d}/same.tmp; mv {d}/same.tmp {d}/same; \
         setsid sh -c 'echo $$ > {d}/apart.tmp; mv {d}/apart.tmp {d}/apart; exec sleep 300' & \
         while [ ! -e {d}/apart ]; do sleep 0.01; done; {end}"
    )
}

fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn both_gone(dir: &Path) -> bool {
    ![pid_in(&dir.join("same")), pid_in(&dir.join("apart"))]
        .into_iter()
        .any(alive)
}

#[tokio::test]
async fn what_a_command_leaves_running_ends_with_it_even_out_of_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (outcome, _) = run(
        &leaves_two_sleeps(dir.path(), true),
        CancellationToken::new(),
    )
    .await;
    assert!(outcome.succeeded(), "{outcome:?}");
    assert!(both_gone(dir.path()), "a sleep outlived its command");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited out the grace"
    );
}

#[tokio::test]
async fn a_cancelled_command_takes_what_it_started_out_of_its_group_along() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let command = leaves_two_sleeps(dir.path(), false);
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { run(&command, cancel).await }
    });
    let apart = dir.path().join("apart");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !apart.exists() {
        assert!(
            Instant::now() < deadline,
            "the command never started its sleeps"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let (outcome, _) = running.await.unwrap();
    assert_eq!(outcome.error.as_deref(), Some("cancelled"));
    assert!(both_gone(dir.path()), "a sleep outlived the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_commands_started_at_once_all_come_back_with_their_own_ends() {
    supervised();
    // More news than the pair's queue holds at once, both ways: none of it may be dropped,
    // and neither side may wait on the other for good (the runner's threads all handing
    // starts to a keeper that waits to hand them news).
    let command = |i: usize| ["true", "false"][i % 2];
    let runs: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(async move { run(command(i), CancellationToken::new()).await }))
        .collect();
    let all = async {
        let mut ends = Vec::new();
        for run in runs {
            ends.push(run.await.unwrap().0);
        }
        ends
    };
    let ends = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("a command's end never came back");
    for (i, end) in ends.iter().enumerate() {
        assert_eq!(end.result.as_deref(), Some(["0", "1"][i % 2]), "{end:?}");
    }
}

#[tokio::test]
async fn a_command_starts_with_no_signal_blocked_or_ignored() {
    supervised();
    let (output, lines) = collected();
    let end = run_command(
        &spec("grep -E '^Sig(Blk|Ign)' /proc/self/status"),
        CancellationToken::new(),
        |_| async {},
        output,
    )
    .await;
    assert!(end.succeeded(), "{end:?}");
    let lines = lines.lock().unwrap().clone();
    // Signals 1 to 31 (the C library keeps 32 and 33 for itself).
    let standard = |lines: &str, field: &str| {
        let at = lines.find(field).expect(field) + field.len();
        let mask = u64::from_str_radix(lines[at..].trim_start().get(..16).unwrap(), 16).unwrap();
        mask & 0x7fff_ffff
    };
    assert_eq!(standard(&lines, "SigBlk:"), 0, "{lines}");
    // What this test was started with ignored, the command inherits, as from a shell (one
    // run in the background ignores SIGINT and SIGQUIT); SIGPIPE excepted, which Rust's
    // start-up ignores and its spawns set back. Nothing more.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let sigpipe = 1 << (SIGPIPE - 1);
    let inherited = standard(&ours, "SigIgn:") & !sigpipe;
    assert_eq!(standard(&lines, "SigIgn:"), inherited, "{lines}");
}

/// A command starts in its own directory, with its environment over the runner's, its
/// program found on its own `PATH`, and its number in `EVENTOR_COMMAND` whatever the runner
/// passed under that name; one whose program is nowhere still runs, through the shell.
#[tokio::test]
async fn a_command_gets_its_directory_environment_and_its_own_path() {
    supervised();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = bin.join("tool");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho \"$(pwd) $GREETING $EVENTOR_COMMAND\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (output, lines) = collected();
    let mut spec = spec("tool");
    spec.cwd = Some(dir.path().to_path_buf());
    spec.env = [
        ("PATH", bin.to_str().unwrap()),
        ("GREETING", "hi"),
        ("EVENTOR_COMMAND", "forged"),
    ]
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .to_vec();
    let end = run_command(&spec, CancellationToken::new(), |_| async {}, output).await;
    assert!(end.succeeded(), "{end:?}");
    let line = lines.lock().unwrap().clone();
    let words: Vec<&str> = line.split_whitespace().collect();
    let here = dir.path().canonicalize().unwrap();
    assert_eq!(words[..2], [here.to_str().unwrap(), "hi"], "{line}");
    assert!(
        words[2].parse::<u64>().is_ok(),
        "its number, not the runner's: {line}"
    );
    let (missing, _) = run("echo-nowhere-to-be-found a b", CancellationToken::new()).await;
    assert_eq!(missing.result.as_deref(), Some("127"), "{missing:?}");
    assert!(
        missing
            .error
            .as_deref()
            .is_some_and(|e| e.contains("not found")),
        "{missing:?}"
    );
}

/// SIGPIPE's number on Linux.
const SIGPIPE: u64 = 13;

#[test]
fn commands_of_one_runtime_after_another_all_come_back_with_their_ends() {
    supervised();
    let multi = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    let end_in = |runtime: &tokio::runtime::Runtime, code: i32| {
        let command = format!("exit {code}");
        let ran = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                run(&command, CancellationToken::new()),
            )
            .await
        });
        let (end, _) = ran.unwrap_or_else(|_| panic!("`{command}`: its end never came back"));
        assert_eq!(
            end.result.as_deref(),
            Some(code.to_string().as_str()),
            "{end:?}"
        );
    };
    // A task of the first runtime reads the keeper's news while it lives...
    let first = multi();
    end_in(&first, 4);
    // ... and an idle one still reads it for another runtime's commands.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    end_in(&single, 5);
    // Once it is gone, the news still comes to the next runtime's commands.
    drop(first);
    end_in(&multi(), 6);
    end_in(&single, 7);
}
