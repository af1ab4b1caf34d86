//! The `eventor-agent` binary against a scripted prime: this test plays the coordinator over
//! the agent's stdin and stdout with `eventor_protocol`, as the prime does over SSH.
//!
//! Covered: the handshake; a command's start, output (in order) and end; failures; the
//! concurrency limit; cancel and timeout stopping a whole process group; results recorded
//! in an SQLite store; a prime that goes away mid-task; an output flood against a slow
//! reader (every line arrives); another major version; bytes that are not frames.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventor_protocol::{
    Accept, Dispatch, EndStatus, FrameConfig, FrameReader, FrameWriter, Hello, Limits, LogLevel,
    LogRecord, ProtocolError, ProtocolVersion, Stream, TaskKey, ToAgent, ToCoordinator, Work,
};
use eventor_store::{
    Batch, Change, NewRun, RunKey, RunMode, Store, StoreLocation, TaskRecord, TaskStatus, Writer,
};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::agent_binary;

/// The longest any single wait in these tests may take before it counts as a hang.
const WAIT: Duration = Duration::from_secs(20);

const RUN_ID: &str = "r1";

/// One `eventor-agent` process and the prime's ends of its stdin and stdout.
struct Agent {
    child: Child,
    pid: u32,
    reader: FrameReader<ChildStdout>,
    writer: Option<FrameWriter<ChildStdin>>,
    stderr: PathBuf,
}

impl Agent {
    /// Starts the agent with `args`; its stderr goes to a file in `dir`.
    fn spawn(dir: &Path, args: &[&str]) -> Agent {
        Agent::spawn_with(dir, args, FrameConfig::default())
    }

    /// Starts the agent, framing the prime's side with `config`.
    fn spawn_with(dir: &Path, args: &[&str], config: FrameConfig) -> Agent {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let stderr = dir.join(format!("agent-{n}.stderr"));
        let mut child = Command::new(agent_binary())
            .args(args)
            .env("RUST_LOG", "info")
            // Each test's agents wait for a next prime in a den of their own.
            .env("XDG_RUNTIME_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start eventor-agent");
        let pid = child.id().expect("agent pid");
        let reader = FrameReader::with_config(child.stdout.take().expect("stdout"), config);
        let writer = FrameWriter::with_config(child.stdin.take().expect("stdin"), config);
        Agent {
            child,
            pid,
            reader,
            writer: Some(writer),
            stderr,
        }
    }

    /// Plays the prime's side of the handshake: accepts the agent for run `r1`.
    async fn accept(&mut self) -> Hello {
        let writer = self.writer.as_mut().expect("stdin open");
        let accept = Accept {
            run_id: RUN_ID.into(),
            host: "worker-1".into(),
            heartbeat_interval_ms: 5_000,
            limits: Limits {
                max_frame_bytes: 1 << 24,
                max_concurrent_tasks: 0,
            },
        };
        let (hello, _) =
            eventor_protocol::accept(&mut self.reader, writer, WAIT, |_| Ok(accept.into()))
                .await
                .expect("handshake");
        hello
    }

    async fn send(&mut self, message: ToAgent) {
        let writer = self.writer.as_mut().expect("stdin open");
        writer.write_frame(&message).await.expect("send to agent");
    }

    async fn dispatch(&mut self, key: &TaskKey, work: Work) {
        let dispatch = Dispatch {
            key: key.clone(),
            work,
        };
        self.send(ToAgent::Dispatch(dispatch)).await;
    }

