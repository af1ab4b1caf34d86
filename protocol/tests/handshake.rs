//! Both sides of the handshake over an in-memory duplex: acceptance, refusal, a major-version
//! mismatch seen the same way from both ends, silence, a closed channel, and a banner.

mod common;

use std::time::Duration;

use eventor_protocol::{
    accept, hello, Accept, FrameConfig, FrameReader, FrameWriter, Hello, ProtocolError,
    ProtocolVersion, StoreAccess, StoreTls, ToAgent, ToCoordinator, Welcome,
};
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use common::*;

type Reader = FrameReader<ReadHalf<DuplexStream>>;
type Writer = FrameWriter<WriteHalf<DuplexStream>>;

const PATIENCE: Duration = Duration::from_secs(5);

fn end(stream: DuplexStream, major: u16) -> (Reader, Writer) {
    let config = FrameConfig {
        version: ProtocolVersion { major, minor: 0 },
        ..FrameConfig::default()
    };
    let (r, w) = tokio::io::split(stream);
    (
        FrameReader::with_config(r, config),
        FrameWriter::with_config(w, config),
    )
}

/// An agent end and a coordinator end speaking the given majors.
fn ends(agent: u16, coordinator: u16) -> ((Reader, Writer), (Reader, Writer)) {
    let (a, c) = tokio::io::duplex(4096);
    (end(a, agent), end(c, coordinator))
}

fn hello_for(major: u16) -> Hello {
    Hello {
        protocol: ProtocolVersion { major, minor: 0 },
        ..sample_hello()
    }
}

fn the_accept() -> Accept {
    match sample_accept() {
        eventor_protocol::HandshakeReply::Accept(accept) => accept,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn accepted_agent_then_exchanges_messages() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let agent = tokio::spawn(async move {
        let accept = hello(&mut ar, &mut aw, &sample_hello(), PATIENCE).await?;
        let dispatch = ar.read_frame::<ToAgent>().await?;
        aw.write_frame(&sample_finished()).await?;
        Ok::<_, ProtocolError>((accept, dispatch))
    });

    let (got_hello, sent) = accept(&mut cr, &mut cw, PATIENCE, |h| {
        assert_eq!(h.host, "node-a");
        Ok(the_accept().into())
    })
    .await
    .unwrap();
    assert_eq!(got_hello, sample_hello());
    assert_eq!(sent, the_accept().into());
    cw.write_frame(&sample_dispatch()).await.unwrap();
    assert_eq!(
        cr.read_frame::<ToCoordinator>().await.unwrap(),
        Some(sample_finished())
    );

    let (accepted, dispatch) = agent.await.unwrap().unwrap();
    assert_eq!(accepted, the_accept().into());
    assert_eq!(dispatch, Some(sample_dispatch()));
}

#[tokio::test]
async fn refusal_reaches_the_agent() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let agent =
        tokio::spawn(async move { hello(&mut ar, &mut aw, &sample_hello(), PATIENCE).await });
    let coordinator = accept(&mut cr, &mut cw, PATIENCE, |_| {
        Err("node-a is not in the cluster".to_string())
    })
    .await;

    let expected = "handshake refused: node-a is not in the cluster";
    assert_eq!(coordinator.unwrap_err().to_string(), expected);
    assert_eq!(agent.await.unwrap().unwrap_err().to_string(), expected);
}

/// The mismatch is the same sentence on both ends, whichever end is newer, and nobody hangs.
#[tokio::test]
async fn major_mismatch_is_clear_on_both_sides() {
    for (agent_major, coordinator_major) in [(2, 1), (1, 2)] {
        let ((mut ar, mut aw), (mut cr, mut cw)) = ends(agent_major, coordinator_major);
        let agent = tokio::spawn(async move {
            hello(&mut ar, &mut aw, &hello_for(agent_major), PATIENCE).await
        });
        let coordinator = accept(&mut cr, &mut cw, PATIENCE, |_| -> Result<Welcome, String> {
            panic!("a mismatched agent must not reach the decision")
        })
        .await;

        let expected =
            format!("agent speaks protocol {agent_major}, coordinator {coordinator_major}");
        let coordinator = coordinator.unwrap_err();
        assert!(matches!(coordinator, ProtocolError::VersionMismatch { .. }));
        assert_eq!(coordinator.to_string(), expected);
        let agent = agent.await.unwrap().unwrap_err();
        assert!(matches!(agent, ProtocolError::VersionMismatch { .. }));
        assert_eq!(agent.to_string(), expected);
    }
}

/// A hello whose own version disagrees with its header is refused as a mismatch too.
#[tokio::test]
async fn hello_claiming_another_major_is_refused() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let agent = tokio::spawn(async move { hello(&mut ar, &mut aw, &hello_for(3), PATIENCE).await });
    let coordinator = accept(&mut cr, &mut cw, PATIENCE, |_| Ok(the_accept().into())).await;
    let expected = "agent speaks protocol 3, coordinator 1";
    assert_eq!(coordinator.unwrap_err().to_string(), expected);
    assert_eq!(
        agent.await.unwrap().unwrap_err().to_string(),
        format!("handshake refused: {expected}")
    );
}

#[tokio::test]
async fn silent_agent_times_out() {
    let (_agent, (mut cr, mut cw)) = ends(1, 1);
    let wait = Duration::from_millis(50);
    let err = accept(&mut cr, &mut cw, wait, |_| Ok(the_accept().into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Timeout { after, .. } if after == wait));
    assert_eq!(err.to_string(), "no hello from the agent within 50ms");
}

#[tokio::test]
async fn silent_coordinator_times_out() {
    let ((mut ar, mut aw), _coordinator) = ends(1, 1);
    let wait = Duration::from_millis(50);
    let err = hello(&mut ar, &mut aw, &sample_hello(), wait)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no handshake reply from the coordinator within 50ms"
    );
}

