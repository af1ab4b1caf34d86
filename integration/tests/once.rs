//! At most one live attempt of a task, whatever fails (the "once" promise), end to end on
//! the test bed: a recovery started the moment its prime was killed does not start a task
//! beside the attempt the dead prime's agent still runs for its lease. Each command keeps
//! its own record (start and end times, the host), which is what the checks read.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventor_store::{Store, StoreLocation, TaskStatus};

use crate::cluster_run::{hosts_file_with, schema};
use crate::{coord, coord_binary, testbed, text, write};

/// A command that records its start (time, host) in `rec.txt`, and then: on its first run,
/// waits until it is stopped (its TERM trap records the end); on a later one, ends at once.
fn recorded_command(out: &str) -> String {
    format!(
        "echo start $(date +%s.%N) $(hostname -I) >> {out}/rec.txt; \
         if [ -e {out}/first ]; then echo end $(date +%s.%N) >> {out}/rec.txt; exit 0; fi; \
         touch {out}/first; trap \"echo end $(date +%s.%N) >> {out}/rec.txt; exit 143\" TERM; \
         sleep 120 & wait"
    )
}

/// `(time, host)` of each `start` line, and the time of each `end` line, in file order.
fn record(path: &Path) -> (Vec<(f64, String)>, Vec<f64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["start", time, host, ..] => starts.push((time.parse().unwrap(), host.to_string())),
            ["end", time] => ends.push(time.parse().unwrap()),
            _ => panic!("unexpected record line {line:?}"),
        }
    }
    (starts, ends)
}

