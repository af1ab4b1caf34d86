//! One store for every command: `status`, `runs`, `graph`, `logs`, `trigger` and `prune`
//! find a run's store as `run` does (`--store`, the flow file's `store:`, the hosts file's
//! `store:` through `--hosts`), and a read command never creates one: without it, it says
//! where it looked.

use std::path::Path;
use std::process::Output;

use crate::cluster_run::{hosts_file, schema};
use crate::{coord, testbed, text, write};

/// The `.db` files in `dir`: a read command must leave none behind.
fn stores_in(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().filter_map(Result::ok);
    let names = names.map(|e| e.file_name().to_string_lossy().into_owned());
    names.filter(|n| n.ends_with(".db")).collect()
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn every_command_on_a_run_uses_the_hosts_files_store_and_creates_no_file() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, _) = hosts_file(dir.path(), &bed, &schema("one_store"));
    let flow = write(
        dir.path(),
        "nightly.yaml",
        "events: {go: {}, again: {}}\n\
         steps:\n  load: {run: 'echo loaded on node1', host: node1}\n\
         assocs: [{event: go, targets: [load]}, {event: again, targets: [load]}]\n\
         trigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let run = coord(
        dir.path(),
        &["run", flow, "--hosts", &hosts, "--run-id", "N"],
    );
    ok(&run, "run");
    let h = ["--hosts", hosts.as_str()];
    let status = ok(
        &coord(dir.path(), &[&["status", flow][..], &h].concat()),
        "status",
    );
    assert!(
        status.contains("N") && status.contains("success"),
        "{status}"
    );
    let runs = ok(
        &coord(dir.path(), &[&["runs", flow][..], &h].concat()),
        "runs",
    );
    assert!(runs.lines().any(|l| l.starts_with("N ")), "{runs}");
    let every = ok(
        &coord(dir.path(), &[&["runs"][..], &h].concat()),
        "runs without a flow",
    );
    assert!(every.lines().any(|l| l.starts_with("nightly ")), "{every}");
    let graph = [&["graph", flow, "--run-id", "N"][..], &h].concat();
    assert!(ok(&coord(dir.path(), &graph), "graph").contains("load"));
    let follow = [&["logs", flow, "--run-id", "N", "--follow"][..], &h].concat();
    let log = ok(&coord(dir.path(), &follow), "logs --follow");
    assert!(log.contains("loaded on node1"), "{log}");
    assert!(log.contains("-- end of run N: success"), "{log}");
    let trigger = [&["trigger", flow, "again@2", "--run-id", "N"][..], &h].concat();
    let said = ok(&coord(dir.path(), &trigger), "trigger");
    assert!(said.contains("triggered again[2] in run N"), "{said}");
    let prune = [&["prune", flow, "--older-than", "1000d"][..], &h].concat();
    ok(&coord(dir.path(), &prune), "prune");
    assert_eq!(stores_in(dir.path()), Vec::<String>::new());
}

#[test]
fn a_flow_files_store_serves_run_and_every_read_command() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "own.yaml",
        "store: kept.db\nevents: {go: {}}\nsteps:\n  s1: {run: 'echo one'}\n\
         assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    ok(&coord(dir.path(), &["run", flow, "--run-id", "K"]), "run");
    assert_eq!(stores_in(dir.path()), ["kept.db"]);
    let status = ok(&coord(dir.path(), &["status", flow]), "status");
    assert!(status.contains("K"), "{status}");
    let runs = ok(&coord(dir.path(), &["runs", flow]), "runs");
    assert!(runs.lines().any(|l| l.starts_with("K ")), "{runs}");
    let graph = ok(
        &coord(dir.path(), &["graph", flow, "--run-id", "K"]),
        "graph",
    );
    assert!(graph.contains("s1"), "{graph}");
    ok(&coord(dir.path(), &["trigger", flow, "go@2"]), "trigger");
    ok(
        &coord(dir.path(), &["prune", flow, "--older-than", "1000d"]),
        "prune",
    );
    assert_eq!(stores_in(dir.path()), ["kept.db"], "no second store");
}

#[test]
fn a_read_command_without_a_store_says_where_it_looked_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "never.yaml",
        "events: {go: {}}\nsteps:\n  s1: {run: 'true'}\nassocs: [{event: go, targets: [s1]}]\n",
    );
    let flow = flow.to_str().unwrap();
    let commands: [&[&str]; 6] = [
        &["status", flow],
        &["runs", flow],
        &["graph", flow, "--run-id", "X"],
        &["trigger", flow, "go"],
        &["prune", flow, "--older-than", "1d"],
        &["runs"],
    ];
    for args in commands {
        let out = coord(dir.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no store named (looked at --store, "),
            "{args:?} says where it looked: {stderr}"
        );
    }
    let logs = coord(dir.path(), &["logs", flow, "--run-id", "X"]);
    assert_eq!(logs.status.code(), Some(2), "{}", text(&logs.stderr));
    assert_eq!(stores_in(dir.path()), Vec::<String>::new());
}

#[test]
fn logs_follow_of_a_run_in_another_store_follows_it_to_its_end_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(
        dir.path(),
        "away.yaml",
        "events: {go: {}}\nsteps:\n  talk: {run: 'echo early; sleep 3; echo late'}\n\
         assocs: [{event: go, targets: [talk]}]\ntrigger: [{event: go}]\n",
    );
    let flow = flow.to_str().unwrap();
    let run = crate::spawn_coord(
        dir.path(),
        &["run", flow, "--store", "elsewhere.db", "--run-id", "A"],
    );
    // Without the run's store the follower cannot ask for its lock: it follows the log to
    // its end marker rather than making a store of its own and finding nobody there.
    let follow = coord(dir.path(), &["logs", flow, "--run-id", "A", "--follow"]);
    let log = ok(&follow, "logs --follow");
    assert!(log.contains("stdout late"), "{log}");
    assert!(log.contains("-- end of run A: success"), "{log}");
    let (code, said) = crate::finish_coord(run, std::time::Duration::from_secs(30));
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(stores_in(dir.path()), ["elsewhere.db"]);
}

#[test]
fn runs_of_a_store_without_a_flow_lists_every_flows_runs() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["first", "second"] {
        let flow = write(
            dir.path(),
            &format!("{name}.yaml"),
            "events: {go: {}}\nsteps:\n  s1: {run: 'true'}\n\
             assocs: [{event: go, targets: [s1]}]\ntrigger: [{event: go}]\n",
        );
        let args = [
            "run",
            flow.to_str().unwrap(),
            "--store",
            "all.db",
            "--run-id",
            name,
        ];
        ok(&coord(dir.path(), &args), "run");
    }
    let runs = ok(&coord(dir.path(), &["runs", "--store", "all.db"]), "runs");
    let header = runs.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("FLOW ") && header.contains(" RUN "),
        "{runs}"
    );
    for name in ["first", "second"] {
        let row = format!("{name} ");
        assert!(
            runs.lines()
                .any(|l| l.starts_with(&row) && l.contains(&format!(" {name} "))),
            "{runs}"
        );
    }
}
