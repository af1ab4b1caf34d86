//! The durable record of eventor runs: runs, triggers, tasks, delays and retries, behind one
//! backend-neutral API.
//!
//! # How it is used
//! The engine never talks SQL. It hands the store a [`Batch`] of [`Change`]s — everything one
//! turn of the scheduler decided — and the store applies the whole batch in **one write
//! transaction** (SQLite: `BEGIN IMMEDIATE`; Postgres: a transaction holding the run's
//! advisory lock). Only after `commit` returns does the engine act (start a process, fire a
//! successor). So the store is always at least as far along as the world, and a crash at any
//! point leaves the last committed, consistent state.
//!
//! # Invariants the schema enforces (not just the engine)
//! - one run row per `(run_id, recovery)`;
//! - one trigger per `(run_id, event, sequence, recovery)`;
//! - one task per `(run_id, step, sequence, recovery)`;
//! - one delay per `(run_id, assoc, sequence, recovery)`;
//! - one retry per `(run_id, step, sequence, number, recovery)` (step by its number: a retry
//!   is not an association's delay, and a delay row never stands for one).
//!
//! A task's status moves only through fenced updates: `UPDATE … WHERE status = from AND
//! attempt = attempt`. If no row matched, the whole batch is rolled back and
//! [`StoreError::Fenced`] says which task — two writers can never both start or both finish the
//! same task.
//!
//! # Backends
//! SQLite (`sqlite.rs`): one file, one connection (on a thread of its own; small writes on the
//! caller's), for a single coordinator. Postgres (`postgres.rs`): a schema shared by the
//! coordinators and agents of a cluster; several runs and programs share it, each writing
//! only its own rows. Both pass the same suite
//! (`tests/store_suite.rs`). Beyond the table API a store offers two things the engine needs
//! when several processes share it: [`Store::lock_run`] (one coordinator per run) and
//! [`Store::subscribe`] (wake-ups on other processes' writes: Postgres notifies, SQLite's
//! `data_version` is watched).
//!
//! # What it leaves out
//! Times are stored as microseconds since the Unix epoch (`i64`) so every backend agrees.
//! Nothing is deleted unasked: runs go only by [`Store::delete_run`] and [`Store::prune`].
//! Where a store lives is parsed here ([`StoreLocation::parse`]), but reading the original's
//! `DATABASES` config is the coordinator's business.

mod change;
mod lease;
mod location;
mod pgpass;
pub use pgpass::resolve as resolve_password;
mod postgres;
mod query;
mod rows;
mod run_lock;
mod schema;
mod sqlite;
mod subscription;
pub mod tls;
pub mod tls_files;
mod types;

pub use lease::Lease;
pub use location::{LocationError, PgLocation, StoreLocation, DEFAULT_SCHEMA};
pub use postgres::{check_login, Duplex, PgOptions, PgStore, Relay, RelayError, SchemaSetup};
pub use run_lock::RunGuard;
pub use sqlite::{SqliteOptions, SqliteStore, Synchronous};
pub use subscription::{Subscription, SQLITE_WATCH_EVERY};
pub use tls::{SslMode, TlsMaterial, TlsRefusal, TlsSetupError};
pub use types::*;

use change::Write;

