//! The Postgres backend: a schema in a shared database, written by every coordinator and agent
//! of a cluster through diesel-async over tokio-postgres (no libpq).
//!
//! # Commits
//! A write (a batch, a new run, a run status) is one transaction on one pooled connection:
//!
//! 1. `BEGIN; SELECT pg_advisory_xact_lock(COMMIT, hash(schema, run_id))` (one round trip,
//!    which also asks for custom plans, see 3.) — writes to one run queue up behind each
//!    other. Every row a batch touches belongs to its run, so two batches can never deadlock
//!    over rows, and a fenced update never waits on another one's row lock.
//! 2. One statement inserts the write's **batch id** into `batches`, queues
//!    `pg_notify(channel, payload)` (sent only if the transaction commits) and tells whether
//!    the run exists.
//! 3. The work. A batch is first *planned* (`plan.rs`): each row's changes fold into one
//!    insert or one fenced update, so a batch of any size costs at most five set-based
//!    statements (`INSERT … SELECT FROM unnest($arrays) ON CONFLICT DO NOTHING`, `UPDATE …
//!    FROM unnest(…) WHERE status = expected AND attempt = expected`), each answering with
//!    the rows it refused. The refusal with the lowest change index is reported — the one
//!    applying the changes one by one would have met first — and the transaction rolls back.
//!    The statements have fixed text (`stmt.rs`), so each is prepared once per connection,
//!    and they join on the run's key as a column, not a constant, so a new run without
//!    planner statistics is not mistaken for a tiny one and scanned whole for every row. For
//!    the same reason plans are made for each execution, with the batch's actual size, never
//!    from a generic plan cached while the run was small.
//! 4. `COMMIT`. A one-change commit is four round trips; the fsync of its COMMIT dominates.
//!
//! # Fencing
//! Exactly the SQLite contract: a task moves only from the status and attempt its change
//! names, checked by the `UPDATE`'s `WHERE` (or, for a row the batch created itself, by the
//! plan). Two coordinators or agents racing on one task serialize on the run lock; the second
//! finds the row moved and gets [`StoreError::Fenced`]. Duplicates come from `ON CONFLICT DO
//! NOTHING` returning fewer rows than it was given, never from parsing an error message.
//!
//! # Retries
//! Each operation gets a budget ([`PgOptions`]). A serialization failure (40001) or a
//! deadlock (recognized by its message: diesel-async hides SQLSTATE 40P01) reruns the whole
//! transaction after a short randomized wait, at most `conflict_retries` times, then
//! [`StoreError::Conflict`]. Neither happens between eventor's own writers (see 1.); they are
//! there for foreign writers and stricter isolation levels.
//!
//! # Reconnects
//! A failure on the wire (or any unexplained error after which `SELECT 1` fails too) drops
//! the connection and every idle one, logs `store connection lost, reconnecting in 200ms` and
//! retries on a fresh connection, waiting 200 ms, then twice as long each time up to 5 s,
//! until `reconnect_for` has passed since the outage began ([`StoreError::Unavailable`]).
//!
//! The danger is a COMMIT that reached the server but whose answer did not come back: trying
//! the batch again would apply it twice (or fail it as a duplicate of itself). The batch id
//! settles it. The retry inserts the same id first: if the lost attempt committed, the id is
//! there and the retry stops with success; if the lost attempt is still alive on the server
//! (it has not noticed its client is gone), the retry waits on its run lock and then its id,
//! and sees the same; if it rolled back, the retry applies the batch as new. So a batch is
//! applied exactly once, provably, not by guessing from `Duplicate`/`Fenced` errors. Reads are
//! simply repeated. Batch ids older than a day are pruned when a store opens.
//!
//! # Notifications
//! Every write notifies `eventor_<hex hash of schema and run id>` with
//! `"<origin> <recovery> <run id>"`, where origin identifies the writing store handle. A
//! [`Subscription`](crate::Subscription) LISTENs on that channel on a tokio-postgres session
//! of its own (`listen.rs`) and wakes on payloads for its run from other handles; its own
//! writes do not wake it. Wake-ups coalesce, and after a reconnect it wakes once, since
//! notifications sent while it was away are gone: a woken engine re-scans the store.
//!
//! # The run lock
//! [`Store::lock_run`](crate::Store::lock_run) takes `pg_try_advisory_lock(hash(schema, run_id))`
//! (one 64-bit key, so unrelated runs meet only by a 64-bit collision) on a session of its
//! own, held until the guard is released or dropped (closing the session releases
//! it). Every `dead_after / 6` it asks that session whether it still holds the lock
//! (`pg_locks`, its own backend pid); no answer for half of `dead_after` makes the guard's
//! [`Lease`](crate::Lease) unconfirmed. If the session drops while the lease is held (a server
//! restart), it reconnects and takes the lock again; should another session have taken it in
//! between, or the session have dropped while unconfirmed (the server ended it for our
//! silence, and the run was free), the lease is lost. Writes to a run whose lock this handle
//! took wait while its lease is unconfirmed and fail with [`StoreError::RunLost`] once it is
//! lost, before each attempt: a prime cut off from the store writes nothing after the store
//! freed its run.
//!
//! # What it leaves out
//! - TLS: the client speaks none (`sslmode=require` is refused when parsing the URL).
//! - Several hosts, failover and read replicas.
//! - Pipelining the statements of one write: at most eight round trips per commit are cheap
//!   next to its fsync, and diesel-async does not promise the order of pipelined queries.
//! - Task claims by competing agents (`FOR UPDATE SKIP LOCKED`): the store has no claim
//!   operation yet; when agents claim tasks, it belongs here, beside the fenced updates.
//! - Deleting runs unasked: rows stay until [`Store::delete_run`](crate::Store::delete_run)
//!   or [`Store::prune`](crate::Store::prune) removes them (one transaction under the run's
//!   commit lock, with a batch id like a write); only batch ids are pruned on open.
//! - A run lock that survives a server restart without a gap: between the drop and the
//!   re-lock another coordinator could take it (it is then reported lost, and fencing still
//!   keeps both from moving the same task twice).

