//! The one error type of the protocol, and the two roles that error messages name.

use std::fmt;
use std::io;
use std::time::Duration;

/// Which end of the channel a program is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `eventor-agent`, on a cluster host.
    Agent,
    /// The prime coordinator, which launched the agent.
    Coordinator,
}

impl Role {
    /// The other end of the channel.
    pub fn peer(self) -> Role {
        match self {
            Role::Agent => Role::Coordinator,
            Role::Coordinator => Role::Agent,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::Coordinator => "coordinator",
        })
    }
}

/// A boxed cause from the payload codec, so bincode's types stay out of the public API.
pub type WireCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong reading, writing or shaking hands.
///
/// Errors from the frame header ([`BadMagic`](Self::BadMagic),
/// [`VersionMismatch`](Self::VersionMismatch), [`FrameTooLarge`](Self::FrameTooLarge)) and
/// [`TornFrame`](Self::TornFrame) leave the byte stream out of step: drop the channel. A
/// [`Decode`](Self::Decode) or [`TrailingBytes`](Self::TrailingBytes) error consumed exactly
/// one frame, so the stream is still in step, but the peer is buggy or of another build.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Reading from or writing to the channel failed.
    #[error("i/o error on the channel")]
    Io(#[from] io::Error),

    /// The bytes are not an eventor frame at all.
    #[error(
        "not an eventor frame: the stream starts with {} (is something else, such as a login \
         banner, writing to the channel?)",
        show_bytes(found)
    )]
    BadMagic {
        /// The first bytes seen where the magic should be (up to four).
        found: Vec<u8>,
    },

    /// The two ends speak different major versions of the protocol.
    #[error("agent speaks protocol {agent}, coordinator {coordinator}")]
    VersionMismatch {
        /// The agent's major version.
        agent: u16,
        /// The coordinator's major version.
        coordinator: u16,
    },

    /// An incoming frame's header announces a payload over the cap. Caught before any
    /// memory is reserved for it; the stream is out of step afterwards.
    #[error("incoming frame announces {len} payload bytes, over the {cap}-byte cap")]
    FrameTooLarge {
        /// The payload length in the header.
        len: u32,
        /// The configured cap.
        cap: u32,
    },

    /// An outgoing message encodes to more than the cap. Nothing was written.
    #[error("a {what} encodes to {len} bytes, over the {cap}-byte frame cap")]
    MessageTooLarge {
        /// The message type.
        what: &'static str,
        /// The encoded payload length.
        len: usize,
        /// The configured cap.
        cap: u32,
    },

    /// The channel ended in the middle of a frame.
    #[error("channel closed inside a frame: {have} of {need} bytes arrived")]
    TornFrame {
        /// Bytes of the frame that arrived.
        have: usize,
        /// Bytes the frame needed (just the header's length if the header itself was cut).
        need: usize,
    },

    /// A whole frame arrived but its payload is not a valid message of the expected type.
    #[error("cannot decode a {what} payload")]
    Decode {
        /// The message type that was expected.
        what: &'static str,
        /// What the payload codec said.
        #[source]
        source: WireCause,
    },

    /// A payload decoded but did not use all of its bytes: the peer's type differs from ours.
    #[error("{extra} unexpected bytes after a {what} payload")]
    TrailingBytes {
        /// The message type that was decoded.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },

    /// A message could not be encoded.
    #[error("cannot encode a {what}")]
    Encode {
        /// The message type.
        what: &'static str,
        /// What the payload codec said.
        #[source]
        source: WireCause,
    },

    /// The coordinator refused the agent.
    #[error("handshake refused: {reason}")]
    Refused {
        /// The coordinator's reason.
        reason: String,
    },

    /// The peer said nothing in time.
    #[error("no {waiting_for} within {after:?}")]
    Timeout {
        /// What we were waiting for.
        waiting_for: &'static str,
        /// How long we waited.
        after: Duration,
    },

    /// The peer closed the channel cleanly where a message was required.
    #[error("the {peer} closed the channel before sending {expected}")]
    Closed {
        /// Who closed it.
        peer: Role,
        /// What we were waiting for.
        expected: &'static str,
    },

    /// A frame cap that the protocol does not support.
    #[error("a frame cap must be a power of two from 1 MiB to 1 GiB, not {bytes} bytes")]
    InvalidFrameLimit {
        /// The requested cap.
        bytes: u64,
    },
}

impl ProtocolError {
    /// The version-mismatch error as seen by `us`, who speak `ours`, when the peer speaks `peer`.
    ///
    /// Both ends produce the same text, "agent speaks protocol 2, coordinator 1".
    pub fn version_mismatch(us: Role, ours: u16, peer: u16) -> ProtocolError {
        let (agent, coordinator) = match us {
            Role::Agent => (ours, peer),
            Role::Coordinator => (peer, ours),
        };
        ProtocolError::VersionMismatch { agent, coordinator }
    }

    /// True when the channel should be dropped: the stream is out of step, closed, or the
    /// handshake failed. The other errors concern one message and leave the stream usable.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ProtocolError::Decode { .. }
                | ProtocolError::TrailingBytes { .. }
                | ProtocolError::Encode { .. }
                | ProtocolError::MessageTooLarge { .. }
        )
    }
}

/// Shows bytes as an escaped byte string, e.g. `b"Welc"`, so a banner is recognisable.
fn show_bytes(bytes: &[u8]) -> String {
    let escaped: String = bytes
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("b\"{escaped}\"")
}