/// A store, whichever backend holds it. Cheap to clone: clones share one connection owner
/// (SQLite) or one connection pool (Postgres).
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Opens (creating and migrating if needed) the store at `location`.
    pub async fn open(location: &StoreLocation) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Sqlite(path) => Ok(Store::Sqlite(
                SqliteStore::open(path, SqliteOptions::default()).await?,
            )),
            StoreLocation::Postgres(pg) => Ok(Store::Postgres(
                PgStore::open(pg, PgOptions::default()).await?,
            )),
        }
    }

    /// Opens a store whose schema the prime has prepared for this run: on Postgres only
    /// checked, without the migration lock ([`SchemaSetup::Verify`]); otherwise as
    /// [`open`](Self::open).
    pub async fn open_prepared(location: &StoreLocation) -> Result<Store, StoreError> {
        match location {
            StoreLocation::Postgres(pg) => {
                let options = PgOptions {
                    schema: SchemaSetup::Verify,
                    ..PgOptions::default()
                };
                Ok(Store::Postgres(PgStore::open(pg, options).await?))
            }
            StoreLocation::Sqlite(_) => Store::open(location).await,
        }
    }

    /// Records a new run (or a new recovery of one). Fails with
    /// [`StoreError::Duplicate`] if `(run_id, recovery)` already exists.
    pub async fn begin_run(&self, run: NewRun) -> Result<(), StoreError> {
        self.write(Write::BeginRun(run)).await
    }

    /// Applies every change of `batch` in one transaction, or none of them.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.write(Write::Commit(batch)).await
    }

    /// Sets the final (or current) status of a run and, for a final one, its end time.
    pub async fn set_run_status(
        &self,
        run: RunKey,
        status: RunStatus,
        at: Micros,
    ) -> Result<(), StoreError> {
        self.write(Write::RunStatus(run, status, at)).await
    }

    /// Records a request to a run recovery from outside its coordinator (a cancel); its
    /// coordinator is woken as by a trigger. A run that is not there is
    /// [`StoreError::NoSuchRun`].
    pub async fn request(&self, request: RunRequest) -> Result<(), StoreError> {
        self.write(Write::Request(request)).await
    }

    /// The requests to one run recovery with a row id above `after`, oldest first.
    pub async fn requests_after(
        &self,
        run: RunKey,
        after: i64,
    ) -> Result<Vec<RunRequestRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.requests(run, after).await,
            Store::Postgres(s) => s.requests(run, after).await,
        }
    }

    /// Records why a run could not do its work (with its status set apart).
    pub async fn set_run_cause(&self, run: RunKey, cause: &str) -> Result<(), StoreError> {
        self.write(Write::RunCause(run, cause.to_string())).await
    }

    /// Replaces a host's health in a run (the prime, when the host's state changes). A run
    /// that is not there is [`StoreError::NoSuchRun`].
    pub async fn set_host_health(
        &self,
        run: RunKey,
        health: HostHealthRecord,
    ) -> Result<(), StoreError> {
        self.write(Write::HostHealth(run, health)).await
    }

    /// Each host's health in a run recovery as its prime last wrote it, by host name.
    pub async fn host_health(&self, run: RunKey) -> Result<Vec<HostHealthRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.host_health(run).await,
            Store::Postgres(s) => s.host_health(run).await,
        }
    }

    /// Replaces a run's parameters: a recovery's or continue's override is recorded.
    pub async fn set_run_params(
        &self,
        run: RunKey,
        params: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let json = crate::rows::to_json(params);
        self.write(Write::RunParams(run, json)).await
    }

    /// Applies one write in one transaction of the backend.
    async fn write(&self, write: Write) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.write(write).await,
            Store::Postgres(s) => s.write(write).await,
        }
    }

    /// The newest run (highest `started_at`, then highest recovery) of the flow named `name`.
    pub async fn latest_run(&self, name: &str) -> Result<Option<RunRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.latest_run(name.to_owned()).await,
            Store::Postgres(s) => s.latest_run(name.to_owned()).await,
        }
    }

    /// All recoveries of `run_id`, lowest recovery first.
    pub async fn run_history(&self, run_id: &str) -> Result<Vec<RunRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.run_history(run_id.to_owned()).await,
            Store::Postgres(s) => s.run_history(run_id.to_owned()).await,
        }
    }

    /// Every run row (every recovery) of the flow `name`, or of all flows when `None`, newest
    /// first (highest `started_at`, then highest recovery).
    pub async fn runs(&self, name: Option<&str>) -> Result<Vec<RunRecord>, StoreError> {
        let name = name.map(str::to_owned);
        match self {
            Store::Sqlite(s) => s.runs(name).await,
            Store::Postgres(s) => s.runs(name).await,
        }
    }

    /// How many tasks every run recovery of the store has in each status (statuses without
    /// tasks are left out).
    pub async fn task_counts(&self) -> Result<Vec<TaskCount>, StoreError> {
        match self {
            Store::Sqlite(s) => s.task_counts().await,
            Store::Postgres(s) => s.task_counts().await,
        }
    }

    /// How many failed tasks the store holds by failure class (`exit:3`, `timeout`, …;
    /// `None` for those stored before classes were), every run of the store.
    pub async fn failure_class_counts(&self) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.failure_class_counts().await,
            Store::Postgres(s) => s.failure_class_counts().await,
        }
    }

    /// Every task row of one run recovery, ordered by id (creation order).
    pub async fn tasks(&self, run: RunKey) -> Result<Vec<TaskRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.tasks(run).await,
            Store::Postgres(s) => s.tasks(run).await,
        }
    }

    /// Every trigger row of one run recovery, ordered by id: firing order (on SQLite, a
    /// trigger another program wrote may come after the coordinator's written meanwhile).
    pub async fn triggers(&self, run: RunKey) -> Result<Vec<TriggerRecord>, StoreError> {
        self.triggers_after(run, 0).await
    }

    /// The triggers of one run recovery with a row id above `after`, ordered by id: what a
    /// watcher that has seen up to `after` has not seen yet.
    pub async fn triggers_after(
        &self,
        run: RunKey,
        after: i64,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.triggers(run, after).await,
            Store::Postgres(s) => s.triggers(run, after).await,
        }
    }

    /// Every delay row of one run recovery, ordered by id.
    pub async fn delays(&self, run: RunKey) -> Result<Vec<DelayRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.delays(run).await,
            Store::Postgres(s) => s.delays(run).await,
        }
    }

    /// Every retry row of one run recovery, ordered by id.
    pub async fn retries(&self, run: RunKey) -> Result<Vec<RetryRecord>, StoreError> {
        match self {
            Store::Sqlite(s) => s.retries(run).await,
            Store::Postgres(s) => s.retries(run).await,
        }
    }

    /// Deletes every recovery of `run_id` and all its tasks, triggers, delays and retries, in one
    /// transaction; answers how many recoveries went (0: no such run). It takes no run lock:
    /// the caller holds it ([`Store::lock_run`]), so no coordinator is running the run.
    pub async fn delete_run(&self, run_id: &str) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.delete_run(run_id.to_owned()).await,
            Store::Postgres(s) => s.delete_run(run_id.to_owned()).await,
        }
    }

    /// Deletes the whole runs (every recovery) whose newest recovery started before
    /// `older_than`, only those of the flow `name` if given, and answers their ids. A run
    /// another coordinator holds ([`StoreError::RunLocked`]) is left alone; every other one is
    /// deleted under its run lock. An error stops the pruning; the runs deleted before it stay
    /// deleted.
    pub async fn prune(
        &self,
        name: Option<&str>,
        older_than: Micros,
    ) -> Result<Vec<String>, StoreError> {
        let mut deleted = Vec::new();
        for run_id in self.old_runs(name, older_than).await? {
            if self.prune_run(&run_id, older_than).await? {
                deleted.push(run_id);
            }
        }
        Ok(deleted)
    }

    /// Deletes `run_id` under its run lock if it is free and still old; answers whether it did.
    async fn prune_run(&self, run_id: &str, older_than: Micros) -> Result<bool, StoreError> {
        let guard = match self.lock_run(run_id).await {
            Ok(guard) => guard,
            Err(StoreError::RunLocked { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        // A coordinator may have begun a new recovery between the listing and the lock.
        let history = self.run_history(run_id).await?;
        let old = history.iter().all(|run| run.started_at < older_than);
        let deleted = old && self.delete_run(run_id).await? > 0;
        guard.release().await;
        Ok(deleted)
    }

    /// The ids of the runs whose newest recovery started before `older_than`, in id order.
    async fn old_runs(
        &self,
        name: Option<&str>,
        older_than: Micros,
    ) -> Result<Vec<String>, StoreError> {
        let name = name.map(str::to_owned);
        match self {
            Store::Sqlite(s) => s.old_runs(name, older_than).await,
            Store::Postgres(s) => s.old_runs(name, older_than).await,
        }
    }

    /// A human-readable description of where the store is (a password shows as `****`).
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(s) => format!("sqlite:{}", s.path().display()),
            Store::Postgres(s) => s.location().to_string(),
        }
    }

    /// Claims `run_id` for this process until the guard is dropped; a second claimant (another
    /// coordinator, or this one again) gets [`StoreError::RunLocked`]. Postgres: an advisory
    /// lock on a session of its own. SQLite: an exclusive lock on `<db>.<run_id>.lock`.
    pub async fn lock_run(&self, run_id: &str) -> Result<RunGuard, StoreError> {
        match self {
            Store::Sqlite(s) => {
                let lock = run_lock::FileLock::acquire_patiently(s.path(), run_id).await?;
                Ok(RunGuard::file(run_id, lock))
            }
            Store::Postgres(s) => Ok(RunGuard::postgres(run_id, s.lock_run(run_id).await?)),
        }
    }

    /// Whether a coordinator holds `run_id` now (see [`lock_run`](Self::lock_run)): a run
    /// stored as running that nobody holds was abandoned (its coordinator was killed or its
    /// machine went down). Looking never stands in a coordinator's way for long: Postgres
    /// reads `pg_locks`; SQLite takes the lock file's shared lock for a moment, and a
    /// coordinator taking the run retries a refusal for a while.
    pub async fn run_held(&self, run_id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => run_lock::FileLock::held(s.path(), run_id),
            Store::Postgres(s) => s.run_held(run_id).await,
        }
    }

    /// Wake-ups when other store handles (other processes) write to `run`: every write after
    /// this returns wakes it. On SQLite, any other process's commit to the file wakes it,
    /// seen within [`SQLITE_WATCH_EVERY`] (`PRAGMA data_version`, on this store's own
    /// connection).
    pub async fn subscribe(&self, run: RunKey) -> Result<Subscription, StoreError> {
        match self {
            Store::Sqlite(s) => Subscription::sqlite(s.clone()).await,
            Store::Postgres(s) => Ok(Subscription::postgres(s.subscribe(run).await?)),
        }
    }

    /// Declares shared pools (`(name, units)`): the first declaration of a pool in the store
    /// stands; another number of units is [`StoreError::PoolMismatch`].
    pub async fn declare_pools(&self, pools: Vec<(String, u32)>) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.declare_pools(pools).await,
            Store::Postgres(s) => s.declare_pools(pools).await,
        }
    }

    /// Grants every unit `request` asks of shared pools, or none (`false`: not enough free
    /// now), in one transaction that sees every coordinator's grants. Granting the same task
    /// attempt twice answers `true` without taking more.
    pub async fn try_grant(&self, request: GrantRequest) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.try_grant(request).await,
            Store::Postgres(s) => s.try_grant(request).await,
        }
    }

    /// Gives back what every recovery of `run_id` holds of shared pools (its coordinator is
    /// gone; the caller holds the run lock). Answers how many grants went.
    pub async fn release_run_grants(&self, run_id: &str) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => s.release_run_grants(run_id.to_owned()).await,
            Store::Postgres(s) => s.release_run_grants(run_id.to_owned()).await,
        }
    }

    /// Wake-ups when another process gives back shared-pool units. SQLite's never yields:
    /// its waiters re-check on an interval.
    pub async fn subscribe_pools(&self) -> Result<Subscription, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Subscription::never()),
            Store::Postgres(s) => Ok(Subscription::postgres(s.subscribe_pools().await?)),
        }
    }
}
