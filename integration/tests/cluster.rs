//! The coordinator's cluster plumbing: the hosts file's errors, the central log (concurrent
//! writers, format, filters, follow, every line of a flood in order) and host links to the real
//! `eventor-agent` over the testbed's SSH hosts (`scripts/testbed.sh up --ssh`): the
//! handshake and a command on two hosts at once, a host cut off, an agent killed, a clean
//! shutdown, a missing agent binary. Without the testbed the link tests print that they
//! were skipped, unless EVENTOR_REQUIRE_TESTBED=1 makes that a failure.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventor::cluster::{
    load_hosts, open_links, parse_hosts, CancellationToken, ClusterSettings, Dispatch, EndStatus,
    HostDefaults, HostEvent, HostLink, HostsFile, LinkEnd, LinkError, LinkSettings, LogLevel,
    LogRecord, Stream, TaskEnd, TaskKey, Work,
};
use eventor::log::{print_log, CentralLog, LogFilter, LogLine};
use eventor_ssh::{ClientSettings, ExitStatus};
use tokio::sync::mpsc;

use crate::agent_binary;

// ---------------------------------------------------------------------------------------------
// The hosts file.
// ---------------------------------------------------------------------------------------------

fn defaults() -> HostDefaults {
    HostDefaults {
        agent: Some("/opt/eventor/eventor-agent".into()),
        home: Some("/home/ev".into()),
    }
}