mod connect;
mod delete;
mod listen;
mod migrate;
mod plan;
mod pools;
mod read;
mod relay;
mod retry;
mod stmt;
mod tls;
mod txn;
mod write;

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use tokio::sync::watch;

pub(crate) use listen::{Listener, RunLock};
pub use relay::{Duplex, Relay, RelayError};

use connect::{ConnectError, Connector, Pool};
use delete::DeleteCx;
use retry::{Failure, Tries};
use write::WriteCx;

use crate::change::Write;
use crate::lease::Lease;
use crate::location::PgLocation;
use crate::types::*;

/// Advisory lock classes (the first key of the two-key form), one per use, so a run's commit
/// lock and a schema's migration lock never meet. (0x4556_0002 was the run lock's, now
/// the one-key form: [`RunLockKey`].)
const COMMIT_LOCK_CLASS: i32 = 0x4556_0001;
pub(crate) const MIGRATE_LOCK_CLASS: i32 = 0x4556_0003;

/// One try of an operation on a pooled connection.
type Attempt<'c, R> = Pin<Box<dyn Future<Output = Result<R, Failure>> + Send + 'c>>;

/// How long `SELECT 1` may take before a connection counts as dead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Tuning for the Postgres backend.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections the store's operations share (each operation uses one).
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// Idle time before TCP keepalives probe a silent server.
    pub keepalives_idle: Duration,
    /// How long an operation keeps reconnecting before it fails with
    /// [`StoreError::Unavailable`].
    pub reconnect_for: Duration,
    /// How often a transaction that hit a serialization failure or deadlock runs again.
    pub conflict_retries: u32,
    /// How the schema is made ready.
    pub schema: SchemaSetup,
    /// The server ends a session of ours whose transaction waits on it longer than this
    /// (`idle_in_transaction_session_timeout`): a writer frozen mid-commit (a stopped
    /// agent, a paused VM) would otherwise hold its run's commit lock, and so every other
    /// writer of the run, for as long as it stays frozen. Our transactions send their
    /// statements back to back, so only a frozen one is ever idle this long.
    pub idle_in_transaction: Duration,
}

/// How a store's schema is made ready when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaSetup {
    /// Created if missing, migrated and pruned, under the schema's migration lock.
    #[default]
    Prepare,
    /// Another process (the prime) has just prepared it: checked, without the lock, to hold
    /// this build's newest migration, and prepared as usual only if it does not. Sixteen
    /// agents opening the store at once no longer queue on the lock.
    Verify,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 4,
            connect_timeout: Duration::from_secs(10),
            keepalives_idle: Duration::from_secs(30),
            reconnect_for: Duration::from_secs(60),
            conflict_retries: 5,
            schema: SchemaSetup::Prepare,
            idle_in_transaction: Duration::from_secs(10),
        }
    }
}

/// A Postgres store: a small connection pool; clones share it.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
}

struct Shared {
    location: PgLocation,
    pool: Pool,
    options: PgOptions,
    /// This handle's id in batch ids and notifications.
    origin: u64,
    next_batch: AtomicU64,
    /// The leases of the run locks this handle took: writes to such a run wait while its
    /// lease is unconfirmed and are refused once it is lost.
    leases: Mutex<Vec<(String, watch::Receiver<Lease>)>>,
}

