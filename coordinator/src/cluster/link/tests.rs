//! The link over in-memory pipes with a scripted agent: the handshake, events both ways,
//! heartbeats, each way of losing the agent, a clean shutdown, a slow engine, and a
//! handshake that fails. The real agent over real SSH is exercised in `integration/`.

use std::time::{Duration, Instant};

use eventor_protocol::{
    hello, Dispatch, EndStatus, FrameReader, FrameWriter, Heartbeat, Hello, LogLevel, LogRecord,
    Stream, TaskEnd, TaskKey, ToAgent, ToCoordinator, Work,
};
use eventor_store::now_micros;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::channel::{Channel, StderrSource};
use super::*;

const HEARTBEAT: Duration = Duration::from_millis(100);
const LOST_AFTER: Duration = Duration::from_millis(400);

fn config() -> LinkConfig {
    LinkConfig {
        settings: LinkSettings {
            heartbeat: HEARTBEAT,
            lost_after: LOST_AFTER,
            handshake_timeout: Duration::from_secs(2),
            ..LinkSettings::default()
        },
        ..LinkConfig::new("node1", "eventor-agent", "run-1")
    }
}

/// The agent's ends of the pipes.
struct Agent {
    reader: FrameReader<DuplexStream>,
    writer: FrameWriter<DuplexStream>,
    stderr: mpsc::Sender<String>,
    exit: watch::Sender<Option<Result<ExitStatus, String>>>,
}

impl Agent {
    async fn send(&mut self, message: ToCoordinator) {
        self.writer.write_frame(&message).await.expect("agent send");
    }

    /// The next message that is not a heartbeat.
    async fn next(&mut self) -> Option<ToAgent> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.reader.read_frame());
            match frame.await.expect("in time").expect("readable") {
                Some(ToAgent::Heartbeat(_)) => continue,
                other => return other,
            }
        }
    }
}

/// The link's channel and the agent's ends of it.
fn pipes() -> (Channel, Agent) {
    let (link_in, agent_out) = tokio::io::duplex(64 * 1024);
    let (agent_in, link_out) = tokio::io::duplex(64 * 1024);
    let (stderr_tx, stderr_rx) = mpsc::channel(16);
    let (exit_tx, exit_rx) = watch::channel(None);
    let channel = Channel {
        reader: FrameReader::new(Box::new(link_in)),
        writer: FrameWriter::new(Box::new(link_out)),
        stderr: StderrSource::Lines(stderr_rx),
        exit: exit_rx,
    };
    let agent = Agent {
        reader: FrameReader::new(agent_in),
        writer: FrameWriter::new(agent_out),
        stderr: stderr_tx,
        exit: exit_tx,
    };
    (channel, agent)
}

/// A started link, its agent (past the handshake) and the event stream.
async fn started(
    config: LinkConfig,
    events: usize,
) -> (HostLink, Agent, mpsc::Receiver<HostEvent>) {
    let (channel, mut agent) = pipes();
    let (tx, rx) = mpsc::channel(events);
    let link = HostLink::start_on(channel, None, config, tx, CancellationToken::new());
    let greet = async {
        let me = Hello::new(env!("CARGO_PKG_VERSION"), "box-7", vec!["command".into()]);
        hello(
            &mut agent.reader,
            &mut agent.writer,
            &me,
            Duration::from_secs(2),
        )
        .await
    };
    let (link, accept) = tokio::join!(link, greet);
    let accept = accept.expect("agent handshake").accept;
    assert_eq!(accept.run_id, "run-1");
    assert_eq!(accept.host, "node1");
    assert_eq!(accept.heartbeat_interval_ms, 100);
    assert_eq!(accept.limits.max_concurrent_tasks, 0);
    (link.expect("link starts"), agent, rx)
}

fn key(step: &str) -> TaskKey {
    TaskKey {
        run_id: "run-1".into(),
        step: step.into(),
        sequence: "1".into(),
        recovery: 0,
        attempt: 1,
    }
}

