//! Hosts that misbehave, end to end on the test bed: a host that cannot be reached when the
//! run starts is away, as one lost mid-run would be, rather than sinking the run.

use eventor_store::{Store, StoreLocation, TaskStatus};

use crate::cluster_run::{hosts_file_with, schema};
use crate::{coord, testbed, text, write};

#[tokio::test]
async fn a_host_down_at_the_start_is_away_the_others_run_its_own_tasks_fail_naming_it() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let (hosts, url) = hosts_file_with(dir.path(), &bed, &schema("away_start"), "");
    let flow = write(
        dir.path(),
        "away.yaml",
        &format!(
            "name: away\nevents: {{go: {{}}, a_done: {{}}}}\n\
             steps:\n  \
               a: {{run: 'hostname -I >> {out}/a.txt', hosts: [node1, node2], triggers: {{success: [a_done]}}}}\n  \
               only2: {{run: 'echo ran >> {out}/only2.txt', host: node2, stop_on_exception: false}}\n  \
               after: {{run: 'hostname -I >> {out}/after.txt', host: node1}}\n\
             assocs: [{{event: go, targets: [a, only2]}}, {{event: a_done, targets: [after]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let _cut = crate::LinkCut::new(&bed["EVENTOR_NODE2_VETH"]);
    let run = coord(
        dir.path(),
        &[
            "run",
            "--hosts",
            &hosts,
            flow.to_str().unwrap(),
            "--run-id",
            "W",
        ],
    );
    let stderr = text(&run.stderr);
    assert_eq!(
        run.status.code(),
        Some(1),
        "the run went on and failed: {stderr}"
    );
    assert!(stderr.contains("host down at the start"), "{stderr}");
    let node1 = &bed["EVENTOR_NODE1_ADDR"];
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert_eq!(
        read("a.txt").trim(),
        node1.as_str(),
        "a ran on the host that answered"
    );
    assert_eq!(
        read("after.txt").trim(),
        node1.as_str(),
        "and so did the step after it"
    );
    assert!(
        !dir.path().join("only2.txt").exists(),
        "nothing ran on the host that is away"
    );
    let store = Store::open(&StoreLocation::parse(&url).unwrap())
        .await
        .unwrap();
    let history = store.run_history("W").await.unwrap();
    let tasks = store.tasks(history[0].key.clone()).await.unwrap();
    let only2 = tasks.iter().find(|t| t.step == "only2").unwrap();
    assert_eq!(only2.status, TaskStatus::Failure);
    let error = only2.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("node2") && error.contains("timed out"),
        "names the host and the cause: {error}"
    );
}

#[tokio::test]
async fn a_host_refusing_the_login_still_stops_the_run_at_the_start_with_exit_2() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let dir = tempfile::tempdir().unwrap();
    let (hosts, _) = hosts_file_with(dir.path(), &bed, &schema("away_config"), "");
    // A user the hosts do not know: a refused login is a mistake to fix, not a host away.
    let text_of = std::fs::read_to_string(&hosts).unwrap();
    let ssh_config = std::fs::read_to_string(&bed["EVENTOR_SSH_CONFIG"]).unwrap();
    let broken = write(
        dir.path(),
        "ssh_config",
        &ssh_config.replace("User ", "User nosuchuser-"),
    );
    let hosts = write(
        dir.path(),
        "hosts-bad-user.yaml",
        &text_of.replace(&bed["EVENTOR_SSH_CONFIG"], broken.to_str().unwrap()),
    );
    let flow = write(
        dir.path(),
        "one.yaml",
        "name: one\nevents: {go: {}}\nsteps:\n  s: {run: 'true', host: node1}\n\
         assocs: [{event: go, targets: [s]}]\ntrigger: [{event: go}]\n",
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
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot reach the cluster"), "{stderr}");
}
