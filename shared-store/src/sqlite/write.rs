//! Writes of the SQLite backend: new runs, batches of changes (one immediate transaction each),
//! run status and deleting runs.
//!
//! Every statement of a batch uses bind parameters and a static query id (inserts from diesel's
//! query builder, fenced updates from `fenced.rs`), so each kind of change is prepared once per
//! connection and then served from diesel's statement cache.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::fenced::{FireDelay, SetHost, SetPid, TakeRetry, TaskFence, Transition};
use super::ids::{RowIds, STRIDE};
use crate::change::*;
use crate::query;
use crate::rows::run_label;
use crate::schema::{delays, retries, tasks, triggers};
use crate::types::*;

/// Applies `write` in one transaction; `ids` numbers the rows it adds.
pub(super) fn write(
    conn: &mut SqliteConnection,
    ids: &mut RowIds,
    write: &Write,
) -> Result<(), StoreError> {
    match write {
        Write::BeginRun(run) => begin_run(conn, run),
        Write::Commit(batch) => commit(conn, ids, batch),
        Write::RunStatus(run, status, at) => set_run_status(conn, run, *status, *at),
        Write::Request(request) => insert_request(conn, request),
        Write::RunCause(run, cause) => {
            let updated = query::set_run_cause(run, cause.clone()).execute(conn)?;
            query::run_updated(updated, run)
        }
        Write::HostHealth(run, health) => set_host_health(conn, run, health),
        Write::RunParams(run, params) => {
            let updated = query::set_run_params(run, params.clone()).execute(conn)?;
            query::run_updated(updated, run)
        }
    }
}

/// Inserts a request to a run; a run that is not there is [`StoreError::NoSuchRun`].
fn insert_request(conn: &mut SqliteConnection, request: &RunRequest) -> Result<(), StoreError> {
    conn.immediate_transaction(|conn| {
        let exists = query::run_history(&request.run.run_id)
            .load::<crate::rows::RunRow>(conn)?
            .iter()
            .any(|row| row.1 == request.run.recovery);
        if !exists {
            return Err(StoreError::NoSuchRun(crate::rows::run_label(&request.run)));
        }
        query::insert_request(request).execute(conn)?;
        Ok(())
    })
}

/// Replaces a host's health row of a run; a run that is not there is
/// [`StoreError::NoSuchRun`].
fn set_host_health(
    conn: &mut SqliteConnection,
    run: &RunKey,
    health: &HostHealthRecord,
) -> Result<(), StoreError> {
    conn.immediate_transaction(|conn| {
        let exists = query::run_history(&run.run_id)
            .load::<crate::rows::RunRow>(conn)?
            .iter()
            .any(|row| row.1 == run.recovery);
        if !exists {
            return Err(StoreError::NoSuchRun(crate::rows::run_label(run)));
        }
        query::delete_host_health(run, &health.host).execute(conn)?;
        let failures = crate::rows::failures_text(&health.failures);
        query::insert_host_health(run, health, failures).execute(conn)?;
        Ok(())
    })
}

/// Inserts a run row, status `running`.
pub(super) fn begin_run(conn: &mut SqliteConnection, run: &NewRun) -> Result<(), StoreError> {
    query::insert_run(run)
        .execute(conn)
        .map_err(|e| insert_error(e, &run.key, || duplicate_run(&run.key)))?;
    Ok(())
}

pub(super) fn set_run_status(
    conn: &mut SqliteConnection,
    run: &RunKey,
    status: RunStatus,
    at: Micros,
) -> Result<(), StoreError> {
    let updated = query::set_run_status(run, status, at).execute(conn)?;
    query::run_updated(updated, run)
}

/// Deletes every recovery of `run_id` and the rows that reference them, in one `BEGIN
/// IMMEDIATE` transaction; answers how many recoveries went.
pub(super) fn delete_run(conn: &mut SqliteConnection, run_id: &str) -> Result<u64, StoreError> {
    conn.immediate_transaction(|conn| {
        let (health, requests, tasks, triggers, delays, retries) = query::delete_rows_of(run_id);
        health.execute(conn)?;
        requests.execute(conn)?;
        tasks.execute(conn)?;
        triggers.execute(conn)?;
        delays.execute(conn)?;
        retries.execute(conn)?;
        Ok(query::delete_runs(run_id).execute(conn)? as u64)
    })
}

/// Applies every change of `batch` in one `BEGIN IMMEDIATE` transaction; the first error
/// rolls the whole batch back. New rows are numbered in the batch's order.
fn commit(conn: &mut SqliteConnection, ids: &mut RowIds, batch: &Batch) -> Result<(), StoreError> {
    conn.immediate_transaction(|conn| {
        let new_rows = batch.changes.iter().filter(|c| adds_row(c)).count();
        let mut next = match new_rows {
            0 => 0,
            n => ids.take(conn, &batch.run, batch.writer, n)?,
        };
        let mut ops = batch.changes.iter().enumerate();
        ops.try_for_each(|(index, change)| {
            apply(conn, &batch.run, &mut next, Op::of(index, change))
        })
    })
}