impl PgStore {
    /// Connects, creates the schema if missing and runs pending migrations.
    pub async fn open(location: &PgLocation, options: PgOptions) -> Result<PgStore, StoreError> {
        let connector = Arc::new(Connector::new(location, &options)?);
        let store = connector.describe().to_owned();
        let mut conn = connector
            .diesel()
            .await
            .map_err(|e| open_error(&store, e))?;
        let verified = options.schema == SchemaSetup::Verify
            && migrate::is_current(&mut conn, connector.schema()).await;
        if !verified {
            let migrate_key = lock_key(connector.schema(), "");
            conn = migrate::prepare(conn, connector.schema(), migrate_key, &store).await?;
        }
        let pool = Pool::new(connector, options.pool_size, conn);
        let shared = Shared {
            location: location.clone(),
            pool,
            options,
            origin: random_u64(),
            next_batch: AtomicU64::new(0),
            leases: Mutex::new(Vec::new()),
        };
        Ok(PgStore {
            shared: Arc::new(shared),
        })
    }

    /// The LISTEN channel of one run, for tests and operators that count its listeners.
    pub fn listen_channel(schema: &str, run_id: &str) -> String {
        channel_name(schema, run_id)
    }

    /// The two keys of `schema`'s migration lock (`pg_advisory_lock(a, b)`), for tests that
    /// hold it from outside.
    #[doc(hidden)]
    pub fn migration_lock_keys(schema: &str) -> (i32, i32) {
        (MIGRATE_LOCK_CLASS, lock_key(schema, ""))
    }

    pub fn location(&self) -> &PgLocation {
        &self.shared.location
    }

    /// One write transaction, retried as the module essay says. The batch id is drawn once,
    /// here, so every retry of this write carries the same one.
    pub(crate) async fn write(&self, write: Write) -> Result<(), StoreError> {
        // An empty batch changes nothing: not worth a transaction, nor a notification.
        if matches!(&write, Write::Commit(batch) if batch.changes.is_empty()) {
            return Ok(());
        }
        self.write_job(Arc::new((self.write_cx(write.run()), write)))
            .await
    }

    pub async fn latest_run(&self, name: String) -> Result<Option<RunRecord>, StoreError> {
        let name: Arc<str> = name.into();
        self.retry(move |conn| {
            let name = name.clone();
            Box::pin(async move { read::latest_run(conn, &name).await })
        })
        .await
    }

    pub async fn run_history(&self, run_id: String) -> Result<Vec<RunRecord>, StoreError> {
        let run_id: Arc<str> = run_id.into();
        self.retry(move |conn| {
            let run_id = run_id.clone();
            Box::pin(async move { read::run_history(conn, &run_id).await })
        })
        .await
    }

    /// The ids of the runs whose newest recovery started before `older_than` (of the flow
    /// `name`, if given).
    pub(crate) async fn old_runs(
        &self,
        name: Option<String>,
        older_than: Micros,
    ) -> Result<Vec<String>, StoreError> {
        let name: Option<Arc<str>> = name.map(Arc::from);
        self.retry(move |conn| {
            let name = name.clone();
            Box::pin(async move { read::old_runs(conn, name.as_deref(), older_than).await })
        })
        .await
    }

    /// Deletes every recovery of `run_id` with its rows in one transaction, retried like a
    /// write; see [`Store::delete_run`](crate::Store::delete_run).
    pub async fn delete_run(&self, run_id: String) -> Result<u64, StoreError> {
        self.delete_job(Arc::new(self.delete_cx(run_id))).await
    }

    /// A deletion's batch id is drawn once, here, so every retry of it carries the same one.
    fn delete_cx(&self, run_id: String) -> DeleteCx {
        DeleteCx {
            begin: self.begin_locked(&run_id),
            batch_id: self.next_batch_id(),
            run_id,
            counted: AtomicU64::new(0),
        }
    }

    async fn delete_job(&self, cx: Arc<DeleteCx>) -> Result<u64, StoreError> {
        let run_id = cx.run_id.clone();
        self.retry_leased(Some(&run_id), move |conn| {
            let cx = cx.clone();
            Box::pin(async move { delete::delete_once(conn, &cx).await })
        })
        .await
    }

    /// Every run row (of the flow `name`, if given), newest first.
    pub async fn runs(&self, name: Option<String>) -> Result<Vec<RunRecord>, StoreError> {
        let name: Option<Arc<str>> = name.map(Arc::from);
        self.retry(move |conn| {
            let name = name.clone();
            Box::pin(async move { read::runs(conn, name.as_deref()).await })
        })
        .await
    }

    /// Task counts by run recovery and status, over the whole schema.
    pub async fn task_counts(&self) -> Result<Vec<TaskCount>, StoreError> {
        self.retry(move |conn| Box::pin(async move { read::task_counts(conn).await }))
            .await
    }

