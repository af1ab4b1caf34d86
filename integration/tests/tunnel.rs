//! Nobody else gets in through the store tunnel (`store_via: ssh`): while a run's step is
//! running on node1, another user of that host finds no TCP port of ours to connect to, and
//! cannot connect to the tunnel's socket.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::{agent_binary, finish_coord, spawn_coord, testbed, text, wait_for, write};

/// The unprivileged user the test bed's hosts have for these tests (made once).
const INTRUDER: &str = "evintruder";

fn ensure_intruder() {
    let made = Command::new("useradd")
        .args(["-M", "-s", "/bin/sh", INTRUDER])
        .output()
        .expect("run useradd");
    // 9: the user exists already.
    assert!(
        made.status.success() || made.status.code() == Some(9),
        "useradd: {}",
        text(&made.stderr)
    );
}

/// `ss ARGS` inside the host's namespace: one line per socket.
fn sockets(netns: &str, args: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ss", args])
        .output()
        .expect("run ss");
    assert!(out.status.success(), "ss: {}", text(&out.stderr));
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// What `INTRUDER` gets connecting to the Unix socket `path` from inside the host.
fn intruder_connects(netns: &str, path: &str) -> String {
    let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n\
                  try:\n s.connect(sys.argv[1]); print('connected')\n\
                  except OSError as e:\n print('refused', e.errno)";
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "su", INTRUDER, "-s", "/bin/sh", "-c",
        ])
        .arg(format!("python3 -c \"{script}\" '{path}'"))
        .output()
        .expect("run su");
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// Of `count` connections the host's own user opens at once to `path` (sending nothing),
/// how many the other end closes within a second (the rest wait for a startup message).
fn closed_at_once(netns: &str, path: &str, count: usize) -> usize {
    let script = "import socket,sys\nn=int(sys.argv[2]);ss=[]\n\
                  for _ in range(n):\n s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(1); ss.append(s)\n\
                  closed=0\nfor s in ss:\n try:\n  closed+= s.recv(1)==b''\n except socket.timeout:\n  pass\n\
                  print(closed)";
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", script, path])
        .arg(count.to_string())
        .output()
        .expect("run python3");
    let said = text(&out.stdout);
    said.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{said}{}", text(&out.stderr)))
}

fn mode_of(path: &std::path::Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.permissions().mode() & 0o777)
}

#[test]
fn another_user_of_a_host_reaches_no_port_and_not_the_socket_of_the_store_tunnel() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let url = bed["EVENTOR_PG_URL_PW"].clone();
    ensure_intruder();
    let netns = bed["EVENTOR_NODE1_NETNS"].clone();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("{url}?schema={}", crate::cluster_run::schema("tunnel"));
    let yaml = format!(
        "store: '{store}'\nssh_config: {}\nhosts:\n  node1: {{agent: {}, store_via: ssh}}\n",
        bed["EVENTOR_SSH_CONFIG"],
        agent_binary().display()
    );
    let hosts = write(dir.path(), "hosts.yaml", &yaml);
    let d = dir.path().display();
    // The step waits for the test, so the tunnel is open while the test looks.
    let flow = write(
        dir.path(),
        "tunnel.yaml",
        &format!(
            "name: tunnel\nevents: {{go: {{}}}}\n\
             steps:\n  a: {{run: 'touch {d}/started; while [ ! -e {d}/release ]; do sleep 0.05; done', host: node1}}\n\
             assocs: [{{event: go, targets: [a]}}]\n"
        ),
    );
    let prime = spawn_coord(
        dir.path(),
        &[
            "run",
            "--hosts",
            hosts.to_str().unwrap(),
            flow.to_str().unwrap(),
            "--trigger",
            "go",
            "--run-id",
            "T",
        ],
    );
    wait_for(&dir.path().join("started"));
    let tcp = sockets(&netns, "-ltnH");
    let ours: Vec<_> = tcp.iter().filter(|l| !l.contains(":22 ")).collect();
    let unix = sockets(&netns, "-lxH");
    let tunnels: Vec<String> = unix
        .iter()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|path| path.contains("/.cache/eventor/tunnel/"))
        .map(str::to_string)
        .collect();
    let answers: Vec<String> = tunnels
        .iter()
        .map(|path| intruder_connects(&netns, path))
        .collect();
    let refused = tunnels.first().map(|path| closed_at_once(&netns, path, 8));
    let modes: Vec<_> = tunnels
        .iter()
        .map(|path| mode_of(std::path::Path::new(path).parent().unwrap()))
        .collect();
    std::fs::write(dir.path().join("release"), "").unwrap();
    let (code, output) = finish_coord(prime, std::time::Duration::from_secs(60));
    assert_eq!(code, Some(0), "{output}");
    assert!(
        ours.is_empty(),
        "TCP listeners on node1 besides sshd: {ours:?}"
    );
    assert_eq!(tunnels.len(), 1, "one tunnel socket on node1: {unix:?}");
    assert_eq!(modes, [Some(0o700)], "the tunnel's directory is private");
    // The agent's pool (4) holds some of the room; at least 4 of 8 more are refused, and
    // what the agent does not hold gets through.
    let refused = refused.unwrap();
    assert!((4..8).contains(&refused), "{refused} of 8 closed at once");
    assert!(output.contains("are open already"), "{output}");
    assert!(
        answers[0].contains("refused 13"),
        "{INTRUDER} connecting to {}: {}",
        tunnels[0],
        answers[0]
    );
}
