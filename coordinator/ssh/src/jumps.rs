//! Jump hosts shared, and logins paced: what OpenSSH's ControlMaster and a bastion's
//! `MaxStartups` ask of a client that reaches many hosts at once.
//!
//! Every host reached through the same jump host (the same user, address, port and chain)
//! in one connect of many hosts shares one authenticated connection to it, as long as any
//! of them is open: a channel per host over that one session, so a bastion sees one login
//! for a run's hosts however many sit behind it (each hop of a chain is shared the same
//! way; a host brought back later makes its own). A dropped jump connection is made again
//! by the next host that needs it. A jump host that just failed fails the hosts
//! waiting on it with the same cause, rather than each trying again in turn.
//!
//! At most [`ClientSettings::max_startups`](crate::ClientSettings::max_startups) logins are
//! being set up at once (TCP, handshake, authentication); the rest wait in order, so a few
//! hundred hosts do not hit the network, or one bastion, in one burst.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::error::SshError;

/// A failure of a jump host is given to the hosts waiting on it for this long.
const FAILURE_SHARED_FOR: Duration = Duration::from_secs(2);

/// A connection that may have ended.
pub(crate) trait Connection {
    fn is_closed(&self) -> bool;
}

/// One jump host's connection, shared by the hosts behind it.
#[derive(Debug)]
pub(crate) struct JumpSlot<S> {
    session: Weak<S>,
    failed: Option<(Instant, Arc<SshError>)>,
}

impl<S> Default for JumpSlot<S> {
    fn default() -> Self {
        JumpSlot {
            session: Weak::new(),
            failed: None,
        }
    }
}

impl<S: Connection> JumpSlot<S> {
    /// The open connection, or the failure that just happened, if either.
    pub(crate) fn reuse(&self) -> Option<Result<Arc<S>, Arc<SshError>>> {
        if let Some(session) = self.session.upgrade().filter(|s| !s.is_closed()) {
            return Some(Ok(session));
        }
        let (at, error) = self.failed.as_ref()?;
        (at.elapsed() < FAILURE_SHARED_FOR).then(|| Err(error.clone()))
    }

    /// Remembers what connecting gave.
    pub(crate) fn keep(&mut self, made: &Result<Arc<S>, Arc<SshError>>) {
        match made {
            Ok(session) => {
                self.session = Arc::downgrade(session);
                self.failed = None;
            }
            Err(error) => self.failed = Some((Instant::now(), error.clone())),
        }
    }
}

/// The jump connections of one connect of many hosts (`connect_all`), by hop
/// (`user@address:port` and its chain): hosts share a jump connection only with the hosts
/// connected with them, with the same settings (keys, known hosts).
#[derive(Debug)]
pub(crate) struct Jumps<S> {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<JumpSlot<S>>>>>,
}

impl<S> Default for Jumps<S> {
    fn default() -> Self {
        Jumps {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<S> Jumps<S> {
    /// The slot of the hop named `key`; its lock is held while the hop is connected, so the
    /// hosts behind it wait for that one connection.
    pub(crate) fn slot(&self, key: String) -> Arc<tokio::sync::Mutex<JumpSlot<S>>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.entry(key).or_default().clone()
    }
}
