//! Remote port forwarding (`tcpip-forward`): the server listens on its side and hands each
//! connection to us as a channel, which [`Session::forward_remote`](super::Session::forward_remote)
//! delivers as a byte stream on a bounded queue.
//!
//! The connection's handler (owned by russh) and the session share a [`Registry`] from
//! listening port to queue. A connection for a port nobody registered, or whose queue is
//! full or closed, is refused, so nothing piles up unbounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::client::Msg;
use russh::{Channel, ChannelStream};
use tokio::sync::mpsc;

/// A forwarded connection: read and write it like a socket.
pub type ForwardedStream = ChannelStream<Msg>;

/// Connections queued per forward before the server's next one is refused.
const QUEUE: usize = 64;

/// Listening port → where its connections go.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry(Arc<Mutex<HashMap<u32, mpsc::Sender<ForwardedStream>>>>);

impl Registry {
    /// A queue for `port`'s connections.
    pub(crate) fn register(&self, port: u32) -> mpsc::Receiver<ForwardedStream> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.0.lock().expect("forward registry").insert(port, tx);
        rx
    }

    /// Hands over a channel the server opened for `port`; `false` (refuse it) if nobody
    /// takes it.
    pub(crate) fn deliver(&self, port: u32, channel: Channel<Msg>) -> bool {
        let sender = self.0.lock().expect("forward registry").get(&port).cloned();
        match sender {
            Some(tx) => tx.try_send(channel.into_stream()).is_ok(),
            None => false,
        }
    }

    /// Whether `port` has a live queue (checked before accepting a channel).
    pub(crate) fn wants(&self, port: u32) -> bool {
        let map = self.0.lock().expect("forward registry");
        map.get(&port).is_some_and(|tx| !tx.is_closed())
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
