//! Interrupts stop a run cleanly: SIGINT and SIGTERM end a local run with nothing left
//! running, the run recorded as interrupted and its log ended; a cluster run's remote
//! commands stop too; after `kill -9` of the prime its commands do not run on, nor what
//! they started, in their process group or out of it.

use std::path::Path;
use std::time::{Duration, Instant};

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cluster_run::{hosts_file, schema};
use crate::{coord, spawn_coord, testbed, text, wait_for, write};

/// A flow whose one step marks that it started, then sleeps `marker` seconds (a number no
/// other test uses, so its processes can be found) unless `done` exists.
fn sleeper(dir: &Path, marker: &str, host: &str) -> String {
    let out = dir.display();
    let flow = format!(
        "name: sleeper\nevents: {{go: {{}}}}\nsteps:\n  \
         nap: {{run: 'touch {out}/started; test -e {out}/done || sleep {marker}'{host}}}\n\
         assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go}}]\n"
    );
    write(dir, "sleeper.yaml", &flow)
        .to_str()
        .unwrap()
        .to_string()
}

/// A sleep length no other test (nor an earlier run of this one) uses: `BASE.<our pid>`
/// seconds, so its processes can be told apart from any leftovers.
pub(crate) fn unique(base: u32) -> String {
    format!("{base}.{}", std::process::id())
}

/// Processes on this machine (test hosts share its process table) whose command line
/// holds `marker`.
pub(crate) fn running(marker: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let text = String::from_utf8_lossy(cmdline).replace('\0', " ");
            text.contains(marker) && !text.contains("sleeper.yaml")
        })
        .count()
}

