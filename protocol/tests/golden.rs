//! Golden vectors: the exact bytes of a few frames, checked into `tests/golden/`, so an
//! accidental change to the wire format fails here. After an intended change (and a version
//! bump), regenerate them with `UPDATE_GOLDEN=1 cargo test -p eventor-protocol --test golden`.

mod common;

use std::path::PathBuf;

use bytes::BytesMut;
use eventor_protocol::{decode_frame, encode_frame, FrameConfig, WireMessage};

use common::*;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.hex"))
}

/// Hex, sixteen bytes to a line, the header on a line of its own.
fn to_hex(bytes: &[u8]) -> String {
    let (header, payload) = bytes.split_at(12);
    std::iter::once(header)
        .chain(payload.chunks(16))
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|line| line + "\n")
        .collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| u8::from_str_radix(pair, 16).expect("golden files hold hex bytes"))
        .collect()
}

/// Checks that `msg` encodes to the golden bytes and that the golden bytes decode to `msg`.
fn check<T: WireMessage + PartialEq + std::fmt::Debug>(name: &str, msg: &T) {
    let config = FrameConfig::default();
    let mut encoded = BytesMut::new();
    encode_frame(msg, &mut encoded, &config).unwrap();
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, to_hex(&encoded)).unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        to_hex(&encoded),
        to_hex(&from_hex(&text)),
        "the encoding of {name} changed: if that is intended, bump the protocol version and \
         regenerate with UPDATE_GOLDEN=1"
    );
    let mut golden = BytesMut::from(&from_hex(&text)[..]);
    let (_, decoded) = decode_frame::<T>(&mut golden, &config).unwrap().unwrap();
    assert_eq!(&decoded, msg);
}

#[test]
fn hello_is_unchanged() {
    check("hello", &sample_hello());
}

#[test]
fn accept_is_unchanged() {
    check("accept", &sample_accept());
}

#[test]
fn dispatch_is_unchanged() {
    check("dispatch_command", &sample_dispatch());
}

#[test]
fn log_record_is_unchanged() {
    check("log_record", &sample_log());
}

#[test]
fn task_finished_is_unchanged() {
    check("task_finished", &sample_finished());
}

/// Since 1.1: the welcome with the store (a made-up password: the bytes are the point).
#[test]
fn accept_with_store_is_unchanged() {
    let eventor_protocol::HandshakeReply::Accept(accept) = sample_accept() else {
        unreachable!()
    };
    let store = eventor_protocol::StoreAccess {
        location: "postgres://ev@db:5432/eventor?schema=eventor".into(),
        password: Some("pw".into()),
    };
    check(
        "accept_with_store",
        &eventor_protocol::HandshakeReply::AcceptWithStore { accept, store },
    );
}

/// Since 1.4: the welcome with the store and its TLS (made-up PEM bytes and key).
#[test]
fn accept_with_store_tls_is_unchanged() {
    let eventor_protocol::HandshakeReply::Accept(accept) = sample_accept() else {
        unreachable!()
    };
    let store = eventor_protocol::StoreAccess {
        location: "postgres://ev@db:5432/eventor?schema=eventor&sslmode=verify-full".into(),
        password: Some("pw".into()),
    };
    let tls = eventor_protocol::StoreTls {
        mode: "verify-full".into(),
        server_name: Some("db".into()),
        root_cert: Some(b"CA".to_vec()),
        client_cert: None,
        client_key: Some(b"K".to_vec()),
    };
    check(
        "accept_with_store_tls",
        &eventor_protocol::HandshakeReply::AcceptWithStoreTls { accept, store, tls },
    );
}

/// Since 1.1: the agent's answer to a store it could open.
#[test]
fn store_ready_is_unchanged() {
    check("store_ready", &eventor_protocol::ToCoordinator::StoreReady);
}

/// Since 1.2: lines of output in one message.
#[test]
fn output_batch_is_unchanged() {
    let batch = eventor_protocol::OutputBatch {
        task: eventor_protocol::TaskKey {
            run_id: "r1".into(),
            step: "s1".into(),
            sequence: "7".into(),
            recovery: 0,
            attempt: 1,
        },
        stream: eventor_protocol::Stream::Stdout,
        time: 1_700_000_000_000_000,
        text: "one\ntwo".into(),
    };
    check(
        "output_batch",
        &eventor_protocol::ToCoordinator::Output(batch),
    );
}

/// Since 1.2: a task's slot is free, its end is being recorded.
#[test]
fn task_ran_is_unchanged() {
    let key = eventor_protocol::TaskKey {
        run_id: "r1".into(),
        step: "s1".into(),
        sequence: "7".into(),
        recovery: 0,
        attempt: 1,
    };
    check(
        "task_ran",
        &eventor_protocol::ToCoordinator::TaskRan { key },
    );
}

/// Since 1.3: how long an agent keeps its tasks running without a coordinator.
#[test]
fn lease_is_unchanged() {
    check(
        "lease",
        &eventor_protocol::ToAgent::Lease { lease_ms: 30_000 },
    );
}

/// Since 1.4: a re-adopted agent's first message, the attempts it still answers for.
#[test]
fn adopted_is_unchanged() {
    let key = eventor_protocol::TaskKey {
        run_id: "run-1".into(),
        step: "s1".into(),
        sequence: "7".into(),
        recovery: 0,
        attempt: 2,
    };
    check(
        "adopted",
        &eventor_protocol::ToCoordinator::Adopted { tasks: vec![key] },
    );
}

/// Since 1.4: a task's command fires an event in its own run, and the answer.
#[test]
fn trigger_and_its_answer_are_unchanged() {
    check(
        "trigger",
        &eventor_protocol::ToCoordinator::Trigger {
            id: 3,
            event: "tick".into(),
            sequence: "8".into(),
        },
    );
    check(
        "trigger_answer",
        &eventor_protocol::ToAgent::TriggerAnswer {
            id: 3,
            refused: Some("unknown event `x`".into()),
        },
    );
}

/// Since 1.4: a task's command asks its run's status, and the answer.
#[test]
fn status_ask_and_its_answer_are_unchanged() {
    check(
        "status_ask",
        &eventor_protocol::ToCoordinator::StatusAsk { id: 4 },
    );
    check(
        "status_answer",
        &eventor_protocol::ToAgent::StatusAnswer {
            id: 4,
            status: Some("{\"run_id\":\"r\"}".into()),
            refused: None,
        },
    );
}
