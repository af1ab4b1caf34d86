//! Trust at the edges, through the test bed: a store whose role must log in with a SCRAM
//! password (`evpw`, whose password holds `/`, `?`, `@` and `:`) works on both test hosts,
//! and while the steps run the password is on no process's command line, in no agent's
//! environment, and afterwards in no log (the prime's stderr, the central log).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use eventor_store::{RunStatus, Store, StoreLocation, TaskStatus};

use crate::cluster_run::schema;
use crate::{agent_binary, coord_binary, testbed, text, write};

/// The password in the test bed's `EVENTOR_PG_URL_PW` (between `evpw:` and the last `@`).
fn password_of(url: &str) -> String {
    let userinfo = url["postgres://".len()..].rsplit_once('@').unwrap().0;
    userinfo.split_once(':').unwrap().1.to_string()
}

/// What a watch over `/proc` saw while a run went on.
#[derive(Debug, Default)]
struct Seen {
    /// Processes whose command line held the secret (pid and the name of the program only).
    leaks: Vec<String>,
    /// Agent processes seen (so the watch watched something).
    agents: usize,
}

/// Scans every process's command line (and each agent's environment) every 50 ms for
/// `secret` until `stop`.
fn watch_proc(secret: String, stop: Arc<AtomicBool>) -> JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let mut agents = std::collections::HashSet::new();
        while !stop.load(Ordering::Relaxed) {
            scan_proc(&secret, &mut seen, &mut agents);
            std::thread::sleep(Duration::from_millis(50));
        }
        seen.agents = agents.len();
        seen
    })
}

fn scan_proc(secret: &str, seen: &mut Seen, agents: &mut std::collections::HashSet<u32>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let program = cmdline.split(' ').next().unwrap_or("").to_string();
        if cmdline.contains(secret) {
            seen.leaks
                .push(format!("pid {pid} ({program}): command line"));
        }
        if cmdline.contains("eventor-agent") {
            agents.insert(pid);
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(secret) {
                seen.leaks
                    .push(format!("pid {pid} ({program}): environment"));
            }
        }
    }
}

/// Every file under `dir` whose text holds `secret`.
fn files_holding(dir: &Path, secret: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, secret));
        } else if std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).contains(secret))
            .unwrap_or(false)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Runs a two-host flow (a 2 s step on each) with `store` in the hosts file and `env` for
/// the prime, watching `/proc` meanwhile; checks the run, the logs and the store.
async fn run_checked(store: &str, store_for_check: &str, env: &[(&str, &str)], secret: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bed = testbed().unwrap();
    let agent = agent_binary();
    let hosts = write(
        dir.path(),
        "hosts.yaml",
        &format!(
            "store: '{store}'\nssh_config: {}\nhosts:\n  node1: {{agent: {}}}\n  node2: {{agent: {}}}\n",
            bed["EVENTOR_SSH_CONFIG"],
            agent.display(),
            agent.display()
        ),
    );
    let flow = write(
        dir.path(),
        "trust.yaml",
        "name: trust\nevents: {go: {}}\n\
         steps:\n  \
           a: {run: 'sleep 2; echo a ran', host: node1}\n  \
           b: {run: 'sleep 2; echo b ran', host: node2}\n\
         assocs: [{event: go, targets: [a, b]}]\n\
         trigger: [{event: go, range: [1, 2]}]\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_proc(secret.to_string(), stop.clone());
    let child = Command::new(coord_binary())
        .args(["run", "--hosts", hosts.to_str().unwrap()])
        .arg(flow.to_str().unwrap())
        .args(["--run-id", "T"])
        .current_dir(dir.path())
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run eventor-coord");
    let out = child.wait_with_output().unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = watch.join().unwrap();
    let stderr = text(&out.stderr);
    assert!(
        !stderr.contains(secret),
        "the prime's stderr shows the password"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        seen.leaks.is_empty(),
        "the password leaked: {:?}",
        seen.leaks
    );
    assert!(
        seen.agents >= 2,
        "agents were watched while they ran: {seen:?}"
    );
    let files = files_holding(dir.path(), secret);
    let stray: Vec<&String> = files
        .iter()
        .filter(|f| !f.ends_with("hosts.yaml"))
        .collect();
    assert!(stray.is_empty(), "files holding the password: {stray:?}");
    let logs = files_holding(dir.path(), "a ran");
    assert!(!logs.is_empty(), "the central log has the steps' output");

    let store = Store::open(&StoreLocation::parse(store_for_check).unwrap())
        .await
        .unwrap();
    let run = store.run_history("T").await.unwrap().remove(0);
    assert_eq!(run.status, RunStatus::Success);
    let tasks = store.tasks(run.key).await.unwrap();
    assert_eq!(tasks.len(), 4);
    assert!(
        tasks.iter().all(|t| t.status == TaskStatus::Success),
        "{tasks:?}"
    );
}

#[tokio::test]
async fn a_password_in_the_store_url_reaches_the_agents_only_over_ssh() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let Some(url) = bed
        .get("EVENTOR_PG_URL_PW_BRIDGE")
        .filter(|u| !u.is_empty())
    else {
        panic!("the test bed has no password role: run scripts/testbed.sh pg-role");
    };
    let secret = password_of(url);
    let store = format!("{url}?schema={}", schema("trust_url"));
    run_checked(&store, &store, &[], &secret).await;
}

#[tokio::test]
async fn a_password_from_pgpassword_reaches_the_agents_only_over_ssh() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let Some(url) = bed
        .get("EVENTOR_PG_URL_PW_BRIDGE")
        .filter(|u| !u.is_empty())
    else {
        panic!("the test bed has no password role: run scripts/testbed.sh pg-role");
    };
    let secret = password_of(url);
    let schema = schema("trust_env");
    let with_password = format!("{url}?schema={schema}");
    let host_and_db = url.rsplit_once('@').unwrap().1;
    let without = format!("postgres://evpw@{host_and_db}?schema={schema}");
    run_checked(
        &without,
        &with_password,
        &[("PGPASSWORD", &secret)],
        &secret,
    )
    .await;
}
