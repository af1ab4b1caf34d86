//! The agent in-process, over a duplex pipe with a scripted prime: closures and their
//! context, cancel of an async closure, a silent prime, and a frame that does not decode.
//! Commands, the store and the binary are exercised end to end in `integration/`.

use std::time::Duration;

use eventor_protocol::{
    Accept, Dispatch, FrameReader, FrameWriter, Limits, Outcome, TaskKey, ToAgent, ToCoordinator,
    Work,
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
        eventor_protocol::accept(&mut reader, &mut writer, timeout, |_| Ok(accept))
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

    async fn finished(&mut self, of: &TaskKey) -> (Outcome, Option<String>, Option<String>) {
        loop {
            if let ToCoordinator::TaskFinished {
                key,
                status,
                result,
                error,
                ..
            } = self.next_message().await
            {
                if key == *of {
                    return (status, result, error);
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
        ..AgentOptions::default()
    }
}

#[tokio::test]
async fn closures_run_with_their_task_context_and_failures_are_task_failures() {
    let mut prime = Prime::start(options_with_closures(), 5_000).await;
    let cases = [
        ("sync", Outcome::Success, Some("\"sync:7\""), None),
        ("async", Outcome::Success, Some("\"async:7\""), None),
        ("fails", Outcome::Failure, None, Some("no luck")),
        (
            "boom",
            Outcome::Failure,
            None,
            Some("step panicked: kaboom"),
        ),
        (
            "nope",
            Outcome::Failure,
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
    assert_eq!(status, Outcome::Cancelled);
    assert_eq!(error.as_deref(), Some("cancelled by the coordinator"));
    assert_eq!(prime.end().await.expect("clean end").cancelled, 1);
}

#[tokio::test]
async fn a_silent_prime_is_presumed_gone_after_three_intervals() {
    let mut prime = Prime::start(AgentOptions::default(), 100).await;
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
    assert_eq!(prime.finished(&key).await.0, Outcome::Success);
    prime.end().await.expect("clean end");
}
