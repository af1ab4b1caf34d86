//! The embedded SQLite backend (placeholder signatures; the store helper fills these in).

use std::path::{Path, PathBuf};

use crate::types::*;

/// How hard SQLite works to make a commit survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// WAL + `synchronous=NORMAL`: a commit survives a process crash (`kill -9`); an OS crash
    /// may lose the last commits but never corrupts the database.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before `commit` returns.
    Full,
}

/// Tuning for the SQLite backend (a struct, not bool parameters).
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// How long a writer waits for another process's lock before failing.
    pub busy_timeout: std::time::Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            busy_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// An SQLite store: one connection owned by a dedicated thread; clones share it.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
}

impl SqliteStore {
    pub async fn open(path: &Path, _options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let _ = path;
        todo!()
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub async fn begin_run(&self, _run: NewRun) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn commit(&self, _batch: Batch) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn set_run_status(
        &self,
        _run: RunKey,
        _status: RunStatus,
        _at: Micros,
    ) -> Result<(), StoreError> {
        todo!()
    }
    pub async fn latest_run(&self, _name: String) -> Result<Option<RunRecord>, StoreError> {
        todo!()
    }
    pub async fn run_history(&self, _run_id: String) -> Result<Vec<RunRecord>, StoreError> {
        todo!()
    }
    pub async fn tasks(&self, _run: RunKey) -> Result<Vec<TaskRecord>, StoreError> {
        todo!()
    }
    pub async fn triggers(&self, _run: RunKey) -> Result<Vec<TriggerRecord>, StoreError> {
        todo!()
    }
    pub async fn delays(&self, _run: RunKey) -> Result<Vec<DelayRecord>, StoreError> {
        todo!()
    }
}
