//! `eventor-coord run --hosts` through real SSH to the test hosts (network namespaces), the
//! real agent and the shared Postgres: pinned steps run where they are pinned, their output
//! reaches the central log, a host cut off mid-step is declared lost and the run ends by the
//! rules, and a killed prime loses no result its agent recorded.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::{agent_binary, coord, coord_binary, testbed, text, write};

/// A hosts file for node1 and node2 with this build's agent and the shared store (reached
/// through the bridge, as the hosts reach it), in a schema of the test's own.
pub(crate) fn hosts_file(
    dir: &Path,
    bed: &HashMap<String, String>,
    schema: &str,
) -> (String, String) {
    hosts_file_with(dir, bed, schema, "")
}

/// [`hosts_file`] with `top` (YAML lines such as `lease: 1s\n`) at its top level.
pub(crate) fn hosts_file_with(
    dir: &Path,
    bed: &HashMap<String, String>,
    schema: &str,
    top: &str,
) -> (String, String) {
    let store = format!("{}?schema={schema}", bed["EVENTOR_PG_URL_BRIDGE"]);
    let agent = agent_binary();
    let yaml = format!(
        "store: {store}\n{top}ssh_config: {}\nhosts:\n  node1: {{agent: {}}}\n  node2: {{agent: {}}}\n",
        bed["EVENTOR_SSH_CONFIG"],
        agent.display(),
        agent.display()
    );
    let path = write(dir, "hosts.yaml", &yaml);
    (path.to_str().unwrap().to_string(), store)
}

pub(crate) fn schema(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("cl_{test}_{nanos}")
}

