//! Writes of the Postgres backend: one transaction per write (see the module essay), and the
//! set-based statements that apply a planned batch: one per kind of row, each binding its
//! columns as arrays and answering with the positions of the rows it refused.

use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::plan::{self, Plan, Refusal, TaskUpdate};
use super::retry::Failure;
use super::stmt::{Sql, Stmt};
use super::txn::finish;
use crate::change::{
    duplicate_run, FiredDelay, NewDelay, NewRetry, NewTask, NewTrigger, TakenRetry, Write,
};
use crate::query;
use crate::types::*;

/// What a write transaction needs besides its work: the run it is for, how to lock it, the
/// batch id that makes a retry safe, and the notification it sends on commit.
pub(super) struct WriteCx {
    /// `BEGIN; SELECT pg_advisory_xact_lock(…)` for the run (integers only, no user text).
    pub begin: String,
    pub batch_id: String,
    pub run: RunKey,
    pub channel: String,
    pub payload: String,
    /// Where giving back shared-pool units is announced.
    pub pools: super::pools::PoolsChannel,
}

/// One attempt at `write`: BEGIN and the run's lock, the batch id (an id already there means
/// an earlier attempt committed: done), the work, COMMIT. Any failure rolls back.
pub(super) async fn write_once(
    conn: &mut AsyncPgConnection,
    cx: &WriteCx,
    write: &Write,
) -> Result<(), Failure> {
    let outcome = async {
        conn.batch_execute(&cx.begin).await?;
        prologue_then(conn, cx, write).await
    }
    .await;
    finish(conn, outcome.map(|fresh| fresh.then_some(())))
        .await
        .map(drop)
}

#[derive(QueryableByName)]
struct Prologue {
    #[diesel(sql_type = Bool)]
    fresh: bool,
    #[diesel(sql_type = Bool)]
    run_exists: bool,
}

/// Records the batch id, queues the notification (delivered only if this commits) and checks
/// the run.
enum RecordBatch {}

impl Sql for RecordBatch {
    const SQL: &'static str = "\
        WITH fresh AS (\
            INSERT INTO batches (id) VALUES (?) ON CONFLICT (id) DO NOTHING RETURNING id) \
        SELECT EXISTS (SELECT 1 FROM fresh) AS fresh, \
            EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND recovery = ?) AS run_exists \
        FROM pg_notify(?, ?)";
}

/// The batch id first, then the work. `Ok(false)`: the id was there, an earlier attempt
/// committed.
async fn prologue_then(
    conn: &mut AsyncPgConnection,
    cx: &WriteCx,
    write: &Write,
) -> Result<bool, Failure> {
    let prologue: Prologue = Stmt::<RecordBatch>::new()
        .bind::<Text, _>(&cx.batch_id)
        .bind::<Text, _>(&*cx.run.run_id)
        .bind::<Integer, _>(cx.run.recovery)
        .bind::<Text, _>(&cx.channel)
        .bind::<Text, _>(&cx.payload)
        .get_result(conn)
        .await?;
    if !prologue.fresh {
        tracing::info!(batch = %cx.batch_id, "store write had committed before the connection dropped");
        return Ok(false);
    }
    match write {
        Write::BeginRun(run) => begin_run(conn, run).await?,
        Write::Commit(batch) => {
            commit(conn, batch, prologue.run_exists).await?;
            release_grants(conn, batch, &cx.pools).await?;
        }
        Write::RunStatus(run, status, at) => set_run_status(conn, run, *status, *at).await?,
        Write::Request(request) => insert_request(conn, request, prologue.run_exists).await?,
        Write::RunCause(run, cause) => {
            let updated = query::set_run_cause(run, cause.clone())
                .execute(conn)
                .await?;
            query::run_updated(updated, run)?
        }
        Write::HostHealth(run, health) => {
            set_host_health(conn, run, health, prologue.run_exists).await?
        }
        Write::RunParams(run, params) => {
            let updated = query::set_run_params(run, params.clone())
                .execute(conn)
                .await?;
            query::run_updated(updated, run)?
        }
    }
    Ok(true)
}