async fn next_event(events: &mut mpsc::Receiver<HostEvent>) -> HostEvent {
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv());
    event.await.expect("an event in time").expect("events open")
}

async fn lost_reason(events: &mut mpsc::Receiver<HostEvent>) -> String {
    loop {
        if let HostEvent::Lost { host, reason } = next_event(events).await {
            assert_eq!(host, "node1");
            return reason;
        }
    }
}

#[tokio::test]
async fn events_flow_both_ways() {
    let (link, mut agent, mut events) = started(config(), 16).await;
    assert_eq!(link.hello().host, "box-7");
    let work = Work::Command {
        command: "hostname -I".into(),
        env: vec![],
        cwd: None,
        timeout_ms: None,
    };
    let dispatch = Dispatch {
        key: key("s1"),
        work,
    };
    link.dispatch(dispatch.clone()).await.unwrap();
    assert_eq!(agent.next().await, Some(ToAgent::Dispatch(dispatch)));
    agent
        .send(ToCoordinator::TaskStarted {
            key: key("s1"),
            pid: 42,
        })
        .await;
    let record = LogRecord {
        time: 1,
        level: LogLevel::Info,
        host: "whatever-the-agent-says".into(),
        task: Some(key("s1")),
        stream: Stream::Stdout,
        text: "10.213.0.11".into(),
    };
    agent.send(ToCoordinator::Log(record.clone())).await;
    agent
        .send(ToCoordinator::TaskFinished {
            key: key("s1"),
            end: TaskEnd {
                result: None,
                ..TaskEnd::exited(0)
            },
        })
        .await;
    let message = "no such step".to_string();
    let error = ToCoordinator::Error {
        key: Some(key("s2")),
        message: message.clone(),
    };
    agent.send(error).await;
    let host = "node1".to_string();
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::Started {
            host: host.clone(),
            key: key("s1"),
            pid: 42
        }
    );
    let logged = LogRecord {
        host: host.clone(),
        ..record
    };
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::Log {
            host: host.clone(),
            record: logged
        }
    );
    assert!(matches!(
        next_event(&mut events).await,
        HostEvent::Finished {
            end: TaskEnd {
                status: EndStatus::Success,
                exit_code: Some(0),
                ..
            },
            ..
        }
    ));
    assert_eq!(
        next_event(&mut events).await,
        HostEvent::AgentError {
            host,
            key: Some(key("s2")),
            message
        }
    );
    link.cancel(key("s1")).await.unwrap();
    assert_eq!(agent.next().await, Some(ToAgent::Cancel { key: key("s1") }));
}

#[tokio::test]
async fn heartbeats_keep_an_idle_link_alive() {
    let (link, mut agent, mut events) = started(config(), 16).await;
    let beating = async {
        loop {
            let beat = Heartbeat {
                seq: 0,
                sent_at: now_micros(),
            };
            agent.send(ToCoordinator::Heartbeat(beat)).await;
            tokio::time::sleep(HEARTBEAT).await;
        }
    };
    let quiet = tokio::time::timeout(LOST_AFTER * 3, events.recv());
    tokio::select! {
        _ = beating => unreachable!(),
        event = quiet => assert!(event.is_err(), "unexpected event {event:?}"),
    }
    // The link beat too: a dozen intervals passed, all of them idle.
    let mut beats = 0;
    while let Ok(Ok(Some(ToAgent::Heartbeat(_)))) =
        tokio::time::timeout(Duration::from_millis(10), agent.reader.read_frame()).await
    {
        beats += 1;
    }
    assert!(beats >= 8, "only {beats} heartbeats from the link");
    assert!(link.lost().is_none());
}