#[test]
fn hosts_file_errors_name_file_line_column_and_field() {
    let cases: &[(&str, &str)] = &[
        ("", "cluster.yaml:1:1: top level: the hosts file is empty"),
        ("store: x\n", "cluster.yaml:1:1: top level: missing `hosts`"),
        ("hosts: {}\n", "cluster.yaml:1:8: hosts: no hosts: name at least one"),
        ("hosts:\n", "cluster.yaml:1:1: top level: missing `hosts`"),
        (
            "hosts: [node1, node2]\n",
            "cluster.yaml:1:8: hosts: expected a mapping, found a list",
        ),
        (
            "host:\n  node1: {}\n",
            "cluster.yaml:1:1: host: unknown key; did you mean `hosts`?",
        ),
        (
            "store: x\nhosts:\n  node1: {sssh: gpu}\n",
            "cluster.yaml:3:11: hosts.node1.sssh: unknown key; did you mean `ssh`?",
        ),
        (
            "hosts:\n  node1: 3\n",
            "cluster.yaml:2:10: hosts.node1: expected a mapping, found `3`",
        ),
        (
            "hosts:\n  node1: {max_concurrent: many}\n",
            "cluster.yaml:2:27: hosts.node1.max_concurrent: expected a whole number, found `many`",
        ),
        (
            "hosts:\n  node1: {max_concurrent: 0}\n",
            "cluster.yaml:2:27: hosts.node1.max_concurrent: must be between 1 and 4294967295, found 0",
        ),
        (
            "hosts:\n  node1:\n    env: [PATH]\n",
            "cluster.yaml:3:10: hosts.node1.env: expected a mapping, found a list",
        ),
        (
            "hosts:\n  node1:\n    env: {1X: a}\n",
            "cluster.yaml:3:11: hosts.node1.env.1X: invalid environment variable name `1X`: use \
             letters, digits and `_`, not a digit first",
        ),
        (
            "hosts:\n  node1: {env: {A: [1]}}\n",
            "cluster.yaml:2:20: hosts.node1.env.A: expected a string, found a list",
        ),
        (
            "hosts:\n  node1: {}\n  node2: {}\n  node1: {ssh: x}\n",
            "cluster.yaml:4:3: hosts.node1: duplicate host `node1` (first defined at line 2)",
        ),
        (
            "hosts:\n  \"node 1\": {}\n",
            "cluster.yaml:2:3: hosts.node 1: invalid host name `node 1`: use letters, digits, \
             `.`, `_` and `-` (not first)",
        ),
        (
            "hosts:\n  node1: {ssh: \"gpu box\"}\n",
            "cluster.yaml:2:16: hosts.node1.ssh: must not contain spaces or control characters",
        ),
        (
            "hosts:\n  node1: {agent: \"\"}\n",
            "cluster.yaml:2:18: hosts.node1.agent: must not be empty",
        ),
        (
            "store: {url: x}\nhosts: {a: {}}\n",
            "cluster.yaml:1:8: store: expected a string, found a mapping",
        ),
        (
            "ssh_config: ~bob/config\nhosts: {a: {}}\n",
            "cluster.yaml:1:13: ssh_config: only `~` and `~/…` are expanded, not `~user`",
        ),
        (
            "hosts:\n  node1: {ssh: [a]}\n",
            "cluster.yaml:2:16: hosts.node1.ssh: expected a string, found a list",
        ),
    ];
    let mut wrong = Vec::new();
    for (text, want) in cases {
        match parse_hosts(text, Path::new("cluster.yaml"), &defaults()) {
            Ok(file) => wrong.push(format!("{text:?}: loaded {file:?}")),
            Err(e) if e.to_string() != *want => {
                wrong.push(format!("{text:?}:\n  got  {e}\n  want {want}"))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn hosts_file_syntax_errors_have_a_position_but_no_field() {
    let err = parse_hosts(
        "hosts:\n  node1: {ssh: [}\n",
        Path::new("c.yaml"),
        &defaults(),
    )
    .unwrap_err();
    let at = err.position().expect("a position");
    assert_eq!((at.file.as_path(), at.line), (Path::new("c.yaml"), 2));
    assert_eq!(err.field(), None);
    assert!(err.to_string().starts_with("c.yaml:2:"), "{err}");
    assert!(err.to_string().contains(": yaml: "), "{err}");
}

#[test]
fn load_hosts_reads_files_with_defaults_next_to_this_program() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::write(
        dir.path(),
        "cluster.yaml",
        "store: postgres://eventor@prime:5432/eventor\nhosts:\n  node1: {}\n  node2: {ssh: gpu-box, max_concurrent: 8}\n",
    );
    let file = load_hosts(&path).unwrap();
    // The default is the per-version cache path the prime installs its agent at.
    let cached = format!(
        "~/.cache/eventor/eventor-agent-{}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        file.hosts[0].agent.starts_with(&cached),
        "{}",
        file.hosts[0].agent
    );
    assert_eq!(file.hosts[1].ssh, "gpu-box");
    assert_eq!(file.hosts[1].max_concurrent, Some(8));
    assert_eq!(file.ssh_config, None);
    let missing = dir.path().join("nope.yaml");
    let err = load_hosts(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: cannot read the hosts file", missing.display())
    );
}

// ---------------------------------------------------------------------------------------------
// The central log.
// ---------------------------------------------------------------------------------------------

fn now_micros() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    since.as_micros() as i64
}

fn record(host: &str, step: Option<&str>, sequence: u32, text: String) -> LogRecord {
    LogRecord {
        time: now_micros(),
        level: LogLevel::Info,
        host: host.into(),
        task: step.map(|step| TaskKey {
            run_id: "r1".into(),
            step: step.into(),
            sequence: sequence.to_string(),
            recovery: 0,
            attempt: 1,
        }),
        stream: if step.is_some() {
            Stream::Stdout
        } else {
            Stream::Agent
        },
        text,
    }
}

/// A `Write` the test can look into while `print_log` holds it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn central_log_takes_many_concurrent_writers_in_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let log = CentralLog::open(&dir.path().join("logs"), "nightly", "r1")
        .await
        .unwrap();
    assert_eq!(log.path(), dir.path().join("logs/nightly/r1.log"));
    let (writers, each) = (8, 2_000);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let sink = log.sink();
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let host = format!("node{}", w % 2 + 1);
                let text = format!("writer {w} line {i}");
                assert!(sink.record(record(&host, Some("s1"), w, text)).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let totals = log.close("success").await.unwrap();
    assert_eq!(totals.written, writers as u64 * each);
    let text = std::fs::read_to_string(dir.path().join("logs/nightly/r1.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, writers as u64 * each + 2);
    assert!(
        lines[0].starts_with("-- start of run r1 at 20"),
        "{}",
        lines[0]
    );
    assert_eq!(*lines.last().unwrap(), "-- end of run r1: success");
    let mut next = vec![0u32; writers as usize];
    for line in &lines[1..lines.len() - 1] {
        let LogLine::Record {
            time,
            host,
            task,
            stream,
            text,
        } = LogLine::parse(line)
        else {
            panic!("not a record: {line}");
        };
        // 2026-11-29T21:22:05.236001Z
        let shape: String = time
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99.999999Z", "{line}");
        let words: Vec<&str> = text.split(' ').collect();
        let (w, i): (u32, u32) = (words[1].parse().unwrap(), words[3].parse().unwrap());
        assert_eq!(host, format!("node{}", w % 2 + 1));
        assert_eq!((task, stream), (format!("s1[{w}]").as_str(), "stdout"));
        assert_eq!(i, next[w as usize], "each writer's lines stay in order");
        next[w as usize] += 1;
    }
}

/// What the forwarder hands the log from hosts (output batches, a task's records) is echoed
/// on the console, with a direct echo, as the very lines written to the file, in order; the
/// agent's own records and the markers are not. Without a folder, the echo alone.
#[tokio::test]
async fn hosts_output_is_echoed_on_the_console_as_the_file_has_it() {
    let batch = |host: &str, step: &str, lines: std::ops::Range<u32>| {
        let text: Vec<String> = lines.map(|i| format!("{host} {step} line {i}")).collect();
        let record = record(host, Some(step), 1, String::new());
        let batch = eventor_protocol::OutputBatch {
            task: record.task.unwrap(),
            stream: Stream::Stdout,
            time: now_micros(),
            text: text.join("\n"),
        };
        (Arc::<str>::from(host), batch)
    };
    for with_file in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let logdir = with_file.then(|| dir.path().join("logs"));
        let console = Shared::default();
        let into = console.clone();
        let echo = eventor::ConsoleEcho::new(move || into.clone());
        let config = eventor::log::CentralLogConfig::default();
        let opened = CentralLog::open_to(logdir.as_deref(), "nightly", "r2", config, Some(&echo));
        let log = opened.await.unwrap().unwrap();
        let sink = log.sink();
        assert!(sink.echoes());
        for round in 0..50 {
            let (host, out) = batch("node1", "s1", round * 100..round * 100 + 100);
            assert!(sink.output(host, out).await);
            let (host, out) = batch("node2", "s2", round * 3..round * 3 + 3);
            assert!(sink.output(host, out).await);
            let said = record("node2", Some("s2"), 1, format!("closure says {round}"));
            assert!(sink.task_record(said).await);
            assert!(
                sink.record(record("node1", None, 0, "agent says hi".into()))
                    .await
            );
        }
        drop(sink);
        let file = log.file().map(Path::to_path_buf);
        log.close("success").await.unwrap();
        let echoed = console.text();
        assert_eq!(echoed.lines().count(), 50 * (100 + 3 + 1), "{echoed}");
        match file {
            Some(file) => {
                let text = std::fs::read_to_string(file).unwrap();
                let shown: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with("-- ") && !l.contains(" agent says hi"))
                    .collect();
                assert_eq!(echoed.lines().collect::<Vec<_>>(), shown);
            }
            None => assert!(!dir.path().join("logs").exists(), "no file"),
        }
        let node1: Vec<&str> = echoed
            .lines()
            .filter(|l| l.contains(" node1 s1[1] "))
            .collect();
        let expected: Vec<String> = (0..5000).map(|i| format!("node1 s1 line {i}")).collect();
        let texts: Vec<&str> = node1
            .iter()
            .map(|l| l.splitn(5, ' ').nth(4).unwrap())
            .collect();
        assert_eq!(texts, expected, "node1's lines whole and in order");
    }
}

#[tokio::test]
async fn logs_filters_by_host_and_step() {
    let dir = tempfile::tempdir().unwrap();
    let log = CentralLog::open(dir.path(), "f", "r1").await.unwrap();
    let records = [
        record("node1", Some("s1"), 1, "a".into()),
        record("node2", Some("s1"), 2, "b".into()),
        record("node2", Some("s2"), 1, "c".into()),
        record("node2", None, 0, "agent says hi".into()),
        record("node1", Some("s10"), 1, "d".into()),
    ];
    for r in records {
        log.record(r).await;
    }
    let path = log.path().to_path_buf();
    log.close("failure").await.unwrap();
    let show = |host: Option<&str>, step: Option<&str>| {
        let filter = LogFilter {
            host: host.map(str::to_string),
            step: step.map(str::to_string),
        };
        let path = path.clone();
        async move {
            let mut out = Vec::new();
            let summary = print_log(&path, &filter, false, &mut out).await.unwrap();
            assert_eq!(summary.outcome.as_deref(), Some("failure"));
            let text = String::from_utf8(out).unwrap();
            let texts: Vec<String> = text
                .lines()
                .map(|l| match LogLine::parse(l) {
                    LogLine::Record { text, .. } => text.to_string(),
                    LogLine::Marker(m) => format!("-- {}", m.split(" at ").next().unwrap()),
                    LogLine::Other(o) => panic!("{o}"),
                })
                .collect();
            texts.join("|")
        }
    };
    let all = "-- start of run r1|a|b|c|agent says hi|d|-- end of run r1: failure";
    assert_eq!(show(None, None).await, all);
    assert_eq!(
        show(Some("node2"), None).await,
        "-- start of run r1|b|c|agent says hi|-- end of run r1: failure"
    );
    assert_eq!(
        show(None, Some("s1")).await,
        "-- start of run r1|a|b|-- end of run r1: failure"
    );
    assert_eq!(
        show(Some("node2"), Some("s1")).await,
        "-- start of run r1|b|-- end of run r1: failure"
    );
    assert_eq!(
        show(None, Some("s1[2]")).await,
        "-- start of run r1|b|-- end of run r1: failure"
    );
}

#[tokio::test]
async fn follow_sees_appended_lines_and_stops_at_the_end_marker() {
    let dir = tempfile::tempdir().unwrap();
    let log = CentralLog::open(dir.path(), "f", "r7").await.unwrap();
    log.record(record("node1", Some("s1"), 1, "before".into()))
        .await;
    let out = Shared::default();
    let follower = {
        let (path, out) = (log.path().to_path_buf(), out.clone());
        let filter = LogFilter {
            host: Some("node1".into()),
            step: None,
        };
        tokio::spawn(async move { print_log(&path, &filter, true, out).await })
    };
    let seen = |want: &'static str| {
        let out = out.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while !out.text().contains(want) {
                assert!(
                    Instant::now() < deadline,
                    "{want:?} not seen in:\n{}",
                    out.text()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Instant::now()
        }
    };
    seen("stdout before").await;
    let t = Instant::now();
    log.record(record("node1", Some("s1"), 1, "after".into()))
        .await;
    log.record(record("node2", Some("s1"), 1, "other host".into()))
        .await;
    // Seen at all (within the wide wait of `seen`), while the follower is still waiting.
    let took = seen("stdout after").await - t;
    eprintln!("follow saw an appended line after {took:?}");
    assert!(!follower.is_finished(), "follow must wait for more");
    log.close("success").await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(15), follower)
        .await
        .expect("follow stops at the end marker")
        .unwrap()
        .unwrap();
    assert_eq!(summary.outcome.as_deref(), Some("success"));
    let text = out.text();
    assert!(!text.contains("other host"), "{text}");
    assert!(text.ends_with("-- end of run r7: success\n"), "{text}");
}

#[tokio::test]
async fn follow_of_a_recovered_run_waits_past_the_old_end_marker() {
    let dir = tempfile::tempdir().unwrap();
    let first = CentralLog::open(dir.path(), "f", "r8").await.unwrap();
    first.close("failure").await.unwrap();
    let again = CentralLog::open(dir.path(), "f", "r8").await.unwrap();
    let out = Shared::default();
    let follower = {
        let (path, out) = (again.path().to_path_buf(), out.clone());
        tokio::spawn(async move { print_log(&path, &LogFilter::default(), true, out).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !follower.is_finished(),
        "the recovery's start marker reopens the run"
    );
    again.close("success").await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(15), follower)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.outcome.as_deref(), Some("success"));
    assert_eq!(out.text().matches("-- start of run r8").count(), 2);
}

/// Many lines from one writer as fast as it can: every one is in the file, once, in order
/// (the time it took is printed; `cargo bench` is the place for the throughput itself).
#[tokio::test]
async fn central_log_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let log = CentralLog::open(dir.path(), "f", "bench").await.unwrap();
    let path = log.path().to_path_buf();
    let n = 100_000u32;
    let padding = "x".repeat(80);
    let t = Instant::now();
    for i in 0..n {
        let line = record("node1", Some("s1"), i % 10, format!("line {i} {padding}"));
        assert!(log.record(line).await, "the log takes line {i}");
    }
    let totals = log.close("success").await.unwrap();
    let took = t.elapsed();
    eprintln!(
        "central log: {n} lines of ~130 bytes in {took:?} = {:.0} lines/s",
        f64::from(n) / took.as_secs_f64()
    );
    assert_eq!(totals.written, u64::from(n));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len() as u64,
        u64::from(n) + 2,
        "every line, plus the markers"
    );
    assert!(
        lines[0].starts_with("-- start of run bench"),
        "{}",
        lines[0]
    );
    assert_eq!(*lines.last().unwrap(), "-- end of run bench: success");
    for (i, line) in (0..n).zip(&lines[1..lines.len() - 1]) {
        let LogLine::Record { task, text, .. } = LogLine::parse(line) else {
            panic!("not a record: {line}");
        };
        assert_eq!(text, format!("line {i} {padding}"), "lines arrive in order");
        assert_eq!(task, format!("s1[{}]", i % 10), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Host links over the testbed.
// ---------------------------------------------------------------------------------------------

/// How long any wait in the link tests may take before it counts as a hang.
const WAIT: Duration = Duration::from_secs(20);

use crate::testbed;

/// The testbed plus a scratch home (so the real ~/.ssh plays no part) and a hosts file
/// naming its hosts with this build's agent.
struct Bed {
    vars: HashMap<String, String>,
    home: tempfile::TempDir,
    hosts: HostsFile,
}

impl Bed {
    fn new() -> Option<Bed> {
        Self::with_agent(&agent_binary().to_string_lossy())
    }

    fn with_agent(agent: &str) -> Option<Bed> {
        let vars = testbed()?;
        let home = tempfile::tempdir().unwrap();
        let text = format!(
            "ssh_config: {}\nhosts:\n  node1: {{agent: {agent}}}\n  node2: {{agent: {agent}, max_concurrent: 4}}\n",
            vars["EVENTOR_SSH_CONFIG"]
        );
        let path = crate::write(home.path(), "cluster.yaml", &text);
        let hosts = load_hosts(&path).unwrap();
        Some(Bed { vars, home, hosts })
    }

    fn var(&self, name: &str) -> String {
        self.vars[name].clone()
    }

    fn settings(&self, run_id: &str) -> ClusterSettings {
        ClusterSettings {
            ssh: ClientSettings {
                home: self.home.path().to_path_buf(),
                agent_socket: None,
                ..ClientSettings::from_env()
            },
            ..ClusterSettings::new(self.hosts.clone(), run_id)
        }
    }

    /// Links to `names`, all of which must come up.
    async fn connect(
        &self,
        names: &[&str],
        settings: &ClusterSettings,
    ) -> (Vec<HostLink>, mpsc::Receiver<HostEvent>, Duration) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let (tx, rx) = mpsc::channel(1024);
        let t = Instant::now();
        let token = CancellationToken::new();
        let connecting = open_links(settings, &names, tx, &token);
        let results = tokio::time::timeout(WAIT, connecting)
            .await
            .expect("no hang");
        let took = t.elapsed();
        let links = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("{}", chain(&e))))
            .collect();
        (links, rx, took)
    }
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}

