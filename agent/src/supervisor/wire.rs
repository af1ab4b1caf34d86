//! The messages between a runner and its keeper: one datagram each over a `SOCK_SEQPACKET`
//! pair (bincode, decoded with a size limit), a command's output pipes passed along with its
//! start as `SCM_RIGHTS`. The pair is also the keeper's lifeline: its end of file means the
//! runner is gone, however it died.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

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
    /// Names and values as bytes: an environment need not be UTF-8.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    pub cwd: Vec<u8>,
    pub grace_ms: u64,
}

impl StartCommand {
    pub fn env(&self) -> impl Iterator<Item = (OsString, OsString)> + '_ {
        self.env
            .iter()
            .map(|(k, v)| (OsString::from_vec(k.clone()), OsString::from_vec(v.clone())))
    }

    pub fn cwd(&self) -> PathBuf {
        PathBuf::from(OsString::from_vec(self.cwd.clone()))
    }
}

/// The environment as a start carries it.
pub(super) fn env_bytes(
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    vars.map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
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

/// Sends `message` with `fds` attached.
pub(super) fn send<T: Serialize>(
    socket: BorrowedFd<'_>,
    message: &T,
    fds: &[RawFd],
) -> std::io::Result<()> {
    let bytes = bincode::serde::encode_to_vec(message, config())
        .map_err(|e| std::io::Error::other(format!("cannot encode: {e}")))?;
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    loop {
        let sent = sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        match sent {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => return Ok(()),
        }
    }
}

/// What one receive got.
pub(super) enum Received<T> {
    Message(T, Vec<OwnedFd>),
    /// The other side is gone.
    End,
    /// Nothing waiting (when not told to wait).
    Nothing,
}

/// Whether a receive waits for a message. (Sends always wait: a message is never dropped.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    Yes,
    No,
}

/// Receives one message and the descriptors that came with it (close-on-exec), into `buf`
/// (at least [`MAX_MESSAGE`] long). A message that does not decode is an error; the peer is
/// ours, so it means a bug, not an attack, but it never panics.
pub(super) fn receive<T: for<'de> Deserialize<'de>>(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    wait: Wait,
) -> std::io::Result<Received<T>> {
    let flags = match wait {
        Wait::Yes => MsgFlags::MSG_CMSG_CLOEXEC,
        Wait::No => MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    };
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
