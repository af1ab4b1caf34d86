//! A run stopped from outside (a signal, or a program's own shutdown): start nothing new,
//! stop what runs (a grace period, then SIGKILL; a second request skips the grace), and
//! say why in every task it ends and in the run's outcome.

use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

/// Handed to a run (`EventorOptions::interrupt`) and triggered by its owner.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    stop: CancellationToken,
    hurry: CancellationToken,
    why: Arc<OnceLock<String>>,
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