fn key(step: &str, sequence: &str) -> TaskKey {
    TaskKey {
        run_id: "cluster-test".into(),
        step: step.into(),
        sequence: sequence.into(),
        recovery: 0,
        attempt: 1,
    }
}

fn command(key: TaskKey, command: &str) -> Dispatch {
    Dispatch {
        key,
        work: Work::Command {
            command: command.into(),
            env: vec![],
            cwd: None,
            timeout_ms: None,
        },
    }
}

async fn next_event(events: &mut mpsc::Receiver<HostEvent>) -> HostEvent {
    let event = tokio::time::timeout(WAIT, events.recv()).await;
    event.expect("an event in time").expect("events open")
}

/// Events (from any host) until one is `Lost` for `host`; its reason.
async fn lost(events: &mut mpsc::Receiver<HostEvent>, host: &str) -> String {
    loop {
        if let HostEvent::Lost { host: h, reason } = next_event(events).await {
            if h == host {
                return reason;
            }
        }
    }
}

#[tokio::test]
async fn two_hosts_run_hostname_and_shut_down_cleanly() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let settings = bed.settings("cluster-test");
    let (links, mut events, took) = bed.connect(&["node1", "node2"], &settings).await;
    eprintln!("connect + agent ready, 2 hosts at once: {took:?}");
    for link in &links {
        assert_eq!(link.accepted().run_id, "cluster-test");
        assert_eq!(link.accepted().host, link.host());
    }
    assert_eq!(links[1].accepted().limits.max_concurrent_tasks, 4);
    let keys = [key("ip", "1"), key("ip", "2")];
    for (link, key) in links.iter().zip(&keys) {
        link.dispatch(command(key.clone(), "hostname -I"))
            .await
            .unwrap();
    }
    // Both run at once; sort each host's events out of the shared stream.
    let mut per_host: HashMap<String, Vec<HostEvent>> = HashMap::new();
    let mut finished = 0;
    while finished < 2 {
        let event = next_event(&mut events).await;
        if let HostEvent::Lost { host, reason } = &event {
            panic!("{host} lost: {reason}");
        }
        finished += usize::from(matches!(event, HostEvent::Finished { .. }));
        per_host
            .entry(event.host().to_string())
            .or_default()
            .push(event);
    }
    for (k, key) in keys.iter().enumerate() {
        let host = format!("node{}", k + 1);
        let addr = bed.var(&format!("EVENTOR_NODE{}_ADDR", k + 1));
        let got: Vec<&HostEvent> = per_host[&host]
            .iter()
            .filter(|e| !matches!(e, HostEvent::Log { record, .. } if record.task.is_none()))
            .collect();
        assert!(
            matches!(got[0], HostEvent::Started { key: k, pid, .. } if k == key && *pid > 0),
            "{got:?}"
        );
        let HostEvent::Output { host: from, batch } = got[1] else {
            panic!("{got:?}")
        };
        assert_eq!(
            (batch.stream, from.as_str()),
            (Stream::Stdout, host.as_str())
        );
        assert_eq!(&batch.task, key);
        assert!(
            batch.text.split_whitespace().any(|a| a == addr),
            "{host} says {:?}, expected {addr}",
            batch.text
        );
        assert!(
            matches!(got.last().unwrap(), HostEvent::Finished { key: k, end: TaskEnd { status: EndStatus::Success, exit_code: Some(0), .. }, .. } if k == key),
            "{got:?}"
        );
    }
    let t = Instant::now();
    for link in &links {
        link.shutdown("test over").await.unwrap();
    }
    for link in links {
        let end = link.join(Duration::from_secs(10)).await;
        assert_eq!(
            end,
            LinkEnd::Clean {
                exit: Some(ExitStatus::Code(0))
            }
        );
    }
    eprintln!("shutdown + join of 2 hosts: {:?}", t.elapsed());
}

