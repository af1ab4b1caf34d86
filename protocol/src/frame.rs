//! Framing: the fixed header, and encoding/decoding one frame to/from a buffer.
//!
//! Nothing here knows bincode; payloads go through [`crate::wire`].

use bytes::{Buf, BufMut, BytesMut};

use crate::error::ProtocolError;
use crate::limit::FrameLimit;
use crate::messages::{ProtocolVersion, WireMessage};
use crate::wire;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"EVTR";

/// Bytes in a frame header: magic, major, minor, payload length.
pub const HEADER_LEN: usize = 12;

/// How one end frames: its cap on incoming payloads and the version it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameConfig {
    /// The cap on payload length, checked on both encode and decode.
    pub limit: FrameLimit,
    /// The version written into every header and required (major) of every incoming one.
    /// Anything but [`ProtocolVersion::CURRENT`] is for tests.
    pub version: ProtocolVersion,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The sender's protocol version.
    pub version: ProtocolVersion,
    /// The payload's length in bytes.
    pub len: u32,
}

impl FrameHeader {
    fn write_to(self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&MAGIC);
        out[4..6].copy_from_slice(&self.version.major.to_be_bytes());
        out[6..8].copy_from_slice(&self.version.minor.to_be_bytes());
        out[8..12].copy_from_slice(&self.len.to_be_bytes());
    }

    fn read_from(bytes: &[u8; HEADER_LEN]) -> FrameHeader {
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        FrameHeader {
            version: ProtocolVersion {
                major: u16_at(4),
                minor: u16_at(6),
            },
            len: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        }
    }
}

/// Appends one frame carrying `msg` to `dst`. On error `dst` is left as it was.
pub fn encode_frame<T: WireMessage>(
    msg: &T,
    dst: &mut BytesMut,
    config: &FrameConfig,
) -> Result<(), ProtocolError> {
    let start = dst.len();
    dst.put_bytes(0, HEADER_LEN);
    // Encode straight into the buffer, then patch the length in: no temporary Vec per frame.
    let encoded = wire::encode_payload(msg, dst, T::NAME).and_then(|()| {
        let len = dst.len() - start - HEADER_LEN;
        check_outgoing_len::<T>(len, config.limit)
    });
    match encoded {
        Ok(len) => {
            let header = FrameHeader {
                version: config.version,
                len,
            };
            header.write_to(&mut dst[start..start + HEADER_LEN]);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

fn check_outgoing_len<T: WireMessage>(len: usize, limit: FrameLimit) -> Result<u32, ProtocolError> {
    match u32::try_from(len) {
        Ok(len) if len <= limit.bytes() => Ok(len),
        _ => Err(ProtocolError::MessageTooLarge {
            what: T::NAME,
            len,
            cap: limit.bytes(),
        }),
    }
}

/// Takes one frame off the front of `src` and decodes it, or returns `Ok(None)` if `src`
/// does not hold a whole frame yet (having reserved room for the rest, never beyond the cap).
///
/// Header errors leave `src` untouched; a payload error consumes the frame, so the stream
/// stays in step.
pub fn decode_frame<T: WireMessage>(
    src: &mut BytesMut,
    config: &FrameConfig,
) -> Result<Option<(FrameHeader, T)>, ProtocolError> {
    let Some(header) = peek_header::<T>(src, config)? else {
        src.reserve(HEADER_LEN - src.len());
        return Ok(None);
    };
    let total = HEADER_LEN + header.len as usize;
    if src.len() < total {
        // The header passed the cap check, so this reservation is bounded by the cap.
        src.reserve(total - src.len());
        return Ok(None);
    }
    let decoded = wire::decode_payload(&src[HEADER_LEN..total], config.limit, T::NAME);
    src.advance(total);
    decoded.map(|msg| Some((header, msg)))
}

/// Checks as much of the header as has arrived, and returns it once it is whole.
///
/// The magic is checked byte by byte as it arrives, so a banner fails at once instead of
/// waiting for twelve bytes that may never come.
fn peek_header<T: WireMessage>(
    src: &[u8],
    config: &FrameConfig,
) -> Result<Option<FrameHeader>, ProtocolError> {
    let seen = src.len().min(MAGIC.len());
    if src[..seen] != MAGIC[..seen] {
        return Err(ProtocolError::BadMagic {
            found: src[..seen].to_vec(),
        });
    }
    let Some(bytes) = src.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = FrameHeader::read_from(bytes);
    let ours = config.version.major;
    if header.version.major != ours {
        let us = T::SENDER.peer();
        return Err(ProtocolError::version_mismatch(
            us,
            ours,
            header.version.major,
        ));
    }
    if header.len > config.limit.bytes() {
        return Err(ProtocolError::FrameTooLarge {
            len: header.len,
            cap: config.limit.bytes(),
        });
    }
    Ok(Some(header))
}

/// How many bytes the frame at the front of `src` needs in all, as far as can be told.
pub(crate) fn bytes_needed(src: &[u8]) -> usize {
    match src.first_chunk::<HEADER_LEN>() {
        Some(bytes) => HEADER_LEN + FrameHeader::read_from(bytes).len as usize,
        None => HEADER_LEN,
    }
}

/// The error for a stream that ended with `src` holding part of a frame.
pub(crate) fn torn(src: &[u8]) -> ProtocolError {
    ProtocolError::TornFrame {
        have: src.len(),
        need: bytes_needed(src),
    }
}