#[tokio::test]
async fn a_silent_agent_is_lost_after_lost_after() {
    let (link, _agent, mut events) = started(config(), 16).await;
    let t = Instant::now();
    assert_eq!(lost_reason(&mut events).await, "no heartbeat for 400ms");
    let took = t.elapsed();
    assert!(
        took >= LOST_AFTER && took < LOST_AFTER + Duration::from_millis(300),
        "{took:?}"
    );
    let err = link.dispatch(Dispatch {
        key: key("s1"),
        work: Work::Closure { step: "s1".into() },
    });
    let err = err.await.unwrap_err();
    assert_eq!(err.to_string(), "node1: link lost: no heartbeat for 400ms");
    assert_eq!(
        link.join(Duration::from_secs(1)).await,
        LinkEnd::Lost {
            reason: "no heartbeat for 400ms".into()
        }
    );
}

#[tokio::test]
async fn an_agent_that_exits_is_lost_with_its_status_after_its_last_words() {
    let (link, mut agent, mut events) = started(config(), 16).await;
    agent
        .stderr
        .send("thread 'main' panicked".into())
        .await
        .unwrap();
    drop(agent.stderr);
    agent.writer.shutdown().await.unwrap();
    agent.exit.send(Some(Ok(ExitStatus::Code(101)))).unwrap();
    let HostEvent::Log { record, .. } = next_event(&mut events).await else {
        panic!("expected the stderr line first");
    };
    assert_eq!(
        (record.stream, record.text.as_str()),
        (Stream::Agent, "thread 'main' panicked")
    );
    assert_eq!(record.task, None);
    assert_eq!(
        lost_reason(&mut events).await,
        "agent exited with status 101"
    );
    assert!(matches!(
        link.join(Duration::from_secs(1)).await,
        LinkEnd::Lost { .. }
    ));
}

#[tokio::test]
async fn a_torn_frame_or_a_dropped_connection_is_lost() {
    let (_link, agent, mut events) = started(config(), 16).await;
    let mut inner = agent.writer.into_inner();
    inner.write_all(b"EVTR\x00\x01").await.unwrap();
    inner.shutdown().await.unwrap();
    agent
        .exit
        .send(Some(Err("ssh connection lost".into())))
        .unwrap();
    assert_eq!(
        lost_reason(&mut events).await,
        "channel closed inside a frame: 6 of 12 bytes arrived (ssh connection lost)"
    );
}

#[tokio::test]
async fn shutdown_ends_cleanly_after_the_agents_last_reports() {
    let (link, mut agent, mut events) = started(config(), 16).await;
    link.shutdown("run over").await.unwrap();
    let closed = link.dispatch(Dispatch {
        key: key("s9"),
        work: Work::Closure { step: "s9".into() },
    });
    assert_eq!(
        closed.await.unwrap_err().to_string(),
        "node1: link is shutting down"
    );
    assert_eq!(
        agent.next().await,
        Some(ToAgent::Shutdown {
            reason: "run over".into()
        })
    );
    assert_eq!(
        agent.next().await,
        None,
        "the link closes its end after Shutdown"
    );
    agent
        .send(ToCoordinator::TaskFinished {
            key: key("s1"),
            end: TaskEnd {
                error: None,
                ..TaskEnd::cancelled("")
            },
        })
        .await;
    agent.writer.shutdown().await.unwrap();
    agent.exit.send(Some(Ok(ExitStatus::Code(0)))).unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        HostEvent::Finished {
            end: TaskEnd {
                status: EndStatus::Cancelled,
                ..
            },
            ..
        }
    ));
    let end = link.join(Duration::from_secs(2)).await;
    assert_eq!(
        end,
        LinkEnd::Clean {
            exit: Some(ExitStatus::Code(0))
        }
    );
    assert!(events.recv().await.is_none(), "no Lost after a clean end");
}

