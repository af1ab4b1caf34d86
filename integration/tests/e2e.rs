//! End-to-end tests: each drives eventor through real processes and a real store.
//!
//! The CLI tests run the `eventor-coord` binary that `cargo test --workspace` builds next to
//! this test binary; the API tests run flows in-process against an SQLite file.

// The test bed's locks (`TESTBED_LINK`, `POSTGRES`) are held for a whole test on purpose,
// across its awaits: they keep other tests off a host or server while this one uses it.
#![allow(clippy::await_holding_lock)]

mod agent;
mod api;
mod away;
mod careless;
mod check;
mod cli;
mod cluster;
mod cluster_deploy;
mod cluster_run;
mod cluster_trust;
mod divergences;
mod examples;
mod faithful;
mod interrupts;
mod many_hosts;
mod once;
mod one_store;
mod own_run;
mod params;
mod postgres;
mod postgres_tls;
mod quarantine;
mod recovery;
mod report;
mod retries;
mod retry_on;
mod run_lease;
mod shared_pools;
mod ssh;
mod ssh_conformance;
mod steering;
mod tunnel;
mod web;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Tests that cut a test host's link off take this for writing; every test that uses the
/// test hosts takes it for reading, so no test sees a host another test has cut off.
pub static TESTBED_LINK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The test that restarts the shared Postgres takes this for writing; every test that uses
/// the shared Postgres takes it for reading, so no test sees the server go away under it.
/// A test that needs both locks takes `TESTBED_LINK` first, then this (one order, no cycle).
pub static POSTGRES: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Shared use of the test bed's Postgres (see [`POSTGRES`]); a failed test does not poison it.
pub fn postgres_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    POSTGRES
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sole use of the test bed's Postgres, for a test that restarts it (see [`POSTGRES`]).
pub fn postgres_exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    POSTGRES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The testbed's env file as a map, or `None` (after saying so) when it is not up.
pub fn testbed() -> Option<HashMap<String, String>> {
    let dir = std::env::var("EVENTOR_TESTBED_DIR").unwrap_or("/tmp/eventor-testbed".into());
    let env = std::fs::read_to_string(Path::new(&dir).join("env")).unwrap_or_default();
    let vars: HashMap<String, String> = env
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    if vars
        .get("EVENTOR_SSH_CONFIG")
        .is_some_and(|v| !v.is_empty())
    {
        return Some(vars);
    }
    if std::env::var("EVENTOR_REQUIRE_TESTBED").as_deref() == Ok("1") {
        panic!("testbed not up: run scripts/testbed.sh up --ssh");
    }
    eprintln!("skipped: ssh testbed not up (scripts/testbed.sh up --ssh)");
    None
}

/// Waits (at most 15 s) until the test bed's Postgres takes a TCP connection from inside
/// `netns` at the bridge: a link another test just brought back up may still fail its first
/// packets (its neighbour entry for the bridge is stale), which a prime started there would
/// take for a store that cannot be reached.
pub fn bridge_reachable_from(netns: &str) {
    let Some(bed) = testbed() else { return };
    let (Some(bridge), Some(port)) = (bed.get("EVENTOR_BRIDGE_ADDR"), bed.get("EVENTOR_PG_PORT"))
    else {
        return;
    };
    let probe = format!("exec 3<>/dev/tcp/{bridge}/{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let reached = Command::new("ip")
            .args(["netns", "exec", netns, "timeout", "1", "bash", "-c", &probe])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if reached.is_ok_and(|s| s.success()) || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A test host's link, cut off (`ip link set VETH down`) until this is dropped, which
/// brings it back up even when the test fails.
pub struct LinkCut(String);

impl LinkCut {
    pub fn new(veth: &str) -> LinkCut {
        let down = Command::new("ip")
            .args(["link", "set", veth, "down"])
            .status()
            .expect("run ip");
        assert!(down.success(), "ip link set {veth} down");
        LinkCut(veth.to_string())
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "set", &self.0, "up"])
            .status();
        // The next test may connect at once: wait (10 s at most) until the host's sshd
        // answers again over the link.
        let Some(addr) = veth_address(&self.0) else {
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let sshd = std::net::SocketAddr::new(addr, 22);
        let step = std::time::Duration::from_millis(200);
        while std::net::TcpStream::connect_timeout(&sshd, step).is_err()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(step);
        }
    }
}

