//! The embedded SQLite backend: one connection owned by a dedicated thread, fed by a channel.
//!
//! SQLite connections are synchronous and a store has a single writer anyway, so every call
//! becomes a job sent to the owner thread, and the async caller awaits its reply on a oneshot.
//! The one exception: a small write finds the connection (behind a mutex) free and runs on
//! the caller's thread, saving the two thread wake-ups of the round trip.
//! Clones of [`SqliteStore`] share the thread; when the last one drops, the channel closes, the
//! thread closes the connection and exits, and the drop waits for that so the file is released.

mod checkpoint;
mod fenced;
mod ids;
mod wal_writes;
mod write;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, TryLockError};
use std::thread::{self, JoinHandle};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tokio::sync::oneshot;

use crate::change::Write;
use crate::query;
use crate::rows::*;
use crate::types::*;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

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

impl Synchronous {
    fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
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

/// Work for the owner thread. It replies through a oneshot it captured.
type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// The one connection, shared by the owner thread and the callers of small writes.
type Shared = Arc<Mutex<Conn>>;

/// The connection and what it keeps for the rows it numbers.
struct Conn {
    db: SqliteConnection,
    ids: ids::RowIds,
}

impl Conn {
    fn write(&mut self, write: &Write) -> Result<(), StoreError> {
        write::write(&mut self.db, &mut self.ids, write)
    }
}

/// Most changes a batch may have to be written on the caller's thread. A small commit takes
/// tens of microseconds; handing it to the owner thread and back costs two thread wake-ups,
/// which on a busy or virtual machine cost more than the commit itself (a chain of closures
/// commits once per step). A bigger batch goes to the owner thread, so a caller on an async
/// runtime is never blocked for long.
const INLINE_CHANGES: usize = 64;

/// An SQLite store: one connection owned by a dedicated thread; clones share it.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    owner: Arc<Owner>,
}

