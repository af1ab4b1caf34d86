//! The SSH transport against the testbed's SSH hosts (`scripts/testbed.sh up --ssh`):
//! concurrent connects, exec I/O, host-key policies, ProxyJump, timeouts, agent login.
//! Without the testbed each test prints that it was skipped, unless
//! EVENTOR_REQUIRE_TESTBED=1 makes that a failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use eventor_ssh::{self as ssh, ClientSettings, ExitStatus, Session, SshConfig, SshError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::testbed;

/// A scratch home (so the real ~/.ssh plays no part) with its own ssh_config.
struct Bed {
    vars: HashMap<String, String>,
    dir: tempfile::TempDir,
}

impl Bed {
    fn new() -> Option<Bed> {
        Some(Bed {
            vars: testbed()?,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn var(&self, name: &str) -> String {
        self.vars[name].clone()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A Host block in the testbed's style, with some options replaced or added.
    /// (Each option appears once: ssh2-config lets a repeat in one block win.)
    fn block(&self, alias: &str, addr: &str, options: &[(&str, &str)]) -> String {
        let mut lines = vec![
            ("HostName", addr.to_string()),
            ("User", "root".into()),
            ("IdentityFile", self.var("EVENTOR_SSH_KEY")),
            ("IdentitiesOnly", "yes".into()),
            ("UserKnownHostsFile", self.var("EVENTOR_KNOWN_HOSTS")),
            ("StrictHostKeyChecking", "yes".into()),
            ("ConnectTimeout", "5".into()),
        ];
        for (name, value) in options {
            match lines.iter_mut().find(|(n, _)| n == name) {
                Some(line) => line.1 = value.to_string(),
                None => lines.push((name, value.to_string())),
            }
        }
        let body: String = lines
            .iter()
            .map(|(n, v)| format!("    {n} {v}\n"))
            .collect();
        format!("Host {alias}\n{body}\n")
    }

    fn config(&self, text: &str) -> SshConfig {
        let file = self.path("ssh_config");
        std::fs::write(&file, text).unwrap();
        SshConfig::load(ClientSettings {
            config_file: Some(file),
            home: self.dir.path().to_path_buf(),
            local_user: "root".into(),
            agent_socket: None,
            default_connect_timeout: Some(Duration::from_secs(10)),
            max_startups: eventor_ssh::MAX_STARTUPS,
        })
        .unwrap()
    }

    /// The testbed's own ssh_config, unchanged.
    fn testbed_config(&self) -> SshConfig {
        SshConfig::load(ClientSettings {
            config_file: Some(self.var("EVENTOR_SSH_CONFIG").into()),
            home: self.dir.path().to_path_buf(),
            agent_socket: None,
            ..ClientSettings::from_env()
        })
        .unwrap()
    }

    /// A known_hosts file in the scratch dir holding `lines`.
    fn known_hosts(&self, lines: &[String]) -> PathBuf {
        let file = self.path("known_hosts");
        std::fs::write(
            &file,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        file
    }

    /// node1's block with its known_hosts file and policy replaced.
    fn node1_with(&self, known_hosts: &Path, strict: &str) -> SshConfig {
        let kh = known_hosts.display().to_string();
        let options = [
            ("UserKnownHostsFile", kh.as_str()),
            ("StrictHostKeyChecking", strict),
        ];
        self.config(&self.block("node1", &self.var("EVENTOR_NODE1_ADDR"), &options))
    }

    /// node1's real host key line, as the testbed recorded it.
    fn node1_key_line(&self) -> String {
        let addr = self.var("EVENTOR_NODE1_ADDR");
        let kh = std::fs::read_to_string(self.var("EVENTOR_KNOWN_HOSTS")).unwrap();
        kh.lines()
            .find(|l| l.starts_with(&format!("{addr} ")))
            .unwrap()
            .to_string()
    }
}

/// `type base64` of a fresh key made by ssh-keygen.
fn keygen(dir: &Path, kind: &str) -> String {
    let file = dir.join(format!("gen_{kind}"));
    let _ = std::fs::remove_file(&file);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let public = std::fs::read_to_string(file.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` with `input` on stdin; returns stdout and the exit status.
async fn run(session: &Session, command: &str, input: &[u8]) -> (Vec<u8>, ExitStatus) {
    let mut ch = session.exec(command).await.unwrap();
    let writer = async {
        ch.stdin.write_all(input).await.unwrap();
        ch.stdin.shutdown().await.unwrap();
    };
    let mut out = Vec::new();
    let reader = ch.stdout.read_to_end(&mut out);
    let (_, read) = tokio::join!(writer, reader);
    read.unwrap();
    (out, ch.exit.wait().await.unwrap())
}

async fn stdout_of(session: &Session, command: &str) -> String {
    let (out, status) = run(session, command, b"").await;
    assert!(status.success(), "{command}: {status:?}");
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn both_hosts_at_once_report_their_own_address() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let config = bed.testbed_config();
    let sessions = ssh::connect_all(&config, &["node1", "node2"]).await;
    for (session, addr) in sessions
        .iter()
        .zip(["EVENTOR_NODE1_ADDR", "EVENTOR_NODE2_ADDR"])
    {
        let session = session.as_ref().unwrap();
        assert!(
            session.host().warnings.is_empty(),
            "{:?}",
            session.host().warnings
        );
        let out = stdout_of(session, "hostname -I").await;
        assert!(out.split_whitespace().any(|a| a == bed.var(addr)), "{out}");
    }
}

#[tokio::test]
async fn cat_echoes_stdin_until_eof() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let session = ssh::connect(&bed.testbed_config(), "node1").await.unwrap();
    // Several windows' worth, so flow control in both directions is exercised.
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (out, status) = run(&session, "cat", &input).await;
    assert_eq!(status, ExitStatus::Code(0));
    assert!(
        out == input,
        "echoed {} of {} bytes",
        out.len(),
        input.len()
    );
    // Dropping stdin without a shutdown sends EOF too.
    let mut ch = session.exec("cat").await.unwrap();
    ch.stdin.write_all(b"dropped\n").await.unwrap();
    drop(ch.stdin);
    let mut out = String::new();
    ch.stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "dropped\n");
    assert!(ch.exit.wait().await.unwrap().success());
    session.close().await;
}

#[tokio::test]
async fn exit_status_and_stderr_lines() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let session = ssh::connect(&bed.testbed_config(), "node2").await.unwrap();
    let (_, status) = run(&session, "exit 3", b"").await;
    assert_eq!(status.code(), Some(3));
    let mut ch = session
        .exec("echo out; echo first >&2; printf 'second' >&2; exit 1")
        .await
        .unwrap();
    let mut out = String::new();
    ch.stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "out\n");
    assert_eq!(ch.stderr.next_line().await.as_deref(), Some("first"));
    assert_eq!(ch.stderr.next_line().await.as_deref(), Some("second"));
    assert_eq!(ch.stderr.next_line().await, None);
    assert_eq!(ch.exit.wait().await.unwrap(), ExitStatus::Code(1));
    let (_, status) = run(&session, "kill -TERM $$", b"").await;
    assert!(
        matches!(&status, ExitStatus::Signal { name, .. } if name == "TERM"),
        "{status:?}"
    );
}

#[tokio::test]
async fn unknown_host_is_refused_under_yes() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let kh = bed.known_hosts(&[]);
    let err = ssh::connect(&bed.node1_with(&kh, "yes"), "node1")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{msg}");
    assert!(
        msg.starts_with("node1: host key unknown: ssh-ed25519 SHA256:"),
        "{msg}"
    );
    assert!(msg.contains(&kh.display().to_string()), "{msg}");
}

#[tokio::test]
async fn accept_new_learns_the_key_once() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let kh = bed.known_hosts(&["# learned keys go below".into()]);
    let session = ssh::connect(&bed.node1_with(&kh, "accept-new"), "node1")
        .await
        .unwrap();
    session.close().await;
    let text = std::fs::read_to_string(&kh).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[1], bed.node1_key_line());
    // Now known: accepted under `yes`, and accept-new adds nothing more.
    ssh::connect(&bed.node1_with(&kh, "yes"), "node1")
        .await
        .unwrap();
    ssh::connect(&bed.node1_with(&kh, "accept-new"), "node1")
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), text);
}

#[tokio::test]
async fn changed_key_is_refused_with_file_and_line() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let addr = bed.var("EVENTOR_NODE1_ADDR");
    let other = keygen(bed.dir.path(), "ed25519");
    let kh = bed.known_hosts(&[
        "# a copy of known_hosts with node1's key replaced".into(),
        format!(
            "{} {}",
            bed.var("EVENTOR_NODE2_ADDR"),
            keygen(bed.dir.path(), "ed25519")
        ),
        format!("{addr} {other}"),
    ]);
    for strict in ["yes", "accept-new", "no"] {
        let err = ssh::connect(&bed.node1_with(&kh, strict), "node1")
            .await
            .unwrap_err();
        let msg = err.to_string();
        let at = format!(
            "node1: host key changed: known_hosts {}:3 has ssh-ed25519 SHA256:",
            kh.display()
        );
        assert!(msg.starts_with(&at), "{strict}: {msg}");
        assert!(
            msg.contains("server presented ssh-ed25519 SHA256:"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn key_of_another_algorithm_for_a_known_host_is_refused() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let addr = bed.var("EVENTOR_NODE1_ADDR");
    for kind in ["ecdsa", "rsa"] {
        let kh = bed.known_hosts(&[format!("{addr} {}", keygen(bed.dir.path(), kind))]);
        for strict in ["yes", "accept-new", "no"] {
            let err = ssh::connect(&bed.node1_with(&kh, strict), "node1")
                .await
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, SshError::HostKeyChanged { line: 1, .. }),
                "{msg}"
            );
            let recorded = if kind == "rsa" {
                "has ssh-rsa"
            } else {
                "has ecdsa-sha2-nistp256"
            };
            assert!(msg.contains(recorded), "{msg}");
        }
        assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 1);
    }
}

#[tokio::test]
async fn proxy_jump_through_node1_reaches_node2() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let (a1, a2) = (bed.var("EVENTOR_NODE1_ADDR"), bed.var("EVENTOR_NODE2_ADDR"));
    let text = bed.block("node2-via-node1", &a2, &[("ProxyJump", "node1")])
        + &bed.block("node1", &a1, &[]);
    let session = ssh::connect(&bed.config(&text), "node2-via-node1")
        .await
        .unwrap();
    let out = stdout_of(&session, "hostname -I; echo $SSH_CONNECTION").await;
    let mut lines = out.lines();
    assert!(
        lines.next().unwrap().split_whitespace().any(|a| a == a2),
        "{out}"
    );
    // sshd on node2 saw the connection come from node1, not from us.
    assert!(
        lines.next().unwrap().starts_with(&format!("{a1} ")),
        "{out}"
    );
    let (echo, _) = run(&session, "cat", b"through the tunnel").await;
    assert_eq!(echo, b"through the tunnel");
}

#[tokio::test]
async fn proxy_jump_failure_names_the_jump_host() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let a2 = bed.var("EVENTOR_NODE2_ADDR");
    let kh = bed.known_hosts(&[]);
    let kh = kh.display().to_string();
    let jump = [("UserKnownHostsFile", kh.as_str())];
    let text = bed.block("t", &a2, &[("ProxyJump", "j")])
        + &bed.block("j", &bed.var("EVENTOR_NODE1_ADDR"), &jump);
    let err = ssh::connect(&bed.config(&text), "t").await.unwrap_err();
    assert_eq!(err.to_string(), "t: via jump host j");
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.starts_with("j: host key unknown"), "{source}");
}

#[tokio::test]
async fn unaccepted_identity_lists_what_was_tried() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    keygen(bed.dir.path(), "ed25519");
    let key = bed.path("gen_ed25519");
    // Two IdentityFile lines, as OpenSSH takes one file per line.
    let files = format!(
        "{}\n    IdentityFile {}",
        key.display(),
        bed.path("absent").display()
    );
    let text = bed.block(
        "node1",
        &bed.var("EVENTOR_NODE1_ADDR"),
        &[("IdentityFile", &files)],
    );
    let err = ssh::connect(&bed.config(&text), "node1").await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "node1: no identity accepted for root (tried {}, ",
            key.display()
        )),
        "{msg}"
    );
    assert!(msg.contains("absent (missing)"), "{msg}");
}

#[tokio::test]
async fn agent_key_logs_in() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let sock = bed.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg("-q")
        .arg(bed.var("EVENTOR_SSH_KEY"))
        .env("SSH_AUTH_SOCK", &sock)
        .status()
        .unwrap();
    assert!(added.success());
    // No IdentityFile at all (and an empty scratch ~/.ssh): only the agent can log in.
    let text = format!(
        "Host node1\n    HostName {}\n    User root\n    IdentityAgent {}\n    UserKnownHostsFile {}\n",
        bed.var("EVENTOR_NODE1_ADDR"),
        sock.display(),
        bed.var("EVENTOR_KNOWN_HOSTS")
    );
    let result = ssh::connect(&bed.config(&text), "node1").await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let session = result.unwrap();
    assert_eq!(stdout_of(&session, "echo agent").await, "agent\n");
}

#[tokio::test]
async fn cut_off_host_times_out_per_connect_timeout() {
    let _link = crate::TESTBED_LINK.write();
    let Some(bed) = Bed::new() else { return };
    let veth = bed.var("EVENTOR_NODE1_VETH");
    if veth.is_empty() {
        crate::skip_unless_required("testbed in loopback mode has no link to cut");
        return;
    }
    let options = [
        ("ConnectTimeout", "2"),
        ("ServerAliveInterval", "1"),
        ("ServerAliveCountMax", "2"),
    ];
    let config = bed.config(&bed.block("node1", &bed.var("EVENTOR_NODE1_ADDR"), &options));
    let established = ssh::connect(&config, "node1").await.unwrap();
    let _cut = crate::LinkCut::new(&veth);
    let started = Instant::now();
    let err = ssh::connect(&config, "node1").await.unwrap_err();
    let took = started.elapsed();
    let want = format!(
        "node1: connect to {}:22 timed out after 2s",
        bed.var("EVENTOR_NODE1_ADDR")
    );
    assert_eq!(err.to_string(), want);
    // Not before ConnectTimeout; the upper bound only tells a timeout from a hang.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    // The open session notices through unanswered keepalives (1 s apart, at most 2).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !established.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        established.is_closed(),
        "keepalives did not end the cut-off session"
    );
    eprintln!(
        "keepalive ended the cut-off session {:?} after the cut",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_time_concurrent_vs_sequential() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let config = bed.testbed_config();
    let hosts = ["node1", "node2"];
    let (mut together, mut one_by_one) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        for r in ssh::connect_all(&config, &hosts).await {
            r.unwrap();
        }
        together.push(t.elapsed());
        let t = Instant::now();
        for host in hosts {
            ssh::connect(&config, host).await.unwrap();
        }
        one_by_one.push(t.elapsed());
    }
    together.sort();
    one_by_one.sort();
    let (c, s) = (together[2], one_by_one[2]);
    eprintln!("connect 2 hosts (median of 5): concurrent {c:?}, sequential {s:?}; all concurrent {together:?}, all sequential {one_by_one:?}");
    // Concurrent connects must not queue behind each other; the margin absorbs a busy
    // machine (two cores, other tests) without letting a serialised connect_all through.
    let limit = s * 3 / 2 + Duration::from_millis(200);
    assert!(
        c <= limit,
        "concurrent {c:?} slower than 1.5 x sequential {s:?} + 200 ms"
    );
}

/// Lines of node1's sshd log that record a login.
fn node1_logins(bed: &Bed) -> usize {
    crate::sshd_logins(&bed.vars, "node1")
}

#[tokio::test]
async fn hosts_behind_one_jump_host_share_one_login_to_it() {
    // Alone on the bed: node1's log must count only this test's logins.
    let _link = crate::TESTBED_LINK.write();
    let Some(bed) = Bed::new() else { return };
    let (a1, a2) = (bed.var("EVENTOR_NODE1_ADDR"), bed.var("EVENTOR_NODE2_ADDR"));
    let mut text = bed.block("node1", &a1, &[]);
    let aliases = ["b1", "b2", "b3", "b4"];
    for alias in aliases {
        text += &bed.block(alias, &a2, &[("ProxyJump", "node1")]);
    }
    let config = bed.config(&text);
    let before = node1_logins(&bed);
    let sessions = ssh::connect_all(&config, &aliases).await;
    let sessions: Vec<_> = sessions.into_iter().map(Result::unwrap).collect();
    for session in &sessions {
        let out = stdout_of(session, "hostname -I").await;
        assert!(out.split_whitespace().any(|a| a == a2), "{out}");
    }
    // sshd writes its log line as it accepts; give it a moment to reach the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node1_logins(&bed) == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        node1_logins(&bed) - before,
        1,
        "four hosts through node1, one login to node1"
    );
    for session in sessions {
        session.close().await;
    }
}
