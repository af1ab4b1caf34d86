//! `eventor-coord check` against the test hosts: a good cluster is ready, and a changed
//! host key, a host cut off, a missing agent and a store the hosts cannot reach each make
//! it not ready (exit 1) with the reason named; `--resolve-only --json` has its documented
//! shape; bad input exits 2.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{agent_binary, coord, testbed, text, write};

/// A key no test host has, for a known_hosts line that must not match.
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOsvTCqE62rb5dE1aD3wCk/0aiw1qL6bie++HAZdr9d0";

/// What a test's hosts file says.
struct Cluster<'a> {
    store: String,
    ssh_config: String,
    node1_agent: &'a str,
}

impl<'a> Cluster<'a> {
    /// Both test hosts with this build's agent, the shared store through the bridge (as
    /// the hosts reach it) and the test bed's ssh_config.
    fn good(bed: &HashMap<String, String>) -> Cluster<'a> {
        Cluster {
            store: format!("{}?schema=check", bed["EVENTOR_PG_URL_BRIDGE"]),
            ssh_config: bed["EVENTOR_SSH_CONFIG"].clone(),
            node1_agent: "",
        }
    }

    fn write(&self, dir: &Path) -> PathBuf {
        let agent = agent_binary().display().to_string();
        let node1 = if self.node1_agent.is_empty() {
            agent.as_str()
        } else {
            self.node1_agent
        };
        let yaml = format!(
            "store: {}\nssh_config: {}\nhosts:\n  node1: {{agent: {node1}}}\n  node2: {{agent: {agent}}}\n",
            self.store, self.ssh_config
        );
        write(dir, "hosts.yaml", &yaml)
    }
}

/// A flow with a step pinned to each test host.
fn flow(dir: &Path) -> PathBuf {
    write(
        dir,
        "nightly.yaml",
        "name: nightly\nevents: {go: {}}\nresources: {slots: 2}\n\
         steps:\n  a: {run: 'true', host: node1}\n  b: {run: 'true', host: node2}\n\
         assocs: [{event: go, targets: [a, b]}]\ntrigger: [{event: go}]\n",
    )
}

/// `check FLOW --hosts HOSTS --json [extra]`, with its JSON.
fn check_json(dir: &Path, hosts: &Path, extra: &[&str]) -> (Output, Value) {
    let flow = flow(dir);
    let mut args = vec![
        "check",
        flow.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
        "--json",
    ];
    args.extend(extra);
    let out = coord(dir, &args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out, json)
}

fn host<'v>(json: &'v Value, name: &str) -> &'v Value {
    let hosts = json["hosts"].as_array().expect("hosts array");
    hosts
        .iter()
        .find(|h| h["host"] == name)
        .expect("host in report")
}

fn assert_ready(host: &Value) {
    assert_eq!(host["ready"], true, "{host:#}");
    assert_eq!(host["connect"]["ok"], true, "{host:#}");
    assert_eq!(host["host_key"]["status"], "known", "{host:#}");
    assert!(
        host["host_key"]["key"]
            .as_str()
            .unwrap()
            .contains("SHA256:"),
        "{host:#}"
    );
    assert!(
        host["auth"]["method"]
            .as_str()
            .unwrap()
            .contains("id_ed25519"),
        "{host:#}"
    );
    assert!(
        host["agent"]["version"]
            .as_str()
            .unwrap()
            .starts_with("eventor-agent"),
        "{host:#}"
    );
    assert!(
        host["agent"]["os"].as_str().unwrap().starts_with("Linux"),
        "{host:#}"
    );
    assert_eq!(host["store"]["ok"], true, "{host:#}");
    assert!(
        host["clock_offset_ms"].as_f64().unwrap().abs() < 1000.0,
        "{host:#}"
    );
}

#[test]
fn a_good_cluster_is_ready() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let hosts = Cluster::good(&bed).write(dir.path());
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    assert_eq!(out.status.code(), Some(0), "{json:#} {}", text(&out.stderr));
    assert_eq!(json["ready"], true);
    assert_eq!(json["store"]["ok"], true);
    for name in ["node1", "node2"] {
        assert_ready(host(&json, name));
    }
    assert_eq!(host(&json, "node1")["host_key"]["line"], 1);
    let summary = text(&out.stderr);
    assert!(
        summary.contains(
            "flow nightly: 1 events, 2 steps, 1 associations; hosts node1, node2; pools slots (2)"
        ),
        "{summary}"
    );

    let flow = flow(dir.path());
    let args = [
        "check",
        flow.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
    ];
    let out = coord(dir.path(), &args);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("READY: 2 of 2 hosts ready"), "{said}");
    assert!(
        said.contains("  host key: known: ssh-ed25519 SHA256:"),
        "{said}"
    );
}

