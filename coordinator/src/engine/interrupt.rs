//! A run stopped from outside (a signal, or a program's own shutdown): start nothing new,
//! stop what runs (a grace period, then SIGKILL; a second request skips the grace), and
//! say why in every task it ends and in the run's outcome. A stop may also be this host's
//! only ([`Interrupt::stop_here`]): the agents' tasks then run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Handed to a run (`EventorOptions::interrupt`) and triggered by its owner.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    stop: CancellationToken,
    hurry: CancellationToken,
    why: Arc<OnceLock<String>>,
    /// The first stop was [`Interrupt::stop_here`]: the agents' tasks are not cancelled.
    here_only: Arc<AtomicBool>,
}

impl Interrupt {
    pub fn new() -> Interrupt {
        Interrupt::default()
    }

    /// Stops the run; the first reason given (e.g. `SIGINT`) is the one reported.
    pub fn stop(&self, why: impl Into<String>) {
        let _ = self.why.set(why.into());
        self.stop.cancel();
    }

    /// Stops the run on this host only: nothing new starts and this host's commands are
    /// stopped, but tasks on other hosts are left to their agents (a prime that lost
    /// contact with the store). A stop already asked for stays as it was.
    pub fn stop_here(&self, why: impl Into<String>) {
        if self.why.set(why.into()).is_ok() {
            self.here_only.store(true, Ordering::Release);
        }
        self.stop.cancel();
    }

    /// Whether stopping the run cancels the tasks on other hosts too.
    pub fn reaches_hosts(&self) -> bool {
        !self.here_only.load(Ordering::Acquire)
    }

    /// Skips the grace period of commands being stopped (a second Ctrl-C).
    pub fn hurry(&self) {
        self.hurry.cancel();
    }

    /// Why the run was stopped, once it was.
    pub fn reason(&self) -> Option<&str> {
        self.why.get().map(String::as_str)
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
