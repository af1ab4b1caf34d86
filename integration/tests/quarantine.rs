//! Quarantine on the test bed: a host whose link is cut three times is quarantined (the
//! store's health row, `hosts` and `status` say so, with when it ends), gets no task during
//! its cool-down (a task that may run elsewhere goes there, one pinned to it waits), and
//! gets tasks again after it.

use std::path::Path;
use std::time::{Duration, Instant};

use eventor_store::{HostHealthRecord, HostState, RunKey, Store, StoreLocation};

use crate::cluster_run::{hosts_file_with, schema};
use crate::{coord, testbed, text, write};

/// The cool-down the hosts file sets: long enough for the checks made during it.
const COOLDOWN: Duration = Duration::from_secs(15);

/// Each command of the flow appends `TIME STEP ADDRESS` to `ran.txt`.
fn flow(dir: &Path) -> std::path::PathBuf {
    let out = dir.display();
    let record = |step: &str| format!("echo $(date +%s.%N) {step} $(hostname -I) >> {out}/ran.txt");
    let yaml = format!(
        "events: {{go: {{}}, to_spread: {{}}, to_wait2: {{}}, to_after2: {{}}}}\n\
         steps:\n  \
           hold: {{run: 'while [ ! -e {out}/stop ]; do sleep 0.2; done', host: node1}}\n  \
           spread: {{run: '{}', hosts: [node1, node2]}}\n  \
           wait2: {{run: '{}', host: node2, retries: 1}}\n  \
           after2: {{run: '{}', host: node2}}\n\
         assocs: [{{event: go, targets: [hold]}}, {{event: to_spread, targets: [spread]}},\n  \
           {{event: to_wait2, targets: [wait2]}}, {{event: to_after2, targets: [after2]}}]\n\
         trigger: [{{event: go}}]\n",
        record("spread"),
        record("wait2"),
        record("after2"),
    );
    write(dir, "quarantine.yaml", &yaml)
}

/// `(time, step, address)` of each line of `ran.txt`.
fn ran(dir: &Path) -> Vec<(f64, String, String)> {
    let text = std::fs::read_to_string(dir.join("ran.txt")).unwrap_or_default();
    let parse = |line: &str| {
        let mut words = line.split_whitespace();
        let at = words.next()?.parse().ok()?;
        Some((at, words.next()?.to_string(), words.next()?.to_string()))
    };
    text.lines().filter_map(parse).collect()
}