/// Inserts a run row. As for every row (see the module essay), a duplicate shows as an insert
/// that did nothing, not as an error.
async fn begin_run(conn: &mut AsyncPgConnection, run: &NewRun) -> Result<(), Failure> {
    let insert = query::insert_run(run).on_conflict_do_nothing();
    if insert.execute(conn).await? == 0 {
        return Err(duplicate_run(&run.key).into());
    }
    Ok(())
}

/// Inserts a request to a run (its notification is the prologue's, on the run's channel).
async fn insert_request(
    conn: &mut AsyncPgConnection,
    request: &RunRequest,
    run_exists: bool,
) -> Result<(), Failure> {
    if !run_exists {
        return Err(StoreError::NoSuchRun(crate::rows::run_label(&request.run)).into());
    }
    query::insert_request(request).execute(conn).await?;
    Ok(())
}

/// Replaces a host's health row of a run (under the run's lock, as every write to it).
async fn set_host_health(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    health: &HostHealthRecord,
    run_exists: bool,
) -> Result<(), Failure> {
    if !run_exists {
        return Err(StoreError::NoSuchRun(crate::rows::run_label(run)).into());
    }
    query::delete_host_health(run, &health.host)
        .execute(conn)
        .await?;
    let failures = crate::rows::failures_text(&health.failures);
    query::insert_host_health(run, health, failures)
        .execute(conn)
        .await?;
    Ok(())
}

async fn set_run_status(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    status: RunStatus,
    at: Micros,
) -> Result<(), Failure> {
    let updated = query::set_run_status(run, status, at).execute(conn).await?;
    Ok(query::run_updated(updated, run)?)
}

/// Applies a batch through its plan, then reports the refusal with the lowest change index
/// (the one sequential application would have met first), if any.
async fn commit(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
    run_exists: bool,
) -> Result<(), Failure> {
    if !run_exists {
        return match plan::without_run(batch) {
            Some(refusal) => Err(refusal.error.into()),
            None => Ok(()),
        };
    }
    let plan = Plan::new(batch);
    let mut first = Earliest(plan.doomed);
    let run = &batch.run;
    first.offer(insert_triggers(conn, run, &plan.triggers).await?);
    first.offer(insert_tasks(conn, run, &plan.new_tasks).await?);
    first.offer(update_tasks(conn, run, &plan.task_updates).await?);
    first.offer(insert_delays(conn, run, &plan.new_delays).await?);
    first.offer(fire_delays(conn, run, &plan.fired_delays).await?);
    first.offer(insert_retries(conn, run, &plan.new_retries).await?);
    first.offer(take_retries(conn, run, &plan.taken_retries).await?);
    match first.0 {
        Some(refusal) => Err(refusal.error.into()),
        None => Ok(()),
    }
}

/// Deletes the shared-pool grants the batch gives back (after the rest of it applied) and,
/// if any went, wakes the coordinators waiting on a pool.
async fn release_grants(
    conn: &mut AsyncPgConnection,
    batch: &Batch,
    pools: &super::pools::PoolsChannel,
) -> Result<(), Failure> {
    let mut released = 0;
    for change in &batch.changes {
        if let Change::GrantReleased {
            step,
            sequence,
            attempt,
        } = change
        {
            let delete = query::release_grant(&batch.run, step, sequence, *attempt);
            released += delete.execute(conn).await?;
        }
    }
    if released > 0 {
        super::pools::notify(conn, pools).await?;
    }
    Ok(())
}

/// The refusal with the lowest change index seen so far.
struct Earliest(Option<Refusal>);

