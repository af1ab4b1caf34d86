//! The prime installs its agent over SSH (through the test bed): a first run installs it on
//! both hosts at once, a second uploads nothing (the files keep their inode and mtime), a
//! corrupted file is replaced, `deploy: never` without an agent fails naming the path, and
//! a host whose `uname` reports another architecture is refused; and `store_via: ssh` lets
//! hosts that cannot see the store record their ends through the prime.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::cluster_run::schema;
use crate::{agent_binary, coord_binary, testbed, text, write};

/// A hosts file for node1 and node2; `fields[i]` is the YAML of host i's mapping.
fn hosts_file(dir: &Path, bed: &HashMap<String, String>, fields: [&str; 2]) -> PathBuf {
    let store = format!(
        "{}?schema={}",
        bed["EVENTOR_PG_URL_BRIDGE"],
        schema("deploy")
    );
    let yaml = format!(
        "store: {store}\nssh_config: {}\nhosts:\n  node1: {{{}}}\n  node2: {{{}}}\n",
        bed["EVENTOR_SSH_CONFIG"], fields[0], fields[1]
    );
    write(dir, "hosts.yaml", &yaml)
}

/// A host whose `PROGRAM` (on the PATH its `env:` sets) prints `says`: the agent's path in
/// `dir/SUB` and node1's hosts-file fields.
fn shadowed(dir: &Path, program: &str, says: &str, sub: &str) -> (PathBuf, String) {
    let fake = dir.join("fakebin");
    std::fs::create_dir_all(&fake).unwrap();
    let script = write(&fake, program, &format!("#!/bin/sh\necho '{says}'\n"));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.join(sub).join("eventor-agent");
    let node1 = format!(
        "agent: {}, env: {{PATH: '{}:/usr/local/bin:/usr/bin:/bin'}}",
        target.display(),
        fake.display()
    );
    (target, node1)
}

/// Runs a step on each host; returns the output and how long the run took.
fn run_two(dir: &Path, hosts: &Path) -> (Output, f64) {
    run_two_with(&coord_binary(), dir, hosts)
}

/// [`run_two`] by the prime at `coord` (which installs the agent next to it).
fn run_two_with(coord: &Path, dir: &Path, hosts: &Path) -> (Output, f64) {
    // `a` records the program its shell runs under: the supervisor of its command.
    let flow = write(
        dir,
        "two.yaml",
        &format!(
            "name: two\nevents: {{go: {{}}}}\n\
             steps:\n  a: {{run: 'readlink /proc/$PPID/exe > {}/supervised_by; echo a ran', host: node1}}\n\
             \x20 b: {{run: 'echo b ran', host: node2}}\n\
             assocs: [{{event: go, targets: [a, b]}}]\n",
            dir.display()
        ),
    );
    let started = Instant::now();
    let out = Command::new(coord)
        .args([
            "run",
            "--hosts",
            hosts.to_str().unwrap(),
            flow.to_str().unwrap(),
        ])
        .args(["--trigger", "go"])
        .current_dir(dir)
        .env(
            "RUST_LOG",
            "info,eventor::cluster::deploy=debug,eventor::cluster::connect=debug,eventor::cluster::link=debug",
        )
        .output()
        .expect("run eventor-coord");
    (out, started.elapsed().as_secs_f64())
}

fn identity(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

fn installs(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("agent installed"))
        .count()
}

