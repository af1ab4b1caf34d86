//! What a failed attempt means, and how long to wait before the next one.

use std::error::Error;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::PgOptions;
use crate::types::StoreError;

pub(super) type BoxError = Box<dyn Error + Send + Sync>;

/// How one attempt at an operation failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The store's final answer (duplicate, fenced, no such run, corrupt data).
    Refused(StoreError),
    /// A serialization failure or deadlock: the whole transaction may simply run again.
    Conflict(DieselError),
    /// The connection is gone; whether a write committed is for the batch id to tell.
    Lost(BoxError),
    /// Anything else. The caller probes the connection: a dead one means [`Failure::Lost`].
    Other(DieselError),
}

impl From<DieselError> for Failure {
    fn from(e: DieselError) -> Self {
        use DatabaseErrorKind::*;
        match &e {
            DieselError::DatabaseError(SerializationFailure, _) => Failure::Conflict(e),
            DieselError::DatabaseError(UnableToSendCommand | ClosedConnection, _) => {
                Failure::Lost(Box::new(e))
            }
            // diesel-async reports no SQLSTATE for 40P01, so the (English) message is all there
            // is; commits also take a per-run lock first, so only foreign writers can deadlock.
            DieselError::DatabaseError(_, info)
                if info.message().starts_with("deadlock detected") =>
            {
                Failure::Conflict(e)
            }
            DieselError::DeserializationError(_) => Failure::Refused(e.into()),
            _ => Failure::Other(e),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Refused(e)
    }
}

/// The first wait after a lost connection; it doubles up to [`MAX_RECONNECT_WAIT`].
pub(super) const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(200);
pub(super) const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);
const FIRST_CONFLICT_WAIT: Duration = Duration::from_millis(5);

/// The retry budget of one operation: conflicts by count, an outage by time.
pub(super) struct Tries<'o> {
    options: &'o PgOptions,
    conflicts: u32,
    outage: Option<Instant>,
    wait: Duration,
}

impl<'o> Tries<'o> {
    pub fn new(options: &'o PgOptions) -> Self {
        Tries {
            options,
            conflicts: 0,
            outage: None,
            wait: FIRST_RECONNECT_WAIT,
        }
    }

    /// The wait before trying a conflicted transaction again, or the error once the
    /// conflicts are [`PgOptions::conflict_retries`] in a row.
    pub fn conflict(&mut self, e: DieselError) -> Result<Duration, StoreError> {
        self.conflicts += 1;
        if self.conflicts > self.options.conflict_retries {
            return Err(StoreError::Conflict {
                attempts: self.conflicts,
                source: Box::new(e),
            });
        }
        let wait = FIRST_CONFLICT_WAIT * 2u32.pow(self.conflicts.min(6));
        tracing::debug!(
            attempt = self.conflicts,
            "store transaction conflicted; retrying"
        );
        Ok(wait + jitter(wait))
    }

    /// The wait before reconnecting, or the error once the outage has lasted
    /// [`PgOptions::reconnect_for`].
    pub fn lost(&mut self, e: BoxError, store: &str) -> Result<Duration, StoreError> {
        let since = *self.outage.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.options.reconnect_for {
            return Err(StoreError::Unavailable {
                store: store.to_owned(),
                waited: since.elapsed(),
                source: e,
            });
        }
        let wait = self.wait;
        self.wait = (self.wait * 2).min(MAX_RECONNECT_WAIT);
        tracing::warn!(%store, error = %e, "store connection lost, reconnecting in {wait:?}");
        Ok(wait)
    }

    /// Logs the end of an outage, if there was one.
    pub fn succeeded(&self, store: &str) {
        if let Some(since) = self.outage {
            let after = since.elapsed();
            tracing::info!(%store, "store connection re-established after {after:.1?}");
        }
    }
}

/// A random wait in `0..max`, so that writers that conflicted once do not meet again.
fn jitter(max: Duration) -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    let nanos = max.as_nanos().max(1) as u64;
    Duration::from_nanos(random % nanos)
}