/// The owner thread's handle. Dropped with the last store handle.
struct Owner {
    /// Dropped first: its connection closes before the owner's, whose close then
    /// checkpoints what is left.
    checkpointer: Option<checkpoint::Checkpointer>,
    /// Dropped before the thread is joined, so the thread's handle is the last one and the
    /// connection is closed by the time the join returns.
    conn: Option<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; joining makes sure the connection is
        // closed (and the WAL checkpointed) before the last handle is gone.
        self.checkpointer.take();
        self.jobs.take();
        self.conn.take();
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl SqliteStore {
    /// Opens the database file at `path` (creating the file, not its directory, if missing),
    /// configures the connection and runs pending migrations.
    pub async fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread_path = path.to_path_buf();
        let checkpointer = checkpoint::Checkpointer::new(path, options.synchronous);
        let thread = thread::Builder::new()
            .name("eventor-store".into())
            .spawn(move || match connect(&thread_path, &options) {
                Ok(db) => {
                    let conn = Arc::new(Mutex::new(Conn {
                        db,
                        ids: ids::RowIds::default(),
                    }));
                    let _ = ready_tx.send(Ok(conn.clone()));
                    serve(&conn, queue);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| open_error(path, e))?;
        let mut owner = Owner {
            checkpointer: Some(checkpointer),
            conn: None,
            jobs: Some(jobs),
            thread: Some(thread),
        };
        owner.conn = Some(ready_rx.await.map_err(|_| StoreError::Closed)??);
        let owner = Arc::new(owner);
        Ok(SqliteStore {
            path: path.to_path_buf(),
            owner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn begin_run(&self, run: NewRun) -> Result<(), StoreError> {
        self.call(move |conn| write::begin_run(conn, &run)).await
    }

    pub async fn set_run_status(
        &self,
        run: RunKey,
        status: RunStatus,
        at: Micros,
    ) -> Result<(), StoreError> {
        self.call(move |conn| write::set_run_status(conn, &run, status, at))
            .await
    }

    /// Deletes every recovery of `run_id` with its rows; see
    /// [`Store::delete_run`](crate::Store::delete_run).
    pub async fn delete_run(&self, run_id: String) -> Result<u64, StoreError> {
        self.call(move |conn| write::delete_run(conn, &run_id))
            .await
    }

    /// Declares shared pools; see [`Store::declare_pools`](crate::Store::declare_pools).
    pub(crate) async fn declare_pools(&self, pools: Vec<(String, u32)>) -> Result<(), StoreError> {
        self.call(move |conn| write::declare_pools(conn, &pools))
            .await
    }

    /// See [`Store::try_grant`](crate::Store::try_grant).
    pub(crate) async fn try_grant(&self, request: GrantRequest) -> Result<bool, StoreError> {
        self.call(move |conn| write::try_grant(conn, &request, now_micros()))
            .await
    }

    /// See [`Store::release_run_grants`](crate::Store::release_run_grants).
    pub(crate) async fn release_run_grants(&self, run_id: String) -> Result<usize, StoreError> {
        self.call(move |conn| write::release_run_grants(conn, &run_id))
            .await
    }

    /// One write, as the [`Store`](crate::Store) hands it to every backend.
    pub(crate) async fn write(&self, write: Write) -> Result<(), StoreError> {
        let done = match self.write_here(&write) {
            Some(done) => done,
            None => self.call_conn(move |conn| conn.write(&write)).await,
        };
        if let Some(checkpointer) = &self.owner.checkpointer {
            checkpointer.wrote();
        }
        done
    }

    /// Writes a small `write` on this thread when the connection is free at once (`None`:
    /// it is big, or the owner thread is busy; the owner thread takes it).
    fn write_here(&self, write: &Write) -> Option<Result<(), StoreError>> {
        let small = match write {
            Write::Commit(batch) => batch.changes.len() <= INLINE_CHANGES,
            Write::BeginRun(_)
            | Write::RunStatus(..)
            | Write::Request(_)
            | Write::RunParams(..)
            | Write::RunCause(..)
            | Write::HostHealth(..) => true,
        };
        if !small {
            return None;
        }
        let mut conn = self.owner.try_conn()?;
        Some(conn.write(write))
    }

    pub async fn latest_run(&self, name: String) -> Result<Option<RunRecord>, StoreError> {
        self.call(move |conn| newest_run(query::latest_run(&name).load(conn)?))
            .await
    }

    pub async fn run_history(&self, run_id: String) -> Result<Vec<RunRecord>, StoreError> {
        self.call(move |conn| run_records(query::run_history(&run_id).load(conn)?))
            .await
    }

    /// The ids of the runs whose newest recovery started before `older_than` (of the flow
    /// `name`, if given).
    pub(crate) async fn old_runs(
        &self,
        name: Option<String>,
        older_than: Micros,
    ) -> Result<Vec<String>, StoreError> {
        self.call(move |conn| Ok(query::old_runs(name.as_deref(), older_than).load(conn)?))
            .await
    }

    /// Every run row (of the flow `name`, if given), newest first.
    pub async fn runs(&self, name: Option<String>) -> Result<Vec<RunRecord>, StoreError> {
        self.call(move |conn| run_records(query::runs_listing(name.as_deref()).load(conn)?))
            .await
    }

    /// Task counts by run recovery and status, over the whole store.
    pub async fn task_counts(&self) -> Result<Vec<TaskCount>, StoreError> {
        self.call(move |conn| task_counts(query::task_counts().load(conn)?))
            .await
    }

    /// Failed tasks by failure class, over the whole store.
    pub async fn failure_class_counts(&self) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        self.call(move |conn| Ok(query::failure_class_counts().load(conn)?))
            .await
    }

    pub async fn tasks(&self, run: RunKey) -> Result<Vec<TaskRecord>, StoreError> {
        self.call(move |conn| task_records(query::tasks_of(&run).load(conn)?))
            .await
    }

    pub async fn triggers(
        &self,
        run: RunKey,
        after: i64,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        self.call(move |conn| trigger_records(query::triggers_of(&run, after).load(conn)?))
            .await
    }

    pub async fn requests(
        &self,
        run: RunKey,
        after: i64,
    ) -> Result<Vec<RunRequestRecord>, StoreError> {
        self.call(move |conn| Ok(request_records(query::requests_of(&run, after).load(conn)?)))
            .await
    }

    pub async fn host_health(&self, run: RunKey) -> Result<Vec<HostHealthRecord>, StoreError> {
        self.call(move |conn| Ok(health_records(query::host_health_of(&run).load(conn)?)))
            .await
    }

    /// SQLite's count of commits this connection did not make (`PRAGMA data_version`): it
    /// changes only when another connection (another process) commits to the file.
    pub(crate) async fn data_version(&self) -> Result<i64, StoreError> {
        self.call(|conn| {
            let row = diesel::sql_query("PRAGMA data_version").get_result::<DataVersion>(conn)?;
            Ok(row.data_version)
        })
        .await
    }

    pub async fn delays(&self, run: RunKey) -> Result<Vec<DelayRecord>, StoreError> {
        self.call(move |conn| delay_records(query::delays_of(&run).load(conn)?))
            .await
    }

    pub async fn retries(&self, run: RunKey) -> Result<Vec<RetryRecord>, StoreError> {
        self.call(move |conn| retry_records(query::retries_of(&run).load(conn)?))
            .await
    }

    /// Runs `work` on the owner thread's connection and waits for its answer.
    async fn call<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<R, StoreError> + Send + 'static,
    {
        self.call_conn(move |conn| work(&mut conn.db)).await
    }

    /// Runs `work` on the owner thread and waits for its answer.
    async fn call_conn<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = reply.send(work(conn));
        });
        let jobs = self.owner.jobs.as_ref().ok_or(StoreError::Closed)?;
        jobs.send(job).map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Owner {
    /// The connection, if no one is using it right now.
    fn try_conn(&self) -> Option<MutexGuard<'_, Conn>> {
        match self.conn.as_ref()?.try_lock() {
            Ok(conn) => Some(conn),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// The owner thread's loop: runs jobs until every sender is gone.
fn serve(conn: &Mutex<Conn>, queue: mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        // A job that panicked poisoned nothing the connection relies on: diesel rolls back
        // an open transaction when its closure unwinds.
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        job(&mut conn);
    }
    tracing::debug!("sqlite store thread exiting");
}

fn open_error(
    path: &Path,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Open {
        path: path.display().to_string(),
        source: source.into(),
    }
}

/// Opens, configures and migrates the connection the owner thread will keep.
fn connect(path: &Path, options: &SqliteOptions) -> Result<SqliteConnection, StoreError> {
    let url = database_url(path).ok_or_else(|| open_error(path, "path is not valid UTF-8"))?;
    let mut conn = SqliteConnection::establish(&url).map_err(|e| open_error(path, e))?;
    configure(&mut conn, options).map_err(|e| open_error(path, e))?;
    migrate(&mut conn).map_err(|source| StoreError::Migrate {
        path: path.display().to_string(),
        source,
    })?;
    Ok(conn)
}

/// The name SQLite is given: a URI that opens the file through [`wal_writes`], or, should
/// that VFS not register, the plain path (a relative one that happens to start with `file:`
/// prefixed to stay a file name, since the connection takes URIs).
fn database_url(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    if let Err(code) = wal_writes::register() {
        tracing::warn!(
            code,
            "the WAL-writing VFS did not register; using SQLite's own"
        );
        if text.starts_with("file:") || text.starts_with("sqlite:") {
            return Some(format!("./{text}"));
        }
        return Some(text.to_owned());
    }
    Some(wal_writes::uri(text))
}

#[derive(QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    data_version: i64,
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

/// The page size of a new store. A chain step's commit writes about three pages to the WAL
/// (its task's leaf, its trigger's leaf, and now and then a rebalanced neighbour), and every
/// byte of them is checksummed and copied into the page cache; at 2 KiB instead of SQLite's
/// 4 KiB a step costs about 4 µs less. Wide runs pay a little for it: a fan-out's batches
/// write more, smaller frames (7–9% more per task).
const PAGE_SIZE: u32 = 2048;

/// Sets the pragmas every connection needs. The busy timeout comes first so that switching to
/// WAL waits for another process's lock instead of failing.
fn configure(conn: &mut SqliteConnection, options: &SqliteOptions) -> QueryResult<()> {
    let busy_ms = options.busy_timeout.as_millis().min(i32::MAX as u128);
    conn.batch_execute(&format!("PRAGMA busy_timeout = {busy_ms};"))?;
    // Only a new, empty file takes it; an existing store keeps the page size it was made with.
    conn.batch_execute(&format!("PRAGMA page_size = {PAGE_SIZE};"))?;
    let mode = wal_mode(conn, options.busy_timeout)?;
    if !mode.journal_mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode = %mode.journal_mode, "sqlite store is not in WAL mode");
    }
    conn.batch_execute(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = {};",
        options.synchronous.pragma_value(),
        checkpoint::FALLBACK_PAGES,
    ))
}

/// Switches to WAL. Another process switching the same new file at that moment can make
/// SQLite answer "database is locked" without calling the busy handler, so that answer is
/// tried again (every 20 ms) until `patience` has passed.
fn wal_mode(
    conn: &mut SqliteConnection,
    patience: std::time::Duration,
) -> QueryResult<JournalMode> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match diesel::sql_query("PRAGMA journal_mode = WAL").get_result::<JournalMode>(conn) {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn is_locked(e: &diesel::result::Error) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if info.message().contains("locked"))
}

/// Runs pending migrations inside one immediate transaction, so two processes opening a new
/// file at once do not both try to create the tables.
fn migrate(conn: &mut SqliteConnection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    conn.immediate_transaction(|conn| {
        let applied = conn.run_pending_migrations(MIGRATIONS)?;
        if !applied.is_empty() {
            tracing::info!(count = applied.len(), "applied sqlite store migrations");
        }
        Ok(())
    })
}

impl From<diesel::result::Error> for StoreError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            // A value that does not read as its column's type came from the file, not from us.
            diesel::result::Error::DeserializationError(cause) => {
                StoreError::Corrupt(cause.to_string())
            }
            other => StoreError::Query(Box::new(other)),
        }
    }
}