#[test]
fn the_prime_installs_its_agent_once_and_replaces_a_corrupted_one() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let paths = ["node1", "node2"].map(|n| dir.path().join(n).join("bin/eventor-agent"));
    let fields = paths.clone().map(|p| format!("agent: {}", p.display()));
    let hosts = hosts_file(dir.path(), &bed, [&fields[0], &fields[1]]);
    let local = agent_binary();

    let (first, took) = run_two(dir.path(), &hosts);
    let stderr = text(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert_eq!(installs(&stderr), 2, "{stderr}");
    for path in &paths {
        assert!(
            same_bytes(path, &local),
            "{} is the prime's agent",
            path.display()
        );
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let mut left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let stamped = [
            "eventor-agent",
            "eventor-agent.supervise",
            "eventor-agent.supervise.verified",
            "eventor-agent.verified",
        ];
        assert_eq!(
            left, stamped,
            "the agent and its supervisor, with their stamps, no temporary file"
        );
        let companion = path.with_file_name("eventor-agent.supervise");
        let local_companion = local.with_file_name("eventor-supervise");
        assert!(
            same_bytes(&companion, &local_companion),
            "{}",
            companion.display()
        );
    }
    let supervised_by = std::fs::read_to_string(dir.path().join("supervised_by")).unwrap();
    assert_eq!(
        supervised_by.trim(),
        paths[0]
            .with_file_name("eventor-agent.supervise")
            .to_str()
            .unwrap(),
        "node1's command ran under the supervisor installed beside its agent"
    );
    let size = std::fs::metadata(&local).unwrap().len();
    eprintln!("MEASURE first run (installs {size} bytes on 2 hosts at once): {took:.2}s");
    for line in stderr.lines().filter(|l| l.contains("agent installed")) {
        eprintln!("MEASURE {line}");
    }

    let before = paths.clone().map(|p| identity(&p));
    let (second, took) = run_two(dir.path(), &hosts);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stderr}");
    assert_eq!(installs(&stderr), 0, "{stderr}");
    assert_eq!(
        paths.clone().map(|p| identity(&p)),
        before,
        "files untouched"
    );
    eprintln!("MEASURE second run (agents match): {took:.2}s");
    let probed = stderr.lines().filter(|l| l.contains("agent up to date"));
    assert_eq!(
        probed.count(),
        0,
        "a stamped agent starts without a probe: {stderr}"
    );

    // Corrupted in place as `cp -p` would: same inode, same size, mtime set back. Only the
    // stamp's ctime tells (the check exits 97); a stamp of mtime alone would start it.
    corrupt_in_place(&paths[0]);
    let (third, _) = run_two(dir.path(), &hosts);
    let stderr = text(&third.stderr);
    assert_eq!(third.status.code(), Some(0), "{stderr}");
    assert_eq!(installs(&stderr), 1, "only the corrupted one: {stderr}");
    let fell_back = stderr
        .lines()
        .filter(|l| l.contains("not started by its stamp"));
    let fell_back: Vec<&str> = fell_back.collect();
    assert_eq!(fell_back.len(), 1, "the corrupted one is probed: {stderr}");
    assert!(fell_back[0].contains("code=97"), "{stderr}");
    assert!(
        same_bytes(&paths[0], &local),
        "the corrupted agent was replaced"
    );
    assert_eq!(
        identity(&paths[1]),
        before[1],
        "the good one was left alone"
    );
}

#[test]
fn deploy_never_without_an_agent_fails_naming_the_host_and_path() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/eventor-agent");
    let node1 = format!("agent: {}, deploy: never", missing.display());
    let node2 = format!("agent: {}", agent_binary().display());
    let hosts = hosts_file(dir.path(), &bed, [&node1, &node2]);
    let (out, _) = run_two(dir.path(), &hosts);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("node1: no agent at {} (deploy: never)", missing.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!missing.exists(), "nothing was installed");
}

#[test]
fn a_host_of_another_architecture_is_refused() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (target, node1) = shadowed(dir.path(), "uname", "Linux aarch64", "arm");
    let node2 = format!("agent: {}", agent_binary().display());
    let hosts = hosts_file(dir.path(), &bed, [&node1, &node2]);
    let (out, _) = run_two(dir.path(), &hosts);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node1: runs Linux aarch64, this prime Linux x86_64"),
        "{stderr}"
    );
    assert!(stderr.contains("install eventor-agent"), "{stderr}");
    assert!(!target.exists(), "nothing was uploaded");
}