/// A change that inserts a numbered row (a trigger or a task).
fn adds_row(change: &Change) -> bool {
    matches!(change, Change::Trigger { .. } | Change::TaskCreated { .. })
}

/// Applies one part of a change; `next` is the id the next new row takes.
fn apply(
    conn: &mut SqliteConnection,
    run: &RunKey,
    next: &mut i64,
    op: Op,
) -> Result<(), StoreError> {
    match op {
        Op::Trigger(trigger) => insert_trigger(conn, run, take(next), &trigger),
        Op::CreateTask(task) => insert_task(conn, run, take(next), &task),
        Op::EditTask(edit) => edit_task(conn, TaskFence { run, edit: &edit }),
        Op::ArmDelay(delay) => arm_delay(conn, run, &delay),
        Op::FireDelay(delay) => fire_delay(conn, run, &delay),
        Op::ScheduleRetry(retry) => schedule_retry(conn, run, &retry),
        Op::TakeRetry(retry) => take_retry(conn, run, &retry),
        Op::ReleaseGrant(release) => {
            let (step, sequence) = (release.step, release.sequence);
            query::release_grant(run, step, sequence, release.attempt).execute(conn)?;
            Ok(())
        }
    }
}

/// Declares each shared pool (the first declaration stands) and checks the units stored.
pub(super) fn declare_pools(
    conn: &mut SqliteConnection,
    pools: &[(String, u32)],
) -> Result<(), StoreError> {
    conn.immediate_transaction(|conn| {
        for (name, units) in pools {
            query::declare_pool(name, *units as i32)
                .on_conflict_do_nothing()
                .execute(conn)?;
            let stored: i32 = query::pool_units(name).first(conn)?;
            query::check_declared(name, *units, stored)?;
        }
        Ok(())
    })
}

/// Grants every unit of `request`, or none, in one `BEGIN IMMEDIATE` transaction (which
/// serializes it with every other writer of the file).
pub(super) fn try_grant(
    conn: &mut SqliteConnection,
    request: &GrantRequest,
    at: Micros,
) -> Result<bool, StoreError> {
    conn.immediate_transaction(|conn| {
        if !query::held_by(request).load::<String>(conn)?.is_empty() {
            return Ok(true);
        }
        for (pool, units) in &request.units {
            let stored: Option<i32> = query::pool_units(pool).first(conn).optional()?;
            let stored = stored.ok_or_else(|| StoreError::NoSuchPool(pool.to_string()))?;
            let granted: Vec<i32> = query::units_granted(pool).load(conn)?;
            if !query::fits(stored, &granted, *units) {
                return Ok(false);
            }
        }
        for (pool, units) in &request.units {
            query::insert_grant(request, pool, *units as i32, at).execute(conn)?;
        }
        Ok(true)
    })
}

/// Gives back every grant of every recovery of `run_id`; answers how many went.
pub(super) fn release_run_grants(
    conn: &mut SqliteConnection,
    run_id: &str,
) -> Result<usize, StoreError> {
    Ok(query::release_run_grants(run_id).execute(conn)?)
}

/// Hands out `next` and moves it on to the writer's next id.
fn take(next: &mut i64) -> i64 {
    *next += STRIDE;
    *next - STRIDE
}

fn insert_trigger(
    conn: &mut SqliteConnection,
    run: &RunKey,
    id: i64,
    trigger: &NewTrigger,
) -> Result<(), StoreError> {
    diesel::insert_into(triggers::table)
        .values((
            triggers::id.eq(id),
            triggers::run_id.eq(&*run.run_id),
            triggers::recovery.eq(run.recovery),
            triggers::event.eq(trigger.event),
            triggers::sequence.eq(trigger.sequence),
            triggers::created_at.eq(trigger.at),
        ))
        .execute(conn)
        .map_err(|e| insert_error(e, run, || trigger.duplicate(run)))?;
    Ok(())
}

/// Inserts a task as created: applied one change at a time, a new task has no pid, result or
/// error yet (only Postgres folds later changes into the insert).
fn insert_task(
    conn: &mut SqliteConnection,
    run: &RunKey,
    id: i64,
    task: &NewTask,
) -> Result<(), StoreError> {
    diesel::insert_into(tasks::table)
        .values((
            tasks::id.eq(id),
            tasks::run_id.eq(&*run.run_id),
            tasks::recovery.eq(run.recovery),
            tasks::step.eq(task.step),
            tasks::sequence.eq(task.sequence),
            tasks::status.eq(task.status.as_str()),
            tasks::attempt.eq(task.attempt),
            tasks::host.eq(task.host),
            tasks::created_at.eq(task.created_at),
            tasks::updated_at.eq(task.updated_at),
        ))
        .execute(conn)
        .map_err(|e| insert_error(e, run, || task.duplicate(run)))?;
    Ok(())
}

