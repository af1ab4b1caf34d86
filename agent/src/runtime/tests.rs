//! The agent in-process, over a duplex pipe with a scripted prime: closures and their
//! context, cancel of an async closure, a silent prime, and a frame that does not decode.
//! Commands, the store and the binary are exercised end to end in `integration/`.

use std::time::Duration;

use eventor_protocol::{
    Accept, Dispatch, EndStatus, FrameReader, FrameWriter, Limits, StoreAccess, TaskKey, ToAgent,
    ToCoordinator, Welcome, Work,
};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{serve, AgentEnd, AgentError, AgentOptions, AgentSummary, PrimeLoss};
use crate::task::{current_task, StepAction};

struct Prime {
    reader: FrameReader<ReadHalf<DuplexStream>>,
    writer: FrameWriter<WriteHalf<DuplexStream>>,
    agent: JoinHandle<Result<AgentSummary, AgentError>>,
}

impl Prime {
    async fn start(options: AgentOptions, heartbeat_ms: u64) -> Prime {
        Prime::start_with(options, heartbeat_ms, None).await
    }

    /// [`Prime::start`], sending `store` in the welcome when given.
    async fn start_with(
        options: AgentOptions,
        heartbeat_ms: u64,
        store: Option<StoreAccess>,
    ) -> Prime {
        let (agent_end, prime_end) = tokio::io::duplex(64 * 1024);
        let (agent_read, agent_write) = tokio::io::split(agent_end);
        let agent = tokio::spawn(serve(
            agent_read,
            agent_write,
            options,
            CancellationToken::new(),
        ));
        let (read, write) = tokio::io::split(prime_end);
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        let accept = Accept {
            run_id: "run".into(),
            host: "node-1".into(),
            heartbeat_interval_ms: heartbeat_ms,
            limits: Limits {
                max_frame_bytes: 1 << 24,
                max_concurrent_tasks: 8,
            },
        };
        let timeout = Duration::from_secs(5);
        let welcome = Welcome {
            accept,
            store,
            tls: None,
        };
        eventor_protocol::accept(&mut reader, &mut writer, timeout, |_| Ok(welcome))
            .await
            .expect("handshake");
        Prime {
            reader,
            writer,
            agent,
        }
    }

    async fn send(&mut self, message: ToAgent) {
        self.writer.write_frame(&message).await.expect("send");
    }

    async fn closure(&mut self, step: &str, sequence: &str) -> TaskKey {
        let key = key(step, sequence);
        let work = Work::Closure { step: step.into() };
        self.send(ToAgent::Dispatch(Dispatch {
            key: key.clone(),
            work,
        }))
        .await;
        key
    }

    async fn next(&mut self) -> ToCoordinator {
        let frame = tokio::time::timeout(Duration::from_secs(10), self.reader.read_frame());
        frame
            .await
            .expect("in time")
            .expect("readable")
            .expect("open")
    }

    /// The next message that is not a heartbeat.
    async fn next_message(&mut self) -> ToCoordinator {
        loop {
            match self.next().await {
                ToCoordinator::Heartbeat(_) => continue,
                message => return message,
            }
        }
    }

    async fn finished(&mut self, of: &TaskKey) -> (EndStatus, Option<String>, Option<String>) {
        loop {
            if let ToCoordinator::TaskFinished { key, end } = self.next_message().await {
                if key == *of {
                    return (end.status, end.result, end.error);
                }
            }
        }
    }

    async fn end(mut self) -> Result<AgentSummary, AgentError> {
        self.send(ToAgent::Shutdown {
            reason: "test over".into(),
        })
        .await;
        tokio::time::timeout(Duration::from_secs(10), self.agent)
            .await
            .expect("agent ends in time")
            .expect("agent task")
    }
}

fn key(step: &str, sequence: &str) -> TaskKey {
    TaskKey {
        run_id: "run".into(),
        step: step.into(),
        sequence: sequence.into(),
        recovery: 0,
        attempt: 1,
    }
}

fn options_with_closures() -> AgentOptions {
    let steps = [
        (
            "sync",
            StepAction::sync(|task| {
                let seen = current_task().expect("current task in a blocking closure");
                Ok::<_, String>(format!("{}:{}", task.step, seen.sequence))
            }),
        ),
        (
            "async",
            StepAction::future(|task| async move {
                let seen = current_task().expect("current task in an async closure");
                Ok::<_, String>(format!("{}:{}", task.step, seen.sequence))
            }),
        ),
        ("fails", StepAction::sync(|_| Err::<(), _>("no luck"))),
        (
            "boom",
            StepAction::sync(|_| -> Result<(), String> { panic!("kaboom") }),
        ),
        (
            "sleeps",
            StepAction::future(|_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, String>(())
            }),
        ),
    ];
    AgentOptions {
        closures: steps
            .into_iter()
            .map(|(name, action)| (name.to_string(), action))
            .collect(),
        ..no_den()
    }
}