#[tokio::test]
async fn a_host_cut_off_is_lost_within_lost_after() {
    let _link = crate::TESTBED_LINK.write();
    let Some(bed) = Bed::new() else { return };
    let veth = bed.var("EVENTOR_NODE1_VETH");
    if veth.is_empty() {
        crate::skip_unless_required("testbed in loopback mode has no link to cut");
        return;
    }
    let settings = ClusterSettings {
        link: LinkSettings {
            heartbeat: Duration::from_millis(500),
            lost_after: Duration::from_secs(2),
            ..LinkSettings::default()
        },
        ..bed.settings("cluster-test")
    };
    let (mut links, mut events, _) = bed.connect(&["node1"], &settings).await;
    let link = links.pop().unwrap();
    // A task in flight when the host vanishes.
    link.dispatch(command(key("sleep", "1"), "sleep 30"))
        .await
        .unwrap();
    let pid = loop {
        if let HostEvent::Started { pid, .. } = next_event(&mut events).await {
            break pid;
        }
    };
    let _cut = crate::LinkCut::new(&veth);
    let t = Instant::now();
    let reason = lost(&mut events, "node1").await;
    let took = t.elapsed();
    eprintln!("cut-off host lost after {took:?}: {reason}");
    assert_eq!(reason, "no heartbeat for 2s");
    // The reason says it was the heartbeat; the time only tells that from a hang.
    assert!(took < Duration::from_secs(15), "{took:?}");
    let err = link
        .dispatch(command(key("sleep", "2"), "true"))
        .await
        .unwrap_err();
    assert!(matches!(err, LinkError::Lost { .. }), "{err}");
    let t = Instant::now();
    let end = link.join(Duration::from_secs(1)).await;
    assert!(matches!(end, LinkEnd::Lost { .. }), "{end:?}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "join hung: {:?}",
        t.elapsed()
    );
    // The agent on the far side notices the silence too and ends once its task is done;
    // stop the task (its own process group) now so nothing outlives the test.
    kill_group(pid);
}

