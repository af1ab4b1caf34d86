//! The agent's channel to its prime: its own stdin and stdout, as `sshd` (or the prime, for
//! a local agent) gives them.

use tokio::io::{AsyncRead, AsyncWrite};

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// The channel to the prime: stdin and stdout. Pipes (what `sshd` and the prime give an
/// agent) are read and written through the runtime's event loop; anything else through
/// tokio's stdio, which hands every read and write to a blocking thread: under a flood of
/// output that was a thread wake-up per 64 KiB sent.
pub fn prime_channel() -> (Reader, Writer) {
    use std::os::fd::AsFd;
    use tokio::net::unix::pipe;
    let stdin = std::io::stdin().as_fd().try_clone_to_owned();
    let stdout = std::io::stdout().as_fd().try_clone_to_owned();
    let reader: Reader = match stdin.and_then(pipe::Receiver::from_owned_fd) {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdin()),
    };
    let writer: Writer = match stdout.and_then(pipe::Sender::from_owned_fd) {
        Ok(pipe) => Box::new(pipe),
        Err(_) => Box::new(tokio::io::stdout()),
    };
    (reader, writer)
}
