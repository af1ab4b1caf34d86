//! The frame cap: which payload lengths an end accepts, shared by the framing and the payload
//! codec (which charges decoding against it).

use crate::error::ProtocolError;

/// The cap on a frame's payload length. Only powers of two from 1 MiB to 1 GiB, because
/// the payload codec's limit is fixed at compile time per value (see the `wire` module) and
/// serde may preallocate up to 1 MiB for a sequence whatever the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameLimit {
    log2: u8,
}

impl FrameLimit {
    /// 1 MiB, the smallest cap.
    pub const MIN: FrameLimit = FrameLimit { log2: 20 };
    /// 16 MiB, the default cap.
    pub const DEFAULT: FrameLimit = FrameLimit { log2: 24 };
    /// 1 GiB, the largest cap.
    pub const MAX: FrameLimit = FrameLimit { log2: 30 };

    /// The cap of `bytes`, which must be a power of two within [`MIN`](Self::MIN) and
    /// [`MAX`](Self::MAX).
    pub fn from_bytes(bytes: u64) -> Result<FrameLimit, ProtocolError> {
        let in_range = (Self::MIN.bytes() as u64..=Self::MAX.bytes() as u64).contains(&bytes);
        if !in_range || !bytes.is_power_of_two() {
            return Err(ProtocolError::InvalidFrameLimit { bytes });
        }
        Ok(FrameLimit {
            log2: bytes.trailing_zeros() as u8,
        })
    }

    /// The cap in bytes.
    pub fn bytes(self) -> u32 {
        1 << self.log2
    }

    /// The cap's exponent, which picks the payload decoder's compile-time limit.
    pub(crate) fn log2(self) -> u8 {
        self.log2
    }
}

impl Default for FrameLimit {
    fn default() -> Self {
        FrameLimit::DEFAULT
    }
}
