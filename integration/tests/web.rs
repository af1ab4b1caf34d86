//! `eventor-coord serve` driven in a real browser (headless Chromium, installed when
//! missing): the index lists the runs, a run's page shows its graph coloured by task
//! states, its host lanes and failures, and a log line written while the page is open
//! arrives in it. Also `/metrics`, and bad input. On SQLite and on the test bed's Postgres
//! with a cluster run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::{cluster_flow, cluster_hosts, finish, pg_url, slow_flow, wait_for_run, DEMO};
use crate::{coord, coord_binary, spawn_coord, testbed, text, write};

/// A running `serve`, stopped when dropped.
pub(crate) struct Served {
    child: Child,
    pub(crate) addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `eventor-coord serve --store STORE --logdir DIR` on a free port, once it answers.
pub(crate) fn serve(dir: &Path, store: &str, logdir: &Path) -> Served {
    serve_with(dir, store, logdir, &[])
}

/// [`serve`] with `extra` arguments.
fn serve_with(dir: &Path, store: &str, logdir: &Path, extra: &[&str]) -> Served {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(coord_binary())
        .args(["serve", "--store", store, "--listen", &addr, "--logdir"])
        .arg(logdir)
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&served.addr).is_err() {
        assert!(Instant::now() < deadline, "serve never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

/// A plain HTTP/1.0 GET: the response's status line and body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    http_get_as(addr, addr, path)
}

/// [`http_get`] naming `host` as its `Host`.
fn http_get_as(addr: &str, host: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Debian's Chromium, installed with apt-get when missing.
fn chromium() -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .unwrap();
    if !found.status.success() {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("run apt-get");
        assert!(installed.success(), "apt-get install -y chromium failed");
    }
    PathBuf::from("chromium")
}

/// Chromium's flags for a quiet headless page load that lets the scripts run.
fn browser(profile: &Path) -> Command {
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stderr(Stdio::null());
    command
}

/// Runs a headless Chromium command to its end. Headless Chromium now and then never
/// finishes its virtual time with a live feed open: such a run is killed after a minute and
/// tried once more, so the test fails on the page, not on a stuck browser.
fn browse(profile: &Path, args: &[&str]) -> std::process::Output {
    for _ in 0..2 {
        let mut child = browser(profile)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("chromium never finished {args:?}");
}

/// The DOM of `url` after its scripts ran.
pub(crate) fn dump_dom(profile: &Path, url: &str) -> String {
    let out = browse(profile, &["--dump-dom", url]);
    assert!(out.status.success(), "chromium failed on {url}");
    text(&out.stdout)
}

/// A picture of `url`, kept under target/web-test/ as a test artefact.
fn screenshot(profile: &Path, url: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-test");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    let shot = format!("--screenshot={}", file.display());
    let status = browse(profile, &[&shot, "--window-size=1280,900", url]).status;
    assert!(status.success() && file.exists(), "no screenshot of {url}");
    file
}

/// The index lists the demo run, and `/metrics` counts it.
fn check_index_and_metrics(served: &Served, profile: &Path) {
    let index = dump_dom(profile, &format!("http://{}/", served.addr));
    assert!(index.contains("<a href=\"/run/D/0\">D</a>"), "{index}");
    assert!(
        index.contains("class=\"outcome outcome-failure\">failure<"),
        "{index}"
    );
    assert!(
        index.contains("3/6 done, 3 failed") || index.contains("6/6 done, 3 failed"),
        "{index}"
    );
    let (status, metrics) = http_get(&served.addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        metrics.contains("eventor_runs{outcome=\"failure\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eventor_tasks{status=\"failure\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eventor_failed_tasks{class=\"exit\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE eventor_active_tasks gauge"),
        "{metrics}"
    );
}

/// The demo run's page: graph coloured by state, failed tasks, the log.
fn check_demo_page(served: &Served, profile: &Path) {
    let page = dump_dom(profile, &format!("http://{}/run/D/0", served.addr));
    assert!(
        page.contains("data-name=\"b\" data-state=\"failure\""),
        "{page}"
    );
    assert!(
        page.contains("data-name=\"a\" data-state=\"success\""),
        "{page}"
    );
    assert!(
        page.contains("data-name=\"c\" data-state=\"none\""),
        "{page}"
    );
    assert!(
        page.contains("b[1] on prime (attempt 1, exit:3): exited with status 3"),
        "{page}"
    );
    assert!(
        page.contains("stdout hello a 2"),
        "the log is shown: {page}"
    );
    assert!(page.contains("params: RUN_DATE=2026-12-05"), "{page}");
    assert!(page.contains("env from the prime: HOME"), "{page}");
    let (status, _) = http_get(&served.addr, "/api/run/NOPE/0");
    assert!(status.contains("404"), "{status}");
}

/// A run going on while its page is open: the page shows the log line written after it
/// loaded, and the run's end.
fn check_live_page(dir: &Path, profile: &Path, store: &[&str], serve_store: &str) {
    let flow = slow_flow(dir, 3);
    let mut args = vec!["run", flow.as_str(), "--run-id", "LIVE", "--logdir", "logs"];
    args.extend_from_slice(store);
    let run = spawn_coord(dir, &args);
    wait_for_run(dir, &flow, store, "LIVE");
    let served = serve(dir, serve_store, &dir.join("logs"));
    let page = dump_dom(profile, &format!("http://{}/run/LIVE/0", served.addr));
    let (code, _, err) = finish(run);
    assert_eq!(code, Some(0), "{err}");
    assert!(page.contains("stdout napping"), "{page}");
    assert!(
        page.contains("stdout LIVE-MARKER"),
        "a line written after the page loaded: {page}"
    );
}

#[test]
fn the_page_shows_runs_graph_failures_and_a_live_log_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("chromium");
    // The demo with a parameter, and a variable from the prime whose name (only) is shown.
    let demo = DEMO
        .replacen("name: demo\n", "name: demo\nparams: {RUN_DATE: ~}\n", 1)
        .replacen(
            "triggers: {success: [a_done]}}",
            "triggers: {success: [a_done]}, env_from_prime: [HOME]}",
            1,
        );
    let flow = write(dir.path(), "demo.yaml", &demo);
    let out = coord(
        dir.path(),
        &[
            "run",
            flow.to_str().unwrap(),
            "--run-id",
            "D",
            "--logdir",
            "logs",
            "--param",
            "RUN_DATE=2026-12-05",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let served = serve(dir.path(), "demo.run.db", &dir.path().join("logs"));
    check_index_and_metrics(&served, &profile);
    check_demo_page(&served, &profile);
    screenshot(
        &profile,
        &format!("http://{}/run/D/0", served.addr),
        "run-sqlite.png",
    );
    // The slow flow has its own store (slow.run.db), served once its run has begun.
    check_live_page(dir.path(), &profile, &[], "slow.run.db");
}

/// Against DNS rebinding: a request naming another host (a page elsewhere that pointed its
/// own name at this machine) is refused; the server's address, localhost and the names
/// given with `--allow-host` are served.
#[test]
fn serve_answers_only_to_its_own_address_localhost_and_allowed_names() {
    let dir = tempfile::tempdir().unwrap();
    let logs = demo_run(dir.path());
    let extra = ["--allow-host", "runs.example"];
    let served = serve_with(dir.path(), "demo.run.db", &logs, &extra);
    let port = served.addr.rsplit_once(':').unwrap().1;
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "runs.example.evil",
    ] {
        let (status, body) = http_get_as(&served.addr, host, "/api/runs");
        assert!(status.contains(" 421 "), "{host}: {status}");
        assert!(!body.contains("\"D\""), "{host}: {body}");
        assert!(body.contains("--allow-host"), "{host}: {body}");
    }
    let localhost = format!("localhost:{port}");
    for host in [served.addr.as_str(), &localhost, "[::1]:9", "Runs.Example"] {
        let (status, body) = http_get_as(&served.addr, host, "/api/runs");
        assert!(status.contains(" 200 "), "{host}: {status}");
        assert!(body.contains("\"D\""), "{host}: {body}");
    }
}

/// Bytes the process `pid` has read so far (`rchar` of /proc/PID/io).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
    line["rchar:".len()..].trim().parse().unwrap()
}

/// A page tailing a run whose central log is huge reads only its end: the server reads a
/// few MiB, not the 200 MiB before it (a sparse file: quick to make, as long to read).
#[test]
fn a_log_tail_reads_only_the_end_of_a_large_log() {
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "demo.yaml", DEMO);
    let args = [
        "run",
        flow.to_str().unwrap(),
        "--run-id",
        "D",
        "--logdir",
        "logs",
    ];
    let out = coord(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let log = dir.path().join("logs/demo/D.log");
    let file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    file.set_len(file.metadata().unwrap().len() + 200 * 1024 * 1024)
        .unwrap();
    let mut file = file;
    writeln!(
        file,
        "\n2025-01-01T00:00:00.000000Z prime a[9] stdout TAIL-MARKER"
    )
    .unwrap();
    drop(file);
    let served = serve(dir.path(), "demo.run.db", &dir.path().join("logs"));
    let before = bytes_read(served.child.id());
    let (status, body) = http_get(&served.addr, "/api/run/D/0/log");
    let read = bytes_read(served.child.id()) - before;
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("stdout TAIL-MARKER"), "{body}");
    assert!(read < 8 * 1024 * 1024, "serve read {read} bytes for a tail");
}

#[test]
fn serve_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = coord(dir.path(), &["serve", "--store", "/nonexistent/x.db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no store at /nonexistent/x.db"),
        "{}",
        text(&out.stderr)
    );
    let out = coord(dir.path(), &["serve"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("serve needs a store"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_page_shows_host_lanes_of_a_cluster_run_on_postgres() {
    let Some(bed) = testbed() else { return };
    let Some(pg) = pg_url("web") else { return };
    let _link = crate::TESTBED_LINK.read();
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("chromium");
    let (hosts, url) = cluster_hosts(dir.path(), &bed, "web");
    let flow = cluster_flow(dir.path());
    let run = coord(
        dir.path(),
        &[
            "run", "--hosts", &hosts, &flow, "--run-id", "C", "--logdir", "logs",
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let served = serve(dir.path(), &url, &dir.path().join("logs"));
    let page = dump_dom(&profile, &format!("http://{}/run/C/0", served.addr));
    assert!(
        page.contains("class=\"lane\" data-host=\"node1\""),
        "{page}"
    );
    assert!(
        page.contains("class=\"lane\" data-host=\"node2\""),
        "{page}"
    );
    assert!(page.contains("b[2] on node2 (attempt 1, exit:1)"), "{page}");
    assert!(
        page.contains(" node2 b[1] stdout on node2"),
        "the log shows remote lines: {page}"
    );
    let index = dump_dom(&profile, &format!("http://{}/", served.addr));
    assert!(index.contains("<a href=\"/run/C/0\">C</a>"), "{index}");
    let shot = screenshot(
        &profile,
        &format!("http://{}/run/C/0", served.addr),
        "run-cluster.png",
    );
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);
    drop(served);
    // The live log on Postgres (status through the run's notifications).
    check_live_page(dir.path(), &profile, &["--store", pg.as_str()], &pg);
}

/// A plain HTTP/1.0 POST of `body` with `authorization` (if any): status line and body.
fn http_post(addr: &str, path: &str, authorization: Option<&str>, body: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn an_http_trigger_with_the_token_tells_a_waiting_run_to_go_on_and_nothing_else_gets_in() {
    let Some(pg) = pg_url("webtrigger") else {
        return;
    };
    let _pg = crate::postgres_shared();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let open_token = dir.path().join("open-token");
    std::fs::write(&open_token, "s3cret-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&open_token, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The run waits for a file only the `done` event's step makes.
    let flow = crate::write(
        dir.path(),
        "waiting.yaml",
        &format!(
            "name: waiting\nevents: {{go: {{}}, done: {{}}}}\n\
             steps:\n  hold: {{run: 'while [ ! -e {out}/done.txt ]; do sleep 0.05; done'}}\n  \
               finish: {{run: 'touch {out}/done.txt'}}\n\
             assocs: [{{event: go, targets: [hold]}}, {{event: done, targets: [finish]}}]\n\
             trigger: [{{event: go}}]\n"
        ),
    );
    let mut run = Command::new(coord_binary())
        .args([
            "run",
            flow.to_str().unwrap(),
            "--store",
            &pg,
            "--run-id",
            "W",
            "--logdir",
            "logs",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let refused = Command::new(coord_binary())
        .args([
            "serve",
            "--store",
            &pg,
            "--listen",
            "127.0.0.1:0",
            "--triggers",
        ])
        .arg(&open_token)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a token file others can read is refused"
    );
    assert!(
        text(&refused.stderr).contains("chmod 600"),
        "{}",
        text(&refused.stderr)
    );
    let served = serve_with(
        dir.path(),
        &pg,
        &dir.path().join("logs"),
        &["--triggers", token.to_str().unwrap()],
    );
    // The graph the run saves is what names its events: wait for it.
    let graph = dir.path().join("logs/waiting/W.graph.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !graph.exists() {
        assert!(Instant::now() < deadline, "the run saved no graph");
        std::thread::sleep(Duration::from_millis(20));
    }
    let path = "/api/runs/W/trigger";
    let good = r#"{"flow": "waiting", "event": "done", "sequence": 1}"#;
    let bearer = Some("Bearer s3cret-token");
    let status = |r: (String, String)| r.0.split_whitespace().nth(1).unwrap_or("").to_string();
    assert_eq!(status(http_post(&served.addr, path, None, good)), "401");
    assert_eq!(
        status(http_post(&served.addr, path, Some("Bearer wrong"), good)),
        "401"
    );
    assert_eq!(
        status(http_post(
            &served.addr,
            "/api/runs/nosuch/trigger",
            bearer,
            good
        )),
        "404"
    );
    let other_flow = r#"{"flow": "other", "event": "done"}"#;
    assert_eq!(
        status(http_post(&served.addr, path, bearer, other_flow)),
        "404"
    );
    let unknown = http_post(
        &served.addr,
        path,
        bearer,
        r#"{"flow": "waiting", "event": "nosuch"}"#,
    );
    assert_eq!(status(unknown.clone()), "422", "{unknown:?}");
    assert!(unknown.1.contains("no event `nosuch`"), "{unknown:?}");
    assert!(!dir.path().join("done.txt").exists(), "nothing fired yet");
    let (line, body) = http_post(&served.addr, path, bearer, good);
    assert!(line.contains(" 200 "), "{line} {body}");
    assert!(body.contains("done@1"), "{body}");
    let finished = run.wait().unwrap();
    assert_eq!(
        finished.code(),
        Some(0),
        "the event let the run go on to its end"
    );
    assert!(dir.path().join("done.txt").exists());
    let late = http_post(&served.addr, path, bearer, good);
    assert_eq!(status(late.clone()), "409", "{late:?}");
    // Without --triggers the server takes no events at all.
    drop(served);
    let read_only = serve(dir.path(), &pg, &dir.path().join("logs"));
    let (line, _) = http_post(&read_only.addr, path, bearer, good);
    assert!(line.contains(" 405 ") || line.contains(" 404 "), "{line}");
}

/// Runs the demo flow as run `D` on SQLite in `dir` (it fails: b exits 3) and answers its
/// log folder.
fn demo_run(dir: &Path) -> std::path::PathBuf {
    let flow = write(dir, "demo.yaml", DEMO);
    let out = coord(dir, &["run", flow.to_str().unwrap(), "--run-id", "D"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    dir.join("logs")
}

/// A live feed opened at `path`: its status line's first 12 bytes (`HTTP/1.1 200`) and the
/// connection, held open for as long as the caller keeps it.
fn open_feed(addr: &str, path: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    (String::from_utf8_lossy(&head).to_string(), stream)
}

/// Live feeds are capped (`--max-feeds 3`): with 3 open at once (each lasts its span), one
/// more is answered 503 with a Retry-After, and once they ended a new one is served again.
#[test]
fn live_feeds_beyond_the_cap_are_refused_and_served_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let logs = demo_run(dir.path());
    let served = serve_with(dir.path(), "demo.run.db", &logs, &["--max-feeds", "3"]);
    let open = |path: &str| open_feed(&served.addr, path);
    let held: Vec<_> = (0..3)
        .map(|i| match i % 2 {
            0 => open("/api/runs/events"),
            _ => open("/api/run/D/0/events"),
        })
        .collect();
    assert!(
        held.iter().all(|(status, _)| status.ends_with("200")),
        "{held:?}"
    );
    let (status, mut refused) = open("/api/runs/events");
    let mut rest = String::new();
    refused.read_to_string(&mut rest).unwrap();
    assert!(status.ends_with("503"), "{status}{rest}");
    assert!(rest.to_lowercase().contains("retry-after: 2"), "{rest}");
    assert!(rest.contains("too many live feeds open"), "{rest}");
    drop(held);
    // Each feed ends after its span (2 s); then there is room again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = open("/api/runs/events");
        if status.ends_with("200") {
            break;
        }
        assert!(Instant::now() < deadline, "no room again: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pages following one run on Postgres share one listening session of the store:
/// three live feeds of the same run, one `LISTEN` on its channel.
#[tokio::test(flavor = "multi_thread")]
async fn the_feeds_of_one_run_share_one_store_listener() {
    let Some(bed) = testbed() else { return };
    let _pg = crate::postgres_shared();
    let schema = crate::cluster_run::schema("feeds");
    let store = format!("{}?schema={schema}", bed["EVENTOR_PG_URL"]);
    let dir = tempfile::tempdir().unwrap();
    let flow = write(dir.path(), "demo.yaml", DEMO);
    let run = coord(
        dir.path(),
        &[
            "run",
            flow.to_str().unwrap(),
            "--store",
            &store,
            "--run-id",
            "D",
        ],
    );
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let served = serve(dir.path(), &store, &dir.path().join("logs"));
    let feeds: Vec<_> = (0..3)
        .map(|_| open_feed(&served.addr, "/api/run/D/0/events"))
        .collect();
    let channel = eventor_store::PgStore::listen_channel(&schema, "D");
    let (client, connection) =
        tokio_postgres::connect(&bed["EVENTOR_PG_URL"], tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let listening = format!("LISTEN {channel}");
    let count = || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1",
                &[&listening],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    // The listener is set up by the first feed; wait for it (it is never more than one).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = count().await;
    while seen == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = count().await;
    }
    assert_eq!(seen, 1, "listening sessions on {channel} with 3 feeds open");
    drop(feeds);
}
