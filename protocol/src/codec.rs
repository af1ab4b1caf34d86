//! `tokio_util::codec` Encoder/Decoder for frames, for use with `FramedRead`/`FramedWrite`.

use std::fmt;
use std::marker::PhantomData;

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::frame::{self, FrameConfig};
use crate::messages::{ProtocolVersion, ToAgent, ToCoordinator, WireMessage};

/// Decodes frames carrying `In` and encodes frames carrying `Out`.
///
/// One codec per direction pair: [`AgentCodec`] on the agent, [`CoordinatorCodec`] on the
/// coordinator. For the handshake, use `FrameCodec<HandshakeReply, Hello>` (agent) or
/// `FrameCodec<Hello, HandshakeReply>` (coordinator) and then [`FrameCodec::retype`], or
/// the plain [`FrameReader`](crate::FrameReader)/[`FrameWriter`](crate::FrameWriter) pair,
/// which read any message type.
pub struct FrameCodec<In, Out> {
    config: FrameConfig,
    peer: Option<ProtocolVersion>,
    // fn(Out) -> In: the codec neither owns nor shares messages, so it is Send + Sync.
    types: PhantomData<fn(Out) -> In>,
}

/// The agent's codec: reads what the coordinator sends, writes what the agent sends.
pub type AgentCodec = FrameCodec<ToAgent, ToCoordinator>;

/// The coordinator's codec: reads what the agent sends, writes what the coordinator sends.
pub type CoordinatorCodec = FrameCodec<ToCoordinator, ToAgent>;

impl<In, Out> FrameCodec<In, Out> {
    /// A codec with the given cap and version.
    pub fn new(config: FrameConfig) -> Self {
        FrameCodec {
            config,
            peer: None,
            types: PhantomData,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// The version in the last header decoded, once a frame has arrived.
    pub fn peer_version(&self) -> Option<ProtocolVersion> {
        self.peer
    }

    /// The same codec for other message types (e.g. after the handshake), keeping what it
    /// learnt about the peer.
    pub fn retype<In2, Out2>(self) -> FrameCodec<In2, Out2> {
        FrameCodec {
            config: self.config,
            peer: self.peer,
            types: PhantomData,
        }
    }
}

impl<In, Out> Default for FrameCodec<In, Out> {
    fn default() -> Self {
        FrameCodec::new(FrameConfig::default())
    }
}

impl<In, Out> Clone for FrameCodec<In, Out> {
    fn clone(&self) -> Self {
        FrameCodec {
            config: self.config,
            peer: self.peer,
            types: PhantomData,
        }
    }
}

impl<In, Out> fmt::Debug for FrameCodec<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("config", &self.config)
            .field("peer", &self.peer)
            .finish()
    }
}

impl<In: WireMessage, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtocolError> {
        let Some((header, msg)) = frame::decode_frame::<In>(src, &self.config)? else {
            return Ok(None);
        };
        self.peer = Some(header.version);
        Ok(Some(msg))
    }

    /// At end of stream, leftover bytes are a torn frame, reported with how much arrived.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<In>, ProtocolError> {
        match self.decode(src)? {
            Some(msg) => Ok(Some(msg)),
            None if src.is_empty() => Ok(None),
            None => Err(frame::torn(src)),
        }
    }
}

impl<In, Out: WireMessage> Encoder<Out> for FrameCodec<In, Out> {
    type Error = ProtocolError;

    fn encode(&mut self, msg: Out, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        frame::encode_frame(&msg, dst, &self.config)
    }
}