/// The fenced task update: only a row still at the edit's status and attempt moves.
fn edit_task(conn: &mut SqliteConnection, fence: TaskFence) -> Result<(), StoreError> {
    let updated = match fence.edit.kind {
        EditKind::Move(moved) => Transition { fence, moved }.execute(conn)?,
        EditKind::Pid(pid) => SetPid { fence, pid }.execute(conn)?,
        EditKind::Host(host) => SetHost { fence, host }.execute(conn)?,
        EditKind::Retry { new_attempt, at } => retry(conn, fence, new_attempt, at)?,
    };
    if updated == 0 {
        return Err(fence.edit.fenced());
    }
    Ok(())
}

/// Puts an orphaned active task back to ready as a new attempt. Rare (once per task per
/// crash), so the plain query builder is good enough here.
fn retry(
    conn: &mut SqliteConnection,
    fence: TaskFence,
    new_attempt: i32,
    at: Micros,
) -> Result<usize, DieselError> {
    let TaskFence { run, edit } = fence;
    let task = tasks::table
        .filter(tasks::run_id.eq(&*run.run_id))
        .filter(tasks::recovery.eq(run.recovery))
        .filter(tasks::step.eq(edit.step))
        .filter(tasks::sequence.eq(edit.sequence))
        .filter(tasks::status.eq(edit.from.as_str()))
        .filter(tasks::attempt.eq(edit.attempt));
    diesel::update(task)
        .set((
            tasks::status.eq(TaskStatus::Ready.as_str()),
            tasks::attempt.eq(new_attempt),
            tasks::pid.eq(None::<i64>),
            tasks::updated_at.eq(at),
        ))
        .execute(conn)
}

fn arm_delay(
    conn: &mut SqliteConnection,
    run: &RunKey,
    delay: &NewDelay,
) -> Result<(), StoreError> {
    diesel::insert_into(delays::table)
        .values((
            delays::run_id.eq(&*run.run_id),
            delays::recovery.eq(run.recovery),
            delays::assoc.eq(delay.assoc),
            delays::sequence.eq(delay.sequence),
            delays::due_at.eq(delay.due_at),
            delays::fired.eq(delay.fired),
            delays::created_at.eq(delay.created_at),
        ))
        .execute(conn)
        .map_err(|e| insert_error(e, run, || delay.duplicate(run)))?;
    Ok(())
}

/// Marks a delay fired; a delay that already fired (or was never armed) is fenced.
fn fire_delay(
    conn: &mut SqliteConnection,
    run: &RunKey,
    delay: &FiredDelay,
) -> Result<(), StoreError> {
    let updated = FireDelay { run, delay }.execute(conn)?;
    if updated == 0 {
        return Err(delay.fenced());
    }
    Ok(())
}

fn schedule_retry(
    conn: &mut SqliteConnection,
    run: &RunKey,
    retry: &NewRetry,
) -> Result<(), StoreError> {
    diesel::insert_into(retries::table)
        .values((
            retries::run_id.eq(&*run.run_id),
            retries::recovery.eq(run.recovery),
            retries::step.eq(retry.step),
            retries::sequence.eq(retry.sequence),
            retries::number.eq(retry.number),
            retries::due_at.eq(retry.due_at),
            retries::taken.eq(retry.taken),
            retries::created_at.eq(retry.created_at),
        ))
        .execute(conn)
        .map_err(|e| insert_error(e, run, || retry.duplicate(run)))?;
    Ok(())
}

/// Marks a retry taken; one taken already (or never scheduled) is fenced.
fn take_retry(
    conn: &mut SqliteConnection,
    run: &RunKey,
    retry: &TakenRetry,
) -> Result<(), StoreError> {
    let updated = TakeRetry { run, retry }.execute(conn)?;
    if updated == 0 {
        return Err(retry.fenced());
    }
    Ok(())
}

/// Maps the constraint errors an insert can meet; `duplicate` is only built on a duplicate.
fn insert_error(
    e: DieselError,
    run: &RunKey,
    duplicate: impl FnOnce() -> StoreError,
) -> StoreError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => duplicate(),
        // Rows of a run need the run: the engine must `begin_run` first.
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            StoreError::NoSuchRun(run_label(run))
        }
        other => other.into(),
    }
}