#[tokio::test]
async fn an_agent_that_does_not_finish_is_abandoned_after_the_grace() {
    let (link, mut agent, _events) = started(config(), 16).await;
    link.shutdown("bye").await.unwrap();
    let beating = async {
        loop {
            let beat = Heartbeat { seq: 0, sent_at: 0 };
            agent.send(ToCoordinator::Heartbeat(beat)).await;
            tokio::time::sleep(HEARTBEAT).await;
        }
    };
    let t = Instant::now();
    let end = tokio::select! {
        end = link.join(Duration::from_millis(300)) => end,
        _ = beating => unreachable!(),
    };
    assert_eq!(
        end,
        LinkEnd::Abandoned {
            after: Duration::from_millis(300)
        }
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_slow_engine_is_not_taken_for_a_dead_agent() {
    // One event fits; the agent sends many, then keeps beating. Nobody reads for a while.
    let (link, mut agent, mut events) = started(config(), 1).await;
    let flood = async {
        for i in 0..50 {
            let record = LogRecord {
                time: i,
                level: LogLevel::Info,
                host: String::new(),
                task: None,
                stream: Stream::Agent,
                text: format!("line {i}"),
            };
            agent.send(ToCoordinator::Log(record)).await;
        }
        loop {
            let beat = Heartbeat { seq: 0, sent_at: 0 };
            agent.send(ToCoordinator::Heartbeat(beat)).await;
            tokio::time::sleep(HEARTBEAT).await;
        }
    };
    tokio::select! {
        _ = flood => unreachable!(),
        _ = tokio::time::sleep(LOST_AFTER * 3) => {}
    }
    for i in 0..50 {
        let HostEvent::Log { record, .. } = next_event(&mut events).await else {
            panic!("expected log {i}");
        };
        assert_eq!(record.text, format!("line {i}"));
    }
    assert!(link.lost().is_none());
}

#[tokio::test]
async fn a_waiting_dispatch_is_released_when_the_link_is_lost() {
    // The engine is stuck in `dispatch` and reads no events; the agent reads nothing and
    // goes silent. The loss must free the dispatch, and `Lost` must still arrive.
    let mut config = config();
    config.settings.outbox = 1;
    let (link, mut agent, mut events) = started(config, 1).await;
    let record = LogRecord {
        time: 0,
        level: LogLevel::Info,
        host: String::new(),
        task: None,
        stream: Stream::Agent,
        text: "fills the event channel".into(),
    };
    agent.send(ToCoordinator::Log(record)).await;
    let big = Work::Command {
        command: "x".repeat(32 * 1024),
        env: vec![],
        cwd: None,
        timeout_ms: None,
    };
    let t = Instant::now();
    let stuck = async {
        for i in 0.. {
            let dispatch = Dispatch {
                key: key(&format!("s{i}")),
                work: big.clone(),
            };
            if let Err(e) = link.dispatch(dispatch).await {
                return e;
            }
        }
        unreachable!()
    };
    let err = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("dispatch released");
    assert!(matches!(err, LinkError::Lost { .. }), "{err}");
    assert!(
        t.elapsed() < LOST_AFTER + Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(
        next_event(&mut events).await,
        HostEvent::Log { .. }
    ));
    let reason = lost_reason(&mut events).await;
    assert!(
        reason == "no heartbeat for 400ms" || reason == "writing to the agent stalled for 400ms",
        "{reason}"
    );
    drop(agent);
}

#[tokio::test]
async fn a_banner_on_stdout_fails_the_handshake_with_the_agents_stderr() {
    let (channel, agent) = pipes();
    let (tx, _rx) = mpsc::channel(4);
    let script = async {
        agent
            .stderr
            .send("bash: warning: setlocale".into())
            .await
            .unwrap();
        let mut out = agent.writer.into_inner();
        out.write_all(b"Welcome to node1\n").await.unwrap();
        out.shutdown().await.unwrap();
        drop(agent.stderr);
        agent.exit.send(Some(Ok(ExitStatus::Code(1)))).unwrap();
    };
    let start = HostLink::start_on(channel, None, config(), tx, CancellationToken::new());
    let (result, ()) = tokio::join!(start, script);
    let err = result.unwrap_err();
    assert_eq!(
        err.to_string(),
        "node1: agent handshake failed (agent exited with status 1); agent stderr: bash: warning: setlocale"
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.starts_with("not an eventor frame"), "{cause}");
}

/// The handshake's outcome with an agent saying `hello`.
async fn start_with(config: LinkConfig, me: Hello) -> Result<HostLink, LinkError> {
    let (channel, mut agent) = pipes();
    let (tx, _rx) = mpsc::channel(4);
    let link = HostLink::start_on(channel, None, config, tx, CancellationToken::new());
    let greet = hello(
        &mut agent.reader,
        &mut agent.writer,
        &me,
        Duration::from_secs(2),
    );
    let (link, _) = tokio::join!(link, greet);
    link
}

#[tokio::test]
async fn an_agent_of_another_version_is_refused_when_the_primes_own_is_due() {
    let other = || Hello::new("0.0.1-other", "box-7", vec!["command".into()]);
    let strict = LinkConfig {
        same_version: true,
        ..config()
    };
    let Err(err) = start_with(strict.clone(), other()).await else {
        panic!("an agent of another version was taken under deploy: auto");
    };
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        cause.contains("the agent is version 0.0.1-other, this prime"),
        "{cause}"
    );
    assert!(start_with(config(), other()).await.is_ok(), "deploy: never");
    let mine = Hello::new(env!("CARGO_PKG_VERSION"), "box-7", vec!["command".into()]);
    assert!(start_with(strict.clone(), mine).await.is_ok());
    let survivor = Hello::new(
        "0.0.1-other",
        "box-7",
        vec![eventor_protocol::ADOPTED.into()],
    );
    assert_eq!(start::check_version(&survivor, &strict), Ok(()));
}

#[tokio::test]
async fn shutdown_token_cancels_a_handshake_in_progress() {
    let (channel, _agent) = pipes();
    let (tx, _rx) = mpsc::channel(4);
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    });
    let t = Instant::now();
    let err = HostLink::start_on(channel, None, config(), tx, token)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "node1: cancelled");
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn dropping_the_link_closes_the_agents_input() {
    let (link, mut agent, _events) = started(config(), 16).await;
    drop(link);
    assert_eq!(agent.next().await, None);
}