/// Waits (at most `within`) until `node2`'s stored health passes `ok`; answers it.
async fn wait_health(
    dir: &Path,
    store: &Store,
    run: &RunKey,
    ok: impl Fn(&HostHealthRecord) -> bool,
    within: Duration,
) -> HostHealthRecord {
    let deadline = Instant::now() + within;
    loop {
        let rows = store.host_health(run.clone()).await.unwrap_or_default();
        if let Some(row) = rows.into_iter().find(|h| h.host == "node2" && ok(h)) {
            return row;
        }
        if Instant::now() > deadline {
            let rows = store.host_health(run.clone()).await;
            let log = std::fs::read_to_string(dir.join("prime.err")).unwrap_or_default();
            panic!("node2's health never came: {rows:?}\nthe prime's log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 30 s) until `ran.txt` has a line of `step`.
fn wait_ran(dir: &Path, step: &str, count: usize) -> Vec<(f64, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines: Vec<_> = ran(dir).into_iter().filter(|l| l.1 == step).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{step} never ran: {:?}",
            ran(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn micros_as_secs(at: i64) -> f64 {
    at as f64 / 1e6
}

#[tokio::test]
async fn a_host_cut_off_three_times_is_quarantined_shown_spared_and_used_after() {
    let Some(bed) = testbed() else { return };
    let _link = crate::TESTBED_LINK.write();
    let _pg = crate::postgres_shared();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let top = format!(
        "lease: 1s\nquarantine: {{failures: 3, within: 10m, cooldown: {}s}}\n",
        COOLDOWN.as_secs()
    );
    let (hosts, url) = hosts_file_with(dir, &bed, &schema("quarantine"), &top);
    let flow = flow(dir);
    let flow = flow.to_str().unwrap();
    let run_args = ["run", "--hosts", &hosts, flow, "--run-id", "Q"];
    let prime_err = std::fs::File::create(dir.join("prime.err")).unwrap();
    let mut prime = crate::coord_command(dir, &run_args)
        .env("RUST_LOG", "info")
        .stderr(prime_err)
        .spawn()
        .unwrap();
    let store = Store::open(&StoreLocation::parse(&url).unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        if let Some(run) = store.run_history("Q").await.unwrap_or_default().pop() {
            break run.key;
        }
        if Instant::now() > deadline || prime.try_wait().unwrap().is_some() {
            let _ = prime.kill();
            let log = std::fs::read_to_string(dir.join("prime.err")).unwrap_or_default();
            panic!("the run never began: {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_health(
        dir,
        &store,
        &run,
        |h| h.state == HostState::Up,
        Duration::from_secs(30),
    )
    .await;

    // Three cuts: each loss is seen, and the host is back before the next, until the third
    // loss quarantines it.
    let mut quarantined = None;
    for cut in 1..=3 {
        let link = crate::LinkCut::new(&bed["EVENTOR_NODE2_VETH"]);
        let down = |h: &HostHealthRecord| h.state != HostState::Up;
        let health = wait_health(dir, &store, &run, down, Duration::from_secs(30)).await;
        drop(link);
        if health.state == HostState::Quarantined {
            assert_eq!(cut, 3, "quarantined after {cut} cuts: {health:?}");
            quarantined = Some(health);
            break;
        }
        let up = |h: &HostHealthRecord| h.state == HostState::Up;
        wait_health(dir, &store, &run, up, Duration::from_secs(30)).await;
    }
    let quarantined = quarantined.expect("node2 quarantined after the third cut");
    let until = quarantined.until.expect("a quarantine's end");
    let reason = quarantined.reason.clone().unwrap_or_default();
    assert!(reason.contains("3 host failures within 10m"), "{reason}");
    assert_eq!(quarantined.failures.len(), 3, "{quarantined:?}");

    // During the cool-down: tasks that may run on node1 go there (node1 is the busier one),
    // a task pinned to node2 waits; `hosts` and `status` show the quarantine.
    let trigger = |event: &str| {
        let out = coord(
            dir,
            &["trigger", flow, event, "--store", &url, "--run-id", "Q"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    trigger("to_spread@1..3");
    trigger("to_wait2");
    let spread = wait_ran(dir, "spread", 3);
    let shown = coord(dir, &["hosts", flow, "--hosts", &hosts, "--run-id", "Q"]);
    let shown = text(&shown.stdout) + &text(&shown.stderr);
    let status_args = ["status", flow, "--store", &url, "--run-id", "Q"];
    let status_text = text(&coord(dir, &status_args).stdout);
    let status = coord(dir, &[&status_args[..], &["--json"]].concat());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    // `check` before another run says so too (a host, not a reason to call it unready).
    let checked = coord(dir, &["check", flow, "--hosts", &hosts]);
    let checked = text(&checked.stdout);
    // The run's page, in a browser: node2's health with the end of its quarantine.
    let served = crate::web::serve(dir, &url, &dir.join("logs"));
    let page_url = format!("http://{}/run/Q/0", served.addr);
    let page = crate::web::dump_dom(&dir.join("chromium"), &page_url);
    drop(served);
    let during = eventor_store::now_micros();
    assert!(
        during < until,
        "the checks took longer than the cool-down: make COOLDOWN longer"
    );
    for (_, _, address) in &spread {
        assert_eq!(address, &bed["EVENTOR_NODE1_ADDR"], "{spread:?}");
    }
    assert!(shown.contains("node2: quarantined until"), "{shown}");
    assert!(
        shown.contains("lost"),
        "the last failures are listed: {shown}"
    );
    assert!(shown.contains("node1: up"), "{shown}");
    assert!(
        status_text.contains("hosts not taking tasks (1):")
            && status_text.contains("node2 quarantined until"),
        "{status_text}"
    );
    let node2 = status["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == "node2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(node2["state"], "quarantined", "{status}");
    assert!(node2["until"].is_string(), "{status}");
    let shown_until = format!(
        "node2: quarantined until {}",
        node2["until"].as_str().unwrap()
    );
    assert!(
        page.contains("class=\"health-quarantined\"") && page.contains(&shown_until),
        "the page shows node2's quarantine: {page}"
    );
    assert!(page.contains("node1: up"), "{page}");
    let by_run = format!("{shown_until} by running run Q of flow");
    assert!(
        checked.contains(&by_run),
        "check shows the quarantine: {checked}"
    );

    // After it: the waiting task runs on node2 (not before the end), and so does a new one.
    let up = |h: &HostHealthRecord| h.state == HostState::Up;
    wait_health(dir, &store, &run, up, COOLDOWN + Duration::from_secs(30)).await;
    let waited = wait_ran(dir, "wait2", 1).remove(0);
    assert_eq!(waited.2, bed["EVENTOR_NODE2_ADDR"]);
    assert!(
        waited.0 >= micros_as_secs(until) - 0.05,
        "wait2 ran at {} before the quarantine's end {}",
        waited.0,
        micros_as_secs(until)
    );
    trigger("to_after2");
    let after = wait_ran(dir, "after2", 1).remove(0);
    assert_eq!(after.2, bed["EVENTOR_NODE2_ADDR"]);
    let began = micros_as_secs(quarantined.failures.last().unwrap().0);
    let cooling = |at: f64| at >= began && at < micros_as_secs(until);
    let node2_during: Vec<_> = ran(dir)
        .into_iter()
        .filter(|l| l.2 == bed["EVENTOR_NODE2_ADDR"] && cooling(l.0))
        .collect();
    assert!(
        node2_during.is_empty(),
        "node2 ran during its cool-down: {node2_during:?}"
    );

    std::fs::write(dir.join("stop"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = prime.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the prime hung");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.join("prime.err")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{log}");
}
