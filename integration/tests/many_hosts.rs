//! Many hosts at once on the test bed: logins paced by `max_startups`, and hosts behind one
//! jump host sharing one login to it. The bed's two SSH servers stand for many hosts: each
//! host of the hosts file is an ssh_config alias of node1's or node2's address (its own
//! agent, its own link, its own login), as the SSH tests do for jump hosts.

use std::collections::HashMap;
use std::path::Path;

use crate::cluster_run::schema;
use crate::{agent_binary, coord, testbed, text, write};

/// An ssh_config block for `alias` at `addr` with the bed's key and known hosts.
fn block(bed: &HashMap<String, String>, alias: &str, addr: &str, jump: Option<&str>) -> String {
    let jump = jump
        .map(|j| format!("    ProxyJump {j}\n"))
        .unwrap_or_default();
    format!(
        "Host {alias}\n    HostName {addr}\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n    ConnectTimeout 10\n    BatchMode yes\n{jump}\n",
        bed["EVENTOR_SSH_KEY"], bed["EVENTOR_KNOWN_HOSTS"]
    )
}

/// The hosts file for `aliases` (through `ssh_config`), with `top` lines first, and a flow
/// with one step pinned to each, recording its host's name in `DIR/ran`.
fn cluster(
    dir: &Path,
    bed: &HashMap<String, String>,
    aliases: &[String],
    top: &str,
) -> (String, String) {
    let store = format!("{}?schema={}", bed["EVENTOR_PG_URL_BRIDGE"], schema("many"));
    let mut hosts = format!(
        "store: {store}\nssh_config: {}\n{top}hosts:\n",
        dir.join("ssh_config").display()
    );
    let mut flow = String::from("name: many\nevents: {go: {}}\nsteps:\n");
    for alias in aliases {
        hosts += &format!("  {alias}: {{agent: {}}}\n", agent_binary().display());
        flow += &format!(
            "  s_{alias}: {{run: 'echo {alias} >> {}/ran', host: {alias}}}\n",
            dir.display()
        );
    }
    let targets: Vec<String> = aliases.iter().map(|a| format!("s_{a}")).collect();
    flow += &format!(
        "assocs: [{{event: go, targets: [{}]}}]\ntrigger: [{{event: go}}]\n",
        targets.join(", ")
    );
    let hosts = write(dir, "hosts.yaml", &hosts);
    let flow = write(dir, "many.yaml", &flow);
    (hosts.display().to_string(), flow.display().to_string())
}

/// The hosts whose steps ran, sorted.
fn ran(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("ran")).unwrap_or_default();
    let mut hosts: Vec<String> = text.lines().map(str::to_string).collect();
    hosts.sort();
    hosts
}

/// Fifty hosts (25 aliases of each bed host), logins paced ten at a time: every host logs in
/// once (no login dropped or made again), none is away, and each runs its step.
#[test]
fn fifty_hosts_log_in_ten_at_a_time_each_once_and_all_run_their_steps() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write(); // the sshd logs count only this test's logins
    let _pg = crate::postgres_shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let aliases: Vec<String> = (1..=50).map(|i| format!("h{i:02}")).collect();
    let mut config = String::new();
    for (i, alias) in aliases.iter().enumerate() {
        let node = if i % 2 == 0 {
            "EVENTOR_NODE1_ADDR"
        } else {
            "EVENTOR_NODE2_ADDR"
        };
        config += &block(&bed, alias, &bed[node], None);
    }
    write(dir, "ssh_config", &config);
    let (hosts, flow) = cluster(dir, &bed, &aliases, "max_startups: 10\n");
    let before = crate::sshd_logins(&bed, "node1") + crate::sshd_logins(&bed, "node2");
    let started = std::time::Instant::now();
    let out = coord(dir, &["run", "--hosts", &hosts, &flow]);
    let took = started.elapsed().as_secs_f64();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(ran(dir), aliases, "each host ran its step: {stderr}");
    assert!(!stderr.contains("away"), "no host was away: {stderr}");
    let made = crate::sshd_logins(&bed, "node1") + crate::sshd_logins(&bed, "node2") - before;
    assert_eq!(made, 50, "one login per host, none made again: {stderr}");
    eprintln!("MEASURE 50 hosts, max_startups 10: the whole run {took:.2}s");
}

/// Fifteen hosts behind one jump host (aliases of node2 through node1): the run succeeds,
/// and node1's sshd saw one login for the whole run.
#[test]
fn fifteen_hosts_behind_one_jump_host_log_in_to_it_once() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write(); // node1's log counts only this test's logins
    let _pg = crate::postgres_shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let aliases: Vec<String> = (1..=15).map(|i| format!("j{i:02}")).collect();
    let mut config = block(&bed, "node1", &bed["EVENTOR_NODE1_ADDR"], None);
    for alias in &aliases {
        config += &block(&bed, alias, &bed["EVENTOR_NODE2_ADDR"], Some("node1"));
    }
    write(dir, "ssh_config", &config);
    let (hosts, flow) = cluster(dir, &bed, &aliases, "");
    let (node1_before, node2_before) = (
        crate::sshd_logins(&bed, "node1"),
        crate::sshd_logins(&bed, "node2"),
    );
    let out = coord(dir, &["run", "--hosts", &hosts, &flow]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(ran(dir), aliases, "each host ran its step: {stderr}");
    assert_eq!(
        crate::sshd_logins(&bed, "node1") - node1_before,
        1,
        "one login to the jump host: {stderr}"
    );
    assert_eq!(
        crate::sshd_logins(&bed, "node2") - node2_before,
        15,
        "one login per host behind it"
    );
}

/// A jump host that cannot be reached makes the hosts behind it away, not the run failed at
/// its start: a host reached directly runs its step, those behind the jump host fail naming
/// it (exit 1, not 2).
#[test]
fn hosts_behind_a_jump_host_that_is_down_are_away_and_the_others_run() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let quick = |text: String| text.replace("ConnectTimeout 10", "ConnectTimeout 2");
    let mut config = quick(block(&bed, "node1", &bed["EVENTOR_NODE1_ADDR"], None));
    config += &block(&bed, "d01", &bed["EVENTOR_NODE2_ADDR"], None);
    for alias in ["j01", "j02"] {
        config += &block(&bed, alias, &bed["EVENTOR_NODE2_ADDR"], Some("node1"));
    }
    write(dir, "ssh_config", &config);
    let aliases: Vec<String> = ["d01", "j01", "j02"].map(String::from).into();
    let (hosts, flow) = cluster(dir, &bed, &aliases, "");
    let flow_text = std::fs::read_to_string(&flow).unwrap();
    let flow_text = flow_text.replace("events:", "config: {stop_on_exception: false}\nevents:");
    std::fs::write(&flow, flow_text).unwrap();
    let _cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let out = coord(dir, &["run", "--hosts", &hosts, &flow]);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the run went on and failed: {stderr}"
    );
    assert_eq!(
        ran(dir),
        ["d01"],
        "the host reached directly ran its step: {stderr}"
    );
    for alias in ["j01", "j02"] {
        let away = stderr
            .lines()
            .any(|l| l.contains("host down at the start") && l.contains(alias));
        assert!(away, "{alias} is away: {stderr}");
    }
    assert!(stderr.contains("node1"), "the jump host is named: {stderr}");
}
