//! A keeper killed with SIGKILL, in a test process of its own: every command of the
//! process's keeper fails with it, so it cannot share the keeper of the other cases.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eventor_agent::command::{run_command, CommandSpec, OutputSink};
use tokio_util::sync::CancellationToken;

#[path = "supervised/procs.rs"]
mod procs;

use procs::{alive, parent_of};

#[tokio::test]
async fn a_keeper_killed_with_sigkill_fails_its_commands_and_its_runner_kills_their_groups() {
    eventor_agent::supervisor::supervise_commands_with(PathBuf::from(env!(
        "CARGO_BIN_EXE_eventor-supervise"
    )));
    let dir = tempfile::tempdir().unwrap();
    let same = dir.path().join("same");
    let command = format!(
        "sleep 300 & echo $! > {d}/same.tmp; mv {d}/same.tmp {d}/same; wait",
        d = dir.path().display()
    );
    let spec = CommandSpec {
        command,
        env: Vec::new(),
        cwd: None,
        timeout: None,
        kill_grace: Duration::from_secs(5),
        kill_now: None,
    };
    let no_output: OutputSink = std::sync::Arc::new(|_, _| Box::pin(async {}));
    let running = tokio::spawn(async move {
        run_command(&spec, CancellationToken::new(), |_| async {}, no_output).await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !same.exists() {
        assert!(
            Instant::now() < deadline,
            "the command never started its sleep"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sleep: i32 = std::fs::read_to_string(&same)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The sleep's parent is the command's shell, whose parent is the keeper.
    let keeper = parent_of(parent_of(sleep));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the runner never learnt its keeper was gone")
        .unwrap();
    let error = end.error.clone().unwrap_or_default();
    assert!(!end.succeeded(), "{end:?}");
    assert!(error.contains("the command keeper is gone"), "{error}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sleep) {
        assert!(
            Instant::now() < deadline,
            "the group's sleep outlived its keeper"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