/// The default options, without a den: these agents cannot be re-adopted, and leave
/// nothing in the home directory.
fn no_den() -> AgentOptions {
    AgentOptions {
        den: None,
        ..AgentOptions::default()
    }
}

#[tokio::test]
async fn closures_run_with_their_task_context_and_failures_are_task_failures() {
    let mut prime = Prime::start(options_with_closures(), 5_000).await;
    let cases = [
        ("sync", EndStatus::Success, Some("\"sync:7\""), None),
        ("async", EndStatus::Success, Some("\"async:7\""), None),
        ("fails", EndStatus::Failure, None, Some("no luck")),
        (
            "boom",
            EndStatus::Failure,
            None,
            Some("step panicked: kaboom"),
        ),
        (
            "nope",
            EndStatus::Failure,
            None,
            Some("no closure step `nope` in this program"),
        ),
    ];
    for (step, status, result, error) in cases {
        let key = prime.closure(step, "7").await;
        let got = prime.finished(&key).await;
        let want = (status, result.map(String::from), error.map(String::from));
        assert_eq!(got, want, "{step}");
    }
    let summary = prime.end().await.expect("clean end");
    assert_eq!(
        summary.end,
        AgentEnd::Shutdown {
            reason: "test over".into()
        }
    );
    assert_eq!((summary.succeeded, summary.failed), (2, 3));
}

#[tokio::test]
async fn cancel_stops_an_async_closure() {
    let mut prime = Prime::start(options_with_closures(), 5_000).await;
    let key = prime.closure("sleeps", "1").await;
    let ToCoordinator::TaskStarted { key: started, pid } = prime.next_message().await else {
        panic!("expected TaskStarted first");
    };
    assert_eq!((started, pid), (key.clone(), std::process::id()));
    prime.send(ToAgent::Cancel { key: key.clone() }).await;
    let (status, _, error) = prime.finished(&key).await;
    assert_eq!(status, EndStatus::Cancelled);
    assert_eq!(error.as_deref(), Some("cancelled by the coordinator"));
    assert_eq!(prime.end().await.expect("clean end").cancelled, 1);
}

/// With the default `outwait` the agent outwaits any prime's `lost_after` (so of a blip
/// the prime decides first); with none, three intervals of silence do.
#[tokio::test]
async fn a_silent_prime_is_presumed_gone_after_the_primes_longest_wait() {
    let mut prime = Prime::start(no_den(), 100).await;
    assert!(matches!(prime.next().await, ToCoordinator::Heartbeat(_)));
    let waited = tokio::time::timeout(Duration::from_secs(1), &mut prime.agent).await;
    assert!(
        waited.is_err(),
        "gone before the prime's longest wait: {waited:?}"
    );

    let quick = AgentOptions {
        outwait: Duration::ZERO,
        ..no_den()
    };
    let mut prime = Prime::start(quick, 100).await;
    // The agent beats while idle...
    assert!(matches!(prime.next().await, ToCoordinator::Heartbeat(_)));
    // ...and gives up on a prime that never does.
    let summary = tokio::time::timeout(Duration::from_secs(5), prime.agent)
        .await
        .expect("agent gives up in time")
        .expect("agent task")
        .expect("clean end");
    assert_eq!(
        summary.end,
        AgentEnd::PrimeLost(PrimeLoss::Silent {
            after: Duration::from_millis(300)
        })
    );
}

#[tokio::test]
async fn a_frame_that_does_not_decode_is_answered_and_skipped() {
    let mut prime = Prime::start(options_with_closures(), 5_000).await;
    // A well-formed header (version 1.0, three payload bytes) around a payload that is no
    // `ToAgent`: the stream stays in step.
    let mut frame = b"EVTR\x00\x01\x00\x00\x00\x00\x00\x03".to_vec();
    frame.extend_from_slice(&[0xff, 0xff, 0xff]);
    let mut raw = prime.writer;
    raw.flush().await.expect("flush");
    let mut inner = raw.into_inner();
    inner.write_all(&frame).await.expect("write raw frame");
    prime.writer = FrameWriter::new(inner);
    let ToCoordinator::Error { key: None, message } = prime.next_message().await else {
        panic!("expected an Error");
    };
    assert!(
        message.starts_with("ignored a frame: cannot decode"),
        "{message}"
    );
    let key = prime.closure("sync", "2").await;
    assert_eq!(prime.finished(&key).await.0, EndStatus::Success);
    prime.end().await.expect("clean end");
}

/// The store sent in the welcome is opened before any work, and said to be ready.
#[tokio::test]
async fn a_store_sent_in_the_welcome_is_opened_and_announced() {
    let file = std::env::temp_dir().join(format!("eventor-agent-{}.db", std::process::id()));
    let store = StoreAccess {
        location: format!("sqlite:{}", file.display()),
        password: None,
    };
    let mut prime = Prime::start_with(no_den(), 0, Some(store)).await;
    assert_eq!(prime.next().await, ToCoordinator::StoreReady);
    prime
        .send(ToAgent::Shutdown {
            reason: "done".into(),
        })
        .await;
    let summary = prime.agent.await.unwrap().unwrap();
    assert!(matches!(summary.end, AgentEnd::Shutdown { .. }));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}

