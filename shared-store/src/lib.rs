//! The durable record of eventor runs: runs, triggers, tasks and delays, behind one
//! backend-neutral API.
//!
//! # How it is used
//! The engine never talks SQL. It hands the store a [`Batch`] of [`Change`]s — everything one
//! turn of the scheduler decided — and the store applies the whole batch in **one write
//! transaction** (SQLite: `BEGIN IMMEDIATE`). Only after `commit` returns does the engine act
//! (start a process, fire a successor). So the store is always at least as far along as the
//! world, and a crash at any point leaves the last committed, consistent state.
//!
//! # Invariants the schema enforces (not just the engine)
//! - one run row per `(run_id, recovery)`;
//! - one trigger per `(run_id, event, sequence, recovery)`;
//! - one task per `(run_id, step, sequence, recovery)`;
//! - one delay per `(run_id, assoc, sequence, recovery)`.
//!
//! A task's status moves only through fenced updates: `UPDATE … WHERE status = from AND
//! attempt = attempt`. If no row matched, the whole batch is rolled back and
//! [`StoreError::Fenced`] says which task — two writers can never both start or both finish the
//! same task.
//!
//! # What it leaves out
//! Backends other than SQLite arrive with the Postgres issue, behind the same [`Store`] enum.
//! Times are stored as microseconds since the Unix epoch (`i64`) so every backend agrees.

mod schema;
mod sqlite;
mod types;

pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};
pub use types::*;

use std::path::PathBuf;

/// Where a store lives. Parsed from `--store` by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite database file (created if missing).
    Sqlite(PathBuf),
}

/// A store, whichever backend holds it. Cheap to clone: clones share one connection owner.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens (creating and migrating if needed) the store at `location`.
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Ok(Store::Sqlite(
                SqliteStore::open(path, SqliteOptions::default()).await?,
            )),
        }
    }

    /// Records a new run (or a new recovery of one). Fails with
    /// [`StoreError::Duplicate`] if `(run_id, recovery)` already exists.
    pub async fn begin_run(&self, run: NewRun) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.begin_run(run).await,
        }
    }

    /// Applies every change of `batch` in one transaction, or none of them.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.commit(batch).await,
        }
    }

    /// Sets the final (or current) status of a run and, for a final one, its end time.
    pub async fn set_run_status(
        &self,
        run: RunKey,
        status: RunStatus,
        at: Micros,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.set_run_status(run, status, at).await,
        }
    }

    /// The newest run (highest `started_at`, then highest recovery) of the flow named `name`.
    pub async fn latest_run(&self, name: &str) -> Result<Option<RunRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.latest_run(name.to_owned()).await,
        }
    }

    /// All recoveries of `run_id`, lowest recovery first.
    pub async fn run_history(&self, run_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.run_history(run_id.to_owned()).await,
        }
    }

    /// Every task row of one run recovery, ordered by id (creation order).
    pub async fn tasks(&self, run: RunKey) -> Result<Vec<TaskRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.tasks(run).await,
        }
    }

    /// Every trigger row of one run recovery, ordered by id (firing order).
    pub async fn triggers(&self, run: RunKey) -> Result<Vec<TriggerRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.triggers(run).await,
        }
    }

    /// Every delay row of one run recovery, ordered by id.
    pub async fn delays(&self, run: RunKey) -> Result<Vec<DelayRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.delays(run).await,
        }
    }

    /// A human-readable description of where the store is (never contains a password).
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("sqlite:{}", s.path().display()),
        }
    }
}
