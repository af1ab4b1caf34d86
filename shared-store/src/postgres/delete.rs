//! Deleting a run on Postgres: every recovery of the run id and the rows that reference them,
//! in one transaction under the run's commit lock, so that no batch of the run is half-way
//! through. Like every write it records a batch id: a retry after a lost COMMIT learns from
//! it that the first attempt committed, and answers what that attempt counted.

use std::sync::atomic::{AtomicU64, Ordering};

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::retry::Failure;
use super::stmt::{Sql, Stmt};
use super::txn::finish;
use crate::query;

/// One deletion of a run, the same for every attempt at it.
pub(super) struct DeleteCx {
    /// `BEGIN; SELECT pg_advisory_xact_lock(…)` for the run, as a write to it begins.
    pub begin: String,
    pub batch_id: String,
    pub run_id: String,
    /// The recoveries the last attempt that reached COMMIT deleted.
    pub counted: AtomicU64,
}

/// Records the deletion's batch id; no row inserted means an earlier attempt committed.
enum RecordDelete {}

impl Sql for RecordDelete {
    const SQL: &'static str = "INSERT INTO batches (id) VALUES (?) ON CONFLICT (id) DO NOTHING";
}

/// One attempt: BEGIN and the run's lock, the batch id, the deletes, COMMIT. Answers how
/// many recoveries went.
pub(super) async fn delete_once(
    conn: &mut AsyncPgConnection,
    cx: &DeleteCx,
) -> Result<u64, Failure> {
    let outcome = async {
        conn.batch_execute(&cx.begin).await?;
        delete_rows(conn, cx).await
    }
    .await;
    let deleted = finish(conn, outcome).await?;
    Ok(deleted.unwrap_or_else(|| AtomicU64::load(&cx.counted, Ordering::Relaxed)))
}

/// The deletes, children first; `None` if the batch id shows they were done already.
async fn delete_rows(conn: &mut AsyncPgConnection, cx: &DeleteCx) -> Result<Option<u64>, Failure> {
    let recorded = Stmt::<RecordDelete>::new()
        .bind::<Text, _>(&cx.batch_id)
        .execute(conn)
        .await?;
    if recorded == 0 {
        tracing::info!(batch = %cx.batch_id, "store deletion committed before the connection dropped");
        return Ok(None);
    }
    let (health, requests, tasks, triggers, delays, retries) = query::delete_rows_of(&cx.run_id);
    health.execute(conn).await?;
    requests.execute(conn).await?;
    tasks.execute(conn).await?;
    triggers.execute(conn).await?;
    delays.execute(conn).await?;
    retries.execute(conn).await?;
    let deleted = query::delete_runs(&cx.run_id).execute(conn).await? as u64;
    cx.counted.store(deleted, Ordering::Relaxed);
    Ok(Some(deleted))
}