    /// The next message that is not a heartbeat; `None` at the end of the agent's stdout.
    async fn next(&mut self) -> Option<ToCoordinator> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.reader.read_frame()).await;
            match frame.expect("agent answers in time").expect("readable") {
                Some(ToCoordinator::Heartbeat(_)) => continue,
                other => return other,
            }
        }
    }

    /// Every message about `key` up to and including its `TaskFinished`.
    async fn until_finished(&mut self, key: &TaskKey) -> Vec<ToCoordinator> {
        let mut seen = Vec::new();
        loop {
            let message = self.next().await.expect("agent still talking");
            if message.key() != Some(key) {
                continue;
            }
            let last = matches!(message, ToCoordinator::TaskFinished { .. });
            seen.push(message);
            if last {
                return seen;
            }
        }
    }

    /// Writes `bytes` as they are, then closes the agent's stdin.
    async fn write_raw(&mut self, bytes: &[u8]) {
        let writer = self.writer.take().expect("stdin open");
        let mut stdin = writer.into_inner();
        stdin.write_all(bytes).await.expect("write raw bytes");
        stdin.flush().await.expect("flush raw bytes");
    }

    /// Closes the agent's stdin, as a prime that dies does.
    fn close_stdin(&mut self) {
        self.writer = None;
    }

    async fn shutdown(&mut self) {
        let reason = "test over".to_string();
        self.send(ToAgent::Shutdown { reason }).await;
    }

    /// Waits for the agent to exit; its status and stderr.
    async fn exit(mut self) -> (ExitStatus, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("agent exits in time")
            .expect("wait for agent");
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        (status, stderr)
    }
}

fn key(step: &str, sequence: &str) -> TaskKey {
    TaskKey {
        run_id: RUN_ID.into(),
        step: step.into(),
        sequence: sequence.into(),
        recovery: 0,
        attempt: 1,
    }
}

fn shell(command: &str) -> Work {
    Work::Command {
        command: command.into(),
        env: Vec::new(),
        cwd: None,
        timeout_ms: None,
    }
}

/// The `TaskFinished` at the end of `messages`: status, exit code, result, error.
fn finished(
    messages: &[ToCoordinator],
) -> (EndStatus, Option<i32>, Option<String>, Option<String>) {
    match messages.last() {
        Some(ToCoordinator::TaskFinished { end, .. }) => (
            end.status,
            end.exit_code,
            end.result.clone(),
            end.error.clone(),
        ),
        other => panic!("expected TaskFinished last, got {other:?}"),
    }
}

fn started_pid(messages: &[ToCoordinator]) -> u32 {
    match messages.first() {
        Some(ToCoordinator::TaskStarted { pid, .. }) => *pid,
        other => panic!("expected TaskStarted first, got {other:?}"),
    }
}

/// The lines of `stream`, each as the record it stands for: a `Log`, or one line of an
/// `Output` batch (whose host is the link's, so it says `batch`).
fn logs(messages: &[ToCoordinator], stream: Stream) -> Vec<LogRecord> {
    messages.iter().flat_map(|m| records(m, stream)).collect()
}

fn records(message: &ToCoordinator, stream: Stream) -> Vec<LogRecord> {
    match message {
        ToCoordinator::Log(record) if record.stream == stream => vec![record.clone()],
        ToCoordinator::Output(batch) if batch.stream == stream => {
            let record = |text: &str| LogRecord {
                time: batch.time,
                level: LogLevel::Info,
                host: "batch".into(),
                task: Some(batch.task.clone()),
                stream,
                text: text.into(),
            };
            batch.lines().map(record).collect()
        }
        _ => Vec::new(),
    }
}

fn texts(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.text.clone()).collect()
}

/// Live (not zombie) processes whose process group is `pgid`, from /proc.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // After "(comm)": state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && !matches!(fields[0], "Z" | "X") && fields[2] == pgid.to_string()
        })
        .collect()
}

