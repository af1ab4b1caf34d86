//! Wake-ups when other processes write to a run: Postgres LISTEN/NOTIFY, or SQLite's
//! `PRAGMA data_version` watched, behind one type.
//!
//! SQLite has no way to tell one process about another's commits, but its
//! `data_version` (per connection) changes exactly when another connection commits to the
//! file: a look every [`SQLITE_WATCH_EVERY`] on the store's own connection costs one tiny
//! query, and a `trigger` or `cancel` from another process reaches the run within it.

use std::time::Duration;

use tokio::time::Instant;

use crate::postgres::Listener;
use crate::sqlite::SqliteStore;
use crate::StoreError;

/// How often an SQLite subscription looks whether another process committed.
pub const SQLITE_WATCH_EVERY: Duration = Duration::from_millis(250);

/// Yields when another store handle (another process, usually) committed writes to the run it
/// was made for (SQLite: to the file). Writes while nobody waits are remembered as one
/// wake-up; a wake-up may also come without a write (after the store reconnected), so the
/// woken side re-reads the store.
pub struct Subscription {
    source: Source,
}

enum Source {
    Never,
    Postgres(Listener),
    Sqlite(SqliteWatch),
}

/// The SQLite file's `data_version` as last seen, and when to look next (kept here, so a
/// `next` dropped by a `select!` does not start its wait over). A deadline, not a tokio
/// `Interval`: the subscription outlives the runtime of one `run` call (the API runs each
/// call on a fresh runtime), and an `Interval` polled under another runtime panics.
struct SqliteWatch {
    store: SqliteStore,
    seen: i64,
    next_look: Instant,
}

impl SqliteWatch {
    async fn next(&mut self) {
        loop {
            tokio::time::sleep_until(self.next_look).await;
            // A slow look delays the next one rather than bunching them up.
            self.next_look = Instant::now() + SQLITE_WATCH_EVERY;
            // A look that fails (the store closing) is no wake-up; the next one tries again.
            if let Ok(version) = self.store.data_version().await {
                if version != self.seen {
                    self.seen = version;
                    return;
                }
            }
        }
    }
}

impl Subscription {
    /// A subscription that never yields.
    pub(crate) fn never() -> Subscription {
        Subscription {
            source: Source::Never,
        }
    }

    pub(crate) fn postgres(listener: Listener) -> Subscription {
        Subscription {
            source: Source::Postgres(listener),
        }
    }

    /// Watches the SQLite file from now on: a commit made before this returns wakes nothing.
    pub(crate) async fn sqlite(store: SqliteStore) -> Result<Subscription, StoreError> {
        let seen = store.data_version().await?;
        Ok(Subscription {
            source: Source::Sqlite(SqliteWatch {
                store,
                seen,
                next_look: Instant::now(),
            }),
        })
    }

    /// Waits for the next wake-up. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) {
        match &mut self.source {
            Source::Postgres(listener) => listener.next().await,
            Source::Sqlite(watch) => watch.next().await,
            Source::Never => std::future::pending().await,
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.source {
            Source::Never => "never",
            Source::Postgres(_) => "postgres",
            Source::Sqlite(_) => "sqlite",
        };
        f.debug_tuple("Subscription").field(&backend).finish()
    }
}
