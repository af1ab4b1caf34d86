//! Shared by the integration tests: proptest strategies for every wire type, and fixed samples.
#![allow(dead_code)] // each test binary uses a different part

use eventor_protocol::{
    Accept, Dispatch, EndStatus, HandshakeReply, Heartbeat, Hello, Limits, LogLevel, LogRecord,
    OutputBatch, ProtocolVersion, Refuse, Stream, TaskEnd, TaskKey, ToAgent, ToCoordinator, Work,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Short names, and arbitrary Unicode (including empty and multi-byte) now and then.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9_.-]{0,12}",
        1 => any::<String>(),
    ]
}

pub fn task_key() -> impl Strategy<Value = TaskKey> {
    (text(), text(), text(), any::<i32>(), any::<i32>()).prop_map(
        |(run_id, step, sequence, recovery, attempt)| TaskKey {
            run_id,
            step,
            sequence,
            recovery,
            attempt,
        },
    )
}

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    (any::<u16>(), any::<u16>()).prop_map(|(major, minor)| ProtocolVersion { major, minor })
}

pub fn work() -> impl Strategy<Value = Work> {
    let command = (
        text(),
        vec((text(), text()), 0..4),
        option::of(text()),
        option::of(any::<u64>()),
    )
        .prop_map(|(command, env, cwd, timeout_ms)| Work::Command {
            command,
            env,
            cwd,
            timeout_ms,
        });
    let closure = text().prop_map(|step| Work::Closure { step });
    prop_oneof![command, closure]
}

pub fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (any::<u64>(), any::<i64>()).prop_map(|(seq, sent_at)| Heartbeat { seq, sent_at })
}

pub fn to_agent() -> impl Strategy<Value = ToAgent> {
    prop_oneof![
        (task_key(), work()).prop_map(|(key, work)| ToAgent::Dispatch(Dispatch { key, work })),
        task_key().prop_map(|key| ToAgent::Cancel { key }),
        text().prop_map(|reason| ToAgent::Shutdown { reason }),
        heartbeat().prop_map(ToAgent::Heartbeat),
    ]
}

pub fn end_status() -> impl Strategy<Value = EndStatus> {
    prop_oneof![
        Just(EndStatus::Success),
        Just(EndStatus::Failure),
        Just(EndStatus::Cancelled),
        Just(EndStatus::TimedOut),
    ]
}

pub fn log_level() -> impl Strategy<Value = LogLevel> {
    prop_oneof![
        Just(LogLevel::Error),
        Just(LogLevel::Warn),
        Just(LogLevel::Info),
        Just(LogLevel::Debug),
        Just(LogLevel::Trace),
    ]
}

pub fn stream() -> impl Strategy<Value = Stream> {
    prop_oneof![
        Just(Stream::Stdout),
        Just(Stream::Stderr),
        Just(Stream::Agent)
    ]
}

pub fn log_record() -> impl Strategy<Value = LogRecord> {
    (
        any::<i64>(),
        log_level(),
        text(),
        option::of(task_key()),
        stream(),
        text(),
    )
        .prop_map(|(time, level, host, task, stream, text)| LogRecord {
            time,
            level,
            host,
            task,
            stream,
            text,
        })
}

pub fn to_coordinator() -> impl Strategy<Value = ToCoordinator> {
    let finished = (
        task_key(),
        end_status(),
        option::of(any::<i32>()),
        option::of(text()),
        option::of(text()),
    )
        .prop_map(
            |(key, status, exit_code, result, error)| ToCoordinator::TaskFinished {
                key,
                end: TaskEnd {
                    status,
                    exit_code,
                    result,
                    error,
                    class: None,
                },
            },
        );
    prop_oneof![
        (task_key(), any::<u32>()).prop_map(|(key, pid)| ToCoordinator::TaskStarted { key, pid }),
        finished,
        log_record().prop_map(ToCoordinator::Log),
        heartbeat().prop_map(ToCoordinator::Heartbeat),
        (option::of(task_key()), text())
            .prop_map(|(key, message)| ToCoordinator::Error { key, message }),
        Just(ToCoordinator::StoreReady),
        output_batch().prop_map(ToCoordinator::Output),
        task_key().prop_map(|key| ToCoordinator::TaskRan { key }),
    ]
}

pub fn output_batch() -> impl Strategy<Value = OutputBatch> {
    (task_key(), stream(), any::<i64>(), text()).prop_map(|(task, stream, time, text)| {
        OutputBatch {
            task,
            stream,
            time,
            text,
        }
    })
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (version(), text(), text(), vec(text(), 0..5)).prop_map(
        |(protocol, agent_version, host, capabilities)| Hello {
            protocol,
            agent_version,
            host,
            capabilities,
        },
    )
}

pub fn handshake_reply() -> impl Strategy<Value = HandshakeReply> {
    let accept = (text(), text(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
        |(run_id, host, heartbeat_interval_ms, max_frame_bytes, max_concurrent_tasks)| {
            HandshakeReply::Accept(Accept {
                run_id,
                host,
                heartbeat_interval_ms,
                limits: Limits {
                    max_frame_bytes,
                    max_concurrent_tasks,
                },
            })
        },
    );
    let refuse = text().prop_map(|reason| HandshakeReply::Refuse(Refuse { reason }));
    prop_oneof![accept, refuse]
}

// ---------------------------------------------------------------------------------------------
// Fixed samples (the golden vectors use these; change them and the vectors change).
// ---------------------------------------------------------------------------------------------

pub fn sample_key() -> TaskKey {
    TaskKey {
        run_id: "run-42".into(),
        step: "build".into(),
        sequence: "7".into(),
        recovery: 0,
        attempt: 1,
    }
}

pub fn sample_hello() -> Hello {
    Hello {
        protocol: ProtocolVersion { major: 1, minor: 0 },
        agent_version: "0.1.0".into(),
        host: "node-a".into(),
        capabilities: vec!["command".into(), "closure".into()],
    }
}

pub fn sample_accept() -> HandshakeReply {
    HandshakeReply::Accept(Accept {
        run_id: "run-42".into(),
        host: "worker-1".into(),
        heartbeat_interval_ms: 5_000,
        limits: Limits {
            max_frame_bytes: 16 << 20,
            max_concurrent_tasks: 8,
        },
    })
}

pub fn sample_dispatch() -> ToAgent {
    ToAgent::Dispatch(Dispatch {
        key: sample_key(),
        work: Work::Command {
            command: "make -j4".into(),
            env: vec![("CC".into(), "clang".into())],
            cwd: Some("/srv/app".into()),
            timeout_ms: Some(60_000),
        },
    })
}

pub fn sample_log() -> ToCoordinator {
    ToCoordinator::Log(LogRecord {
        time: 1_700_000_000_123_456,
        level: LogLevel::Warn,
        host: "worker-1".into(),
        task: Some(sample_key()),
        stream: Stream::Stderr,
        text: "warning: unused variable `x`".into(),
    })
}

pub fn sample_finished() -> ToCoordinator {
    ToCoordinator::TaskFinished {
        key: sample_key(),
        end: TaskEnd {
            status: EndStatus::Failure,
            exit_code: Some(2),
            result: None,
            error: Some("exit status 2".into()),
            class: None,
        },
    }
}

/// Runs async code inside a proptest case (a plain function) on a fresh single-threaded
/// runtime; the readers and writers tested here need no timer or I/O driver.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}