/// SIGKILL to a task's process group (the agent starts each command in its own).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
}

#[tokio::test]
async fn a_killed_agent_is_lost_with_its_signal() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let (mut links, mut events, _) = bed.connect(&["node2"], &bed.settings("cluster-test")).await;
    let link = links.pop().unwrap();
    let key = key("sleep", "9");
    link.dispatch(command(key.clone(), "sleep 30"))
        .await
        .unwrap();
    let pid = loop {
        if let HostEvent::Started { pid, .. } = next_event(&mut events).await {
            break pid;
        }
    };
    // Namespaces share the pid space with us: kill exactly this agent, nothing else. The
    // task's parent is the agent's command keeper, whose parent is the agent.
    let agent = crate::parent_of(crate::parent_of(pid));
    let comm = std::fs::read_to_string(format!("/proc/{agent}/comm")).unwrap();
    assert_eq!(comm.trim(), "eventor-agent");
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-KILL", &agent.to_string()])
        .status()
        .unwrap()
        .success());
    let reason = lost(&mut events, "node2").await;
    eprintln!("killed agent lost after {:?}: {reason}", t.elapsed());
    assert_eq!(reason, "agent was killed by signal KILL");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    kill_group(pid);
    assert!(matches!(
        link.join(Duration::from_secs(1)).await,
        LinkEnd::Lost { .. }
    ));
}