async fn store(url: &str) -> Store {
    Store::open(&StoreLocation::parse(url).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn pinned_steps_run_on_their_hosts_and_log_centrally() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let (hosts, url) = hosts_file(dir.path(), &bed, &schema("pinned"));
    let flow = write(
        dir.path(),
        "spread.yaml",
        &format!(
            "name: spread\nevents: {{go: {{}}, a_done: {{}}}}\n\
             steps:\n  \
               a: {{run: 'hostname -I > {out}/a-$EVENTOR_STEP_SEQUENCE.txt', host: node1, triggers: {{success: [a_done]}}}}\n  \
               b: {{run: 'hostname -I > {out}/b-$EVENTOR_STEP_SEQUENCE.txt; echo b says hi', host: node2}}\n  \
               here: {{run: 'echo on the prime'}}\n\
             assocs: [{{event: go, targets: [a, here]}}, {{event: a_done, targets: [b]}}]\n\
             trigger: [{{event: go, range: [1, 3]}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let run = coord(
        dir.path(),
        &["run", "--hosts", &hosts, flow, "--run-id", "P"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    for seq in 1..=3 {
        let a = std::fs::read_to_string(dir.path().join(format!("a-{seq}.txt"))).unwrap();
        let b = std::fs::read_to_string(dir.path().join(format!("b-{seq}.txt"))).unwrap();
        assert_eq!(a.trim(), bed["EVENTOR_NODE1_ADDR"], "a runs on node1");
        assert_eq!(b.trim(), bed["EVENTOR_NODE2_ADDR"], "b runs on node2");
    }
    let log = text(
        &coord(
            dir.path(),
            &["logs", flow, "--run-id", "P", "--host", "node2"],
        )
        .stdout,
    );
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" stdout b says hi"))
        .collect();
    assert_eq!(
        said.len(),
        3,
        "node2's output reaches the central log:\n{log}"
    );
    assert!(
        said.iter().all(|l| l.split(' ').nth(1) == Some("node2")),
        "{log}"
    );

    let history = store(&url).await.run_history("P").await.unwrap();
    assert_eq!(history[0].status, RunStatus::Success);
    let tasks = store(&url)
        .await
        .tasks(history[0].key.clone())
        .await
        .unwrap();
    assert_eq!(tasks.len(), 9);
    assert!(
        tasks.iter().all(|t| t.status == TaskStatus::Success),
        "{tasks:?}"
    );
}

#[test]
fn a_step_pinned_to_an_unknown_host_is_refused_before_anything_starts() {
    let _pg = crate::postgres_shared();
    let Some(bed) = testbed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (hosts, _) = hosts_file(dir.path(), &bed, &schema("unknown"));
    let flow = write(
        dir.path(),
        "bad.yaml",
        "events: {go: {}}\nsteps:\n  s1: {run: 'true', host: node9}\n\
         assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go}]\n",
    );
    let out = coord(
        dir.path(),
        &["run", "--hosts", &hosts, flow.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("step `s1` is pinned to host `node9`"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_host_cut_off_mid_step_is_lost_and_the_run_fails_by_the_rules() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    // The shortest lease: the task is called dead once the agent's own wait for a silent
    // prime and the margin have passed.
    let (hosts, url) = hosts_file_with(dir.path(), &bed, &schema("cut"), "lease: 1s\n");
    let flow = write(
        dir.path(),
        "cut.yaml",
        "events: {go: {}}\nsteps:\n  slow: {run: 'sleep 30', host: node1}\n\
         assocs: [{event: go, targets: [slow]}]\ntrigger: [{event: go}]\n",
    );
    let mut run = Command::new(coord_binary())
        .args([
            "run",
            "--hosts",
            &hosts,
            flow.to_str().unwrap(),
            "--run-id",
            "C",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let store = store(&url).await;
    wait_until_active(&store, "C").await;
    let _cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let cut = Instant::now();
    let deadline = cut + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run hung after its host was cut off"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let lost_after = cut.elapsed();
    let mut stdout = String::new();
    std::io::Read::read_to_string(run.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("slow[1] (host node1 lost"), "{stdout}");
    // Loss after 5 s of silence, then the agent's 11 s wait and an 8 s margin.
    assert!(
        lost_after > Duration::from_secs(20) && lost_after < Duration::from_secs(35),
        "the task was called dead after {lost_after:?}"
    );
}

/// Waits until run `run_id` has a task in the store that is active.
async fn wait_until_active(store: &Store, run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(run) = store.run_history(run_id).await.unwrap().pop() {
            let tasks = store.tasks(run.key).await.unwrap();
            if tasks.iter().any(|t| t.status == TaskStatus::Active) {
                // Give the dispatch a moment to reach the agent over SSH.
                tokio::time::sleep(Duration::from_millis(700)).await;
                return;
            }
        }
        assert!(Instant::now() < deadline, "the run never started its task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_killed_prime_loses_nothing_its_agent_recorded_and_recover_skips_it() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let (hosts, url) = hosts_file(dir.path(), &bed, &schema("prime"));
    let flow = write(
        dir.path(),
        "prime.yaml",
        &format!(
            "name: prime\nevents: {{go: {{}}, done: {{}}}}\n\
             steps:\n  \
               remote: {{run: 'sleep 2; echo remote >> {out}/ran.txt', host: node1, triggers: {{success: [done]}}}}\n  \
               after: {{run: 'echo after >> {out}/ran.txt'}}\n\
             assocs: [{{event: go, targets: [remote]}}, {{event: done, targets: [after]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let mut run = Command::new(coord_binary())
        .args(["run", "--hosts", &hosts, flow, "--run-id", "K"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let store = store(&url).await;
    wait_until_active(&store, "K").await;
    run.kill().unwrap(); // SIGKILL: the prime dies mid-step
    run.wait().unwrap();

    // The agent finishes the step and records it although its prime is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let key = store.run_history("K").await.unwrap().pop().unwrap().key;
    loop {
        let tasks = store.tasks(key.clone()).await.unwrap();
        if tasks
            .iter()
            .any(|t| t.step == "remote" && t.status == TaskStatus::Success)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never recorded the step: {tasks:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recover = coord(
        dir.path(),
        &[
            "run", "--hosts", &hosts, flow, "--run-id", "K", "--mode", "recover",
        ],
    );
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let ran = std::fs::read_to_string(dir.path().join("ran.txt")).unwrap();
    assert_eq!(
        ran, "remote\nafter\n",
        "the remote step ran once; recover skipped it"
    );
    let history = store.run_history("K").await.unwrap();
    let tasks = store.tasks(history[1].key.clone()).await.unwrap();
    let remote = tasks.iter().find(|t| t.step == "remote").unwrap();
    assert_eq!(remote.status, TaskStatus::Skipped);
}

#[tokio::test]
async fn a_closure_pinned_to_a_host_runs_there_in_the_same_program_and_its_commands_are_not_agents()
{
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, url) = hosts_file(dir.path(), &bed, &schema("closure"));
    let example = crate::coord_binary()
        .parent()
        .unwrap()
        .join("examples/remote_closure");
    assert!(
        example.exists(),
        "{} is built by cargo test --workspace",
        example.display()
    );
    let out = Command::new(&example)
        .args([hosts.as_str(), "RC"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let store = store(&url).await;
    let run = store.run_history("RC").await.unwrap().remove(0);
    let tasks = store.tasks(run.key).await.unwrap();
    let result = |step: &str| {
        let task = tasks.iter().find(|t| t.step == step).unwrap();
        assert_eq!(task.status, TaskStatus::Success);
        task.result.clone().unwrap_or_default()
    };
    let node1 = &bed["EVENTOR_NODE1_ADDR"];
    assert_eq!(result("measure"), format!("\"measure ran on {node1}\""));
    assert_eq!(result("report"), "\"report ran on the prime\"");
    // A command the program ran as its agent did not inherit agent mode.
    assert_eq!(result("inherit"), "0");
    let log = std::fs::read_to_string(dir.path().join("logs/remote_closure/RC.log")).unwrap();
    assert!(
        log.contains(" node1 inherit[1] stdout agent mode: unset"),
        "{log}"
    );
}

/// A host busy with a long task gets no more than its share queued behind it (its
/// `max_concurrent` once more): the rest of a fan-out goes to the host that is free.
#[test]
fn a_busy_host_does_not_collect_the_work_a_free_one_can_run() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, _) = hosts_file(dir.path(), &bed, &schema("busy"));
    let limited = std::fs::read_to_string(&hosts)
        .unwrap()
        .replace("}\n", ", max_concurrent: 1}\n");
    std::fs::write(&hosts, limited).unwrap();
    let out = dir.path().display().to_string();
    // The long task ends once the other host ran the 18 tasks not queued behind it (or after
    // 60 s): however slow the machine, the fan-out has gone where it could run by then.
    let wait = format!(
        "i=0; while [ $(cat {out}/where.txt 2>/dev/null | wc -l) -lt 18 ] && [ $i -lt 1200 ]; \
         do sleep 0.05; i=$((i+1)); done"
    );
    let flow = write(
        dir.path(),
        "busy.yaml",
        &format!(
            "events: {{go: {{}}}}\nsteps:\n  \
               job: {{run: 'if [ \"$EVENTOR_STEP_SEQUENCE\" = 1 ]; then {wait}; fi; hostname -I >> {out}/where.txt', hosts: [node1, node2]}}\n\
             assocs: [{{event: go, targets: [job]}}]\ntrigger: [{{event: go, range: [1, 20]}}]\n"
        ),
    );
    let out = coord(
        dir.path(),
        &["run", "--hosts", &hosts, flow.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = std::fs::read_to_string(dir.path().join("where.txt")).unwrap();
    let mut per_host: HashMap<&str, usize> = HashMap::new();
    for line in lines.lines() {
        *per_host.entry(line.trim()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_host.values().copied().collect();
    counts.sort();
    assert_eq!(counts.iter().sum::<usize>(), 20, "{per_host:?}");
    assert!(
        counts[0] <= 2,
        "the busy host ran the long task and at most one more: {per_host:?}"
    );
}

#[test]
fn an_agents_lines_say_how_it_ended_in_words_not_rust_debug_text() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, _) = hosts_file(dir.path(), &bed, &schema("words"));
    let flow = write(
        dir.path(),
        "words.yaml",
        "events: {go: {}}\nsteps:\n  s1: {run: 'echo hi', host: node1}\n\
         assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let run = coord(
        dir.path(),
        &["run", "--hosts", &hosts, flow, "--run-id", "W"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let log = coord(
        dir.path(),
        &["logs", flow, "--run-id", "W", "--host", "node1"],
    );
    let said = format!("{}{}", text(&run.stderr), text(&log.stdout));
    let done = said.lines().find(|l| l.contains("agent done"));
    let done = done.unwrap_or_else(|| panic!("the agent's last line:\n{said}"));
    assert!(done.contains("end=shut down by the coordinator"), "{done}");
    for debug in ["Shutdown {", "Some(", "PrimeLost("] {
        assert!(!said.contains(debug), "`{debug}` in:\n{said}");
    }
}

/// A host's `env:` reaches its commands (the step's own `env:` winning over it) and never the
/// command line that starts its agent: seen from inside the task, through `/proc`.
#[test]
fn a_hosts_env_reaches_its_commands_and_no_command_line() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "{}?schema={}",
        bed["EVENTOR_PG_URL_BRIDGE"],
        schema("hostenv")
    );
    let yaml = format!(
        "store: {store}\nssh_config: {}\nhosts:\n  node1: {{agent: {}, env: {{HOST_TOKEN: s3cr3t-value, BOTH: host}}}}\n",
        bed["EVENTOR_SSH_CONFIG"],
        agent_binary().display()
    );
    let hosts = write(dir.path(), "hosts.yaml", &yaml);
    let out = dir.path().display();
    // The agent's command line is its parent's parent's (the task runs under a supervisor).
    let flow = write(
        dir.path(),
        "env.yaml",
        &format!(
            "name: env\nevents: {{go: {{}}}}\n\
             steps:\n  s: {{run: 'echo $HOST_TOKEN $BOTH > {out}/seen; \
             for p in $(ps -o ppid= -p $$) $(ps -o ppid= -p $(ps -o ppid= -p $$)); do tr \"\\\\0\" \" \" < /proc/$p/cmdline; echo; done > {out}/cmdlines', \
             host: node1, env: {{BOTH: step}}}}\n\
             assocs: [{{event: go, targets: [s]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let run = coord(
        dir.path(),
        &[
            "run",
            "--hosts",
            hosts.to_str().unwrap(),
            flow.to_str().unwrap(),
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    assert_eq!(seen.trim(), "s3cr3t-value step");
    let cmdlines = std::fs::read_to_string(dir.path().join("cmdlines")).unwrap();
    assert!(cmdlines.contains("eventor-agent"), "{cmdlines}");
    assert!(!cmdlines.contains("s3cr3t-value"), "{cmdlines}");
    assert!(
        !text(&run.stderr).contains("s3cr3t-value"),
        "{}",
        text(&run.stderr)
    );
}

/// A run that cannot start its work because a host's key is missing: exit 2 (a set-up
/// mistake), its run stored failed with the cause (`status` shows it), and its central log
/// ends with the cause.
#[test]
fn a_run_that_cannot_start_its_work_records_why() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(&bed["EVENTOR_SSH_CONFIG"]).unwrap();
    let missing = dir.path().join("no_such_key");
    let config = config.replace(
        &format!("IdentityFile {}", bed["EVENTOR_SSH_KEY"]),
        &format!("IdentityFile {}", missing.display()),
    );
    assert!(config.contains("no_such_key"), "{config}");
    let config = write(dir.path(), "ssh_config", &config);
    let store = format!("{}?schema={}", bed["EVENTOR_PG_URL_BRIDGE"], schema("why"));
    let yaml = format!(
        "store: {store}\nssh_config: {}\nhosts:\n  node1: {{agent: {}}}\n",
        config.display(),
        agent_binary().display()
    );
    let hosts = write(dir.path(), "hosts.yaml", &yaml);
    let flow = write(
        dir.path(),
        "why.yaml",
        "name: why\nevents: {go: {}}\nsteps:\n  s: {run: 'true', host: node1}\n\
         assocs: [{event: go, targets: [s]}]\ntrigger: [{event: go}]\n",
    );
    let (hosts, flow) = (hosts.to_str().unwrap(), flow.to_str().unwrap());
    let run = coord(
        dir.path(),
        &["run", "--hosts", hosts, flow, "--run-id", "Y"],
    );
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    let status = coord(dir.path(), &["status", flow, "--hosts", hosts, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&status.stderr)));
    assert_eq!(json["outcome"], "failure", "{json:#}");
    let cause = json["cause"].as_str().unwrap_or_default();
    assert!(
        cause.contains("node1") && cause.contains("no_such_key"),
        "{json:#}"
    );
    let log = std::fs::read_to_string(dir.path().join("logs/why/Y.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("-- end of run Y: failure: ") && last.contains("no_such_key"),
        "{log}"
    );
}