/// Waits until `rec.txt` holds `starts` starts and `ends` ends.
fn wait_for_record(path: &Path, starts: usize, ends: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (s, e) = record(path);
        if s.len() >= starts && e.len() >= ends {
            return;
        }
        assert!(Instant::now() < deadline, "record: {s:?} {e:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_recovery_that_cannot_re_adopt_waits_out_the_lease_and_starts_no_task_beside_the_one_still_running(
) {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    // A lease of 5 s: the dead prime's agent keeps the step running that long. Its den is
    // open to others, so it refuses to listen there and nobody can re-adopt it.
    let (hosts, url) = hosts_file_with(dir.path(), &bed, &schema("once_kill"), "lease: 5s\n");
    let hosts = unadoptable(dir.path(), &hosts);
    let flow = write(
        dir.path(),
        "once.yaml",
        &format!(
            "name: once\nevents: {{go: {{}}}}\n\
             steps:\n  job: {{run: '{}', host: node1}}\n\
             assocs: [{{event: go, targets: [job]}}]\ntrigger: [{{event: go}}]\n",
            recorded_command(&out)
        ),
    );
    let flow = flow.to_str().unwrap();
    let mut first = Command::new(coord_binary())
        .args(["run", "--hosts", &hosts, flow, "--run-id", "O"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rec = dir.path().join("rec.txt");
    wait_for_record(&rec, 1, 0, Duration::from_secs(30));
    first.kill().unwrap(); // SIGKILL while the step runs on node1
    first.wait().unwrap();
    let started = Instant::now();
    let recover = coord(
        dir.path(),
        &[
            "run", "--hosts", &hosts, flow, "--run-id", "O", "--mode", "recover",
        ],
    );
    let took = started.elapsed();
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let (starts, ends) = record(&rec);
    assert_eq!(
        starts.len(),
        2,
        "{starts:?} {ends:?}\n{}",
        text(&recover.stderr)
    );
    assert!(
        starts[1].0 > ends[0],
        "the recovery started the step at {} while its first attempt ran until {}",
        starts[1].0,
        ends[0]
    );
    eprintln!("MEASURE recover after kill -9 (lease 5s) to its end: {took:?}");
    let store = Store::open(&StoreLocation::parse(&url).unwrap())
        .await
        .unwrap();
    let history = store.run_history("O").await.unwrap();
    let first_try = store.tasks(history[0].key.clone()).await.unwrap().remove(0);
    assert_eq!(first_try.status, TaskStatus::Failure, "{first_try:?}");
    assert_eq!(
        first_try.error.as_deref(),
        Some("no coordinator for 5s"),
        "its agent stopped it when the lease ran out"
    );
    let rerun = store.tasks(history[1].key.clone()).await.unwrap().remove(0);
    assert_eq!(rerun.status, TaskStatus::Success, "{rerun:?}");
}

/// The hosts file with node1's agent given a den directory open to group and others (as a
/// careless or hostile set-up would leave it): the agent must refuse to listen there.
fn unadoptable(dir: &Path, hosts: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(runtime.join("eventor")).unwrap();
    std::fs::set_permissions(
        runtime.join("eventor"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let text = std::fs::read_to_string(hosts).unwrap();
    let text = text.replacen(
        "  node1: {agent: ",
        &format!(
            "  node1: {{env: {{XDG_RUNTIME_DIR: {}}}, agent: ",
            runtime.display()
        ),
        1,
    );
    write(dir, "hosts-unadoptable.yaml", &text)
        .to_str()
        .unwrap()
        .to_string()
}

/// A command that records its start and end in `rec.txt` and prints `line 1` … `line N`,
/// a tenth of a second apart.
fn counting_command(out: &str, lines: u32) -> String {
    format!(
        "echo start $(date +%s.%N) $(hostname -I) >> {out}/rec.txt; \
         for i in $(seq 1 {lines}); do echo line $i; sleep 0.1; done; \
         echo end $(date +%s.%N) >> {out}/rec.txt"
    )
}

/// The numbers of the `line N` output lines in a central log, in file order.
fn numbered_lines(log: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            line.rsplit_once(" stdout line ")
                .map(|(_, n)| n.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn a_recovery_right_after_kill_9_re_adopts_the_running_command_one_start_every_line_in_order()
{
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let (hosts, url) = hosts_file_with(dir.path(), &bed, &schema("once_adopt"), "lease: 30s\n");
    let flow = write(
        dir.path(),
        "adopt.yaml",
        &format!(
            "name: adopt\nevents: {{go: {{}}, done: {{}}}}\n\
             steps:\n  job: {{run: '{}', host: node1, triggers: {{success: [done]}}}}\n  \
             after: {{run: 'echo after >> {out}/after.txt'}}\n\
             assocs: [{{event: go, targets: [job]}}, {{event: done, targets: [after]}}]\n\
             trigger: [{{event: go}}]\n",
            counting_command(&out, 40)
        ),
    );
    let flow = flow.to_str().unwrap();
    let mut first = Command::new(coord_binary())
        .args(["run", "--hosts", &hosts, flow, "--run-id", "A"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rec = dir.path().join("rec.txt");
    let log = dir.path().join("logs/adopt/A.log");
    wait_for_record(&rec, 1, 0, Duration::from_secs(30));
    // Some lines reached the first prime's log; then it dies while the command runs on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while numbered_lines(&log).len() < 3 {
        assert!(Instant::now() < deadline, "no output reached the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let before = numbered_lines(&log).len();
    let started = Instant::now();
    let mut recover = Command::new(coord_binary())
        .args([
            "run", "--hosts", &hosts, flow, "--run-id", "A", "--mode", "recover",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while numbered_lines(&log).len() == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no re-adopted line"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let first_line = started.elapsed();
    let status = recover.wait().unwrap();
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(recover.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (starts, ends) = record(&rec);
    assert_eq!(
        (starts.len(), ends.len()),
        (1, 1),
        "one start, run to its end: {starts:?} {ends:?}"
    );
    assert_eq!(
        numbered_lines(&log),
        (1..=40).collect::<Vec<u32>>(),
        "every line once, in order"
    );
    assert_eq!(
        text(&std::fs::read(dir.path().join("after.txt")).unwrap()),
        "after\n",
        "its success fired"
    );
    eprintln!("MEASURE recover after kill -9: first re-adopted line after {first_line:?}, recovery done after {took:?}");
    let store = Store::open(&StoreLocation::parse(&url).unwrap())
        .await
        .unwrap();
    let history = store.run_history("A").await.unwrap();
    let adopted = store.tasks(history[0].key.clone()).await.unwrap();
    let job = adopted.iter().find(|t| t.step == "job").unwrap();
    assert_eq!(
        (job.status, job.attempt),
        (TaskStatus::Success, 1),
        "{job:?}"
    );
}
