//! Remote forwarding: the server listens on its side, on a TCP port (`tcpip-forward`) or a
//! Unix socket (OpenSSH's `streamlocal-forward@openssh.com`), and hands each connection to
//! us as a channel, which [`Session::forward_remote`](super::Session::forward_remote) and
//! [`Session::forward_remote_socket`](super::Session::forward_remote_socket) deliver as byte
//! streams on a bounded queue.
//!
//! The connection's handler (owned by russh) and the session share a [`Registry`] from
//! listening endpoint to queue. A connection for an endpoint nobody registered, or whose
//! queue is full or closed, is refused, so nothing piles up unbounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::client::Msg;
use russh::{Channel, ChannelStream};
use tokio::sync::mpsc;

/// A forwarded connection: read and write it like a socket.
pub type ForwardedStream = ChannelStream<Msg>;

/// Connections queued per forward before the server's next one is refused.
const QUEUE: usize = 64;

/// Where the server listens for us.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    Port(u32),
    Socket(String),
}

/// Listening endpoint → where its connections go.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<HashMap<Endpoint, mpsc::Sender<ForwardedStream>>>>);

impl Registry {
    /// A queue for `endpoint`'s connections.
    pub(crate) fn register(&self, endpoint: Endpoint) -> mpsc::Receiver<ForwardedStream> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().insert(endpoint, tx);
        rx
    }

    /// Hands over a channel the server opened for `endpoint`; `false` (refuse it) if nobody
    /// takes it.
    pub(crate) fn deliver(&self, endpoint: &Endpoint, channel: Channel<Msg>) -> bool {
        let sender = self.lock().get(endpoint).cloned();
        match sender {
            Some(tx) => tx.try_send(channel.into_stream()).is_ok(),
            None => false,
        }
    }

    /// Whether `endpoint` has a live queue (checked before accepting a channel).
    pub(crate) fn wants(&self, endpoint: &Endpoint) -> bool {
        self.lock().get(endpoint).is_some_and(|tx| !tx.is_closed())
    }

    /// The map, even after a panic elsewhere held its lock (it holds no invariant a panic
    /// could break).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Endpoint, mpsc::Sender<ForwardedStream>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A port the server listens on for us, and the connections it receives.
#[derive(Debug)]
pub struct RemoteForward {
    /// The port on the server's side (the one asked for, or the one it chose for 0).
    pub port: u32,
    /// Each connection to that port; ends when the SSH connection does.
    pub connections: mpsc::Receiver<ForwardedStream>,
}

/// A Unix socket the server listens on for us, and the connections it receives.
#[derive(Debug)]
pub struct SocketForward {
    /// The socket's path on the server's side.
    pub path: String,
    /// Each connection to that socket; ends when the SSH connection does.
    pub connections: mpsc::Receiver<ForwardedStream>,
}
