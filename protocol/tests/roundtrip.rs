//! Every message survives encode then decode, alone, back to back, split at any byte, through
//! the frame functions and through the async reader/writer.

mod common;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use eventor_protocol::{
    decode_frame, encode_frame, FrameConfig, FrameLimit, FrameReader, FrameWriter, Hello,
    ProtocolVersion, ToAgent, ToCoordinator, WireMessage, HEADER_LEN,
};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

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

/// An `AsyncRead` that hands out its bytes in pieces ending at given offsets, never more
/// than one piece per read, so the reader meets every split a network could make.
struct Pieces {
    bytes: Vec<u8>,
    /// Where the pieces end, ascending; the last is the end of `bytes`.
    ends: VecDeque<usize>,
    at: usize,
}

impl Pieces {
    /// `bytes` cut at `cuts` (any values, taken modulo the length + 1).
    fn new(bytes: Vec<u8>, cuts: &[usize]) -> Self {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        ends.push(bytes.len());
        ends.sort_unstable();
        Pieces {
            bytes,
            ends: ends.into(),
            at: 0,
        }
    }
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.ends.front().is_some_and(|&end| end <= this.at) {
            this.ends.pop_front();
        }
        // No pieces left: a read of nothing, which is end of stream.
        let end = this.ends.front().copied().unwrap_or(this.at);
        let n = (end - this.at).min(buf.remaining());
        buf.put_slice(&this.bytes[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

/// What a `FrameWriter` puts on the wire for `msgs`.
async fn written<T: WireMessage>(msgs: &[T]) -> Vec<u8> {
    let mut writer = FrameWriter::new(Vec::new());
    for msg in msgs {
        writer.queue_frame(msg).unwrap();
    }
    writer.flush().await.unwrap();
    writer.into_inner()
}

/// Every message a `FrameReader` reads from `bytes` arriving in pieces cut at `cuts`; the
/// stream must end cleanly after the last.
async fn read_in_pieces<T: WireMessage>(bytes: Vec<u8>, cuts: &[usize]) -> Vec<T> {
    let mut reader = FrameReader::new(Pieces::new(bytes, cuts));
    let mut out = Vec::new();
    while let Some(msg) = reader.read_frame().await.unwrap() {
        out.push(msg);
    }
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

    /// The agent's writer produces what the coordinator's reader reads, however the bytes
    /// arrive.
    #[test]
    fn agent_stream_decodes_whatever_the_chunking(
        msgs in vec(to_coordinator(), 0..12),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let got: Vec<ToCoordinator> =
            block_on(async { read_in_pieces(written(&msgs).await, &cuts).await });
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn coordinator_stream_decodes_whatever_the_chunking(
        msgs in vec(to_agent(), 0..12),
        cuts in vec(any::<usize>(), 0..20),
    ) {
        let got: Vec<ToAgent> =
            block_on(async { read_in_pieces(written(&msgs).await, &cuts).await });
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
    assert_eq!(r.peer_version(), None, "no frame has arrived yet");
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

/// Frames wait in the writer until a flush, and each end keeps the config it was given.
#[tokio::test]
async fn writer_queues_until_flushed_and_ends_keep_their_config() {
    let config = FrameConfig {
        limit: FrameLimit::MIN,
        version: ProtocolVersion { major: 1, minor: 4 },
    };
    let mut expected = BytesMut::new();
    encode_frame(&sample_log(), &mut expected, &config).unwrap();
    encode_frame(&sample_finished(), &mut expected, &config).unwrap();

    let mut writer = FrameWriter::with_config(Vec::new(), config);
    assert_eq!((writer.queued(), writer.config()), (0, &config));
    writer.queue_frame(&sample_log()).unwrap();
    writer.queue_frame(&sample_finished()).unwrap();
    assert_eq!(writer.queued(), expected.len());
    writer.flush().await.unwrap();
    assert_eq!(writer.queued(), 0);
    let bytes = writer.into_inner();
    assert_eq!(bytes, expected);

    let reader = FrameReader::with_config(&bytes[..], config);
    assert_eq!(reader.config(), &config);
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