/// Waits (at most `limit`) until no process holds `marker`.
pub(crate) fn gone_within(marker: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while running(marker) > 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

async fn sqlite(dir: &Path) -> Store {
    let path = dir.join("sleeper.run.db");
    Store::open(&StoreLocation::Sqlite(path)).await.unwrap()
}

/// Starts the sleeper, interrupts it with `signal` once its step runs, and checks the exit
/// status, that nothing is left running, the stored run and task, and the log's end.
async fn interrupt_local(signal: Signal, name: &str, code: i32, marker: &str) {
    let dir = tempfile::tempdir().unwrap();
    let flow = sleeper(dir.path(), marker, "");
    let mut child = spawn_coord(dir.path(), &["run", &flow, "--run-id", "i"]);
    wait_for(&dir.path().join("started"));
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(code), "{name}");
    assert!(
        gone_within(marker, Duration::from_secs(5)),
        "a sleep outlived the run"
    );
    let store = sqlite(dir.path()).await;
    let run = store.latest_run("sleeper").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Interrupted);
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(tasks[0].status, TaskStatus::Failure);
    assert_eq!(
        tasks[0].error.as_deref(),
        Some(&*format!("interrupted by {name}"))
    );
    let log = std::fs::read_to_string(dir.path().join("logs/sleeper/i.log")).unwrap();
    let end = format!("-- end of run i: interrupted by {name}");
    assert!(log.trim_end().ends_with(&end), "{log}");

    write(dir.path(), "done", "");
    let again = coord(dir.path(), &["run", &flow, "--mode", "recover"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let run = store.latest_run("sleeper").await.unwrap().unwrap();
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(
        (tasks[0].status, tasks[0].attempt),
        (TaskStatus::Success, 2)
    );
}

#[tokio::test]
async fn sigint_stops_a_local_run_cleanly_and_recover_reruns_it() {
    interrupt_local(Signal::SIGINT, "SIGINT", 130, &unique(41)).await;
}

#[tokio::test]
async fn sigterm_stops_a_local_run_cleanly() {
    interrupt_local(Signal::SIGTERM, "SIGTERM", 143, &unique(42)).await;
}

#[test]
fn after_kill_9_of_the_prime_its_command_does_not_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let marker = &unique(43);
    let flow = write(
        dir.path(),
        "sleeper.yaml",
        &format!(
            "name: sleeper\nevents: {{go: {{}}}}\nsteps: {{nap: {{run: sleep {marker}}}}}\n\
             assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let mut child = spawn_coord(dir.path(), &["run", flow.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(marker) == 0 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        gone_within(marker, Duration::from_secs(5)),
        "the command ran on after its prime died"
    );
}

/// Whether `pid` still runs (a zombie has ended).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.get(stat.rfind(')')? + 2..)?.chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

fn pid_in(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid in {}: {text:?}", path.display()))
}

#[test]
fn after_kill_9_of_the_prime_nothing_its_command_started_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let marker = &unique(47);
    let d = dir.path().display();
    // One sleep stays in the command's process group, the other leaves it (`setsid`);
    // each pid file is whole before `started` appears.
    let flow = write(
        dir.path(),
        "scatter.yaml",
        &format!(
            "name: scatter\nevents: {{go: {{}}}}\nsteps:\n  nap:\n    run: |\n      \
             sleep {marker} & echo $! > {d}/same\n      \
             setsid sh -c 'echo $$ > {d}/apart.tmp; mv {d}/apart.tmp {d}/apart; \
             exec sleep {marker}' &\n      \
             while [ ! -e {d}/apart ]; do sleep 0.01; done\n      \
             touch {d}/started\n      \
             wait\n\
             assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let mut child = spawn_coord(dir.path(), &["run", flow.to_str().unwrap()]);
    wait_for(&dir.path().join("started"));
    let pids = [
        pid_in(&dir.path().join("same")),
        pid_in(&dir.path().join("apart")),
    ];
    assert!(pids.into_iter().all(alive), "the sleeps never ran");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.into_iter().any(alive) {
        assert!(
            Instant::now() < deadline,
            "still running 10 s after their prime died: {:?}",
            pids.map(|p| (p, alive(p)))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigint_stops_a_cluster_runs_remote_commands() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, url) = hosts_file(dir.path(), &bed, &schema("sigint"));
    let marker = &unique(44);
    let out = dir.path().display();
    let flow = write(
        dir.path(),
        "spread.yaml",
        &format!(
            "name: spread\nevents: {{go: {{}}}}\nsteps:\n  \
             a: {{run: 'touch {out}/a; sleep {marker}', host: node1}}\n  \
             b: {{run: 'touch {out}/b; sleep {marker}', host: node2}}\n\
             assocs: [{{event: go, targets: [a, b]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let mut child = spawn_coord(
        dir.path(),
        &["run", "--hosts", &hosts, flow, "--run-id", "c"],
    );
    wait_for(&dir.path().join("a"));
    wait_for(&dir.path().join("b"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        gone_within(marker, Duration::from_secs(10)),
        "remote commands still running {:?} after SIGINT",
        started.elapsed()
    );
    let store = Store::open(&StoreLocation::parse(&url).unwrap())
        .await
        .unwrap();
    let run = store.latest_run("spread").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Interrupted);
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks.iter().all(|t| t.status == TaskStatus::Failure),
        "{tasks:?}"
    );
}

/// A flow `sleeper` whose one step `nap` runs `command` (in single quotes in the YAML).
fn nap_flow(dir: &Path, command: &str) -> String {
    let flow = format!(
        "name: sleeper\nevents: {{go: {{}}}}\nsteps:\n  nap: {{run: '{command}'}}\n\
         assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go}}]\n"
    );
    write(dir, "sleeper.yaml", &flow)
        .to_str()
        .unwrap()
        .to_string()
}

/// Waits until at least `count` processes name `marker`.
fn wait_running(marker: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(marker) < count {
        assert!(Instant::now() < deadline, "the sleep never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the prime `child` and the keeper of its `command` with SIGKILL, both frozen first
/// so that neither acts on the other's end; the keeper dies first (a stopped keeper whose
/// prime died would get SIGHUP and SIGCONT, its group orphaned).
fn kill_keeper_then_prime(command: u32, child: &mut std::process::Child) {
    let keeper = Pid::from_raw(crate::parent_of(command) as i32);
    let prime = Pid::from_raw(child.id() as i32);
    for frozen in [keeper, prime] {
        kill(frozen, Signal::SIGSTOP).unwrap();
        wait_until_stopped(frozen);
    }
    kill(keeper, Signal::SIGKILL).unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[tokio::test]
async fn recover_stops_what_a_killed_prime_left_running_before_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    let marker = &unique(45);
    let out = dir.path().display();
    // The prime's command keeper stops every command's whole tree when the prime dies, and
    // the prime kills the groups a keeper that died left; killed with the prime (frozen
    // first, so it cannot act on the prime's end) it stops nothing: the command's group
    // runs on until the recovery stops it.
    let flow = &nap_flow(
        dir.path(),
        &format!("touch {out}/started; test -e {out}/again && exit 0; sleep {marker} & wait"),
    );
    let mut child = spawn_coord(dir.path(), &["run", flow, "--run-id", "k"]);
    wait_for(&dir.path().join("started"));
    wait_running(marker, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    // The recovery finds the group by the pid the task stored: wait until it is stored
    // (the next test kills a prime before that).
    let store = sqlite(dir.path()).await;
    let command = loop {
        let run = store.latest_run("sleeper").await.unwrap();
        let tasks = match run {
            Some(run) => store.tasks(run.key).await.unwrap(),
            None => Vec::new(),
        };
        if let Some(pid) = tasks.first().and_then(|t| t.pid) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the pid was never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The stored pid is the shell's, which leads the group; its parent is the keeper.
    kill_keeper_then_prime(command as u32, &mut child);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        running(marker),
        2,
        "the command's shell and its sleep (both name the marker) outlive keeper and prime"
    );
    write(dir.path(), "again", "");
    let recover = coord(dir.path(), &["run", flow, "--mode", "recover"]);
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    assert_eq!(
        running(marker),
        0,
        "the recovery stopped the old attempt's group"
    );
    assert!(text(&recover.stderr).contains("stopping a command an earlier coordinator left"));
}

/// A prime that dies while it holds a started command's pid for its next batch (paused at
/// that moment by a crash point, then killed with its keeper, as above) leaves the task
/// `active` with no pid: the recovery finds the command's group by the task's own variables
/// and stops it before the rerun starts. The rerun's command records whether the first
/// attempt's shell was still running when it began (a zombie has an empty command line).
#[tokio::test]
async fn recover_stops_a_command_whose_pid_was_never_stored_before_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    let marker = &unique(51);
    let out = dir.path().display();
    let flow = &nap_flow(
        dir.path(),
        &format!(
            "if test -e {out}/again; then grep -q . /proc/$(cat {out}/old.pid)/cmdline \
             && echo old-alive >> {out}/ran.txt; echo rerun >> {out}/ran.txt; exit 0; fi; \
             echo $$ > {out}/pid.tmp; mv {out}/pid.tmp {out}/old.pid; sleep {marker} & wait"
        ),
    );
    let mut child = crate::coord_command(dir.path(), &["run", flow, "--run-id", "p"])
        .env("FAILPOINTS", "pid-held=pause")
        .spawn()
        .unwrap();
    wait_for(&dir.path().join("old.pid"));
    wait_running(marker, 2);
    let store = sqlite(dir.path()).await;
    let run = store.latest_run("sleeper").await.unwrap().unwrap();
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!((tasks[0].status, tasks[0].pid), (TaskStatus::Active, None));
    let shell: u32 = std::fs::read_to_string(dir.path().join("old.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill_keeper_then_prime(shell, &mut child);
    assert_eq!(running(marker), 2, "the command outlives keeper and prime");
    write(dir.path(), "again", "");
    let recover = coord(
        dir.path(),
        &["run", flow, "--run-id", "p", "--mode", "recover"],
    );
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    assert_eq!(
        running(marker),
        0,
        "the recovery stopped the first attempt's group"
    );
    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    assert_eq!(
        ran, "rerun\n",
        "the rerun began after the first attempt was gone"
    );
    assert!(text(&recover.stderr).contains("stopping a command an earlier coordinator left"));
}

/// A prime whose machine goes silent (node1's namespace, its link cut) frees its run on
/// Postgres within the store URL's `dead_after`: the server ends its sessions, `runs` shows
/// the run abandoned, and a recovery from elsewhere takes it over instead of being refused
/// for the two hours of the system's keepalive.
#[test]
fn a_silent_primes_run_is_freed_within_dead_after() {
    let Some(bed) = testbed() else { return };
    let Some(netns) = bed.get("EVENTOR_NODE1_NETNS").filter(|n| !n.is_empty()) else {
        eprintln!("skipped: the test bed has no network namespaces");
        return;
    };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let marker = &unique(46);
    let flow = sleeper(dir.path(), marker, "");
    let store = format!(
        "{}?schema={}&dead_after=3s",
        bed["EVENTOR_PG_URL_BRIDGE"],
        schema("silent")
    );
    let run = ["run", &flow, "--store", &store, "--run-id", "z"];
    let mut prime = crate::spawn_coord_in(netns, dir.path(), &run);
    wait_for(&dir.path().join("started"));
    let outcome = || {
        let listed = coord(dir.path(), &["runs", &flow, "--store", &store, "--json"]);
        let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        rows[0]["outcome"].as_str().unwrap_or("none").to_string()
    };
    assert_eq!(outcome(), "running");

    let cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let started = Instant::now();
    while outcome() != "abandoned" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the silent prime's run still held after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let freed = started.elapsed();
    write(dir.path(), "done", "");
    let recover = coord(
        dir.path(),
        &[
            "run", &flow, "--store", &store, "--mode", "recover", "--run-id", "z",
        ],
    );
    drop(cut);
    let _ = prime.kill();
    let _ = prime.wait();
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    assert!(freed < Duration::from_secs(10), "freed after {freed:?}");
    eprintln!("run freed {freed:?} after its prime went silent (dead_after=3s)");
}

/// Waits until `pid` shows as stopped (state `T`) in /proc.
fn wait_until_stopped(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rfind(')').and_then(|at| stat.get(at + 2..at + 3));
        if state == Some("T") {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
}