    /// Failed tasks by failure class, over the whole schema.
    pub async fn failure_class_counts(&self) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        self.retry(move |conn| Box::pin(async move { read::failure_class_counts(conn).await }))
            .await
    }

    pub async fn tasks(&self, run: RunKey) -> Result<Vec<TaskRecord>, StoreError> {
        self.retry(move |conn| {
            let run = run.clone();
            Box::pin(async move { read::tasks(conn, &run).await })
        })
        .await
    }

    pub async fn triggers(
        &self,
        run: RunKey,
        after: i64,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        self.retry(move |conn| {
            let run = run.clone();
            Box::pin(async move { read::triggers(conn, &run, after).await })
        })
        .await
    }

    pub async fn requests(
        &self,
        run: RunKey,
        after: i64,
    ) -> Result<Vec<RunRequestRecord>, StoreError> {
        self.retry(move |conn| {
            let run = run.clone();
            Box::pin(async move { read::requests(conn, &run, after).await })
        })
        .await
    }

    pub async fn host_health(&self, run: RunKey) -> Result<Vec<HostHealthRecord>, StoreError> {
        self.retry(move |conn| {
            let run = run.clone();
            Box::pin(async move { read::host_health(conn, &run).await })
        })
        .await
    }

    pub async fn delays(&self, run: RunKey) -> Result<Vec<DelayRecord>, StoreError> {
        self.retry(move |conn| {
            let run = run.clone();
            Box::pin(async move { read::delays(conn, &run).await })
        })
        .await
    }

    pub async fn retries(&self, run: RunKey) -> Result<Vec<RetryRecord>, StoreError> {
        self.retry(move |conn| {
            let run = run.clone();
            Box::pin(async move { read::retries(conn, &run).await })
        })
        .await
    }

    /// Whether some session holds the run's advisory lock: a look at `pg_locks`, which
    /// takes nothing, so it never stands in a coordinator's way.
    pub(crate) async fn run_held(&self, run_id: &str) -> Result<bool, StoreError> {
        let key = RunLockKey::of(self.shared.pool.connector().schema(), run_id);
        self.retry(move |conn| Box::pin(async move { read::run_lock_held(conn, key).await }))
            .await
    }

    /// Takes the run's advisory lock on a session of its own (see the module essay).
    pub(crate) async fn lock_run(&self, run_id: &str) -> Result<RunLock, StoreError> {
        let connector = self.shared.pool.connector().clone();
        let key = RunLockKey::of(connector.schema(), run_id);
        let lock = RunLock::acquire(connector, run_id, key).await?;
        self.leases().push((run_id.to_owned(), lock.lease()));
        Ok(lock)
    }

    /// The lease of the run lock this handle took last on `run_id`, if it took one (a lease
    /// whose guard is gone counts no more, unless it was lost).
    fn lease_of(&self, run_id: &str) -> Option<watch::Receiver<Lease>> {
        let mut leases = self.leases();
        leases.retain(|(_, lease)| lease.has_changed().is_ok() || *lease.borrow() == Lease::Lost);
        let found = leases.iter().rev().find(|(id, _)| id == run_id);
        found.map(|(_, lease)| lease.clone())
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Vec<(String, watch::Receiver<Lease>)>> {
        // The list stays consistent whatever panicked while holding it.
        self.shared.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while this handle's lease on `run_id` is unconfirmed; refuses once it is lost.
    async fn leased(&self, run_id: &str) -> Result<(), StoreError> {
        let Some(mut lease) = self.lease_of(run_id) else {
            return Ok(());
        };
        // Closed (the guard went) with the lease held or unconfirmed: no longer ours to judge.
        let _ = lease.wait_for(|state| *state != Lease::Unconfirmed).await;
        if *lease.borrow() == Lease::Lost {
            return Err(StoreError::RunLost {
                run_id: run_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Declares shared pools; see [`Store::declare_pools`](crate::Store::declare_pools).
    pub(crate) async fn declare_pools(&self, pools: Vec<(String, u32)>) -> Result<(), StoreError> {
        let pools: Arc<[(String, u32)]> = pools.into();
        self.retry(move |conn| {
            let pools = pools.clone();
            Box::pin(async move { pools::declare_once(conn, &pools).await })
        })
        .await
    }

    /// See [`Store::try_grant`](crate::Store::try_grant).
    pub(crate) async fn try_grant(&self, mut request: GrantRequest) -> Result<bool, StoreError> {
        request.units.sort();
        let request = Arc::new(request);
        let at = crate::now_micros();
        let run_id = request.run.run_id.clone();
        self.retry_leased(Some(&run_id), move |conn| {
            let request = request.clone();
            Box::pin(async move { pools::grant_once(conn, &request, at).await })
        })
        .await
    }

    /// See [`Store::release_run_grants`](crate::Store::release_run_grants).
    pub(crate) async fn release_run_grants(&self, run_id: String) -> Result<usize, StoreError> {
        let job = Arc::new((run_id.clone(), self.pools_channel()));
        self.retry_leased(Some(&run_id), move |conn| {
            let job = job.clone();
            Box::pin(async move { pools::release_run_once(conn, &job.0, &job.1).await })
        })
        .await
    }

    /// The channel that tells coordinators waiting on shared pools that units came back:
    /// that of the (impossible) run id "", recovery 0.
    fn pools_channel(&self) -> pools::PoolsChannel {
        let schema = self.shared.pool.connector().schema();
        pools::PoolsChannel {
            channel: channel_name(schema, ""),
            payload: listen::payload(self.shared.origin, &pools_key()),
        }
    }

    /// LISTENs for shared-pool units coming back from other handles.
    pub(crate) async fn subscribe_pools(&self) -> Result<Listener, StoreError> {
        let connector = self.shared.pool.connector().clone();
        let channel = channel_name(connector.schema(), "");
        let filter = listen::Filter {
            origin: self.shared.origin,
            run: pools_key(),
        };
        Listener::start(connector, channel, filter).await
    }

    /// LISTENs for other handles' writes to `run`.
    pub(crate) async fn subscribe(&self, run: RunKey) -> Result<Listener, StoreError> {
        let connector = self.shared.pool.connector().clone();
        let channel = channel_name(connector.schema(), &run.run_id);
        let filter = listen::Filter {
            origin: self.shared.origin,
            run,
        };
        Listener::start(connector, channel, filter).await
    }

    fn describe(&self) -> &str {
        self.shared.pool.connector().describe()
    }

    async fn write_job(&self, job: Arc<(WriteCx, Write)>) -> Result<(), StoreError> {
        let run_id = job.0.run.run_id.clone();
        self.retry_leased(Some(&run_id), move |conn| {
            let job = job.clone();
            Box::pin(async move { write::write_once(conn, &job.0, &job.1).await })
        })
        .await
    }

    fn write_cx(&self, run: &RunKey) -> WriteCx {
        let schema = self.shared.pool.connector().schema();
        WriteCx {
            begin: self.begin_locked(&run.run_id),
            batch_id: self.next_batch_id(),
            run: run.clone(),
            channel: channel_name(schema, &run.run_id),
            payload: listen::payload(self.shared.origin, run),
            pools: self.pools_channel(),
        }
    }

    /// `BEGIN` and the commit lock of `run_id`, which every write to the run takes first.
    fn begin_locked(&self, run_id: &str) -> String {
        let key = lock_key(self.shared.pool.connector().schema(), run_id);
        // Custom plans: a generic plan, made once while a run's rows were few, would go on
        // scanning them all (hash join) long after they have grown many.
        format!(
            "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan; \
             SELECT pg_advisory_xact_lock({COMMIT_LOCK_CLASS}, {key})"
        )
    }

    /// A batch id no other write of any store handle has.
    fn next_batch_id(&self) -> String {
        let serial = self.shared.next_batch.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{serial}", self.shared.origin)
    }

    /// Runs `op` until it succeeds, is refused, or runs out of retries.
    async fn retry<R>(
        &self,
        op: impl for<'c> Fn(&'c mut AsyncPgConnection) -> Attempt<'c, R>,
    ) -> Result<R, StoreError> {
        self.retry_leased(None, op).await
    }

    /// [`retry`](Self::retry), each attempt of a write to the run `leased` made only while
    /// this handle's lease on it (if it holds its lock) is held: a coordinator cut off from
    /// the store writes nothing until it knows the run is still its own.
    async fn retry_leased<R>(
        &self,
        leased: Option<&str>,
        op: impl for<'c> Fn(&'c mut AsyncPgConnection) -> Attempt<'c, R>,
    ) -> Result<R, StoreError> {
        let mut tries = Tries::new(&self.shared.options);
        loop {
            if let Some(run_id) = leased {
                self.leased(run_id).await?;
            }
            let wait = match self.attempt(&op).await {
                Ok(value) => {
                    tries.succeeded(self.describe());
                    return Ok(value);
                }
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Other(e)) => return Err(StoreError::Query(Box::new(e))),
                Err(Failure::Conflict(e)) => tries.conflict(e)?,
                Err(Failure::Lost(e)) => tries.lost(e, self.describe())?,
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One try of `op` on one pooled connection. The connection goes back to the pool
    /// unless it is dead; an unexplained error on a dead connection counts as a lost one.
    async fn attempt<R>(
        &self,
        op: &impl for<'c> Fn(&'c mut AsyncPgConnection) -> Attempt<'c, R>,
    ) -> Result<R, Failure> {
        let pool = &self.shared.pool;
        let _permit = pool.permit().await?;
        let mut conn = pool.take().await.map_err(|e| self.connect_failure(e))?;
        let result = op(&mut conn).await;
        let alive = match &result {
            Err(Failure::Lost(_)) => false,
            Err(Failure::Other(_)) => responds(&mut conn).await,
            _ => true,
        };
        if alive {
            pool.put_back(conn);
            return result;
        }
        pool.forget_idle();
        result.map_err(|failure| match failure {
            Failure::Other(e) => Failure::Lost(Box::new(e)),
            other => other,
        })
    }

    fn connect_failure(&self, e: ConnectError) -> Failure {
        if e.fatal {
            return Failure::Refused(open_error(self.describe(), e));
        }
        Failure::Lost(e.source)
    }
}

/// Whether the connection still answers.
async fn responds(conn: &mut AsyncPgConnection) -> bool {
    let probe = conn.batch_execute("SELECT 1");
    matches!(tokio::time::timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(())))
}

fn open_error(store: &str, e: ConnectError) -> StoreError {
    StoreError::Open {
        path: store.to_owned(),
        source: e.source,
    }
}

/// A stable 64-bit FNV-1a hash of a schema and a run id: every process, whatever its
/// version of Rust, derives the same lock keys and channel names from it.
fn run_hash(schema: &str, run_id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash apart.
    let bytes = schema.bytes().chain([0xff]).chain(run_id.bytes());
    bytes.fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The second key of a run's commit lock and of a schema's migration lock (the first
/// names their use). 32 bits: two runs that share one only wait for each other's commits;
/// the run lock, where sharing would refuse a run, has the whole hash ([`RunLockKey`]).
fn lock_key(schema: &str, run_id: &str) -> i32 {
    let hash = run_hash(schema, run_id);
    (hash ^ (hash >> 32)) as u32 as i32
}

/// The key of a run's lock, `pg_advisory_lock(bigint)`: the whole 64-bit hash of schema
/// and run id, so two runs refuse each other only by a 64-bit collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunLockKey(i64);

impl RunLockKey {
    fn of(schema: &str, run_id: &str) -> RunLockKey {
        RunLockKey(run_hash(schema, run_id) as i64)
    }

    /// How `pg_locks` shows a one-key advisory lock: `classid` the key's high 32 bits,
    /// `objid` its low 32 bits (both oids), `objsubid` 1.
    fn in_pg_locks(self) -> (i64, i64) {
        let key = self.0 as u64;
        ((key >> 32) as i64, (key & 0xffff_ffff) as i64)
    }
}

/// The key the pools' notifications carry (no run has an empty id).
fn pools_key() -> RunKey {
    RunKey {
        run_id: Arc::from(""),
        recovery: 0,
    }
}

/// Logs in to the store at `location` as a run would (its password: the URL's, then
/// `PGPASSWORD`, then `~/.pgpass`; its TLS as its `sslmode` says) and asks the server one
/// trivial question, over `via` when given (a way to the server through another machine,
/// as that machine's agent would reach it), else directly; within `limit`. The error says
/// why not, as the server put it (a role, a password, a database, TLS).
pub async fn check_login(
    location: &PgLocation,
    via: Option<Box<dyn Duplex>>,
    limit: Duration,
) -> Result<(), StoreError> {
    let options = PgOptions {
        connect_timeout: limit,
        ..PgOptions::default()
    };
    let connector = Connector::new(location, &options)?;
    // Boxed as `Send` here: the compiler cannot prove it of the nested futures for every
    // lifetime of a caller that spawns this one.
    let login: Pin<Box<dyn Future<Output = Result<(), ConnectError>> + Send + '_>> = match via {
        Some(stream) => Box::pin(connector.login_over(stream, &location.host)),
        None => Box::pin(connector.login()),
    };
    let failed = |source| StoreError::Open {
        path: location.to_string(),
        source,
    };
    match tokio::time::timeout(limit, login).await {
        Ok(logged_in) => logged_in.map_err(|e| failed(e.source)),
        Err(_) => Err(failed(
            format!("no answer within {}", humantime::format_duration(limit)).into(),
        )),
    }
}

/// The LISTEN/NOTIFY channel of one run (an identifier that needs no quoting).
fn channel_name(schema: &str, run_id: &str) -> String {
    format!("eventor_{:016x}", run_hash(schema, run_id))
}

/// A random number (std's hasher keys are random per process and per instance).
fn random_u64() -> u64 {
    RandomState::new().hash_one((std::process::id(), Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::StoreLocation;

    /// A store in a fresh schema of the `EVENTOR_PG_URL` server (`None`: no server given).
    async fn scratch_store() -> Option<(PgStore, String)> {
        let Some(url) = std::env::var("EVENTOR_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            let required = std::env::var("EVENTOR_REQUIRE_PG").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_URL is not set"
            );
            return None;
        };
        let schema = format!("u_{:016x}", random_u64());
        let Ok(StoreLocation::Postgres(location)) =
            StoreLocation::parse(&format!("{url}?schema={schema}"))
        else {
            panic!("EVENTOR_PG_URL is not a postgres URL");
        };
        let store = PgStore::open(&location, PgOptions::default())
            .await
            .unwrap();
        Some((store, schema))
    }

    async fn drop_schema(store: PgStore, schema: String) {
        let sql = Arc::<str>::from(format!(
            "DROP SCHEMA {} CASCADE",
            connect::quote_ident(&schema)
        ));
        store
            .retry(move |conn| {
                let sql = sql.clone();
                Box::pin(async move { Ok(conn.batch_execute(&sql).await?) })
            })
            .await
            .unwrap();
    }

    /// Recovery `recovery` of run `R`.
    fn run_key(recovery: i32) -> RunKey {
        RunKey {
            run_id: Arc::from("R"),
            recovery,
        }
    }

    fn new_run(run: &RunKey) -> NewRun {
        NewRun {
            key: run.clone(),
            name: "flow".into(),
            mode: RunMode::Restart,
            host: "h".into(),
            program: "{}".into(),
            started_at: 1,
            params: Default::default(),
            env_from_prime: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deletion_retried_after_it_committed_answers_its_first_count() {
        let Some((store, schema)) = scratch_store().await else {
            return;
        };
        for recovery in 0..2 {
            let begin = Write::BeginRun(new_run(&run_key(recovery)));
            store.write(begin).await.unwrap();
        }
        // The same deletion twice, as a retry after a lost COMMIT would run it.
        let cx = Arc::new(store.delete_cx("R".into()));
        assert_eq!(store.delete_job(cx.clone()).await.unwrap(), 2);
        let again = store.delete_job(cx).await.unwrap();
        assert_eq!(again, 2, "recognized as committed, with its count");
        // A new deletion finds nothing: the retry was not just lucky.
        assert_eq!(store.delete_run("R".into()).await.unwrap(), 0);
        assert_eq!(store.run_history("R".into()).await.unwrap(), []);
        drop_schema(store, schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_retried_after_it_committed_is_not_applied_again() {
        let Some((store, schema)) = scratch_store().await else {
            return;
        };
        let run = run_key(0);
        store.write(Write::BeginRun(new_run(&run))).await.unwrap();
        let batch = Batch {
            run: run.clone(),
            changes: vec![Change::Trigger {
                event: Arc::from("e"),
                sequence: Arc::from("1"),
                at: 1,
            }],
            writer: Writer::Coordinator,
        };
        // The same write twice, as a retry after a lost COMMIT would send it.
        let job = Arc::new((store.write_cx(&run), Write::Commit(batch.clone())));
        store.write_job(job.clone()).await.unwrap();
        store.write_job(job).await.expect("recognized as applied");
        assert_eq!(store.triggers(run.clone(), 0).await.unwrap().len(), 1);
        // A new write of the same changes is a duplicate: the retry was not just lucky.
        let err = store.write(Write::Commit(batch)).await.unwrap_err();
        assert!(matches!(err, StoreError::Duplicate { .. }), "{err:?}");
        drop_schema(store, schema).await;
    }

    /// A transaction left idle (its writer frozen) is ended by the server after
    /// `idle_in_transaction`, so the run's commit lock it held is free again.
    #[tokio::test]
    async fn a_frozen_transaction_lets_go_of_the_commit_lock() {
        let Some((store, schema)) = scratch_store().await else {
            return;
        };
        let options = PgOptions {
            idle_in_transaction: Duration::from_millis(500),
            ..PgOptions::default()
        };
        let connector = Connector::new(&store.shared.location, &options);
        let mut frozen = connector.unwrap().diesel().await.unwrap();
        let key = lock_key(&schema, "R");
        let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({COMMIT_LOCK_CLASS}, {key})");
        frozen.batch_execute(&lock).await.unwrap();
        let run = run_key(0);
        let wait = Duration::from_secs(10);
        let write = store.write(Write::BeginRun(new_run(&run)));
        let written = tokio::time::timeout(wait, write).await;
        assert!(matches!(written, Ok(Ok(()))), "{written:?}");
        let after = frozen.batch_execute("SELECT 1").await;
        assert!(after.is_err(), "the frozen session was ended");
        drop_schema(store, schema).await;
    }

    /// Two run ids whose 32-bit lock keys are the same (found by search: about 2^16 ids).
    fn runs_sharing_a_32_bit_key(schema: &str) -> (String, String) {
        let mut seen = std::collections::HashMap::new();
        for n in 0u32.. {
            let id = format!("r{n}");
            if let Some(twin) = seen.insert(lock_key(schema, &id), id.clone()) {
                return (twin, id);
            }
        }
        unreachable!("2^32 ids hold a 32-bit collision")
    }

    /// The run lock keys the whole 64-bit hash: two runs that a 32-bit key would confuse
    /// hold their locks at once, and `run_held` (reading `pg_locks`) tells them apart.
    #[tokio::test]
    async fn runs_sharing_a_32_bit_hash_neither_refuse_nor_hide_each_other() {
        let Some((store, schema)) = scratch_store().await else {
            return;
        };
        let (a, b) = runs_sharing_a_32_bit_key(&schema);
        assert_ne!(RunLockKey::of(&schema, &a), RunLockKey::of(&schema, &b));
        assert!(!store.run_held(&a).await.unwrap());
        let lock_a = store.lock_run(&a).await.unwrap();
        assert!(store.run_held(&a).await.unwrap(), "{a} is held");
        assert!(!store.run_held(&b).await.unwrap(), "{b} is not held");
        let lock_b = store.lock_run(&b).await.expect("not refused by its twin");
        assert!(store.run_held(&b).await.unwrap(), "{b} is held");
        let again = store.lock_run(&a).await.map(|_| "taken");
        assert!(
            matches!(again, Err(StoreError::RunLocked { .. })),
            "{again:?}"
        );
        lock_a.release().await;
        assert!(!store.run_held(&a).await.unwrap(), "{a} released");
        assert!(store.run_held(&b).await.unwrap(), "{b} still held");
        drop(lock_b);
        drop_schema(store, schema).await;
    }

    /// A run lock whose session ends and whose lock another handle takes before it is taken
    /// again is lost, and its handle writes nothing more to that run (other runs still).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_run_lock_refuses_every_write_to_its_run() {
        let Some((store, schema)) = scratch_store().await else {
            return;
        };
        let run = run_key(0);
        store.write(Write::BeginRun(new_run(&run))).await.unwrap();
        let lock = store.lock_run("R").await.unwrap();
        let mut lease = lock.lease();
        assert_eq!(*lease.borrow(), Lease::Held);
        let rival = PgStore::open(&store.shared.location, PgOptions::default())
            .await
            .unwrap();
        let (high, low) = RunLockKey::of(&schema, "R").in_pg_locks();
        let end_holder = Arc::<str>::from(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = {high}::int8::oid AND objid = {low}::int8::oid AND objsubid = 1"
        ));
        rival
            .retry(move |conn| {
                let sql = end_holder.clone();
                Box::pin(async move { Ok(conn.batch_execute(&sql).await?) })
            })
            .await
            .unwrap();
        // The keeper waits 200 ms before it takes the lock again: the rival comes first.
        let taken = loop {
            match rival.lock_run("R").await {
                Ok(taken) => break taken,
                Err(StoreError::RunLocked { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e:?}"),
            }
        };
        let lost = tokio::time::timeout(
            Duration::from_secs(10),
            lease.wait_for(|l| *l == Lease::Lost),
        );
        assert!(matches!(lost.await, Ok(Ok(_))), "the lease is lost");
        let status = Write::RunStatus(run.clone(), RunStatus::Success, 2);
        let refused = store.write(status).await.unwrap_err();
        assert!(matches!(refused, StoreError::RunLost { .. }), "{refused:?}");
        assert_eq!(
            store.run_history("R".into()).await.unwrap()[0].status,
            RunStatus::Running
        );
        let other = RunKey {
            run_id: Arc::from("S"),
            recovery: 0,
        };
        store.write(Write::BeginRun(new_run(&other))).await.unwrap();
        drop((lock, taken, rival));
        drop_schema(store, schema).await;
    }

    #[tokio::test]
    async fn a_bad_query_is_reported_and_the_connection_kept() {
        let Some((store, schema)) = scratch_store().await else {
            return;
        };
        let err = store
            .retry(|conn| Box::pin(async move { Ok(conn.batch_execute("SELEC 1").await?) }))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "{err:?}");
        assert_eq!(store.run_history("R".into()).await.unwrap(), []);
        drop_schema(store, schema).await;
    }

    #[test]
    fn hashes_are_stable_and_separate_their_parts() {
        assert_eq!(run_hash("", ""), run_hash("", ""));
        assert_ne!(run_hash("ab", "c"), run_hash("a", "bc"));
        assert_eq!(
            channel_name("eventor", "R"),
            format!("eventor_{:016x}", run_hash("eventor", "R"))
        );
        // Pinned: processes of different builds must keep agreeing on locks and channels.
        assert_eq!(run_hash("", ""), 12_638_352_127_299_873_646);
    }
}
