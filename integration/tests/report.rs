//! `eventor-coord runs`, `status` and `graph` on SQLite, on the test bed's Postgres and on a
//! cluster run (so hosts show): what they print, their JSON, `--watch` following a run to its
//! end, and bad input (an unknown run, no store) refused with exit 2.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{coord, coord_binary, spawn_coord, testbed, text, write};

/// A flow with a success chain, a failing step, an expression event and a delay.
pub(crate) const DEMO: &str = "name: demo\n\
events: {go: {}, a_done: {}, b_done: {}, both: {expr: 'a_done & b_done'}}\n\
steps:\n  \
  a: {run: 'echo hello a $EVENTOR_STEP_SEQUENCE', triggers: {success: [a_done]}}\n  \
  b: {run: 'echo oops >&2; exit 3', triggers: {success: [b_done]}}\n  \
  c: {run: 'echo c'}\n\
assocs: [{event: go, targets: [a, b]}, {event: both, targets: [c], delay: 1s}]\n\
trigger: [{event: go, range: [1, 3]}]\n";

/// A flow whose one step sleeps, then says `LIVE-MARKER`: a run to watch while it goes.
pub(crate) fn slow_flow(dir: &Path, secs: u32) -> String {
    let yaml = format!(
        "name: slow\nevents: {{go: {{}}}}\nsteps:\n  nap: {{run: 'echo napping; sleep {secs}; echo LIVE-MARKER'}}\n\
         assocs: [{{event: go, targets: [nap]}}]\ntrigger: [{{event: go, range: [1, 2]}}]\n"
    );
    write(dir, "slow.yaml", &yaml).to_str().unwrap().to_string()
}

/// The test bed's Postgres with a schema of this test's own, or `None` to skip.
pub(crate) fn pg_url(test: &str) -> Option<String> {
    match std::env::var("EVENTOR_PG_URL") {
        Ok(url) if !url.is_empty() => Some(format!("{url}?schema=rep_{test}_{}", nanos())),
        _ if std::env::var("EVENTOR_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_URL is not set (scripts/testbed.sh up)")
        }
        _ => {
            eprintln!("skipped: EVENTOR_PG_URL is not set");
            None
        }
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
}

