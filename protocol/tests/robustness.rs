//! The decoder against hostile and broken input: arbitrary bytes, forged headers, mutations,
//! truncation, oversized lengths, banners, other versions. It must never panic, never
//! deliver a frame over the cap, never reserve beyond it, and report torn frames as errors.
//!
//! This stands in for a `cargo fuzz` target, which needs a nightly toolchain.

mod common;

use bytes::{BufMut, BytesMut};
use eventor_protocol::{
    decode_frame, encode_frame, FrameConfig, FrameLimit, FrameReader, Hello, ProtocolError,
    ProtocolVersion, ToAgent, ToCoordinator, WireMessage, HEADER_LEN, MAGIC,
};
use proptest::collection::vec;
use proptest::prelude::*;

use common::*;

const SMALL_CAP: u32 = 1 << 20;

fn small_config() -> FrameConfig {
    FrameConfig {
        limit: FrameLimit::from_bytes(SMALL_CAP as u64).unwrap(),
        ..FrameConfig::default()
    }
}

fn header(major: u16, minor: u16, len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&major.to_be_bytes());
    h.extend_from_slice(&minor.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h
}

fn frame_of<T: WireMessage>(msg: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_frame(msg, &mut buf, &FrameConfig::default()).unwrap();
    buf.to_vec()
}

/// The message of the first frame in `bytes`, as the coordinator (default config) reads it.
fn agent_message(bytes: &[u8]) -> Result<Option<ToCoordinator>, ProtocolError> {
    let got = decode_frame(&mut BytesMut::from(bytes), &FrameConfig::default())?;
    Ok(got.map(|(_, msg)| msg))
}

/// An agent message whose payload is exactly `len` bytes: text fills what the variant tag,
/// the absent key and the text's length prefix leave.
fn message_with_payload_len(len: usize) -> ToCoordinator {
    let with_text = |n: usize| ToCoordinator::Error {
        key: None,
        message: "x".repeat(n),
    };
    // A probe half as long has a length prefix of the same width (for 128 KiB..8 GiB), so
    // its frame shows the overhead.
    let probe = len / 2;
    let overhead = frame_of(&with_text(probe)).len() - HEADER_LEN - probe;
    with_text(len - overhead)
}

