//! A run lock's lease: how sure its coordinator is that it still holds the run. Its own
//! module, below both the run lock and the Postgres store that keeps it confirmed.

/// How sure a run's coordinator is that it still holds the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Confirmed within the last half of `dead_after` (or a lock file).
    Held,
    /// Not confirmed for half of `dead_after`: the store may free the run soon, so the
    /// coordinator should stop what it runs here and write nothing until it is held again.
    Unconfirmed,
    /// The lock's session ended while it was unconfirmed, or another session holds the lock
    /// now: another coordinator may have the run. Final.
    Lost,
}
