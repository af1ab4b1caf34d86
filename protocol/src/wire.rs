//! The payload codec: every bincode call of the crate is here, so it can be swapped alone.
//!
//! Payloads use bincode 2's `standard()` configuration through serde: little-endian,
//! variable-length integers, enum variants as their index, strings and sequences as a
//! length then the items. Decoding always carries an explicit byte limit equal to the
//! frame cap: bincode checks each length prefix against it *before* allocating, so a forged
//! string length in a small frame is an error, not a huge allocation.

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ProtocolError;
use crate::limit::FrameLimit;

type Decoded<T> = Result<(T, usize), bincode::error::DecodeError>;

/// Appends `msg`'s encoding to `dst`. `what` names the type in errors.
pub(crate) fn encode_payload<T: Serialize>(
    msg: &T,
    dst: &mut BytesMut,
    what: &'static str,
) -> Result<(), ProtocolError> {
    let mut writer = dst.writer();
    bincode::serde::encode_into_std_write(msg, &mut writer, bincode::config::standard())
        .map(drop)
        .map_err(|e| ProtocolError::Encode {
            what,
            source: Box::new(e),
        })
}

/// Decodes exactly one `T` from the whole of `payload`, charging at most `limit` bytes.
pub(crate) fn decode_payload<T: DeserializeOwned>(
    payload: &[u8],
    limit: FrameLimit,
    what: &'static str,
) -> Result<T, ProtocolError> {
    let (msg, used) = limited_decoder::<T>(limit)(payload).map_err(|e| ProtocolError::Decode {
        what,
        source: Box::new(e),
    })?;
    match payload.len() - used {
        0 => Ok(msg),
        extra => Err(ProtocolError::TrailingBytes { what, extra }),
    }
}

/// Bincode's limit is a const generic, so each supported cap (a power of two, see
/// [`FrameLimit`]) gets its own instance and the configured one is picked at run time.
fn limited_decoder<T: DeserializeOwned>(limit: FrameLimit) -> fn(&[u8]) -> Decoded<T> {
    match limit.log2() {
        20 => decode_with::<T, { 1 << 20 }>,
        21 => decode_with::<T, { 1 << 21 }>,
        22 => decode_with::<T, { 1 << 22 }>,
        23 => decode_with::<T, { 1 << 23 }>,
        24 => decode_with::<T, { 1 << 24 }>,
        25 => decode_with::<T, { 1 << 25 }>,
        26 => decode_with::<T, { 1 << 26 }>,
        27 => decode_with::<T, { 1 << 27 }>,
        28 => decode_with::<T, { 1 << 28 }>,
        29 => decode_with::<T, { 1 << 29 }>,
        // FrameLimit keeps log2 within 20..=30, so this arm is exactly 1 GiB.
        _ => decode_with::<T, { 1 << 30 }>,
    }
}

fn decode_with<T: DeserializeOwned, const LIMIT: usize>(payload: &[u8]) -> Decoded<T> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    bincode::serde::decode_from_slice(payload, config)
}