#[tokio::test]
async fn coordinator_hanging_up_is_an_error_not_a_hang() {
    let ((mut ar, mut aw), (mut cr, cw)) = ends(1, 1);
    let coordinator = tokio::spawn(async move {
        let got = cr.read_frame::<Hello>().await;
        drop(cw);
        got
    });
    let err = hello(&mut ar, &mut aw, &sample_hello(), PATIENCE)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the coordinator closed the channel before sending its handshake reply"
    );
    assert!(coordinator.await.unwrap().unwrap().is_some());
}

#[tokio::test]
async fn agent_hanging_up_is_an_error() {
    let (agent, (mut cr, mut cw)) = ends(1, 1);
    drop(agent);
    let err = accept(&mut cr, &mut cw, PATIENCE, |_| Ok(the_accept().into()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the agent closed the channel before sending its hello"
    );
}

/// A login shell that prints a banner before the agent starts.
#[tokio::test]
async fn banner_before_hello_is_reported() {
    let (a, c) = tokio::io::duplex(4096);
    let (mut cr, mut cw) = end(c, 1);
    let (_ar, mut aw) = tokio::io::split(a);
    aw.write_all(b"Welcome to node-a!\n").await.unwrap();
    let err = accept(&mut cr, &mut cw, PATIENCE, |_| Ok(the_accept().into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::BadMagic { .. }), "{err:?}");
}

fn store_access() -> StoreAccess {
    StoreAccess {
        location: "postgres://evpw@db:5432/eventor?schema=eventor".into(),
        password: Some("s3cr/t?x@y:z".into()),
    }
}

/// A 1.1 agent gets the store and its password in the welcome; nothing else changes.
#[tokio::test]
async fn a_store_reaches_an_agent_that_knows_it() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let new = Hello {
        protocol: ProtocolVersion::STORE_ACCESS,
        ..sample_hello()
    };
    let agent = tokio::spawn(async move { hello(&mut ar, &mut aw, &new, PATIENCE).await });
    let welcome = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: None,
    };
    let sent = welcome.clone();
    let (_, sent) = accept(&mut cr, &mut cw, PATIENCE, move |_| Ok(sent))
        .await
        .unwrap();
    assert_eq!(sent, welcome);
    assert_eq!(agent.await.unwrap().unwrap(), welcome);
}

/// A 1.0 agent cannot read `AcceptWithStore`: it gets a plain `Accept`, and the
/// coordinator learns the store was not sent.
#[tokio::test]
async fn an_older_agent_gets_a_plain_accept() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let old = Hello {
        protocol: ProtocolVersion { major: 1, minor: 0 },
        ..sample_hello()
    };
    let agent = tokio::spawn(async move { hello(&mut ar, &mut aw, &old, PATIENCE).await });
    let welcome = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: None,
    };
    let (_, sent) = accept(&mut cr, &mut cw, PATIENCE, move |_| Ok(welcome))
        .await
        .unwrap();
    assert_eq!(sent, the_accept().into());
    assert_eq!(agent.await.unwrap().unwrap(), the_accept().into());
}

fn store_tls() -> StoreTls {
    StoreTls {
        mode: "verify-full".into(),
        server_name: Some("db".into()),
        root_cert: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        client_cert: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
        client_key: Some(b"-----BEGIN PRIVATE KEY----- s3cr/t".to_vec()),
    }
}

/// A 1.4 agent gets the store with its TLS.
#[tokio::test]
async fn the_stores_tls_reaches_an_agent_that_knows_it() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let new = Hello {
        protocol: ProtocolVersion::STORE_TLS,
        ..sample_hello()
    };
    let agent = tokio::spawn(async move { hello(&mut ar, &mut aw, &new, PATIENCE).await });
    let welcome = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: Some(store_tls()),
    };
    let sent = welcome.clone();
    let (_, sent) = accept(&mut cr, &mut cw, PATIENCE, move |_| Ok(sent))
        .await
        .unwrap();
    assert_eq!(sent, welcome);
    assert_eq!(agent.await.unwrap().unwrap(), welcome);
}

/// A 1.3 agent cannot read `AcceptWithStoreTls`: it gets the store without the TLS (its
/// URL's `sslmode` is then its own to refuse), and the coordinator learns what was sent.
#[tokio::test]
async fn an_agent_before_tls_gets_the_store_without_it() {
    let ((mut ar, mut aw), (mut cr, mut cw)) = ends(1, 1);
    let old = Hello {
        protocol: ProtocolVersion { major: 1, minor: 3 },
        ..sample_hello()
    };
    let agent = tokio::spawn(async move { hello(&mut ar, &mut aw, &old, PATIENCE).await });
    let welcome = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: Some(store_tls()),
    };
    let (_, sent) = accept(&mut cr, &mut cw, PATIENCE, move |_| Ok(welcome))
        .await
        .unwrap();
    let without = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: None,
    };
    assert_eq!(sent, without);
    assert_eq!(agent.await.unwrap().unwrap(), without);
}

#[test]
fn debug_masks_the_client_key() {
    let welcome = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: Some(store_tls()),
    };
    let shown = format!("{welcome:?} {welcome:#?}");
    assert!(!shown.contains("s3cr"), "{shown}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
}

#[test]
fn debug_masks_the_store_password() {
    let welcome = Welcome {
        accept: the_accept(),
        store: Some(store_access()),
        tls: None,
    };
    let shown = format!("{welcome:?} {welcome:#?}");
    assert!(!shown.contains("s3cr"), "{shown}");
    assert!(shown.contains("****"), "{shown}");
}