/// A host whose C library is older than the agent needs (its `getconf` says glibc 2.17,
/// shadowed on its PATH by the host's `env:`) is refused before anything is uploaded,
/// naming what it has and what is needed.
#[test]
fn a_host_with_an_older_glibc_is_refused_before_the_upload() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let (target, node1) = shadowed(dir.path(), "getconf", "glibc 2.17", "old");
    let node2 = format!("agent: {}", agent_binary().display());
    let hosts = hosts_file(dir.path(), &bed, [&node1, &node2]);
    let (out, _) = run_two(dir.path(), &hosts);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node1: has glibc 2.17, and this prime's agent needs glibc 2."),
        "{stderr}"
    );
    assert!(!target.exists(), "nothing was uploaded");
    // `check` says it before any run: the host's C library and what the agent needs.
    let flow = dir.path().join("two.yaml");
    let args = [
        "check",
        flow.to_str().unwrap(),
        "--hosts",
        hosts.to_str().unwrap(),
    ];
    let checked = crate::coord(dir.path(), &args);
    let said = text(&checked.stdout);
    assert_eq!(checked.status.code(), Some(1), "{said}");
    let refusal = "the host has glibc 2.17, and the prime's agent needs glibc 2.";
    assert!(said.contains(refusal), "{said}");
}

/// The portable agent (`scripts/build-agent.sh`: static, for musl) asks nothing of a host's
/// C library: it has no program interpreter (no loader, no libc to find), and a prime that
/// has it next to itself installs it on a host whose `getconf` says glibc 2.17, with its
/// supervisor, and the host's step runs under them.
#[test]
fn a_portable_agent_is_installed_and_runs_on_a_host_with_an_older_glibc() {
    let Some(bed) = testbed() else { return };
    let Some(portable) = crate::portable_agent_dir() else {
        return;
    };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let prime = dir.path().join("prime");
    std::fs::create_dir_all(&prime).unwrap();
    let coord = prime.join("eventor-coord");
    std::fs::copy(coord_binary(), &coord).unwrap();
    for bin in ["eventor-agent", "eventor-supervise"] {
        std::fs::copy(portable.join(bin), prime.join(bin)).unwrap();
    }
    let agent = prime.join("eventor-agent");
    assert!(!has_interpreter(&agent), "{} is static", agent.display());

    let (target, node1) = shadowed(dir.path(), "getconf", "glibc 2.17", "old");
    let node2 = format!(
        "agent: {}",
        dir.path().join("node2/eventor-agent").display()
    );
    let hosts = hosts_file(dir.path(), &bed, [&node1, &node2]);
    let (out, _) = run_two_with(&coord, dir.path(), &hosts);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(same_bytes(&target, &agent), "node1 got the portable agent");
    let supervised_by = std::fs::read_to_string(dir.path().join("supervised_by")).unwrap();
    assert_eq!(
        supervised_by.trim(),
        target
            .with_file_name("eventor-agent.supervise")
            .to_str()
            .unwrap(),
        "{stderr}"
    );
    let size = std::fs::metadata(&agent).unwrap().len();
    eprintln!("MEASURE portable agent (this build's profile): {size} bytes");
}

/// Whether the ELF file at `path` names a program interpreter (a `PT_INTERP` header: the
/// dynamic loader, and with it the C library it must find); a static binary has none.
fn has_interpreter(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let word = |at: usize, n: usize| {
        let mut v = 0u64;
        for (i, b) in bytes[at..at + n].iter().enumerate() {
            v |= (*b as u64) << (8 * i);
        }
        v as usize
    };
    let (phoff, phentsize, phnum) = (word(0x20, 8), word(0x36, 2), word(0x38, 2));
    (0..phnum).any(|i| word(phoff + i * phentsize, 4) == 3)
}