#[test]
fn a_changed_host_key_is_named_with_its_file_and_line() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read_to_string(&bed["EVENTOR_KNOWN_HOSTS"]).unwrap();
    let node2_lines: String = real
        .lines()
        .filter(|l| !l.contains("0.11") && !l.starts_with("node1"))
        .map(|l| format!("{l}\n"))
        .collect();
    let known = write(
        dir.path(),
        "known_hosts",
        &format!("{} {OTHER_KEY}\n{node2_lines}", bed["EVENTOR_NODE1_ADDR"]),
    );
    let config = std::fs::read_to_string(&bed["EVENTOR_SSH_CONFIG"]).unwrap();
    let config = config.replace(&bed["EVENTOR_KNOWN_HOSTS"], known.to_str().unwrap());
    let config = write(dir.path(), "ssh_config", &config);
    let cluster = Cluster {
        ssh_config: config.display().to_string(),
        ..Cluster::good(&bed)
    };
    let (out, json) = check_json(dir.path(), &cluster.write(dir.path()), &[]);
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["ready"], false);
    let key = &host(&json, "node1")["host_key"];
    assert_eq!(key["status"], "changed", "{json:#}");
    assert_eq!(key["file"], known.to_str().unwrap());
    assert_eq!(key["line"], 1);
    assert!(
        key["recorded"].as_str().unwrap().contains("SHA256:"),
        "{key:#}"
    );
    assert!(
        key["presented"].as_str().unwrap().contains("SHA256:"),
        "{key:#}"
    );
    assert_ne!(key["recorded"], key["presented"]);
    assert_ready(host(&json, "node2"));
}

#[test]
fn a_host_cut_off_fails_within_the_connect_timeout_and_the_others_are_still_reported() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let hosts = Cluster::good(&bed).write(dir.path());
    let _cut = crate::LinkCut::new(&bed["EVENTOR_NODE1_VETH"]);
    let started = Instant::now();
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    // The test bed's ConnectTimeout is 5 s.
    assert!(took < Duration::from_secs(9), "took {took:?}");
    let node1 = host(&json, "node1");
    assert_eq!(node1["connect"]["ok"], false, "{node1:#}");
    assert!(
        node1["connect"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 5s"),
        "{node1:#}"
    );
    assert_eq!(node1["ready"], false);
    assert_eq!(node1["agent"], Value::Null);
    assert_ready(host(&json, "node2"));
}

#[test]
fn a_missing_agent_is_named() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        node1_agent: "/nonexistent/eventor-agent",
        ..Cluster::good(&bed)
    };
    let hosts = cluster.write(dir.path());
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    let agent = &host(&json, "node1")["agent"];
    assert_eq!(agent["ok"], false, "{agent:#}");
    assert_eq!(agent["path"], "/nonexistent/eventor-agent");
    assert!(
        agent["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/eventor-agent not found"),
        "{agent:#}"
    );
    assert_ready(host(&json, "node2"));

    let flow = flow(dir.path());
    let args = [
        "check",
        flow.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
    ];
    let said = text(&coord(dir.path(), &args).stdout);
    assert!(
        said.contains("agent: FAILED: agent /nonexistent/eventor-agent not found"),
        "{said}"
    );
}

#[test]
fn a_store_the_hosts_cannot_reach_is_named_per_host() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.1 is the prime's own loopback; inside the hosts' namespaces it is theirs.
    let cluster = Cluster {
        store: bed["EVENTOR_PG_URL"].clone(),
        ..Cluster::good(&bed)
    };
    let hosts = cluster.write(dir.path());
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    assert_eq!(json["store"]["ok"], true, "the prime reaches it: {json:#}");
    let address = format!("127.0.0.1:{}", bed["EVENTOR_PG_PORT"]);
    for name in ["node1", "node2"] {
        let store = &host(&json, name)["store"];
        assert_eq!(store["ok"], false, "{store:#}");
        assert_eq!(store["address"], address.as_str());
        assert!(
            store["error"].as_str().unwrap().contains(&address),
            "{store:#}"
        );
    }

    let flow = flow(dir.path());
    let args = [
        "check",
        flow.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
    ];
    let said = text(&coord(dir.path(), &args).stdout);
    for name in ["node1", "node2"] {
        let named = format!("  store: FAILED: {name} cannot reach the store at {address}");
        assert!(said.contains(&named), "{said}");
    }
    assert!(said.contains("NOT READY: 0 of 2 hosts ready"), "{said}");
}

