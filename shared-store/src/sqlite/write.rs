//! Writes of the SQLite backend: new runs, batches of changes (one immediate transaction each)
//! and run status.
//!
//! Every statement of a batch uses bind parameters and a static query id (inserts from diesel's
//! query builder, fenced updates from `fenced.rs`), so each kind of change is prepared once per
//! connection and then served from diesel's statement cache.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::fenced::{FireDelay, SetPid, TaskKey, Transition};
use crate::schema::{delays, runs, tasks, triggers};
use crate::types::*;

/// Inserts a run row, status `running`.
pub(super) fn begin_run(conn: &mut SqliteConnection, run: &NewRun) -> Result<(), StoreError> {
    diesel::insert_into(runs::table)
        .values((
            runs::run_id.eq(&*run.key.run_id),
            runs::recovery.eq(run.key.recovery),
            runs::name.eq(&run.name),
            runs::mode.eq(run.mode.as_str()),
            runs::status.eq(RunStatus::Running.as_str()),
            runs::host.eq(&run.host),
            runs::program.eq(&run.program),
            runs::started_at.eq(run.started_at),
        ))
        .execute(conn)
        .map_err(|e| insert_error(e, &run.key, || run_name(&run.key)))?;
    Ok(())
}

/// Sets a run's status; a final status also stamps `ended_at`, `running` clears it.
pub(super) fn set_run_status(
    conn: &mut SqliteConnection,
    run: &RunKey,
    status: RunStatus,
    at: Micros,
) -> Result<(), StoreError> {
    let ended_at = (status != RunStatus::Running).then_some(at);
    let updated = diesel::update(runs::table)
        .filter(runs::run_id.eq(&*run.run_id))
        .filter(runs::recovery.eq(run.recovery))
        .set((
            runs::status.eq(status.as_str()),
            runs::ended_at.eq(ended_at),
        ))
        .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::NoSuchRun(run_label(run)));
    }
    Ok(())
}

/// Applies every change of `batch` in one `BEGIN IMMEDIATE` transaction; the first error
/// rolls the whole batch back.
pub(super) fn commit(conn: &mut SqliteConnection, batch: &Batch) -> Result<(), StoreError> {
    conn.immediate_transaction(|conn| {
        batch
            .changes
            .iter()
            .try_for_each(|change| apply(conn, &batch.run, change))
    })
}

fn apply(conn: &mut SqliteConnection, run: &RunKey, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::Trigger {
            event,
            sequence,
            at,
        } => insert_trigger(conn, run, event, sequence, *at),
        Change::TaskCreated {
            step,
            sequence,
            status,
            attempt,
            host,
            at,
        } => {
            let key = task_key(run, step, sequence, *attempt);
            insert_task(conn, key, *status, host.as_deref(), *at)
        }
        Change::TaskTransition {
            step,
            sequence,
            attempt,
            from,
            to,
            result,
            error,
            at,
        } => {
            let key = task_key(run, step, sequence, *attempt);
            let outcome = (result.as_deref(), error.as_deref());
            transition(conn, key, (*from, *to), outcome, *at)
        }
        Change::TaskPid {
            step,
            sequence,
            attempt,
            pid,
        } => set_pid(conn, task_key(run, step, sequence, *attempt), *pid),
        Change::TaskRetry {
            step,
            sequence,
            attempt,
            new_attempt,
            at,
        } => retry(
            conn,
            task_key(run, step, sequence, *attempt),
            *new_attempt,
            *at,
        ),
        Change::DelayArmed {
            assoc,
            sequence,
            due_at,
            at,
        } => arm_delay(conn, run, *assoc, sequence, (*due_at, *at)),
        Change::DelayFired { assoc, sequence } => fire_delay(conn, run, *assoc, sequence),
    }
}

fn task_key<'a>(run: &'a RunKey, step: &'a str, sequence: &'a str, attempt: i32) -> TaskKey<'a> {
    TaskKey {
        run,
        step,
        sequence,
        attempt,
    }
}

fn insert_trigger(
    conn: &mut SqliteConnection,
    run: &RunKey,
    event: &str,
    sequence: &str,
    at: Micros,
) -> Result<(), StoreError> {
    diesel::insert_into(triggers::table)
        .values((
            triggers::run_id.eq(&*run.run_id),
            triggers::recovery.eq(run.recovery),
            triggers::event.eq(event),
            triggers::sequence.eq(sequence),
            triggers::created_at.eq(at),
        ))
        .execute(conn)
        .map_err(|e| {
            insert_error(e, run, || {
                format!("trigger {event}[{sequence}] of {}", run_name(run))
            })
        })?;
    Ok(())
}