/// Waits (briefly) for process group `pgid` to be empty; its members if it never is.
async fn group_gone(pgid: u32) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let members = group_members(pgid);
        if members.is_empty() || Instant::now() > deadline {
            return members;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A store with run `r1` and an `active` row (attempt 1) for each of `steps` in sequence 1,
/// as the prime leaves it when it dispatches them.
async fn store_with_active_tasks(path: &Path, steps: &[&str]) -> Store {
    let store = Store::open(&StoreLocation::Sqlite(path.to_path_buf()))
        .await
        .expect("open store");
    let run = RunKey {
        run_id: Arc::from(RUN_ID),
        recovery: 0,
    };
    let now = eventor_store::now_micros();
    store
        .begin_run(NewRun {
            key: run.clone(),
            name: "cluster-flow".into(),
            mode: RunMode::Restart,
            host: "prime".into(),
            program: "{}".into(),
            started_at: now,
            params: Default::default(),
            env_from_prime: Vec::new(),
        })
        .await
        .expect("begin run");
    let changes = steps
        .iter()
        .map(|step| Change::TaskCreated {
            step: Arc::from(*step),
            sequence: Arc::from("1"),
            status: TaskStatus::Active,
            attempt: 1,
            host: Some(Arc::from("worker-1")),
            at: now,
        })
        .collect();
    store
        .commit(Batch {
            run,
            changes,
            writer: Writer::Coordinator,
        })
        .await
        .expect("tasks created");
    store
}

async fn stored_task(store: &Store, step: &str) -> TaskRecord {
    let run = RunKey {
        run_id: Arc::from(RUN_ID),
        recovery: 0,
    };
    let tasks = store.tasks(run).await.expect("read tasks");
    tasks
        .into_iter()
        .find(|t| t.step == step)
        .expect("task row")
}

#[tokio::test]
async fn agent_runs_a_command_and_reports_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &["--host-name", "test-host"]);
    let hello = agent.accept().await;
    assert_eq!(hello.protocol, ProtocolVersion::CURRENT);
    assert_eq!(hello.host, "test-host");
    assert!(hello.capabilities.iter().any(|c| c == "command"));
    assert!(!hello.capabilities.iter().any(|c| c == "records-results"));

    let task = key("s1", "7");
    let command = "printf 'one\\ntwo\\n'; echo oops >&2; \
                   echo \"$EVENTOR_STEP_NAME $EVENTOR_STEP_SEQUENCE $EVENTOR_STEP_RECOVERY $GREETING\"";
    let work = Work::Command {
        command: command.into(),
        env: vec![("GREETING".into(), "hi".into())],
        cwd: None,
        timeout_ms: None,
    };
    agent.dispatch(&task, work).await;
    let messages = agent.until_finished(&task).await;

    assert!(started_pid(&messages) > 0);
    let stdout = logs(&messages, Stream::Stdout);
    assert_eq!(texts(&stdout), ["one", "two", "s1 7 0 hi"]);
    assert_eq!(texts(&logs(&messages, Stream::Stderr)), ["oops"]);
    for record in stdout {
        assert_eq!(record.host, "batch", "a 1.2 prime gets batches");
        assert_eq!(record.task.as_ref(), Some(&task));
        assert!(
            record.time > 1_600_000_000_000_000,
            "micros since the epoch"
        );
    }
    assert_eq!(
        finished(&messages),
        (EndStatus::Success, Some(0), Some("0".into()), None)
    );

    agent.shutdown().await;
    assert_eq!(agent.next().await, None, "the agent closes its stdout");
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn failures_carry_their_exit_code_or_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &[]);
    agent.accept().await;

    let exits = key("exits", "1");
    agent.dispatch(&exits, shell("echo before; exit 3")).await;
    let messages = agent.until_finished(&exits).await;
    assert_eq!(texts(&logs(&messages, Stream::Stdout)), ["before"]);
    let error = Some("exited with status 3".to_string());
    assert_eq!(
        finished(&messages),
        (EndStatus::Failure, Some(3), Some("3".into()), error)
    );

    let unknown = key("nope", "1");
    let closure = Work::Closure {
        step: "nope".into(),
    };
    agent.dispatch(&unknown, closure).await;
    let messages = agent.until_finished(&unknown).await;
    let error = Some("no closure step `nope` in this program".to_string());
    assert_eq!(finished(&messages), (EndStatus::Failure, None, None, error));

    agent.shutdown().await;
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn max_concurrent_holds_and_the_rest_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &["--max-concurrent", "2"]);
    agent.accept().await;
    // The commands log their own starts and ends: the limit counts running commands (a
    // task's slot is free once its command exits, while its end is still being recorded).
    let log = dir.path().join("order.txt");
    let keys: Vec<TaskKey> = (1..=4).map(|n| key("nap", &n.to_string())).collect();
    for task in &keys {
        let n = &task.sequence;
        let script = format!(
            "echo start {n} >> {log}; sleep 0.3; echo end {n} >> {log}",
            log = log.display()
        );
        agent.dispatch(task, shell(&script)).await;
    }
    let mut ended = 0;
    while ended < keys.len() {
        if let ToCoordinator::TaskFinished { end, .. } = agent.next().await.unwrap() {
            let status = end.status;
            assert_eq!(status, EndStatus::Success);
            ended += 1;
        }
    }

    // Judge by the order of starts and ends, not by the clock.
    let order: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let (mut running, mut most) = (0i32, 0i32);
    for line in &order {
        running += if line.starts_with("start") { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(most, 2, "{order:?}");
    let third_start = order.iter().position(|e| e == "start 3").unwrap();
    let first_end = order.iter().position(|e| e.starts_with("end")).unwrap();
    assert!(first_end < third_start, "{order:?}");

    agent.shutdown().await;
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn waiting_tasks_are_cancelled_or_refused_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &["--max-concurrent", "1"]);
    agent.accept().await;
    let (first, second, third) = (key("a", "1"), key("b", "1"), key("c", "1"));
    agent.dispatch(&first, shell("sleep 0.5")).await;
    agent.dispatch(&second, shell("echo never")).await;
    // The same key again is a protocol problem, not a second task.
    agent.dispatch(&second, shell("echo never")).await;
    // The first task's TaskStarted may come before or after the Error, as the spawn goes.
    let (key, message) = loop {
        match agent.next().await {
            Some(ToCoordinator::TaskStarted { key, .. }) if key == first => continue,
            Some(ToCoordinator::Error { key, message }) => break (key, message),
            other => panic!("expected an Error for the duplicate, got {other:?}"),
        }
    };
    assert_eq!(key.as_ref(), Some(&second));
    assert!(message.contains("already running or waiting"), "{message}");

    agent
        .send(ToAgent::Cancel {
            key: second.clone(),
        })
        .await;
    let messages = agent.until_finished(&second).await;
    assert_eq!(
        messages.len(),
        1,
        "no TaskStarted for a task that never ran"
    );
    let error = Some("cancelled by the coordinator before it started".to_string());
    assert_eq!(
        finished(&messages),
        (EndStatus::Cancelled, None, None, error)
    );

    agent.shutdown().await;
    agent.dispatch(&third, shell("echo never")).await;
    let messages = agent.until_finished(&third).await;
    let error = Some("the agent is shutting down and takes no new work".to_string());
    assert_eq!(
        finished(&messages),
        (EndStatus::Cancelled, None, None, error)
    );

    // Shutdown drains: the running task still ends by itself.
    let messages = agent.until_finished(&first).await;
    assert_eq!(finished(&messages).0, EndStatus::Success);
    assert_eq!(agent.next().await, None);
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn sigterm_stops_the_running_commands_and_leaves_no_child() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &["--kill-grace", "1s"]);
    agent.accept().await;
    let task = key("forever", "1");
    agent.dispatch(&task, shell("sleep 30")).await;
    let Some(ToCoordinator::TaskStarted { pid, .. }) = agent.next().await else {
        panic!("expected TaskStarted");
    };
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &agent.pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());

    let messages = agent.until_finished(&task).await;
    let error = Some("the agent was stopped".to_string());
    assert_eq!(
        finished(&messages),
        (EndStatus::Cancelled, None, None, error)
    );
    assert_eq!(agent.next().await, None);
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
    assert_eq!(group_members(pid), Vec::<u32>::new());
}