/// Waits (at most 60 s) for a child and answers its exit code, stdout and stderr.
pub(crate) fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eventor-coord did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Waits until `status --json` of run `run_id` answers (the run row exists).
pub(crate) fn wait_for_run(dir: &Path, flow: &str, store: &[&str], run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = vec!["status", flow, "--run-id", run_id, "--json"];
        args.extend_from_slice(store);
        if coord(dir, &args).status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "run {run_id} never appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// Runs the demo flow as run `D` (it fails: b exits 3) with the store flags given.
fn run_demo(dir: &Path, store: &[&str]) -> String {
    let flow = write(dir, "demo.yaml", DEMO).to_str().unwrap().to_string();
    let mut args = vec!["run", flow.as_str(), "--run-id", "D"];
    args.extend_from_slice(store);
    let out = coord(dir, &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    flow
}

/// Everything `runs`, `status` and `graph` print about the demo run, on the store given.
fn check_demo_reports(dir: &Path, flow: &str, store: &[&str]) {
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(store);
        coord(dir, &all)
    };
    let runs = with(&["runs", flow]);
    let table = text(&runs.stdout);
    assert_eq!(runs.status.code(), Some(0), "{}", text(&runs.stderr));
    let row = table
        .lines()
        .find(|l| l.starts_with("D "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("failure") && row.contains("restart"),
        "{table}"
    );
    let listed = json(&with(&["runs", flow, "--json"]));
    assert_eq!(listed[0]["run_id"], "D");
    assert_eq!(listed[0]["outcome"], "failure");
    assert_eq!(listed[0]["counts"]["failure"], 3);
    assert_eq!(listed[0]["counts"]["success"], 3);

    let status = with(&["status", flow]);
    let shown = text(&status.stdout);
    assert!(shown.contains("run D recovery 0 of flow demo"), "{shown}");
    assert!(shown.contains("failed tasks (3):"), "{shown}");
    assert!(
        shown.contains("b[2] on prime (attempt 1, exit:3): exited with status 3"),
        "{shown}"
    );
    let step_a = shown.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(step_a.split_whitespace().nth(1) == Some("3"), "{shown}");

    let object = json(&with(&["status", flow, "--run-id", "D", "--json"]));
    assert_eq!(object["run_id"], "D");
    assert_eq!(object["recovery"], 0);
    assert_eq!(object["outcome"], "failure");
    assert!(object["started"].as_str().unwrap().ends_with('Z'));
    let tasks = object["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 6);
    let b1 = tasks
        .iter()
        .find(|t| t["step"] == "b" && t["sequence"] == "1")
        .unwrap();
    assert_eq!(b1["status"], "failure");
    assert_eq!(b1["attempt"], 1);
    assert!(b1["ended"].is_string());
    assert_eq!(b1["failure_class"], "exit:3");
    for key in ["host", "started", "error", "result"] {
        assert!(b1.get(key).is_some(), "{key} in {b1}");
    }

    let dot = text(&with(&["graph", flow, "--run-id", "D"]).stdout);
    assert!(dot.starts_with("digraph \"demo\""), "{dot}");
    assert!(dot.contains("label=\"both\\na_done & b_done\""), "{dot}");
    assert!(
        dot.contains("[label=\"1s\"]"),
        "the delay is on its edge: {dot}"
    );
    assert!(
        dot.contains("label=\"b\\n3/3 done, 3 failed\", style=filled, fillcolor=\"#f28b82\""),
        "{dot}"
    );
    let mermaid = text(&with(&["graph", flow, "--format", "mermaid"]).stdout);
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("-.->"),
        "{mermaid}"
    );
    let svg = text(&with(&["graph", flow, "--format", "svg", "--run-id", "D"]).stdout);
    assert!(
        svg.starts_with("<svg") && svg.contains("data-name=\"b\" data-state=\"failure\""),
        "{svg}"
    );
}

/// Unknown run ids and missing stores: exit 2, with a message naming the thing.
fn check_bad_input(dir: &Path, flow: &str, store: &[&str], store_text: &str) {
    for command in ["status", "graph"] {
        let mut args = vec![command, flow, "--run-id", "NOPE"];
        args.extend_from_slice(store);
        let out = coord(dir, &args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command}: {}",
            text(&out.stderr)
        );
        let said = text(&out.stderr);
        assert!(
            said.contains("no run NOPE in") && said.contains(store_text),
            "{said}"
        );
    }
}

#[test]
fn runs_status_and_graph_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let flow = run_demo(dir.path(), &[]);
    check_demo_reports(dir.path(), &flow, &[]);
    check_bad_input(dir.path(), &flow, &[], "demo.run.db");
    for command in ["runs", "status"] {
        let out = coord(
            dir.path(),
            &[command, &flow, "--store", "/nonexistent/x.db"],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("no store at /nonexistent/x.db"),
            "{}",
            text(&out.stderr)
        );
    }
    let other = write(
        dir.path(),
        "other.yaml",
        &DEMO.replace("name: demo", "name: other"),
    );
    let out = coord(
        dir.path(),
        &["status", other.to_str().unwrap(), "--store", "demo.run.db"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no run of flow other in sqlite:demo.run.db"),
        "{}",
        text(&out.stderr)
    );
}

/// `status --watch` started while a run goes on redraws and ends with the run.
fn check_watch(dir: &Path, store: &[&str], json_mode: bool) {
    let flow = slow_flow(dir, 2);
    let mut run_args = vec!["run", flow.as_str(), "--run-id", "W"];
    run_args.extend_from_slice(store);
    let run = spawn_coord(dir, &run_args);
    wait_for_run(dir, &flow, store, "W");
    let mut args = vec!["status", flow.as_str(), "--run-id", "W", "--watch"];
    if json_mode {
        args.push("--json");
    }
    args.extend_from_slice(store);
    let started = Instant::now();
    let (code, out, err) = finish(spawn_coord(dir, &args));
    assert_eq!(code, Some(0), "{err}");
    let (run_code, _, run_err) = finish(run);
    assert_eq!(run_code, Some(0), "{run_err}");
    if json_mode {
        let frames: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(frames.len() >= 2, "redrawn as it went: {out}");
        assert_eq!(frames[0]["outcome"], "running", "{out}");
        assert_eq!(frames.last().unwrap()["outcome"], "success", "{out}");
    } else {
        assert!(out.matches("run W recovery 0").count() >= 2, "{out}");
        assert!(
            out.trim_end().lines().any(|l| l.ends_with(": success")),
            "{out}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// `runs` and `status` tell a run whose prime was killed from a live one: it shows as
/// abandoned (it showed running while its prime lived), `status --watch` ends at once, and
/// once recovered the killed recovery stays abandoned beside the new one's outcome.
fn check_abandoned(dir: &Path, store: &[&str]) {
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(store);
        coord(dir, &all)
    };
    let flow = slow_flow(dir, 120);
    let mut run_args = vec!["run", flow.as_str(), "--run-id", "K"];
    run_args.extend_from_slice(store);
    let mut run = spawn_coord(dir, &run_args);
    wait_for_run(dir, &flow, store, "K");
    let outcomes = || {
        let listed = json(&with(&["runs", &flow, "--json"]));
        let rows = listed.as_array().unwrap().iter();
        rows.filter(|r| r["run_id"] == "K")
            .map(|r| {
                (
                    r["recovery"].as_i64().unwrap(),
                    r["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(), [(0, "running".to_string())]);
    run.kill().unwrap(); // SIGKILL: nothing is stored
    run.wait().unwrap();
    assert_eq!(outcomes(), [(0, "abandoned".to_string())]);
    let status = text(&with(&["status", &flow, "--run-id", "K"]).stdout);
    assert!(
        status.lines().next().unwrap().ends_with(": abandoned"),
        "{status}"
    );

    let started = Instant::now();
    let mut watch = vec![
        "status",
        flow.as_str(),
        "--run-id",
        "K",
        "--watch",
        "--json",
    ];
    watch.extend_from_slice(store);
    let (code, out, err) = finish(spawn_coord(dir, &watch));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(r#""outcome":"abandoned""#), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the watch waited"
    );

    let flow = slow_flow(dir, 0);
    let mut recover = vec!["run", flow.as_str(), "--mode", "recover"];
    recover.extend_from_slice(store);
    let out = coord(dir, &recover);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut seen = outcomes();
    seen.sort();
    assert_eq!(
        seen,
        [(0, "abandoned".to_string()), (1, "success".to_string())]
    );
}

#[test]
fn a_killed_primes_run_shows_as_abandoned_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check_abandoned(dir.path(), &[]);
}

#[test]
fn status_watch_follows_a_run_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check_watch(dir.path(), &[], false);
}

#[test]
fn runs_status_graph_and_watch_on_postgres() {
    let Some(url) = pg_url("pg") else { return };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let store = ["--store", url.as_str()];
    let flow = run_demo(dir.path(), &store);
    check_demo_reports(dir.path(), &flow, &store);
    check_bad_input(dir.path(), &flow, &store, "postgres://");
    check_watch(dir.path(), &store, true);
    check_abandoned(dir.path(), &store);
}

/// A hosts file for node1 and node2 with this build's agent and the shared store (reached
/// through the bridge, as the hosts reach it), in a schema of the test's own.
pub(crate) fn cluster_hosts(
    dir: &Path,
    bed: &HashMap<String, String>,
    test: &str,
) -> (String, String) {
    crate::cluster_run::hosts_file(dir, bed, &format!("rep_{test}_{}", nanos()))
}

/// A flow over both test hosts; one task on node2 fails.
pub(crate) fn cluster_flow(dir: &Path) -> String {
    let yaml = "name: spread\nevents: {go: {}, a_done: {}}\n\
         steps:\n  \
           a: {run: 'echo on node1; sleep 0.3', host: node1, triggers: {success: [a_done]}}\n  \
           b: {run: 'echo on node2; test $EVENTOR_STEP_SEQUENCE != 2', host: node2}\n  \
           here: {run: 'echo on the prime'}\n\
         assocs: [{event: go, targets: [a, here]}, {event: a_done, targets: [b]}]\n\
         trigger: [{event: go, range: [1, 3]}]\n";
    write(dir, "spread.yaml", yaml)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn status_of_a_cluster_run_shows_its_hosts() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, url) = cluster_hosts(dir.path(), &bed, "cluster");
    let flow = cluster_flow(dir.path());
    let run = coord(
        dir.path(),
        &["run", "--hosts", &hosts, &flow, "--run-id", "C"],
    );
    assert_eq!(
        run.status.code(),
        Some(1),
        "b[2] fails: {}",
        text(&run.stderr)
    );
    let object = json(&coord(
        dir.path(),
        &["status", &flow, "--store", &url, "--json"],
    ));
    let tasks = object["tasks"].as_array().unwrap();
    let host_of = |step: &str| -> Vec<&str> {
        tasks
            .iter()
            .filter(|t| t["step"] == step)
            .map(|t| t["host"].as_str().unwrap_or("prime"))
            .collect()
    };
    assert_eq!(host_of("a"), ["node1"; 3]);
    assert_eq!(host_of("b"), ["node2"; 3]);
    let shown = text(&coord(dir.path(), &["status", &flow, "--store", &url]).stdout);
    let b = shown
        .lines()
        .find(|l| l.starts_with("b "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(b.contains("node2"), "{shown}");
    assert!(
        shown.contains("b[2] on node2 (attempt 1, exit:1): exited with status 1"),
        "{shown}"
    );
    let runs = text(&coord(dir.path(), &["runs", &flow, "--store", &url]).stdout);
    assert!(
        runs.lines()
            .any(|l| l.starts_with("C ") && l.contains("failure")),
        "{runs}"
    );
    check_spread_hosts(dir.path(), &bed, &hosts, &url);
}

/// A step that may run on either host: each task's stored host is the one it ran on (its
/// command saw that host's address in `SSH_CONNECTION`), not a guess from the pins.
fn check_spread_hosts(dir: &Path, bed: &HashMap<String, String>, hosts: &str, url: &str) {
    let out = dir.join("where");
    std::fs::create_dir_all(&out).unwrap();
    let yaml = format!(
        "name: where\nevents: {{go: {{}}}}\nsteps:\n  \
           w: {{run: 'echo $SSH_CONNECTION > {}/$EVENTOR_STEP_SEQUENCE; sleep 0.2', \
                hosts: [node1, node2]}}\n\
         assocs: [{{event: go, targets: [w]}}]\ntrigger: [{{event: go, range: [1, 6]}}]\n",
        out.display()
    );
    let flow = write(dir, "where.yaml", &yaml);
    let flow = flow.to_str().unwrap();
    let run = coord(dir, &["run", "--hosts", hosts, flow]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let object = json(&coord(dir, &["status", flow, "--store", url, "--json"]));
    let mut used = Vec::new();
    for task in object["tasks"].as_array().unwrap() {
        let sequence = task["sequence"].as_str().unwrap();
        let seen = std::fs::read_to_string(out.join(sequence)).unwrap();
        let address = seen.split_whitespace().nth(2).unwrap().to_string();
        let host = task["host"].as_str().unwrap_or("none");
        let expected = format!("EVENTOR_{}_ADDR", host.to_uppercase());
        assert_eq!(bed.get(&expected), Some(&address), "w[{sequence}]: {task}");
        used.push(host.to_string());
    }
    used.sort();
    used.dedup();
    assert_eq!(used, ["node1", "node2"], "both hosts took tasks");
}

/// `run`'s progress: a plain line every few seconds when stderr is not a terminal, a bar
/// (drawn with the console log above it) on a terminal, only the outcome with `--quiet`.
#[test]
fn run_shows_progress_and_quiet_shows_only_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let flow = slow_flow(dir.path(), 6);
    let (code, out, err) = finish(spawn_coord(dir.path(), &["run", &flow, "--run-id", "P1"]));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "success\n");
    assert!(
        err.contains("eventor-coord: progress: 0/2 tasks done, 0 failed, active: prime 2, 5s"),
        "{err}"
    );

    // (RUST_LOG would override --quiet's console level, as it does --log-level.)
    let quiet = Command::new(coord_binary())
        .args(["run", &flow, "--run-id", "P2", "--quiet"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(text(&quiet.stdout), "success\n");
    assert_eq!(text(&quiet.stderr), "", "--quiet prints only the outcome");

    // On a terminal (script(1) gives it one): the bar.
    let typescript = dir.path().join("typescript");
    let command = format!("{} run {flow} --run-id P3", coord_binary().display());
    let shown = Command::new("script")
        .arg("-qc")
        .arg(&command)
        .arg(&typescript)
        .current_dir(dir.path())
        .output()
        .expect("script(1) from util-linux");
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let screen = std::fs::read_to_string(&typescript).unwrap();
    assert!(
        screen.contains("/2 tasks, 0 failed, active: prime 2"),
        "{screen}"
    );
}

/// A failed task's error carries the last lines its command wrote on stderr (up to 5, the
/// earlier ones dropped), on the prime and on a host alike, so `status` says why.
#[test]
fn status_shows_a_failed_tasks_last_stderr_lines() {
    let Some(bed) = crate::testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, url) =
        crate::cluster_run::hosts_file(dir.path(), &bed, &crate::cluster_run::schema("tail"));
    let fail = "for i in 1 2 3 4 5 6; do echo line $i >&2; done; \
                echo schema mismatch at line 42 >&2; echo fine on stdout; exit 3";
    let flow = write(
        dir.path(),
        "tail.yaml",
        &format!(
            "name: tail\nevents: {{go: {{}}}}\n\
             steps:\n  here: {{run: '{fail}'}}\n  there: {{run: '{fail}', host: node1}}\n\
             assocs: [{{event: go, targets: [here, there]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let run = coord(
        dir.path(),
        &["run", "--hosts", &hosts, flow, "--run-id", "F"],
    );
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let object = json(&coord(
        dir.path(),
        &["status", flow, "--store", &url, "--json"],
    ));
    let tasks = object["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{object:#}");
    for task in tasks {
        let error = task["error"].as_str().unwrap_or_default();
        assert_eq!(
            error,
            "exited with status 3; last stderr: line 3 | line 4 | line 5 | line 6 | \
             schema mismatch at line 42",
            "{task:#}"
        );
    }
    let said = text(&coord(dir.path(), &["status", flow, "--store", &url]).stdout);
    assert!(said.contains("schema mismatch at line 42"), "{said}");
}

/// While a task holds the only unit of a pool, `status` says the next one waits for that
/// pool (text and JSON), and the run's log said so when it began to wait.
#[test]
fn status_says_a_task_waits_for_a_pool_and_the_log_said_when_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let flow = write(
        dir.path(),
        "pool.yaml",
        &format!(
            "name: pool\nresources: {{db: 1}}\nevents: {{go: {{}}}}\n\
             steps:\n  load: {{run: 'touch {d}/started-$EVENTOR_STEP_SEQUENCE; \
             while [ ! -e {d}/release ]; do sleep 0.05; done', acquires: {{db: 1}}}}\n\
             assocs: [{{event: go, targets: [load]}}]\ntrigger: [{{event: go, range: [1, 2]}}]\n"
        ),
    );
    let flow = flow.to_str().unwrap();
    let run = spawn_coord(dir.path(), &["run", flow, "--run-id", "W"]);
    crate::wait_for(&dir.path().join("started-1"));
    let object = json(&coord(dir.path(), &["status", flow, "--json"]));
    let said = text(&coord(dir.path(), &["status", flow]).stdout);
    std::fs::write(dir.path().join("release"), "").unwrap();
    let (code, _, err) = finish(run);
    assert_eq!(code, Some(0), "{err}");
    let why = "pool `db` (1 wanted, 1 of 1 held by running tasks)";
    let tasks = object["tasks"].as_array().unwrap();
    let waiting: Vec<_> = tasks.iter().filter(|t| t["status"] == "ready").collect();
    assert_eq!(waiting.len(), 1, "{object:#}");
    assert_eq!(waiting[0]["waiting"], why, "{object:#}");
    assert!(said.contains(&format!("load[2] waits for {why}")), "{said}");
    let line = err
        .lines()
        .find(|l| l.contains("waiting for the pool's units"))
        .unwrap_or_else(|| panic!("no waiting line in:\n{err}"));
    assert!(
        line.contains("step=load") && line.contains("pool=db"),
        "{line}"
    );
}