fn insert_task(
    conn: &mut SqliteConnection,
    key: TaskKey,
    status: TaskStatus,
    host: Option<&str>,
    at: Micros,
) -> Result<(), StoreError> {
    diesel::insert_into(tasks::table)
        .values((
            tasks::run_id.eq(&*key.run.run_id),
            tasks::recovery.eq(key.run.recovery),
            tasks::step.eq(key.step),
            tasks::sequence.eq(key.sequence),
            tasks::status.eq(status.as_str()),
            tasks::attempt.eq(key.attempt),
            tasks::host.eq(host),
            tasks::created_at.eq(at),
            tasks::updated_at.eq(at),
        ))
        .execute(conn)
        .map_err(|e| insert_error(e, key.run, || task_name(&key)))?;
    Ok(())
}

/// The fenced status change: only a row still at `from` with the same attempt moves.
fn transition(
    conn: &mut SqliteConnection,
    key: TaskKey,
    (from, to): (TaskStatus, TaskStatus),
    (result, error): (Option<&str>, Option<&str>),
    at: Micros,
) -> Result<(), StoreError> {
    let update = Transition {
        key,
        from,
        to,
        result,
        error,
        at,
    };
    let updated = update.execute(conn)?;
    fenced_unless_one(updated, &key, from)
}

/// Records the pid of an active task (fenced by attempt and status `active`).
fn set_pid(conn: &mut SqliteConnection, key: TaskKey, pid: i64) -> Result<(), StoreError> {
    let updated = SetPid { key, pid }.execute(conn)?;
    fenced_unless_one(updated, &key, TaskStatus::Active)
}

/// Puts an orphaned active task back to ready as a new attempt. Rare (once per task per
/// crash), so the plain query builder is good enough here.
fn retry(
    conn: &mut SqliteConnection,
    key: TaskKey,
    new_attempt: i32,
    at: Micros,
) -> Result<(), StoreError> {
    let row = tasks::table
        .filter(tasks::run_id.eq(&*key.run.run_id))
        .filter(tasks::recovery.eq(key.run.recovery))
        .filter(tasks::step.eq(key.step))
        .filter(tasks::sequence.eq(key.sequence))
        .filter(tasks::status.eq(TaskStatus::Active.as_str()))
        .filter(tasks::attempt.eq(key.attempt));
    let updated = diesel::update(row)
        .set((
            tasks::status.eq(TaskStatus::Ready.as_str()),
            tasks::attempt.eq(new_attempt),
            tasks::pid.eq(None::<i64>),
            tasks::updated_at.eq(at),
        ))
        .execute(conn)?;
    fenced_unless_one(updated, &key, TaskStatus::Active)
}

fn fenced_unless_one(
    updated: usize,
    key: &TaskKey,
    expected: TaskStatus,
) -> Result<(), StoreError> {
    if updated == 0 {
        return Err(StoreError::Fenced {
            step: key.step.to_owned(),
            sequence: key.sequence.to_owned(),
            attempt: key.attempt,
            expected,
        });
    }
    Ok(())
}

fn arm_delay(
    conn: &mut SqliteConnection,
    run: &RunKey,
    assoc: i32,
    sequence: &str,
    (due_at, at): (Micros, Micros),
) -> Result<(), StoreError> {
    diesel::insert_into(delays::table)
        .values((
            delays::run_id.eq(&*run.run_id),
            delays::recovery.eq(run.recovery),
            delays::assoc.eq(assoc),
            delays::sequence.eq(sequence),
            delays::due_at.eq(due_at),
            delays::fired.eq(false),
            delays::created_at.eq(at),
        ))
        .execute(conn)
        .map_err(|e| {
            insert_error(e, run, || {
                format!("delay {assoc}[{sequence}] of {}", run_name(run))
            })
        })?;
    Ok(())
}

/// Marks a delay fired; a delay that already fired (or was never armed) is fenced.
fn fire_delay(
    conn: &mut SqliteConnection,
    run: &RunKey,
    assoc: i32,
    sequence: &str,
) -> Result<(), StoreError> {
    let updated = FireDelay {
        run,
        assoc,
        sequence,
    }
    .execute(conn)?;
    if updated == 0 {
        return Err(StoreError::DelayFenced {
            assoc,
            sequence: sequence.to_owned(),
        });
    }
    Ok(())
}

/// Maps the constraint errors an insert can meet; `what` is only formatted on a duplicate.
fn insert_error(e: DieselError, run: &RunKey, what: impl FnOnce() -> String) -> StoreError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            StoreError::Duplicate { what: what() }
        }
        // Rows of a run need the run: the engine must `begin_run` first.
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            StoreError::NoSuchRun(run_label(run))
        }
        other => other.into(),
    }
}

/// `R recovery 0`, as [`StoreError::NoSuchRun`] wants it.
fn run_label(run: &RunKey) -> String {
    format!("{} recovery {}", run.run_id, run.recovery)
}

/// `run R recovery 0`, as [`StoreError::Duplicate`] wants it.
fn run_name(run: &RunKey) -> String {
    format!("run {}", run_label(run))
}

fn task_name(key: &TaskKey) -> String {
    format!(
        "task {}[{}] of {}",
        key.step,
        key.sequence,
        run_name(key.run)
    )
}