impl Earliest {
    fn offer(&mut self, refusal: Option<Refusal>) {
        let Some(refusal) = refusal else { return };
        if self
            .0
            .as_ref()
            .is_none_or(|held| refusal.change < held.change)
        {
            self.0 = Some(refusal);
        }
    }
}

/// A 1-based position (`WITH ORDINALITY`) in the arrays of one statement.
#[derive(QueryableByName)]
struct Refused {
    #[diesel(sql_type = BigInt)]
    ord: i64,
}

/// The first refused row of `rows` (positions come sorted), turned into its refusal.
fn first_refused<T>(
    refused: Vec<Refused>,
    rows: &[T],
    refusal: impl Fn(&T) -> Refusal,
) -> Result<Option<Refusal>, Failure> {
    let Some(first) = refused.into_iter().next() else {
        return Ok(None);
    };
    let row = usize::try_from(first.ord - 1)
        .ok()
        .and_then(|i| rows.get(i))
        .ok_or_else(|| StoreError::Corrupt(format!("row position {} out of range", first.ord)))?;
    Ok(Some(refusal(row)))
}

// Every statement below starts from `u`: its rows as arrays, unnested, numbered, and with the
// run's key as columns of `u` rather than constants. The planner then cannot mistake "all
// rows of this run" for a tiny set (a new run has no statistics yet) and scan the whole run
// per row; it probes the unique index row by row, or hashes when that is cheaper.

/// Inserts triggers; answers the positions of those already there.
enum InsertTriggers {}

impl Sql for InsertTriggers {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::text[], ?::text[], ?::int8[]) \
            WITH ORDINALITY AS v(event, sequence, created_at, ord)), \
        ins AS (INSERT INTO triggers (run_id, recovery, event, sequence, created_at) \
            SELECT run_id, recovery, event, sequence, created_at FROM u ORDER BY ord \
            ON CONFLICT (run_id, recovery, event, sequence) DO NOTHING \
            RETURNING event, sequence) \
        SELECT ord FROM u WHERE NOT EXISTS \
            (SELECT 1 FROM ins WHERE ins.event = u.event AND ins.sequence = u.sequence) \
        ORDER BY ord";
}

async fn insert_triggers(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[NewTrigger<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<InsertTriggers>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Text>, _>(column(rows, |r| r.event))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.at))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.duplicate(run),
    })
}

/// Inserts tasks (each with its whole life in the batch applied); answers the positions of
/// those already there.
enum InsertTasks {}

impl Sql for InsertTasks {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::text[], ?::text[], ?::text[], ?::int4[], ?::text[], ?::int8[], \
                ?::text[], ?::text[], ?::text[], ?::int8[], ?::int8[]) \
            WITH ORDINALITY AS v(step, sequence, status, attempt, host, pid, result, error, \
                failure_class, created_at, updated_at, ord)), \
        ins AS (INSERT INTO tasks (run_id, recovery, step, sequence, status, attempt, host, \
                pid, result, error, failure_class, created_at, updated_at) \
            SELECT run_id, recovery, step, sequence, status, attempt, host, pid, result, \
                error, failure_class, created_at, updated_at FROM u ORDER BY ord \
            ON CONFLICT (run_id, recovery, step, sequence) DO NOTHING \
            RETURNING step, sequence) \
        SELECT ord FROM u WHERE NOT EXISTS \
            (SELECT 1 FROM ins WHERE ins.step = u.step AND ins.sequence = u.sequence) \
        ORDER BY ord";
}

async fn insert_tasks(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[NewTask<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<InsertTasks>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Text>, _>(column(rows, |r| r.step))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .bind::<Array<Text>, _>(column(rows, |r| r.status.as_str()))
        .bind::<Array<Integer>, _>(column(rows, |r| r.attempt))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.host))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.pid))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.result))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.error))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.failure_class))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.created_at))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.updated_at))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.duplicate(run),
    })
}

/// The fenced task updates: a row moves only if it is at the status and attempt its first
/// change expects; a NULL (or a false flag) keeps the column as it is. Answers the positions
/// of the rows that did not move.
enum UpdateTasks {}

