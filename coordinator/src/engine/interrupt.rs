//! A run stopped from outside (a signal, a program's own shutdown, or `eventor-coord cancel`
//! from anywhere that reaches the store): start nothing new, stop what runs (a grace period,
//! then SIGKILL; a second request skips the grace), and say why in every task it ends and in
//! the run's outcome, as one phrase (`interrupted by SIGINT`, `cancelled by eventor-coord
//! cancel (user@host)`). Apart from a stop, this host may
//! be cut off for a while ([`Interrupt::cut_here`]: the prime cannot confirm its run lock):
//! its commands are stopped and its hosts let go, the run itself goes on once the cut is
//! over ([`Interrupt::back_here`]), its hosts brought back.

use std::sync::{Arc, OnceLock};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Handed to a run (`EventorOptions::interrupt`) and triggered by its owner.
#[derive(Debug, Clone)]
pub struct Interrupt {
    stop: CancellationToken,
    hurry: CancellationToken,
    /// The first stop: why, as the phrase every surface shows, and whether it was asked
    /// for through the store (a cancel).
    why: Arc<OnceLock<(String, bool)>>,
    /// Why this host is cut off (its commands stopped, its hosts let go); `None`: it is not.
    here: Arc<watch::Sender<Option<Arc<str>>>>,
}

impl Default for Interrupt {
    fn default() -> Interrupt {
        Interrupt {
            stop: CancellationToken::new(),
            hurry: CancellationToken::new(),
            why: Arc::default(),
            here: Arc::new(watch::channel(None).0),
        }
    }
}

impl Interrupt {
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Stops the run; the first reason given (e.g. `SIGINT`) is the one reported, as
    /// `interrupted by SIGINT`.
    pub fn stop(&self, why: impl Into<String>) {
        let _ = self
            .why
            .set((format!("interrupted by {}", why.into()), false));
        self.stop.cancel();
    }

    /// Stops the run as [`stop`](Self::stop) does, asked for by `by` through the store
    /// (`eventor-coord cancel (user@host)`), reported as `cancelled by …`.
    pub fn cancel(&self, by: &str) {
        let _ = self.why.set((format!("cancelled by {by}"), true));
        self.stop.cancel();
    }

    /// Whether the first stop was a cancel asked for through the store.
    pub fn cancelled(&self) -> bool {
        self.why.get().is_some_and(|(_, cancel)| *cancel)
    }

    /// Cuts this host off for `why` (a prime that cannot confirm its run lock): its
    /// commands are stopped and its hosts let go (their agents' leases start), while the
    /// run waits, its writes held by the store. Asking again while cut changes nothing.
    pub fn cut_here(&self, why: &str) {
        self.here.send_if_modified(|here| {
            let cut = here.is_none();
            if cut {
                *here = Some(Arc::from(why));
            }
            cut
        });
    }

    /// The cut is over (the lock is confirmed again): the run goes on, its hosts are
    /// brought back (re-adopting agents still within their lease).
    pub fn back_here(&self) {
        self.here.send_if_modified(|here| here.take().is_some());
    }

    /// Why this host is cut off, as it changes (`None`: it is not).
    pub fn watch_here(&self) -> watch::Receiver<Option<Arc<str>>> {
        self.here.subscribe()
    }

    /// Skips the grace period of commands being stopped (a second Ctrl-C).
    pub fn hurry(&self) {
        self.hurry.cancel();
    }

    /// Why the run was stopped, once it was, as a phrase: `interrupted by SIGINT`,
    /// `cancelled by eventor-coord cancel (user@host)`.
    pub fn reason(&self) -> Option<&str> {
        self.why.get().map(|(why, _)| why.as_str())
    }

    /// Cancelled when the run is stopped.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Cancelled when stopped commands should be killed at once.
    pub fn hurry_token(&self) -> &CancellationToken {
        &self.hurry
    }
}