#[tokio::test]
async fn a_missing_agent_binary_fails_the_handshake_saying_so() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::with_agent("/nonexistent/eventor-agent") else {
        return;
    };
    let names = vec!["node1".to_string(), "node9".to_string()];
    let (tx, _rx) = mpsc::channel(16);
    let settings = bed.settings("cluster-test");
    let token = CancellationToken::new();
    let results = tokio::time::timeout(WAIT, open_links(&settings, &names, tx, &token))
        .await
        .expect("no hang");
    let errors: Vec<String> = results
        .into_iter()
        .map(|r| r.map(|_| ()).unwrap_err().to_string())
        .collect();
    // This test binary has no agent next to it, so the prime has nothing to install.
    assert!(
        errors[0].starts_with(
            "node1: no agent at /nonexistent/eventor-agent, and this prime has none to install"
        ),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains("No such file or directory"),
        "{}",
        errors[0]
    );
    assert_eq!(errors[1], "node9: not in the hosts file");
}

#[tokio::test]
async fn many_tasks_on_one_link_stream_their_output() {
    let _link = crate::TESTBED_LINK.read();
    let Some(bed) = Bed::new() else { return };
    let (mut links, mut events, _) = bed.connect(&["node1"], &bed.settings("cluster-test")).await;
    let link = links.pop().unwrap();
    let n = 20;
    for i in 0..n {
        let script = format!("for j in 1 2 3 4 5; do echo task {i} line $j; done");
        link.dispatch(command(key("many", &i.to_string()), &script))
            .await
            .unwrap();
    }
    let mut lines: HashMap<String, Vec<String>> = HashMap::new();
    let mut finished = 0;
    while finished < n {
        match next_event(&mut events).await {
            HostEvent::Output { batch, .. } => {
                let seq = lines.entry(batch.task.sequence.clone()).or_default();
                seq.extend(batch.lines().map(str::to_string));
            }
            HostEvent::Finished { end, .. } => {
                let status = end.status;
                assert_eq!(status, EndStatus::Success);
                finished += 1;
            }
            HostEvent::Lost { reason, .. } => panic!("lost: {reason}"),
            _ => {}
        }
    }
    for i in 0..n {
        let want: Vec<String> = (1..=5).map(|j| format!("task {i} line {j}")).collect();
        assert_eq!(lines[&i.to_string()], want);
    }
    link.shutdown("done").await.unwrap();
    assert!(matches!(
        link.join(Duration::from_secs(10)).await,
        LinkEnd::Clean { .. }
    ));
}