#[tokio::test]
async fn cancel_stops_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &["--kill-grace", "1s"]);
    agent.accept().await;
    let task = key("long", "1");
    let work = Work::Command {
        command: "sleep 30 & echo $! > bg.pid; wait".into(),
        env: Vec::new(),
        cwd: Some(dir.path().to_str().unwrap().into()),
        timeout_ms: None,
    };
    agent.dispatch(&task, work).await;
    let Some(ToCoordinator::TaskStarted { pid, .. }) = agent.next().await else {
        panic!("expected TaskStarted");
    };
    let bg_file = dir.path().join("bg.pid");
    let deadline = Instant::now() + WAIT;
    let background: u32 = loop {
        let text = std::fs::read_to_string(&bg_file).unwrap_or_default();
        if let Ok(pid) = text.trim().parse() {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the background child never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(group_members(pid).contains(&background));

    agent.send(ToAgent::Cancel { key: task.clone() }).await;
    let messages = agent.until_finished(&task).await;
    let error = Some("cancelled by the coordinator".to_string());
    assert_eq!(
        finished(&messages),
        (EndStatus::Cancelled, None, None, error)
    );
    assert_eq!(group_gone(pid).await, Vec::<u32>::new());

    // A cancel of a task that is not there is ignored.
    agent
        .send(ToAgent::Cancel {
            key: key("ghost", "1"),
        })
        .await;
    agent.shutdown().await;
    assert_eq!(agent.next().await, None);
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn a_timeout_stops_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &["--kill-grace", "1s"]);
    agent.accept().await;
    let task = key("slow", "1");
    let work = Work::Command {
        command: "sleep 30".into(),
        env: Vec::new(),
        cwd: None,
        timeout_ms: Some(300),
    };
    agent.dispatch(&task, work).await;
    let messages = agent.until_finished(&task).await;
    let pid = started_pid(&messages);
    let error = Some("timed out after 300ms".to_string());
    assert_eq!(
        finished(&messages),
        (EndStatus::TimedOut, None, None, error)
    );
    assert_eq!(group_gone(pid).await, Vec::<u32>::new());

    agent.shutdown().await;
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn results_are_recorded_in_the_store_before_they_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = store_with_active_tasks(&db, &["ok", "bad"]).await;
    let store_arg = format!("sqlite:{}", db.display());
    let mut agent = Agent::spawn(dir.path(), &["--store", &store_arg]);
    let hello = agent.accept().await;
    assert!(hello.capabilities.iter().any(|c| c == "records-results"));

    let ok = key("ok", "1");
    agent.dispatch(&ok, shell("echo fine")).await;
    agent.until_finished(&ok).await;
    let row = stored_task(&store, "ok").await;
    assert_eq!(
        (row.status, row.result.as_deref(), row.error.as_deref()),
        (TaskStatus::Success, Some("0"), None)
    );

    let bad = key("bad", "1");
    agent.dispatch(&bad, shell("echo no; exit 4")).await;
    agent.until_finished(&bad).await;
    let row = stored_task(&store, "bad").await;
    assert_eq!(
        (row.status, row.result.as_deref(), row.error.as_deref()),
        (TaskStatus::Failure, Some("4"), Some("exited with status 4"))
    );

    // No active row at this attempt: another writer decided first. The agent says so and
    // reports the end anyway.
    let stray = key("stray", "1");
    agent.dispatch(&stray, shell("true")).await;
    let messages = agent.until_finished(&stray).await;
    let notes = texts(&logs(&messages, Stream::Agent));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("another writer decided first")),
        "{notes:?}"
    );
    assert_eq!(finished(&messages).0, EndStatus::Success);

    agent.shutdown().await;
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn a_lost_prime_does_not_lose_the_running_task() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = store_with_active_tasks(&db, &["late"]).await;
    let store_arg = format!("sqlite:{}", db.display());
    let mut agent = Agent::spawn(dir.path(), &["--store", &store_arg]);
    agent.accept().await;
    let task = key("late", "1");
    agent.dispatch(&task, shell("sleep 0.5; echo done")).await;
    let Some(ToCoordinator::TaskStarted { pid, .. }) = agent.next().await else {
        panic!("expected TaskStarted");
    };

    // The prime dies: its end of the agent's stdin closes.
    agent.close_stdin();
    let messages = agent.until_finished(&task).await;
    assert_eq!(texts(&logs(&messages, Stream::Stdout)), ["done"]);
    assert_eq!(finished(&messages).0, EndStatus::Success);
    assert_eq!(agent.next().await, None, "then the agent closes its stdout");
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("the coordinator is gone"), "{stderr}");

    let row = stored_task(&store, "late").await;
    assert_eq!(row.status, TaskStatus::Success);
    assert_eq!(group_members(pid), Vec::<u32>::new());
}

