//! A plain async frame reader and writer over any `AsyncRead`/`AsyncWrite` (an SSH channel's
//! streams, a child's stdout/stdin, a `tokio::io::duplex` in tests).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProtocolError;
use crate::frame::{self, FrameConfig};
use crate::messages::{ProtocolVersion, WireMessage};

/// Room for many small frames per read; grows only as far as one frame needs (≤ the cap).
const INITIAL_BUFFER: usize = 8 * 1024;

/// The least spare room offered to a read, so a nearly full buffer does not turn into one
/// tiny read per frame header.
const MIN_READ: usize = 4 * 1024;

/// Reads frames from `R`, one message at a time.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    config: FrameConfig,
    peer: Option<ProtocolVersion>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the default cap and the current version.
    pub fn new(inner: R) -> Self {
        Self::with_config(inner, FrameConfig::default())
    }

    /// A reader with the given cap and version.
    pub fn with_config(inner: R, config: FrameConfig) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(INITIAL_BUFFER),
            config,
            peer: None,
        }
    }

    /// The next message: `Ok(None)` when the stream ends cleanly between frames,
    /// [`ProtocolError::TornFrame`] when it ends inside one.
    ///
    /// Cancel-safe: dropping the future loses no bytes (they stay in the buffer), so it can
    /// sit in a `tokio::select!` beside a heartbeat timer.
    pub async fn read_frame<T: WireMessage>(&mut self) -> Result<Option<T>, ProtocolError> {
        loop {
            if let Some((header, msg)) = frame::decode_frame::<T>(&mut self.buf, &self.config)? {
                self.peer = Some(header.version);
                return Ok(Some(msg));
            }
            if self.buf.capacity() - self.buf.len() < MIN_READ {
                self.buf.reserve(MIN_READ);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(frame::torn(&self.buf)),
                };
            }
        }
    }

    /// The version in the last header read, once a frame has arrived.
    pub fn peer_version(&self) -> Option<ProtocolVersion> {
        self.peer
    }

    /// The configuration.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// The stream and any bytes read past the last frame.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// Writes frames to `W`.
#[derive(Debug)]
pub struct FrameWriter<W> {
    inner: W,
    buf: BytesMut,
    config: FrameConfig,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// A writer with the default cap and the current version.
    pub fn new(inner: W) -> Self {
        Self::with_config(inner, FrameConfig::default())
    }

    /// A writer with the given cap and version.
    pub fn with_config(inner: W, config: FrameConfig) -> Self {
        FrameWriter {
            inner,
            buf: BytesMut::with_capacity(INITIAL_BUFFER),
            config,
        }
    }

    /// Writes one frame and flushes it.
    ///
    /// Not cancel-safe: a dropped future may leave part of a frame on the stream, after
    /// which the channel must be dropped.
    pub async fn write_frame<T: WireMessage>(&mut self, msg: &T) -> Result<(), ProtocolError> {
        self.queue_frame(msg)?;
        self.flush().await
    }

    /// Encodes one frame into the writer's buffer without writing it, so a burst of log
    /// records goes out in one write; [`flush`](Self::flush) sends them.
    pub fn queue_frame<T: WireMessage>(&mut self, msg: &T) -> Result<(), ProtocolError> {
        frame::encode_frame(msg, &mut self.buf, &self.config)
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Writes every queued frame and flushes the stream.
    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.inner.write_all_buf(&mut self.buf).await?;
        self.inner.flush().await?;
        Ok(())
    }

    /// Flushes, then shuts the stream down (EOF for the peer, between frames).
    pub async fn shutdown(&mut self) -> Result<(), ProtocolError> {
        self.flush().await?;
        self.inner.shutdown().await?;
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &FrameConfig {
        &self.config
    }

    /// The stream; queued bytes not yet flushed are dropped.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
