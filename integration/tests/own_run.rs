//! Steps that fire their own events: a task's command runs `eventor-coord trigger EVENT`
//! with no flow, store or run id, and the event fires in the task's own run (the original's
//! loops, where a step fires the next iteration's event).

use eventor_store::{Store, StoreLocation};

use crate::{coord, coord_binary, text, write};

#[tokio::test]
async fn a_command_step_drives_a_loop_of_five_iterations_by_triggering_its_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let coord_path = coord_binary().display().to_string();
    let body = format!(
        "n=$EVENTOR_STEP_SEQUENCE; echo $n >> {out}/iters.txt; \
         if [ $n -lt 5 ]; then {coord_path} trigger tick@$((n+1)); fi"
    );
    let flow = write(
        dir.path(),
        "loop.yaml",
        &format!(
            "name: loop\nevents: {{tick: {{}}}}\n\
             steps:\n  body: {{run: '{body}'}}\n\
             assocs: [{{event: tick, targets: [body]}}]\n\
             trigger: [{{event: tick}}]\n"
        ),
    );
    let run = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--run-id", "L"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let iters = std::fs::read_to_string(dir.path().join("iters.txt")).unwrap();
    assert_eq!(
        iters, "1\n2\n3\n4\n5\n",
        "five iterations, each fired by the one before"
    );
    let store = Store::open(
        &StoreLocation::parse(dir.path().join("loop.run.db").to_str().unwrap()).unwrap(),
    )
    .await
    .unwrap();
    let run = store.run_history("L").await.unwrap().remove(0);
    let mut fired: Vec<String> = store
        .triggers(run.key)
        .await
        .unwrap()
        .into_iter()
        .map(|t| format!("{}@{}", t.event, t.sequence))
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        ["tick@1", "tick@2", "tick@3", "tick@4", "tick@5"],
        "each once"
    );
}

#[tokio::test]
async fn a_command_naming_an_unknown_event_of_its_run_fails_with_exit_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let coord_path = coord_binary().display().to_string();
    let flow = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "name: bad\nevents: {{go: {{}}}}\n\
             steps:\n  s: {{run: '{coord_path} trigger nosuch 2> {out}/err.txt; echo $? > {out}/code.txt'}}\n\
             assocs: [{{event: go, targets: [s]}}]\ntrigger: [{{event: go}}]\n"
        ),
    );
    let run = coord(dir.path(), &["run", flow.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let code = std::fs::read_to_string(dir.path().join("code.txt")).unwrap();
    let err = std::fs::read_to_string(dir.path().join("err.txt")).unwrap();
    assert_eq!(code.trim(), "2", "{err}");
    assert!(
        err.contains("nosuch") && err.contains("unknown event"),
        "{err}"
    );
}

#[tokio::test]
async fn a_command_on_a_test_host_fires_events_in_its_run_through_its_agent() {
    let Some(bed) = crate::testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let (hosts, _) = crate::cluster_run::hosts_file_with(
        dir.path(),
        &bed,
        &crate::cluster_run::schema("own_run_host"),
        "",
    );
    // The host has only the agent: its `trigger` fires through the agent's socket.
    let agent = crate::agent_binary().display().to_string();
    let body = format!(
        "n=$EVENTOR_STEP_SEQUENCE; echo $n $(hostname -I) >> {out}/iters.txt; \
         if [ $n -lt 3 ]; then {agent} trigger tick@$((n+1)); \
         else {agent} status > {out}/status.json; fi"
    );
    let flow = write(
        dir.path(),
        "hostloop.yaml",
        &format!(
            "name: hostloop\nevents: {{tick: {{}}}}\n\
             steps:\n  body: {{run: '{body}', host: node1}}\n\
             assocs: [{{event: tick, targets: [body]}}]\ntrigger: [{{event: tick}}]\n"
        ),
    );
    let run = coord(
        dir.path(),
        &[
            "run",
            "--hosts",
            &hosts,
            flow.to_str().unwrap(),
            "--run-id",
            "HL",
        ],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let node1 = &bed["EVENTOR_NODE1_ADDR"];
    let iters = std::fs::read_to_string(dir.path().join("iters.txt")).unwrap();
    assert_eq!(
        iters,
        format!("1 {node1}\n2 {node1}\n3 {node1}\n"),
        "three iterations on node1"
    );
    let status = std::fs::read_to_string(dir.path().join("status.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&status).expect(&status);
    assert_eq!(json["run_id"].as_str(), Some("HL"), "{status}");
    let tasks = json["tasks"].as_array().unwrap();
    let done = tasks.iter().filter(|t| t["status"] == "success").count();
    assert_eq!(
        done, 2,
        "the host's command saw two iterations done: {status}"
    );
}

#[tokio::test]
async fn status_inside_a_task_needs_no_arguments_and_shows_its_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let coord_path = coord_binary().display().to_string();
    let flow = write(
        dir.path(),
        "peek.yaml",
        &format!(
            "name: peek\nevents: {{go: {{}}, next: {{}}}}\n\
             steps:\n  first: {{run: 'true', triggers: {{success: [next]}}}}\n  \
               peek: {{run: '{coord_path} status --json > {out}/status.json'}}\n\
             assocs: [{{event: go, targets: [first]}}, {{event: next, targets: [peek]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let run = coord(
        dir.path(),
        &["run", flow.to_str().unwrap(), "--run-id", "P"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let status = std::fs::read_to_string(dir.path().join("status.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&status).expect(&status);
    assert_eq!(
        (json["run_id"].as_str(), json["flow"].as_str()),
        (Some("P"), Some("peek"))
    );
    let tasks = json["tasks"].as_array().unwrap();
    let state = |step: &str| {
        let task = tasks.iter().find(|t| t["step"] == step).unwrap();
        task["status"].as_str().unwrap().to_string()
    };
    assert_eq!(state("first"), "success", "{status}");
    assert_eq!(state("peek"), "active", "it sees itself running: {status}");
}