#[tokio::test]
async fn an_output_flood_against_a_slow_reader_costs_bounded_memory() {
    // 248 756 lines of 200 bytes and one cut short (44 bytes, no newline).
    const LINES: u64 = 248_757;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &[]);
    agent.accept().await;
    let task = key("flood", "1");
    let work = Work::Command {
        command: "yes \"$(printf '%0200d' 0)\" | head -c 50000000".into(),
        env: Vec::new(),
        cwd: None,
        timeout_ms: Some(30_000),
    };
    agent.dispatch(&task, work).await;

    let (mut lines, mut frames, mut most_rss) = (0u64, 0u64, 0u64);
    let mut agent_records = Vec::new();
    let status = loop {
        frames += 1;
        if frames % 256 == 0 {
            most_rss = most_rss.max(rss_kib(agent.pid));
            // A slow prime: the agent must wait for it (back-pressure), not drop or hoard.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match agent.next().await.expect("agent still talking") {
            ToCoordinator::TaskFinished { end, .. } => break end.status,
            message => {
                lines += records(&message, Stream::Stdout).len() as u64;
                let diagnostics = records(&message, Stream::Agent);
                agent_records.extend(diagnostics.into_iter().map(|r| r.text));
            }
        }
    };
    assert_eq!(
        status,
        EndStatus::Success,
        "the flood must end by itself: the command runner has to read output while the \
         command runs, or a full pipe blocks it"
    );
    assert!(
        !agent_records.iter().any(|t| t.contains("dropped")),
        "no line may be dropped: {agent_records:?}"
    );
    assert_eq!(
        lines, LINES,
        "every line arrives: output is back-pressured end to end"
    );
    assert!(
        most_rss < 100 * 1024,
        "agent RSS reached {most_rss} KiB during the flood"
    );

    agent.shutdown().await;
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn a_prime_of_1_1_gets_a_log_record_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let older = FrameConfig {
        version: ProtocolVersion { major: 1, minor: 1 },
        ..FrameConfig::default()
    };
    let mut agent = Agent::spawn_with(dir.path(), &[], older);
    agent.accept().await;
    let task = key("old", "1");
    agent.dispatch(&task, shell("printf 'a\\nb\\nc\\n'")).await;
    let messages = agent.until_finished(&task).await;
    assert!(
        !messages
            .iter()
            .any(|m| matches!(m, ToCoordinator::Output(_))),
        "no 1.2 message to a 1.1 prime: {messages:?}"
    );
    let stdout = logs(&messages, Stream::Stdout);
    assert_eq!(texts(&stdout), ["a", "b", "c"]);
    assert!(stdout.iter().all(|r| r.host == "worker-1"), "{stdout:?}");
    agent.shutdown().await;
    let (status, stderr) = agent.exit().await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn a_coordinator_of_another_major_version_is_refused_by_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let future = FrameConfig {
        version: ProtocolVersion { major: 2, minor: 0 },
        ..FrameConfig::default()
    };
    let mut agent = Agent::spawn_with(dir.path(), &[], future);
    let writer = agent.writer.as_mut().expect("stdin open");
    let refused = eventor_protocol::accept(&mut agent.reader, writer, WAIT, |_| {
        Err("not reached".to_string())
    })
    .await;
    let error = refused.expect_err("the versions differ");
    assert!(
        matches!(
            error,
            ProtocolError::VersionMismatch {
                agent: 1,
                coordinator: 2
            }
        ),
        "{error}"
    );
    let (status, stderr) = agent.exit().await;
    assert!(!status.success());
    assert!(
        stderr.contains(
            "handshake with the coordinator failed: agent speaks protocol 1, coordinator 2"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_frames_end_the_agent_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &[]);
    let hello = agent.reader.read_frame::<Hello>().await.expect("hello");
    assert!(hello.is_some());
    agent
        .write_raw(b"Welcome to Ubuntu 24.04 LTS\r\n\r\n * Documentation:\n")
        .await;
    let (status, stderr) = agent.exit().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not an eventor frame"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn garbage_mid_run_drains_the_running_task_then_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::spawn(dir.path(), &[]);
    agent.accept().await;
    let task = key("busy", "1");
    agent.dispatch(&task, shell("sleep 0.3; echo done")).await;
    assert!(matches!(
        agent.next().await,
        Some(ToCoordinator::TaskStarted { .. })
    ));
    agent
        .write_raw(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8])
        .await;

    let Some(ToCoordinator::Error { key: None, message }) = agent.next().await else {
        panic!("expected an Error about the stream");
    };
    assert!(message.contains("not an eventor frame"), "{message}");
    let messages = agent.until_finished(&task).await;
    assert_eq!(finished(&messages).0, EndStatus::Success);
    assert_eq!(agent.next().await, None);
    let (status, stderr) = agent.exit().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the channel from the coordinator is broken: not an eventor frame"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
