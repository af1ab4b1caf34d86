//! Rows as every backend loads them (plain tuples) and their conversion into records, so text
//! enums go through the `FromStr` impls of `types.rs` and anything unexpected in the database
//! becomes [`StoreError::Corrupt`] the same way on every backend.

use std::sync::Arc;

use crate::types::*;

pub(crate) type RunRow = (
    String,
    i32,
    String,
    String,
    String,
    String,
    String,
    Micros,
    Option<Micros>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn run_record(row: RunRow) -> Result<RunRecord, StoreError> {
    let (
        run_id,
        recovery,
        name,
        mode,
        status,
        host,
        program,
        started_at,
        ended_at,
        params,
        from,
        cause,
    ) = row;
    Ok(RunRecord {
        cause,
        params: params.as_deref().map(from_json).transpose()?,
        env_from_prime: from
            .as_deref()
            .map(from_json)
            .transpose()?
            .unwrap_or_default(),
        key: RunKey {
            run_id: Arc::from(run_id),
            recovery,
        },
        name,
        mode: mode.parse()?,
        status: status.parse()?,
        host,
        program,
        started_at,
        ended_at,
    })
}

/// A JSON column's value; what does not parse is [`StoreError::Corrupt`].
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("a run's JSON column: {e}")))
}

/// A value as a JSON column holds it.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and lists of strings serialize")
}

pub(crate) type TaskRow = (
    i64,
    String,
    String,
    String,
    i32,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Micros,
    Micros,
    Option<String>,
);

fn task_record(row: TaskRow) -> Result<TaskRecord, StoreError> {
    let (
        id,
        step,
        sequence,
        status,
        attempt,
        host,
        pid,
        result,
        error,
        created_at,
        updated_at,
        failure_class,
    ) = row;
    Ok(TaskRecord {
        id,
        step,
        sequence,
        status: status.parse()?,
        attempt,
        host,
        pid,
        result,
        error,
        failure_class,
        created_at,
        updated_at,
    })
}

pub(crate) type TriggerRow = (i64, String, String, Micros);

fn trigger_record((id, event, sequence, created_at): TriggerRow) -> TriggerRecord {
    TriggerRecord {
        id,
        event,
        sequence,
        created_at,
    }
}

pub(crate) type RequestRow = (i64, String, String, Micros);

fn request_record((id, kind, by, created_at): RequestRow) -> RunRequestRecord {
    RunRequestRecord {
        id,
        kind: RequestKind::parse(&kind),
        by,
        created_at,
    }
}

pub(crate) fn request_records(rows: Vec<RequestRow>) -> Vec<RunRequestRecord> {
    rows.into_iter().map(request_record).collect()
}

pub(crate) type HealthRow = (
    String,
    String,
    Option<Micros>,
    Option<String>,
    String,
    Micros,
);

/// The stored form of a host's failures: one a line, microseconds, a tab, the reason (its
/// line breaks made spaces).
pub(crate) fn failures_text(failures: &[(Micros, String)]) -> String {
    let lines = failures
        .iter()
        .map(|(at, why)| format!("{at}\t{}", why.replace('\n', " ")));
    lines.collect::<Vec<_>>().join("\n")
}

fn health_record(row: HealthRow) -> HostHealthRecord {
    let (host, state, until, reason, failures, updated_at) = row;
    let failures = failures
        .lines()
        .filter_map(|line| {
            let (at, why) = line.split_once('\t')?;
            Some((at.parse().ok()?, why.to_string()))
        })
        .collect();
    HostHealthRecord {
        host,
        // A state this version does not know (a newer prime's) reads as away: not taking tasks.
        state: HostState::parse(&state).unwrap_or(HostState::Away),
        until,
        reason,
        failures,
        updated_at,
    }
}

pub(crate) fn health_records(rows: Vec<HealthRow>) -> Vec<HostHealthRecord> {
    rows.into_iter().map(health_record).collect()
}

pub(crate) type DelayRow = (i64, i32, String, Micros, bool, Micros);

fn delay_record(row: DelayRow) -> DelayRecord {
    let (id, assoc, sequence, due_at, fired, created_at) = row;
    DelayRecord {
        id,
        assoc,
        sequence,
        due_at,
        fired,
        created_at,
    }
}

pub(crate) type RetryRow = (i64, i32, String, i32, Micros, bool, Micros);

fn retry_record(row: RetryRow) -> RetryRecord {
    let (id, step, sequence, number, due_at, taken, created_at) = row;
    RetryRecord {
        id,
        step,
        sequence,
        number,
        due_at,
        taken,
        created_at,
    }
}

// Every read of a backend ends in one of these (fallible or not, so all end alike).

/// The newest run, from the rows of [`query::latest_run`](crate::query::latest_run).
pub(crate) fn newest_run(rows: Vec<RunRow>) -> Result<Option<RunRecord>, StoreError> {
    rows.into_iter().next().map(run_record).transpose()
}

pub(crate) fn run_records(rows: Vec<RunRow>) -> Result<Vec<RunRecord>, StoreError> {
    rows.into_iter().map(run_record).collect()
}

pub(crate) fn task_records(rows: Vec<TaskRow>) -> Result<Vec<TaskRecord>, StoreError> {
    rows.into_iter().map(task_record).collect()
}

pub(crate) fn trigger_records(rows: Vec<TriggerRow>) -> Result<Vec<TriggerRecord>, StoreError> {
    Ok(rows.into_iter().map(trigger_record).collect())
}

pub(crate) fn delay_records(rows: Vec<DelayRow>) -> Result<Vec<DelayRecord>, StoreError> {
    Ok(rows.into_iter().map(delay_record).collect())
}

pub(crate) fn retry_records(rows: Vec<RetryRow>) -> Result<Vec<RetryRecord>, StoreError> {
    Ok(rows.into_iter().map(retry_record).collect())
}

/// `R recovery 0`, as [`StoreError::NoSuchRun`] wants it.
pub(crate) fn run_label(run: &RunKey) -> String {
    format!("{} recovery {}", run.run_id, run.recovery)
}

/// `run R recovery 0`, as [`StoreError::Duplicate`] wants it.
pub(crate) fn run_name(run: &RunKey) -> String {
    format!("run {}", run_label(run))
}

pub(crate) type TaskCountRow = (String, i32, String, i64);

/// Counts of tasks by run recovery and status, as loaded by `query::task_counts`.
pub(crate) fn task_counts(rows: Vec<TaskCountRow>) -> Result<Vec<TaskCount>, StoreError> {
    rows.into_iter()
        .map(|(run_id, recovery, status, count)| {
            Ok(TaskCount {
                run: RunKey {
                    run_id: Arc::from(run_id),
                    recovery,
                },
                status: status.parse()?,
                count,
            })
        })
        .collect()
}
