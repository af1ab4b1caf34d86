//! Every message survives encode then decode, alone, back to back, split at any byte, through
//! the codec and through the async reader/writer.

mod common;

use bytes::BytesMut;
use eventor_protocol::{
    decode_frame, encode_frame, AgentCodec, CoordinatorCodec, FrameConfig, FrameReader,
    FrameWriter, HandshakeReply, Hello, ToAgent, ToCoordinator, WireMessage, HEADER_LEN,
};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use common::*;

/// Encodes `msg` alone, decodes it, and checks the frame was consumed exactly.
fn roundtrip_one<T: WireMessage + PartialEq + std::fmt::Debug>(msg: &T) {
    let config = FrameConfig::default();
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf, &config).unwrap();
    let payload_len = u32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
    assert_eq!(buf.len(), HEADER_LEN + payload_len);
    let (header, back) = decode_frame::<T>(&mut buf, &config).unwrap().unwrap();
    assert_eq!(&back, msg);
    assert_eq!(header.version, config.version);
    assert!(buf.is_empty(), "the frame was not consumed exactly");
}

/// Feeds `bytes` to `codec` in pieces cut at `cuts`, collecting every message decoded.
fn decode_in_pieces<D>(codec: &mut D, bytes: &[u8], cuts: &[usize]) -> Vec<D::Item>
where
    D: Decoder,
    D::Error: std::fmt::Debug,
{
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let (mut buf, mut out, mut from) = (BytesMut::new(), Vec::new(), 0);
    for cut in cuts {
        buf.extend_from_slice(&bytes[from..cut]);
        from = cut;
        while let Some(msg) = codec.decode(&mut buf).unwrap() {
            out.push(msg);
        }
    }
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn to_agent_roundtrips(msg in to_agent()) {
        roundtrip_one(&msg);
    }

    #[test]
    fn to_coordinator_roundtrips(msg in to_coordinator()) {
        roundtrip_one(&msg);
    }

    #[test]
    fn hello_roundtrips(msg in hello()) {
        roundtrip_one(&msg);
    }

    #[test]
    fn handshake_reply_roundtrips(msg in handshake_reply()) {
        roundtrip_one(&msg);
    }

    /// The agent's codec encodes what the coordinator's decodes, however the bytes arrive.
    #[test]
    fn agent_stream_decodes_whatever_the_chunking(
        msgs in vec(to_coordinator(), 0..12),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let mut bytes = BytesMut::new();
        let mut agent = AgentCodec::default();
        for msg in &msgs {
            agent.encode(msg.clone(), &mut bytes).unwrap();
        }
        let got = decode_in_pieces(&mut CoordinatorCodec::default(), &bytes, &cuts);
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn coordinator_stream_decodes_whatever_the_chunking(
        msgs in vec(to_agent(), 0..12),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let mut bytes = BytesMut::new();
        let mut coordinator = CoordinatorCodec::default();
        for msg in &msgs {
            coordinator.encode(msg.clone(), &mut bytes).unwrap();
        }
        let got = decode_in_pieces(&mut AgentCodec::default(), &bytes, &cuts);
        prop_assert_eq!(got, msgs);
    }
}

/// The async pair, through a pipe far smaller than the frames, ending in a clean `None`.
#[tokio::test]
async fn reader_and_writer_roundtrip_over_a_narrow_pipe() {
    let msgs = vec![sample_log(), sample_finished(), sample_log()];
    let (a, b) = tokio::io::duplex(7);
    let sent = msgs.clone();
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new(a);
        w.write_frame(&sample_hello()).await.unwrap();
        for msg in &sent {
            w.queue_frame(msg).unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut r = FrameReader::new(b);
    assert_eq!(r.read_frame::<Hello>().await.unwrap(), Some(sample_hello()));
    for msg in &msgs {
        assert_eq!(
            r.read_frame::<ToCoordinator>().await.unwrap().as_ref(),
            Some(msg)
        );
    }
    assert_eq!(r.read_frame::<ToCoordinator>().await.unwrap(), None);
    assert_eq!(r.peer_version(), Some(FrameConfig::default().version));
    writer.await.unwrap();
}

/// The codec reports the peer's version once a frame has arrived.
#[test]
fn codec_learns_the_peer_version() {
    let mut buf = BytesMut::new();
    let mut coordinator = eventor_protocol::FrameCodec::<Hello, HandshakeReply>::default();
    assert_eq!(coordinator.peer_version(), None);
    encode_frame(&sample_hello(), &mut buf, &FrameConfig::default()).unwrap();
    assert_eq!(coordinator.decode(&mut buf).unwrap(), Some(sample_hello()));
    let coordinator: CoordinatorCodec = coordinator.retype();
    assert_eq!(
        coordinator.peer_version(),
        Some(FrameConfig::default().version)
    );
}

/// Every variant's key accessor points at the key it carries.
#[test]
fn keys_are_where_they_should_be() {
    let key = sample_key();
    assert_eq!(sample_dispatch().key(), Some(&key));
    assert_eq!(sample_log().key(), Some(&key));
    assert_eq!(sample_finished().key(), Some(&key));
    let shutdown = ToAgent::Shutdown {
        reason: "bye".into(),
    };
    assert_eq!(shutdown.key(), None);
}