/// An agent that cannot open the store it was sent says so and takes no work.
#[tokio::test]
async fn a_store_that_will_not_open_is_reported_and_ends_the_agent() {
    let store = StoreAccess {
        location: "sqlite:/nonexistent-eventor-dir/x/runs.db".into(),
        password: Some("never-shown".into()),
    };
    let mut prime = Prime::start_with(no_den(), 0, Some(store)).await;
    match prime.next().await {
        ToCoordinator::Error { key: None, message } => {
            assert!(message.contains("cannot open the store"), "{message}");
            assert!(!message.contains("never-shown"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let err = prime.agent.await.unwrap().unwrap_err();
    assert!(matches!(err, AgentError::Store { .. }), "{err:?}");
}

/// With a lease, an agent that lost its prime keeps its task running for the lease (counted
/// from the last frame it read), then stops it and reports it failed, saying why.
#[tokio::test]
async fn a_running_task_is_stopped_when_the_lease_runs_out_without_a_prime() {
    let mut prime = Prime::start(options_with_closures(), 5_000).await;
    prime.send(ToAgent::Lease { lease_ms: 400 }).await;
    let key = prime.closure("sleeps", "1").await;
    let ToCoordinator::TaskStarted { .. } = prime.next_message().await else {
        panic!("expected TaskStarted first");
    };
    // The prime hangs up: its last frame was just read.
    let gone = std::time::Instant::now();
    prime.writer.shutdown().await.expect("close");
    let (status, _, error) = prime.finished(&key).await;
    let lived = gone.elapsed();
    assert_eq!(status, EndStatus::Failure);
    assert_eq!(error.as_deref(), Some("no coordinator for 400ms"));
    assert!(
        lived >= Duration::from_millis(350),
        "stopped after {lived:?}"
    );
    let summary = prime.agent.await.expect("agent task").expect("clean end");
    assert_eq!(summary.end, AgentEnd::PrimeLost(PrimeLoss::Closed));
}

#[tokio::test]
async fn an_agent_that_lost_its_prime_is_re_adopted_through_its_den_and_answers_for_its_task() {
    let den = tempfile::tempdir().unwrap();
    let dir = den.path().join("den");
    let options = AgentOptions {
        den: Some(dir.clone()),
        ..options_with_closures()
    };
    let mut prime = Prime::start(options, 5_000).await;
    prime.send(ToAgent::Lease { lease_ms: 20_000 }).await;
    let key = prime.closure("sleeps", "1").await;
    let ToCoordinator::TaskStarted { .. } = prime.next_message().await else {
        panic!("expected TaskStarted first");
    };
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "the den is private");
    let Prime {
        reader,
        writer,
        agent,
    } = prime;
    drop((reader, writer)); // the prime is gone, without a word

    let socket = dir.join(super::adopt::socket_name("run", "node-1"));
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .expect("the survivor listens");
    let (read, write) = stream.into_split();
    let (mut reader, mut writer) = (FrameReader::new(read), FrameWriter::new(write));
    let accept = Accept {
        run_id: "run".into(),
        host: "node-1".into(),
        heartbeat_interval_ms: 5_000,
        limits: Limits {
            max_frame_bytes: 1 << 24,
            max_concurrent_tasks: 8,
        },
    };
    let mut adopted_hello = false;
    eventor_protocol::accept(&mut reader, &mut writer, Duration::from_secs(5), |hello| {
        adopted_hello = hello
            .capabilities
            .iter()
            .any(|c| c == eventor_protocol::ADOPTED);
        Ok(Welcome {
            accept,
            store: None,
            tls: None,
        })
    })
    .await
    .expect("handshake with the survivor");
    assert!(adopted_hello, "the survivor says it is re-adopted");
    let first =
        tokio::time::timeout(Duration::from_secs(5), reader.read_frame::<ToCoordinator>()).await;
    assert_eq!(
        first.unwrap().unwrap(),
        Some(ToCoordinator::Adopted {
            tasks: vec![key.clone()]
        }),
        "the task it still runs comes first"
    );
    writer
        .write_frame(&ToAgent::Cancel { key: key.clone() })
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(
            Duration::from_secs(10),
            reader.read_frame::<ToCoordinator>(),
        );
        match frame.await.unwrap().unwrap() {
            Some(ToCoordinator::TaskFinished { key: ended, end }) if ended == key => {
                assert_eq!(
                    end.status,
                    EndStatus::Cancelled,
                    "the new prime's cancel stopped it"
                );
                break;
            }
            Some(_) => continue,
            None => panic!("the survivor closed before the task's end"),
        }
    }
    writer
        .write_frame(&ToAgent::Shutdown {
            reason: "done".into(),
        })
        .await
        .unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(summary.end, AgentEnd::Shutdown { .. }),
        "{:?}",
        summary.end
    );
    assert!(!socket.exists(), "the socket goes with the agent");
}