/// A store URL whose host holds shell syntax runs nothing on the hosts: the check tries to
/// reach that (impossible) host and says so. The hosts share this file system, so a file
/// the injected command would have made would be seen here.
#[test]
fn a_store_host_with_shell_syntax_runs_nothing_on_the_hosts() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let touch = format!("touch {}", marker.display());
    let evil = format!("x$({touch});{touch};true");
    let encoded: String = evil
        .bytes()
        .map(|b| match b.is_ascii_alphanumeric() || b"-._".contains(&b) {
            true => (b as char).to_string(),
            false => format!("%{b:02X}"),
        })
        .collect();
    let cluster = Cluster {
        store: format!("postgres://postgres@{encoded}:5432/eventor"),
        ..Cluster::good(&bed)
    };
    let hosts = cluster.write(dir.path());
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    for name in ["node1", "node2"] {
        let store = &host(&json, name)["store"];
        assert_eq!(store["ok"], false, "{store:#}");
        assert_eq!(
            store["address"],
            format!("{evil}:5432").as_str(),
            "{store:#}"
        );
    }
    assert!(
        !marker.exists(),
        "the store's host ran as a command: {json:#}"
    );
}

#[test]
fn resolve_only_json_has_the_documented_shape_and_connects_nowhere() {
    let Some(bed) = testbed() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A password in the store URL must never be printed.
    let store = bed["EVENTOR_PG_URL_BRIDGE"].replace("postgres@", "postgres:s3cret@");
    let cluster = Cluster {
        store,
        ..Cluster::good(&bed)
    };
    let hosts = cluster.write(dir.path());
    let (out, json) = check_json(dir.path(), &hosts, &["--resolve-only"]);
    assert_eq!(out.status.code(), Some(0), "{json:#} {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("s3cret") && !text(&out.stdout).contains("s3cret"));
    let top: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(top, ["hosts"]);
    let node1 = host(&json, "node1");
    let mut keys: Vec<&str> = node1
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut expected = vec![
        "host",
        "ssh_alias",
        "hostname",
        "port",
        "user",
        "identity_files",
        "proxy_jump",
        "user_known_hosts_files",
        "strict_host_key_checking",
        "connect_timeout",
        "warnings",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(node1["hostname"], bed["EVENTOR_NODE1_ADDR"].as_str());
    assert_eq!(node1["port"], 22);
    assert_eq!(node1["user"], "root");
    assert_eq!(
        node1["identity_files"],
        serde_json::json!([bed["EVENTOR_SSH_KEY"]])
    );
    assert_eq!(node1["proxy_jump"], serde_json::json!([]));
    assert_eq!(
        node1["user_known_hosts_files"],
        serde_json::json!([bed["EVENTOR_KNOWN_HOSTS"]])
    );
    assert_eq!(node1["strict_host_key_checking"], "yes");
    assert_eq!(node1["connect_timeout"], 5.0);
    assert!(node1["warnings"].is_array());
}

#[test]
fn resolve_only_follows_proxy_jump_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "ssh_config",
        "Host inner\n  HostName 192.0.2.7\n  Port 2222\n  User ops\n  ProxyJump gate,admin@bastion:2200\n\
         \x20 StrictHostKeyChecking accept-new\n  UserKnownHostsFile ~/kh\n",
    );
    let hosts = write(
        dir.path(),
        "hosts.yaml",
        &format!(
            "ssh_config: {}\nhosts:\n  node1: {{ssh: inner, agent: /a}}\n  node2: {{agent: /a}}\n",
            config.display()
        ),
    );
    let flow = write(
        dir.path(),
        "one.yaml",
        "events: {go: {}}\nsteps:\n  a: {run: 'true', host: node1}\nassocs: [{event: go, targets: [a]}]\n",
    );
    let args = [
        "check",
        flow.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
        "--resolve-only",
        "--json",
    ];
    let out = coord(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "only the hosts the flow uses: {json:#}");
    let node1 = &hosts[0];
    assert_eq!(node1["ssh_alias"], "inner");
    assert_eq!(
        (node1["hostname"].as_str(), node1["port"].as_u64()),
        (Some("192.0.2.7"), Some(2222))
    );
    assert_eq!(
        node1["proxy_jump"],
        serde_json::json!(["gate", "admin@bastion:2200"])
    );
    assert_eq!(node1["strict_host_key_checking"], "accept-new");
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = write(dir.path(), "hosts.yaml", "hosts:\n  node1: {agent: /a}\n");
    let hosts = hosts.to_str().unwrap();
    let broken = write(dir.path(), "broken.yaml", "events: [not, a, mapping\n");
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        "events: {go: {}}\nsteps:\n  s1: {run: 'true', host: node9}\nassocs: [{event: go, targets: [s1]}]\n",
    );
    let bad_hosts = write(
        dir.path(),
        "bad-hosts.yaml",
        "hosts:\n  node1: {agent: /a, colour: red}\n",
    );
    let cases: [(&[&str], &str); 4] = [
        (&["check", broken.to_str().unwrap()], "broken.yaml"),
        (
            &["check", unknown.to_str().unwrap(), "--hosts", hosts],
            "node9",
        ),
        (&["check", unknown.to_str().unwrap()], "node9"),
        (
            &[
                "check",
                unknown.to_str().unwrap(),
                "--hosts",
                bad_hosts.to_str().unwrap(),
            ],
            "colour",
        ),
    ];
    for (args, named) in cases {
        let out = coord(dir.path(), args);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains(named), "{args:?}: {said}");
    }
}