impl Sql for UpdateTasks {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::text[], ?::text[], ?::text[], ?::int4[], ?::text[], ?::int4[], \
                ?::bool[], ?::text[], ?::text[], ?::text[], ?::int8[], ?::bool[], ?::int8[], \
                ?::text[]) \
            WITH ORDINALITY AS v(step, sequence, expect_status, expect_attempt, status, \
                attempt, set_outcome, result, error, failure_class, updated_at, set_pid, pid, \
                host, ord)), \
        upd AS (UPDATE tasks t SET \
                status = COALESCE(u.status, t.status), \
                attempt = COALESCE(u.attempt, t.attempt), \
                result = CASE WHEN u.set_outcome THEN u.result ELSE t.result END, \
                error = CASE WHEN u.set_outcome THEN u.error ELSE t.error END, \
                failure_class = CASE WHEN u.set_outcome THEN u.failure_class \
                    ELSE t.failure_class END, \
                updated_at = COALESCE(u.updated_at, t.updated_at), \
                pid = CASE WHEN u.set_pid THEN u.pid ELSE t.pid END, \
                host = COALESCE(u.host, t.host) \
            FROM u \
            WHERE t.run_id = u.run_id AND t.recovery = u.recovery AND t.step = u.step \
                AND t.sequence = u.sequence AND t.status = u.expect_status \
                AND t.attempt = u.expect_attempt \
            RETURNING u.ord) \
        SELECT ord FROM u WHERE ord NOT IN (SELECT ord FROM upd) ORDER BY ord";
}

async fn update_tasks(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[TaskUpdate<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<UpdateTasks>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Text>, _>(column(rows, |r| r.step))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .bind::<Array<Text>, _>(column(rows, |r| r.expect.0.as_str()))
        .bind::<Array<Integer>, _>(column(rows, |r| r.expect.1))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.status.map(|s| s.as_str())))
        .bind::<Array<Nullable<Integer>>, _>(column(rows, |r| r.attempt))
        .bind::<Array<Bool>, _>(column(rows, |r| r.outcome.is_some()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.outcome.and_then(|o| o.0)))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.outcome.and_then(|o| o.1)))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.outcome.and_then(|o| o.2)))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.updated_at))
        .bind::<Array<Bool>, _>(column(rows, |r| r.pid.is_some()))
        .bind::<Array<Nullable<BigInt>>, _>(column(rows, |r| r.pid.flatten()))
        .bind::<Array<Nullable<Text>>, _>(column(rows, |r| r.host))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.fenced(),
    })
}

/// Inserts delays; answers the positions of those already there.
enum InsertDelays {}

impl Sql for InsertDelays {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::int4[], ?::text[], ?::int8[], ?::bool[], ?::int8[]) \
            WITH ORDINALITY AS v(assoc, sequence, due_at, fired, created_at, ord)), \
        ins AS (INSERT INTO delays (run_id, recovery, assoc, sequence, due_at, fired, \
                created_at) \
            SELECT run_id, recovery, assoc, sequence, due_at, fired, created_at \
            FROM u ORDER BY ord \
            ON CONFLICT (run_id, recovery, assoc, sequence) DO NOTHING \
            RETURNING assoc, sequence) \
        SELECT ord FROM u WHERE NOT EXISTS \
            (SELECT 1 FROM ins WHERE ins.assoc = u.assoc AND ins.sequence = u.sequence) \
        ORDER BY ord";
}

async fn insert_delays(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[NewDelay<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<InsertDelays>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Integer>, _>(column(rows, |r| r.assoc))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.due_at))
        .bind::<Array<Bool>, _>(column(rows, |r| r.fired))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.created_at))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.duplicate(run),
    })
}

/// Fires delays the batch did not arm: only one that has not fired yet moves. Answers the
/// positions of those that did not.
enum FireDelays {}