#[test]
fn settings_are_checked() {
    let check = |lost_after: u64| {
        let mut config = LinkConfig::new("n", "a", "r");
        config.settings.lost_after = Duration::from_secs(lost_after);
        config.check().map_err(|e| e.to_string())
    };
    assert_eq!(check(5), Ok(()));
    assert_eq!(check(10), Ok(()));
    assert_eq!(
        check(11),
        Err("n: bad link settings: lost_after must be longer than the heartbeat (1s) and at most 10s, found 11s".into())
    );
    assert!(check(1).is_err());
}

#[test]
fn a_polite_end_only_moves_forward() {
    let phase = PhaseCell::default();
    assert!(!phase.reached(Phase::Closing));
    phase.advance(Phase::ShutdownSent);
    phase.advance(Phase::Closing);
    assert!(phase.reached(Phase::Closing));
    assert!(phase.reached(Phase::ShutdownSent));
    assert!(!phase.reached(Phase::EndedClean));
}

/// An agent's line is taken with its own level and without it; a line of another shape
/// (a panic) is a warning as it stands.
#[test]
fn an_agents_line_gives_its_level_and_keeps_its_words() {
    use super::loops::agent_line;
    assert_eq!(
        agent_line("  INFO accepted by the coordinator run_id=W".into()),
        (
            LogLevel::Info,
            "accepted by the coordinator run_id=W".into()
        )
    );
    assert_eq!(
        agent_line("ERROR cannot record".into()),
        (LogLevel::Error, "cannot record".into())
    );
    let panic = "thread 'main' panicked at src/main.rs:1:1".to_string();
    assert_eq!(agent_line(panic.clone()), (LogLevel::Warn, panic));
}
