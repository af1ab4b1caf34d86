//! The prime's lease on its run, watched while the run goes on: a prime that cannot confirm
//! its run lock (Postgres: for half of `dead_after`) stops its own commands and lets go of
//! its hosts (their agents' leases start), and starts nothing new (its writes wait); when
//! the lock is confirmed again it goes on, bringing its hosts back (re-adopting their
//! agents). One that lost the lock (another coordinator may have the run) ends at once,
//! writing nothing more, and leaves its agents to the new one.
//!
//! The store refuses writes to a run whose lease is unconfirmed or lost (they wait, or fail
//! with [`StoreError::RunLost`]), so nothing this prime does after the loss reaches the
//! store; this watcher turns the loss into the run's end.

use std::future::Future;

use eventor_store::{Lease, RunGuard, StoreError};
use tokio::sync::watch;

use super::error::EventorError;
use crate::engine::interrupt::Interrupt;

/// Why this host's tasks stopped when the lease went unconfirmed.
pub(super) const LOST_CONTACT: &str = "lost contact with the store";

/// A run's lease, and what to stop when it goes unconfirmed.
pub(super) struct RunLease {
    run_id: String,
    lease: watch::Receiver<Lease>,
    interrupt: Interrupt,
}

impl RunLease {
    pub(super) fn new(guard: &RunGuard, interrupt: &Interrupt) -> RunLease {
        RunLease {
            run_id: guard.run_id().to_owned(),
            lease: guard.lease(),
            interrupt: interrupt.clone(),
        }
    }

    /// Runs `run` (the run's loops) under the lease: unconfirmed cuts this host off (its
    /// commands' tasks fail "interrupted by lost contact with the store"), held again ends
    /// the cut, lost drops `run` where it is and returns [`EventorError::RunTakenOver`].
    pub(super) async fn watch<T>(
        mut self,
        run: impl Future<Output = T>,
    ) -> Result<T, EventorError> {
        tokio::pin!(run);
        let mut watching = true;
        loop {
            let state = *self.lease.borrow_and_update();
            match state {
                Lease::Held => self.interrupt.back_here(),
                Lease::Unconfirmed => self.interrupt.cut_here(LOST_CONTACT),
                Lease::Lost => {
                    self.interrupt.cut_here(LOST_CONTACT);
                    return Err(self.taken_over());
                }
            }
            tokio::select! {
                done = &mut run => return self.unless_lost(done),
                changed = self.lease.changed(), if watching => watching = changed.is_ok(),
            }
        }
    }

    /// `done`, unless the lease was lost meanwhile: a run that ended then must not go on to
    /// store its end.
    fn unless_lost<T>(&self, done: T) -> Result<T, EventorError> {
        match *self.lease.borrow() {
            Lease::Lost => Err(self.taken_over()),
            Lease::Held | Lease::Unconfirmed => Ok(done),
        }
    }

    fn taken_over(&self) -> EventorError {
        tracing::error!(run_id = %self.run_id, "run taken over by another coordinator: stopping without writing to the store");
        EventorError::RunTakenOver {
            run_id: self.run_id.clone(),
            source: StoreError::RunLost {
                run_id: self.run_id.clone(),
            },
        }
    }
}

/// A store failure of the run as the run's error: a write refused for a lost lease means
/// the run was taken over.
pub(super) fn run_failure(store: &str, source: StoreError) -> EventorError {
    match source {
        StoreError::RunLost { run_id } => EventorError::RunTakenOver {
            source: StoreError::RunLost {
                run_id: run_id.clone(),
            },
            run_id,
        },
        source => EventorError::Store {
            store: store.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lease that goes unconfirmed cuts this host off until it is held again, without
    /// stopping the run; lost, it ends the run at once.
    #[tokio::test]
    async fn an_unconfirmed_lease_cuts_here_until_held_again_and_a_lost_one_ends_the_run() {
        let (lease, watched) = watch::channel(Lease::Held);
        let interrupt = Interrupt::new();
        let watcher = RunLease {
            run_id: "R".into(),
            lease: watched,
            interrupt: interrupt.clone(),
        };
        let mut here = interrupt.watch_here();
        let watching = tokio::spawn(watcher.watch(std::future::pending::<()>()));
        let within = std::time::Duration::from_secs(5);
        lease.send_replace(Lease::Unconfirmed);
        let cut = tokio::time::timeout(within, here.wait_for(Option::is_some)).await;
        assert_eq!(cut.unwrap().unwrap().as_deref(), Some(LOST_CONTACT));
        lease.send_replace(Lease::Held);
        let back = tokio::time::timeout(within, here.wait_for(Option::is_none)).await;
        assert!(
            back.unwrap().is_ok(),
            "the cut is over when the lock is held again"
        );
        assert!(interrupt.reason().is_none(), "the run was never stopped");
        lease.send_replace(Lease::Lost);
        let ended = watching.await.unwrap();
        assert!(
            matches!(&ended, Err(EventorError::RunTakenOver { run_id, .. }) if run_id == "R"),
            "{ended:?}"
        );
        let message = ended.unwrap_err().to_string();
        assert!(
            message.contains("run taken over by another coordinator"),
            "{message}"
        );
    }

    /// A lock file's lease never changes: the run is watched to its end, untouched.
    #[tokio::test]
    async fn a_lease_that_cannot_change_lets_the_run_end() {
        let (_, watched) = watch::channel(Lease::Held);
        let interrupt = Interrupt::new();
        let watcher = RunLease {
            run_id: "R".into(),
            lease: watched,
            interrupt: interrupt.clone(),
        };
        assert_eq!(watcher.watch(async { 7 }).await.unwrap(), 7);
        assert!(interrupt.reason().is_none());
    }

    #[test]
    fn a_refused_write_for_a_lost_lease_is_a_takeover() {
        let lost = StoreError::RunLost { run_id: "R".into() };
        assert!(matches!(
            run_failure("s", lost),
            EventorError::RunTakenOver { .. }
        ));
        let other = run_failure("s", StoreError::Closed);
        assert!(matches!(other, EventorError::Store { .. }));
    }
}