impl Sql for FireDelays {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::int4[], ?::text[]) WITH ORDINALITY AS v(assoc, sequence, ord)), \
        upd AS (UPDATE delays d SET fired = TRUE FROM u \
            WHERE d.run_id = u.run_id AND d.recovery = u.recovery AND d.assoc = u.assoc \
                AND d.sequence = u.sequence AND d.fired = FALSE \
            RETURNING u.ord) \
        SELECT ord FROM u WHERE ord NOT IN (SELECT ord FROM upd) ORDER BY ord";
}

async fn fire_delays(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[FiredDelay<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<FireDelays>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Integer>, _>(column(rows, |r| r.assoc))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.fenced(),
    })
}

/// Inserts retries; answers the positions of those already there.
enum InsertRetries {}

impl Sql for InsertRetries {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::int4[], ?::text[], ?::int4[], ?::int8[], ?::bool[], ?::int8[]) \
            WITH ORDINALITY AS v(step, sequence, number, due_at, taken, created_at, ord)), \
        ins AS (INSERT INTO retries (run_id, recovery, step, sequence, number, due_at, taken, \
                created_at) \
            SELECT run_id, recovery, step, sequence, number, due_at, taken, created_at \
            FROM u ORDER BY ord \
            ON CONFLICT (run_id, recovery, step, sequence, number) DO NOTHING \
            RETURNING step, sequence, number) \
        SELECT ord FROM u WHERE NOT EXISTS \
            (SELECT 1 FROM ins WHERE ins.step = u.step AND ins.sequence = u.sequence \
                AND ins.number = u.number) \
        ORDER BY ord";
}

async fn insert_retries(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[NewRetry<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<InsertRetries>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Integer>, _>(column(rows, |r| r.step))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .bind::<Array<Integer>, _>(column(rows, |r| r.number))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.due_at))
        .bind::<Array<Bool>, _>(column(rows, |r| r.taken))
        .bind::<Array<BigInt>, _>(column(rows, |r| r.created_at))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.duplicate(run),
    })
}

/// Takes retries the batch did not schedule: only one not taken yet moves. Answers the
/// positions of those that did not.
enum TakeRetries {}

impl Sql for TakeRetries {
    const SQL: &'static str = "\
        WITH u AS (SELECT ?::text AS run_id, ?::int4 AS recovery, v.* \
            FROM unnest(?::int4[], ?::text[], ?::int4[]) \
            WITH ORDINALITY AS v(step, sequence, number, ord)), \
        upd AS (UPDATE retries r SET taken = TRUE FROM u \
            WHERE r.run_id = u.run_id AND r.recovery = u.recovery AND r.step = u.step \
                AND r.sequence = u.sequence AND r.number = u.number AND r.taken = FALSE \
            RETURNING u.ord) \
        SELECT ord FROM u WHERE ord NOT IN (SELECT ord FROM upd) ORDER BY ord";
}

async fn take_retries(
    conn: &mut AsyncPgConnection,
    run: &RunKey,
    rows: &[TakenRetry<'_>],
) -> Result<Option<Refusal>, Failure> {
    if rows.is_empty() {
        return Ok(None);
    }
    let refused = Stmt::<TakeRetries>::new()
        .bind::<Text, _>(&*run.run_id)
        .bind::<Integer, _>(run.recovery)
        .bind::<Array<Integer>, _>(column(rows, |r| r.step))
        .bind::<Array<Text>, _>(column(rows, |r| r.sequence))
        .bind::<Array<Integer>, _>(column(rows, |r| r.number))
        .load::<Refused>(conn)
        .await?;
    first_refused(refused, rows, |r| Refusal {
        change: r.change,
        error: r.fenced(),
    })
}

/// One column of `rows`, to bind as an array.
fn column<T, V>(rows: &[T], value: impl Fn(&T) -> V) -> Vec<V> {
    rows.iter().map(value).collect()
}