/// An agent's directory that became group-writable after its agent was installed and
/// stamped is refused on node1, naming the directory and its mode: neither the stamp's
/// check starts the agent (anyone in the group could have replaced it and its stamp) nor
/// does the probe take it (and the run cannot reach its cluster); node2's private
/// directory is not refused.
#[test]
fn a_group_writable_agent_directory_is_refused_naming_it() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let paths = ["node1", "node2"].map(|n| dir.path().join(n).join("bin/eventor-agent"));
    let fields = paths.clone().map(|p| format!("agent: {}", p.display()));
    let hosts = hosts_file(dir.path(), &bed, [&fields[0], &fields[1]]);
    let (first, _) = run_two(dir.path(), &hosts);
    let stderr = text(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    let planted = paths[0].parent().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(planted), 0o700, "made private by the install");
    std::fs::set_permissions(planted, std::fs::Permissions::from_mode(0o775)).unwrap();

    let (second, _) = run_two(dir.path(), &hosts);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "node1: refusing the agent at {}: the directory {} may be written by group or \
         others (mode 775)",
        paths[0].display(),
        planted.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let fell_back: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("not started by its stamp"))
        .collect();
    assert_eq!(fell_back.len(), 1, "node1's stamp check refused: {stderr}");
    assert!(fell_back[0].contains("host=node1"), "{stderr}");
    assert_eq!(installs(&stderr), 0, "{stderr}");
    assert!(
        !stderr.contains("node2: refusing"),
        "node2's stays private: {stderr}"
    );
}

/// A store the hosts cannot reach (`127.0.0.1` on the prime, seen from inside the
/// namespaces) through `store_via: ssh`: both hosts run their steps, their agents record
/// the ends through the prime's SSH connections, with the password role's credentials.
#[tokio::test]
async fn hosts_that_cannot_see_the_store_reach_it_over_ssh() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let Some(url) = bed.get("EVENTOR_PG_URL_PW").filter(|u| !u.is_empty()) else {
        panic!("the test bed has no password role: run scripts/testbed.sh pg-role");
    };
    assert!(url.contains("@127.0.0.1:"), "{url}");
    let dir = tempfile::tempdir().unwrap();
    let store = format!("{url}?schema={}", schema("via_ssh"));
    let agent = agent_binary();
    let yaml = format!(
        "store: '{store}'\nssh_config: {}\nhosts:\n  \
         node1: {{agent: {a}, store_via: ssh}}\n  node2: {{agent: {a}, store_via: ssh}}\n",
        bed["EVENTOR_SSH_CONFIG"],
        a = agent.display()
    );
    let hosts = write(dir.path(), "hosts.yaml", &yaml);
    let out_dir = dir.path().display();
    let flow = write(
        dir.path(),
        "via.yaml",
        &format!(
            "name: via\nevents: {{go: {{}}}}\n\
             steps:\n  a: {{run: 'hostname -I > {out_dir}/a.txt', host: node1}}\n  \
             b: {{run: 'hostname -I > {out_dir}/b.txt', host: node2}}\n\
             assocs: [{{event: go, targets: [a, b]}}]\n"
        ),
    );
    let out = Command::new(coord_binary())
        .args([
            "run",
            "--hosts",
            hosts.to_str().unwrap(),
            flow.to_str().unwrap(),
        ])
        .args(["--trigger", "go", "--run-id", "V"])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .expect("run eventor-coord");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let a = std::fs::read_to_string(dir.path().join("a.txt")).unwrap();
    let b = std::fs::read_to_string(dir.path().join("b.txt")).unwrap();
    assert_eq!(a.trim(), bed["EVENTOR_NODE1_ADDR"]);
    assert_eq!(b.trim(), bed["EVENTOR_NODE2_ADDR"]);
    let location = eventor_store::StoreLocation::parse(&store).unwrap();
    let store = eventor_store::Store::open(&location).await.unwrap();
    let run = store.run_history("V").await.unwrap().remove(0);
    assert_eq!(run.status, eventor_store::RunStatus::Success);
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks
            .iter()
            .all(|t| t.status == eventor_store::TaskStatus::Success),
        "{tasks:?}"
    );
}

/// Overwrites the file's first bytes where it stands and sets its mtime back: its inode,
/// size and mtime are what they were; its bytes (and ctime) are not.
fn corrupt_in_place(path: &Path) {
    use std::io::Write;
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    // The last run's agent may still be on its way out (its exit is not the prime's): the
    // file is busy until it has gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut file = loop {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            opened => break opened.unwrap(),
        }
    };
    file.write_all(b"#!/bin/sh\necho corrupted\n").unwrap();
    file.set_modified(mtime).unwrap();
}