/// Logins the sshd of the bed's host `node` has accepted so far (its log, which the bed's
/// sshd writes with `-E`), from the bed's variables `bed`.
pub fn sshd_logins(bed: &HashMap<String, String>, node: &str) -> usize {
    let state = Path::new(&bed["EVENTOR_SSH_CONFIG"])
        .parent()
        .unwrap()
        .to_path_buf();
    let log = std::fs::read_to_string(state.join(format!("nodes/{node}/sshd.log")));
    let log = log.unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

/// The address of the test host whose link is `veth` (`EVENTOR_NODEn_VETH` and
/// `EVENTOR_NODEn_ADDR` of the bed's environment).
fn veth_address(veth: &str) -> Option<std::net::IpAddr> {
    let (name, _) = std::env::vars().find(|(k, v)| k.ends_with("_VETH") && v == veth)?;
    let addr = std::env::var(format!("{}_ADDR", name.strip_suffix("_VETH")?)).ok()?;
    addr.parse().ok()
}

/// The `eventor-coord` binary of this build (target/<profile>/eventor-coord).
pub fn coord_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("eventor-coord");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so it is built",
        binary.display()
    );
    binary
}

/// The `eventor-agent` binary of this build (target/<profile>/eventor-agent), built by
/// `cargo test --workspace` for its own smoke test.
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("eventor-agent");
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so it is built",
        binary.display()
    );
    binary
}

/// The directory of the portable agent the test command builds (`scripts/build-agent.sh DIR
/// dev`, named by `EVENTOR_PORTABLE_AGENT_DIR`); `None` (a skip, or a failure under the test
/// command) without it.
pub fn portable_agent_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EVENTOR_PORTABLE_AGENT_DIR").map(PathBuf::from);
    match dir.filter(|d| d.join("eventor-agent").exists()) {
        Some(dir) => Some(dir),
        None => {
            skip_unless_required("no portable agent (EVENTOR_PORTABLE_AGENT_DIR)");
            None
        }
    }
}

/// Says a test was skipped for `why`; under the test command (`EVENTOR_REQUIRE_TESTBED=1`)
/// a missing piece of the test bed is a failure instead.
pub fn skip_unless_required(why: &str) {
    if std::env::var("EVENTOR_REQUIRE_TESTBED").as_deref() == Ok("1") {
        panic!("EVENTOR_REQUIRE_TESTBED=1 but {why}");
    }
    eprintln!("skipped: {why}");
}

/// `eventor-coord ARGS` to run in `dir`, its output piped (read it or drop it).
pub fn coord_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(coord_binary());
    command
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    command
}

/// [`coord_command`], started.
pub fn spawn_coord(dir: &Path, args: &[&str]) -> std::process::Child {
    coord_command(dir, args)
        .spawn()
        .expect("start eventor-coord")
}

/// `eventor-coord ARGS` started as a prime on another machine: inside the test bed's
/// network namespace `netns`, its stderr (with `RUST_LOG=info`) in `dir/prime.err`.
pub fn spawn_coord_in(netns: &str, dir: &Path, args: &[&str]) -> std::process::Child {
    bridge_reachable_from(netns);
    let stderr = std::fs::File::create(dir.join("prime.err")).expect("prime.err");
    std::process::Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(coord_binary())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start eventor-coord in a network namespace")
}

/// Waits for a coordinator started by [`spawn_coord`] (at most `within`: longer is a hang)
/// and answers its exit code and its stdout and stderr.
pub fn finish_coord(
    mut child: std::process::Child,
    within: std::time::Duration,
) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "a coordinator hung");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.code(), format!("{out}\n{err}"))
}

/// Waits (at most 30 s) until `path` exists, e.g. a file a step writes when it starts.
pub fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `eventor-coord ARGS` in `dir`.
pub fn coord(dir: &Path, args: &[&str]) -> Output {
    Command::new(coord_binary())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .output()
        .expect("run eventor-coord")
}

/// Writes `text` as `name` in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The repository's `examples/flows` directory.
pub fn example_flows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flows")
}

/// The parent of a process (tests that find a task's keeper or agent by its pid).
pub(crate) fn parent_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("PPid:")).unwrap();
    line["PPid:".len()..].trim().parse().unwrap()
}
