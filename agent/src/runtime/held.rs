//! What an agent without a prime keeps for the next one: its frames, encoded, in order, in
//! memory up to [`HELD_MEMORY`] and beyond that in a spill file beside its socket, up to
//! [`HELD_BYTES`] in all. Past that bound output is dropped (and counted); task starts and
//! ends are always kept, since the next prime must learn every end.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use bytes::BytesMut;
use eventor_protocol::{encode_frame, FrameConfig, ProtocolError, ToCoordinator};

/// Held frames kept in memory before they spill to the file.
pub const HELD_MEMORY: usize = 4 * 1024 * 1024;

/// Held frames kept in all: below this no output line is lost while no prime is attached.
pub const HELD_BYTES: u64 = 64 * 1024 * 1024;

/// The frames held for the next prime.
#[derive(Debug)]
pub(super) struct Held {
    memory: BytesMut,
    /// Opened (and at once unlinked: nothing is left behind) when memory is full.
    spill: Option<File>,
    spill_path: PathBuf,
    bytes: u64,
    config: FrameConfig,
    /// Output lines dropped past [`HELD_BYTES`].
    pub dropped_lines: u64,
}

impl Held {
    pub(super) fn new(spill_path: PathBuf, config: FrameConfig) -> Held {
        Held {
            memory: BytesMut::new(),
            spill: None,
            spill_path,
            bytes: 0,
            config,
            dropped_lines: 0,
        }
    }

    /// Whether output no longer fits.
    pub(super) fn full(&self) -> bool {
        self.bytes >= HELD_BYTES
    }

    /// Holds one message, encoded as a frame.
    pub(super) fn push(&mut self, message: &ToCoordinator) -> Result<(), ProtocolError> {
        let mut frame = BytesMut::new();
        encode_frame(message, &mut frame, &self.config)?;
        self.bytes += frame.len() as u64;
        if self.spill.is_none() && self.memory.len() + frame.len() <= HELD_MEMORY {
            self.memory.extend_from_slice(&frame);
            return Ok(());
        }
        self.spill_file()?
            .write_all(&frame)
            .map_err(ProtocolError::Io)
    }

    fn spill_file(&mut self) -> Result<&mut File, ProtocolError> {
        if self.spill.is_none() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.spill_path)
                .map_err(ProtocolError::Io)?;
            let _ = std::fs::remove_file(&self.spill_path);
            self.spill = Some(file);
        }
        Ok(self.spill.as_mut().expect("opened above"))
    }

    /// Every held byte, in order: memory first, then the spill file in chunks.
    pub(super) fn drain(self) -> io::Result<HeldBytes> {
        let mut spill = self.spill;
        if let Some(file) = &mut spill {
            file.seek(SeekFrom::Start(0))?;
        }
        Ok(HeldBytes {
            memory: Some(self.memory),
            spill,
        })
    }
}

/// The held bytes read back for the next prime.
pub(super) struct HeldBytes {
    memory: Option<BytesMut>,
    spill: Option<File>,
}

impl HeldBytes {
    /// The next chunk, `None` at the end.
    pub(super) fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        if let Some(memory) = self.memory.take() {
            if !memory.is_empty() {
                return Ok(Some(memory.to_vec()));
            }
        }
        let Some(file) = &mut self.spill else {
            return Ok(None);
        };
        let mut chunk = vec![0; 256 * 1024];
        let read = file.read(&mut chunk)?;
        if read == 0 {
            return Ok(None);
        }
        chunk.truncate(read);
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventor_protocol::{decode_frame, Heartbeat};

    fn beat(seq: u64) -> ToCoordinator {
        ToCoordinator::Heartbeat(Heartbeat { seq, sent_at: 0 })
    }

    #[test]
    fn frames_come_back_in_order_across_memory_and_the_spill_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut held = Held::new(dir.path().join("x.held"), FrameConfig::default());
        let per_frame = {
            let mut b = BytesMut::new();
            encode_frame(&beat(0), &mut b, &FrameConfig::default()).unwrap();
            b.len()
        };
        let count = HELD_MEMORY / per_frame + 1000;
        for seq in 0..count as u64 {
            held.push(&beat(seq)).unwrap();
        }
        assert!(held.spill.is_some(), "past memory, frames spill");
        assert!(
            !dir.path().join("x.held").exists(),
            "the spill file is unlinked"
        );
        let mut bytes = held.drain().unwrap();
        let mut all = BytesMut::new();
        while let Some(chunk) = bytes.next_chunk().unwrap() {
            all.extend_from_slice(&chunk);
        }
        let config = FrameConfig::default();
        for seq in 0..count as u64 {
            let (_, message) = decode_frame::<ToCoordinator>(&mut all, &config)
                .unwrap()
                .unwrap();
            assert_eq!(message, beat(seq));
        }
        assert!(all.is_empty());
    }
}