#[test]
fn under_accept_new_an_unknown_host_is_learned_then_known() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let known = dir.path().join("known_hosts");
    let config = std::fs::read_to_string(&bed["EVENTOR_SSH_CONFIG"]).unwrap();
    let config = config
        .replace(&bed["EVENTOR_KNOWN_HOSTS"], known.to_str().unwrap())
        .replace(
            "StrictHostKeyChecking yes",
            "StrictHostKeyChecking accept-new",
        );
    let config = write(dir.path(), "ssh_config", &config);
    let cluster = Cluster {
        ssh_config: config.display().to_string(),
        ..Cluster::good(&bed)
    };
    let hosts = cluster.write(dir.path());
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    let key = &host(&json, "node1")["host_key"];
    assert_eq!(key["status"], "learned", "{key:#}");
    assert_eq!(key["file"], known.to_str().unwrap());
    let (_, json) = check_json(dir.path(), &hosts, &[]);
    let key = &host(&json, "node1")["host_key"];
    assert_eq!(key["status"], "known", "{key:#}");
    assert_eq!(key["file"], known.to_str().unwrap());
}

/// `url` with its password replaced by `password`.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, host) = rest.split_once('@').unwrap();
    let user = userinfo.split(':').next().unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

/// A role, a password or a database the store refuses makes `check` not ready (exit 1), with
/// the server's own reason, for the prime and for each host (logging in through the host,
/// as its agent would); the good login is ready.
#[test]
fn a_login_the_store_refuses_is_named_with_the_servers_reason() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let Some(pw) = bed
        .get("EVENTOR_PG_URL_PW_BRIDGE")
        .filter(|u| !u.is_empty())
    else {
        panic!("the test bed has no password role: run scripts/testbed.sh pg-role");
    };
    let bridge = &bed["EVENTOR_PG_URL_BRIDGE"];
    let bad_role = bridge.replacen("postgres://postgres@", "postgres://nosuchrole@", 1);
    let cases = [
        (bad_role, "role \"nosuchrole\" does not exist"),
        (
            with_password(pw, "not-the-password"),
            "password authentication failed",
        ),
        (
            format!("{}_nosuchdb", bridge),
            "database \"eventor_nosuchdb\" does not exist",
        ),
    ];
    for (store, reason) in cases {
        assert_ne!(&store, bridge, "the case changed the URL");
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster {
            store: format!("'{store}'"),
            ..Cluster::good(&bed)
        };
        let hosts = cluster.write(dir.path());
        let (out, json) = check_json(dir.path(), &hosts, &[]);
        assert_eq!(out.status.code(), Some(1), "{reason}: {json:#}");
        let prime = json["store"]["error"].as_str().unwrap_or_default();
        assert!(prime.contains(reason), "the prime, {reason}: {json:#}");
        assert!(!prime.contains("not-the-password"), "{prime}");
        for name in ["node1", "node2"] {
            let store = &host(&json, name)["store"];
            let error = store["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("the store refused its agent") && error.contains(reason),
                "{name}, {reason}: {store:#}"
            );
        }
    }
}

/// A `store_via: ssh` host is checked through its tunnel, as its agent would reach the
/// store: ready where the store is only reachable from the prime, while a host told to reach
/// it directly is not.
#[test]
fn a_store_via_ssh_host_is_checked_through_its_tunnel() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_binary().display().to_string();
    let yaml = format!(
        "store: '{}'\nssh_config: {}\nhosts:\n  node1: {{agent: {agent}, store_via: ssh}}\n  \
         node2: {{agent: {agent}}}\n",
        bed["EVENTOR_PG_URL_PW"], bed["EVENTOR_SSH_CONFIG"]
    );
    let hosts = write(dir.path(), "hosts.yaml", &yaml);
    let (out, json) = check_json(dir.path(), &hosts, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "node2 cannot reach it: {json:#}"
    );
    assert_eq!(host(&json, "node1")["store"]["ok"], true, "{json:#}");
    assert_eq!(host(&json, "node1")["ready"], true, "{json:#}");
    assert_eq!(host(&json, "node2")["store"]["ok"], false, "{json:#}");
}