/// Decodes `bytes` as `T` until the decoder errors or wants more, checking the invariants:
/// no panic (implicit), each frame consumed within the cap, no reservation beyond the cap.
fn hammer<T: WireMessage>(bytes: &[u8], config: &FrameConfig) {
    let bound = HEADER_LEN + config.limit.bytes() as usize;
    let mut buf = BytesMut::from(bytes);
    // `BytesMut::from` may round capacity up; the decoder must not add more than a frame.
    let ceiling = buf.capacity().max(bound);
    loop {
        let before = buf.len();
        let result = decode_frame::<T>(&mut buf, config);
        assert!(
            before - buf.len() <= bound,
            "consumed more than one capped frame"
        );
        assert!(buf.capacity() <= ceiling, "reserved beyond the cap");
        match result {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
}

fn hammer_all(bytes: &[u8]) {
    let config = small_config();
    hammer::<ToAgent>(bytes, &config);
    hammer::<ToCoordinator>(bytes, &config);
    hammer::<Hello>(bytes, &config);
    hammer::<eventor_protocol::HandshakeReply>(bytes, &config);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        hammer_all(&bytes);
    }

    /// Past the magic check, so the payload decoder sees the random bytes.
    #[test]
    fn valid_header_with_random_payload(
        minor in any::<u16>(),
        payload in vec(any::<u8>(), 0..512),
        extra in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = header(1, minor, payload.len() as u32);
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(&extra);
        hammer_all(&bytes);
    }

    /// Any header at all, including lengths up to u32::MAX, with a little payload.
    #[test]
    fn arbitrary_header_fields(
        major in prop_oneof![Just(1u16), any::<u16>()],
        minor in any::<u16>(),
        len in prop_oneof![0u32..64, any::<u32>()],
        payload in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = header(major, minor, len);
        bytes.extend_from_slice(&payload);
        hammer_all(&bytes);
    }

    /// Valid frames with a few bytes overwritten: the closest thing to a fuzzer's mutations.
    #[test]
    fn mutated_valid_frames(
        msgs in vec(to_coordinator(), 1..4),
        flips in vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let mut bytes: Vec<u8> = msgs.iter().flat_map(frame_of).collect();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        hammer_all(&bytes);
    }

    /// Every prefix of a valid frame is "need more" to the decoder, and a torn frame to a
    /// reader whose stream ends there.
    #[test]
    fn every_prefix_is_incomplete(msg in to_agent()) {
        let bytes = frame_of(&msg);
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            prop_assert!(decode_frame::<ToAgent>(&mut buf, &FrameConfig::default())
                .unwrap()
                .is_none());
            prop_assert_eq!(buf.len(), cut, "an incomplete frame must not be consumed");
        }
        block_on(async {
            for cut in 0..bytes.len() {
                let mut reader = FrameReader::new(&bytes[..cut]);
                match reader.read_frame::<ToAgent>().await {
                    Ok(None) => prop_assert_eq!(cut, 0),
                    Err(ProtocolError::TornFrame { have, need }) => {
                        prop_assert_eq!(have, cut);
                        let expected_need = if cut < HEADER_LEN { HEADER_LEN } else { bytes.len() };
                        prop_assert_eq!(need, expected_need);
                    }
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

/// `read_frame` on a stream that ends mid-frame is an error for every cut, `None` for none.
#[tokio::test]
async fn read_frame_at_eof_mid_frame_is_an_error() {
    let bytes = [frame_of(&sample_log()), frame_of(&sample_finished())].concat();
    let first = frame_of(&sample_log()).len();
    for cut in 0..=bytes.len() {
        let mut reader = FrameReader::new(&bytes[..cut]);
        let mut got = Vec::new();
        let end = loop {
            match reader.read_frame::<ToCoordinator>().await {
                Ok(Some(msg)) => got.push(msg),
                other => break other,
            }
        };
        let whole = usize::from(cut >= first) + usize::from(cut == bytes.len());
        assert_eq!(got.len(), whole, "cut at {cut}");
        let at_boundary = cut == 0 || cut == first || cut == bytes.len();
        match end {
            Ok(None) => assert!(at_boundary, "cut at {cut} read as a clean end"),
            Err(ProtocolError::TornFrame { .. }) => assert!(!at_boundary, "cut at {cut}"),
            other => panic!("cut at {cut}: unexpected {other:?}"),
        }
    }
}

/// A length over the cap fails on the header alone, and nothing is reserved for it.
#[test]
fn oversized_length_is_refused_before_allocation() {
    for len in [SMALL_CAP + 1, 1 << 30, u32::MAX] {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(&header(1, 0, len));
        let err = decode_frame::<ToCoordinator>(&mut buf, &small_config()).unwrap_err();
        assert!(
            matches!(err, ProtocolError::FrameTooLarge { len: l, cap: SMALL_CAP } if l == len),
            "{err:?}"
        );
        assert!(buf.capacity() < 1024, "reserved {} bytes", buf.capacity());
        assert!(err.is_fatal());
    }
}

/// A length at the cap is fine: room is reserved for exactly one frame, no more.
#[test]
fn length_at_the_cap_reserves_one_frame() {
    let mut buf = BytesMut::new();
    buf.put_slice(&header(1, 0, SMALL_CAP));
    let got = decode_frame::<ToCoordinator>(&mut buf, &small_config());
    assert!(matches!(got, Ok(None)));
    let frame = HEADER_LEN + SMALL_CAP as usize;
    assert!(buf.capacity() >= frame && buf.capacity() <= 2 * frame);
}

/// With half a frame in, room is reserved for the other half only, not a second frame.
#[test]
fn half_a_frame_reserves_only_the_rest() {
    let frame = HEADER_LEN + SMALL_CAP as usize;
    let mut half = header(1, 0, SMALL_CAP);
    half.resize(frame / 2, 0);
    let mut buf = BytesMut::from(&half[..]);
    let got = decode_frame::<ToCoordinator>(&mut buf, &small_config());
    assert!(matches!(got, Ok(None)), "{got:?}");
    assert_eq!(buf.len(), frame / 2, "nothing consumed");
    // The buffer may round up, but not by anything like the half frame already held.
    let capacity = buf.capacity();
    assert!(
        capacity >= frame && capacity < frame + frame / 4,
        "{capacity}"
    );
}

/// A login banner fails at its first byte, without waiting for a whole header.
#[test]
fn banner_is_bad_magic_at_once() {
    let err = agent_message(b"W").unwrap_err();
    assert!(matches!(&err, ProtocolError::BadMagic { found } if found == b"W"));
    let err = agent_message(b"Welcome to node-a\n").unwrap_err();
    assert!(err.to_string().contains(r#"b"Welc""#), "{err}");
    assert!(err.to_string().contains("login banner"), "{err}");
}

/// A header of another major is refused by the header alone, worded by role.
#[test]
fn other_major_is_a_version_mismatch_by_role() {
    let mut bytes = header(2, 0, 3);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff]); // not a valid payload of any version 1 type
    let err = agent_message(&bytes).unwrap_err();
    assert_eq!(err.to_string(), "agent speaks protocol 2, coordinator 1");
    let err = decode_frame::<ToAgent>(&mut BytesMut::from(&bytes[..]), &FrameConfig::default())
        .unwrap_err();
    assert_eq!(err.to_string(), "agent speaks protocol 1, coordinator 2");
}

/// Another minor of the same major is read normally, and the reader learns it.
#[tokio::test]
async fn other_minor_is_fine() {
    let config = FrameConfig {
        version: ProtocolVersion { major: 1, minor: 9 },
        ..FrameConfig::default()
    };
    let mut buf = BytesMut::new();
    encode_frame(&sample_log(), &mut buf, &config).unwrap();
    let mut reader = FrameReader::new(&buf[..]);
    assert_eq!(reader.read_frame().await.unwrap(), Some(sample_log()));
    assert_eq!(reader.peer_version(), Some(config.version));
}

/// A bad payload costs one frame; the next frame still decodes.
#[test]
fn bad_payload_consumes_its_frame_only() {
    let mut bytes = header(1, 0, 2);
    bytes.extend_from_slice(&[0x7f, 0x00]); // variant 127 does not exist
    let trailing = [frame_of(&sample_log()), vec![0xaa]].concat(); // one byte too many...
    let mut trailing_frame = header(1, 0, (trailing.len() - HEADER_LEN) as u32);
    trailing_frame.extend_from_slice(&trailing[HEADER_LEN..]); // ...inside the payload
    bytes.extend_from_slice(&trailing_frame);
    bytes.extend_from_slice(&frame_of(&sample_finished()));

    let mut buf = BytesMut::from(&bytes[..]);
    let config = FrameConfig::default();
    let err = decode_frame::<ToCoordinator>(&mut buf, &config).unwrap_err();
    assert!(
        matches!(err, ProtocolError::Decode { .. }) && !err.is_fatal(),
        "{err:?}"
    );
    let err = decode_frame::<ToCoordinator>(&mut buf, &config).unwrap_err();
    assert!(
        matches!(err, ProtocolError::TrailingBytes { extra: 1, .. }),
        "{err:?}"
    );
    let (_, msg) = decode_frame::<ToCoordinator>(&mut buf, &config)
        .unwrap()
        .unwrap();
    assert_eq!(msg, sample_finished());
}

/// A forged string length far beyond the frame is a decode error, not an allocation.
#[test]
fn forged_string_length_is_an_error() {
    // ToCoordinator::Error { key: None, message: <length u64::MAX> }
    let payload = [4u8, 0, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let mut bytes = header(1, 0, payload.len() as u32);
    bytes.extend_from_slice(&payload);
    let err = agent_message(&bytes).unwrap_err();
    assert!(matches!(err, ProtocolError::Decode { .. }), "{err:?}");
}

/// The encoder refuses a message over the cap and leaves the buffer as it was.
#[test]
fn encoder_refuses_oversized_messages() {
    let mut buf = BytesMut::from(&b"queued"[..]);
    let huge = ToCoordinator::Error {
        key: None,
        message: "x".repeat(SMALL_CAP as usize),
    };
    let err = encode_frame(&huge, &mut buf, &small_config()).unwrap_err();
    assert!(
        matches!(err, ProtocolError::MessageTooLarge { cap: SMALL_CAP, .. }),
        "{err:?}"
    );
    assert!(!err.is_fatal());
    assert_eq!(&buf[..], b"queued");
}

/// The cap is inclusive: a payload of exactly the cap is written, and its frame passes the
/// decoder's length check and is consumed whole.
#[test]
fn payload_of_exactly_the_cap_encodes_and_passes_the_length_check() {
    let config = small_config();
    let msg = message_with_payload_len(SMALL_CAP as usize);
    let mut buf = BytesMut::new();
    encode_frame(&msg, &mut buf, &config).unwrap();
    assert_eq!(buf.len(), HEADER_LEN + SMALL_CAP as usize);
    match decode_frame::<ToCoordinator>(&mut buf, &config) {
        Ok(Some((header, back))) => assert_eq!((header.len, back), (SMALL_CAP, msg)),
        // bincode charges decoded sizes against the cap (this message's one-byte variant tag
        // as four, its five-byte length prefix as eight), so a payload this close to the cap
        // is refused as a payload error: a known limit, not the frame check.
        Err(err @ ProtocolError::Decode { .. }) => assert!(!err.is_fatal()),
        other => panic!("a frame at the cap must pass the length check: {other:?}"),
    }
    assert!(buf.is_empty(), "the frame is consumed whole");
}

/// One byte over the cap is refused by the encoder, and by the decoder when a peer with a
/// larger cap sends it.
#[test]
fn payload_one_byte_over_the_cap_is_refused_both_ways() {
    let (config, over) = (small_config(), SMALL_CAP + 1);
    let msg = message_with_payload_len(over as usize);
    let mut buf = BytesMut::new();
    let err = encode_frame(&msg, &mut buf, &config).unwrap_err();
    assert!(
        matches!(err, ProtocolError::MessageTooLarge { len, cap: SMALL_CAP, .. } if len == over as usize),
        "{err:?}"
    );
    assert!(buf.is_empty(), "a refused message writes nothing");

    let mut buf = BytesMut::from(&frame_of(&msg)[..]);
    assert_eq!(buf.len(), HEADER_LEN + over as usize);
    let err = decode_frame::<ToCoordinator>(&mut buf, &config).unwrap_err();
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { len, cap: SMALL_CAP } if len == over),
        "{err:?}"
    );
}

#[test]
fn frame_limits_are_powers_of_two_in_range() {
    assert_eq!(FrameLimit::default().bytes(), 16 << 20);
    assert_eq!(FrameLimit::from_bytes(1 << 20).unwrap(), FrameLimit::MIN);
    assert_eq!(FrameLimit::from_bytes(1 << 30).unwrap(), FrameLimit::MAX);
    for bad in [0, 1, 4096, (1 << 20) + 1, 3 << 20, 1 << 31, u64::MAX] {
        let err = FrameLimit::from_bytes(bad).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidFrameLimit { bytes } if bytes == bad));
    }
}
