//! The messages between a runner and its keeper: one datagram each over a `SOCK_SEQPACKET`
//! pair (bincode, decoded with a size limit), a command's output pipes passed along with its
//! start as `SCM_RIGHTS`. The pair is also the keeper's lifeline: its end of file means the
//! runner is gone, however it died.

use std::ffi::OsStr;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

/// The largest message either side sends: a start carries the runner's whole environment.
pub(super) const MAX_MESSAGE: usize = 1 << 20;

/// What a runner asks of its keeper.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ToKeeper {
    /// Start a command; its stdout and stderr come with the message, in that order.
    Start(Box<StartCommand>),
    /// SIGTERM to the command's group and everything it started, SIGKILL after its grace.
    Stop { id: u64 },
    /// SIGKILL to all of that at once.
    KillNow { id: u64 },
}

/// A command to start: in a process group of its own, with exactly this environment and
/// directory (the runner's at the moment of the start), stdin from /dev/null.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StartCommand {
    pub id: u64,
    pub command: String,
    /// The whole environment as one block of `NAME=VALUE` entries, each ended by a NUL (an
    /// environment need not be UTF-8). One block, sent as bytes: as a list of byte vectors
    /// it was encoded and decoded a byte at a time, a tenth of the keeper's time a command.
    #[serde(with = "bytes")]
    pub env: Vec<u8>,
    #[serde(with = "bytes")]
    pub cwd: Vec<u8>,
    pub grace_ms: u64,
}

impl StartCommand {
    pub fn cwd(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.cwd))
    }
}

/// The environment as a start carries it: `vars` in one block, a NUL after each entry. A
/// name that is empty or holds `=` or a NUL, or a value that holds a NUL, cannot be passed
/// to a program and is left out.
pub(super) fn env_block<'a>(vars: impl Iterator<Item = (&'a OsStr, &'a OsStr)>) -> Vec<u8> {
    let mut block = Vec::with_capacity(4096);
    for (name, value) in vars {
        let (name, value) = (name.as_bytes(), value.as_bytes());
        if name.is_empty() || name.contains(&b'=') || name.contains(&0) || value.contains(&0) {
            continue;
        }
        block.extend_from_slice(name);
        block.push(b'=');
        block.extend_from_slice(value);
        block.push(0);
    }
    block
}

/// A byte vector through serde as bytes, not as a sequence of numbers.
mod bytes {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Bytes)
    }

    struct Bytes;

    impl de::Visitor<'_> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }
    }
}

/// What a keeper tells its runner.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum FromKeeper {
    Started {
        id: u64,
        pid: i32,
    },
    CannotStart {
        id: u64,
        error: String,
    },
    /// The command's wait status, sent once it and everything it left running are gone.
    Ended {
        id: u64,
        status: i32,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// Sends `message` with `fds` attached, waiting while the other side's queue is full.
pub(super) fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fds: &[RawFd],
) -> std::io::Result<()> {
    let sent = send_bytes(socket, &encode(message)?, fds, MsgFlags::MSG_NOSIGNAL)?;
    debug_assert!(sent, "a waiting send always sends");
    Ok(())
}

/// Sends an encoded message if the other side's queue has room for it now: false if not.
pub(super) fn send_now(socket: BorrowedFd<'_>, bytes: &[u8]) -> std::io::Result<bool> {
    send_bytes(
        socket,
        bytes,
        &[],
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )
}

pub(super) fn encode<T: Serialize>(message: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(message, config())
        .map_err(|e| std::io::Error::other(format!("cannot encode: {e}")))
}

fn send_bytes(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[RawFd],
    flags: MsgFlags,
) -> std::io::Result<bool> {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        let sent = sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[IoSlice::new(bytes)],
            cmsgs,
            flags,
            None,
        );
        match sent {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(true),
        }
    }
}

/// What one receive got.
pub(super) enum Received<T> {
    Message(T, Vec<OwnedFd>),
    /// The other side is gone.
    End,
    /// Nothing waiting.
    Nothing,
}

/// Receives one message waiting on `socket`, if there is one, and the descriptors that came
/// with it (close-on-exec), into `buf` (at least [`MAX_MESSAGE`] long); never waits. (A
/// runner's send waits for room, the keeper queues what finds none: a message is never
/// dropped.) A message that does not decode is an error; the
/// peer is ours, so it means a bug, not an attack, but it never panics.
pub(super) fn receive<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<Received<T>> {
    let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (len, fds) = loop {
        let mut iov = [IoSliceMut::new(buf)];
        let got = recvmsg::<UnixAddr>(socket.as_raw_fd(), &mut iov, Some(&mut space), flags);
        let msg = match got {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Received::Nothing),
            Err(e) => return Err(e.into()),
            Ok(msg) => msg,
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this process;
                // nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if msg.flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(std::io::Error::other("a message longer than the limit"));
        }
        break (msg.bytes, fds);
    };
    if len == 0 {
        return Ok(Received::End);
    }
    let (message, _) = bincode::serde::decode_from_slice(&buf[..len], config())
        .map_err(|e| std::io::Error::other(format!("cannot decode: {e}")))?;
    Ok(Received::Message(message, fds))
}
