//! What a write does, taken apart once for every backend: the four kinds of write, and each
//! [`Change`] of a batch as the row it inserts or the fenced edit it makes to a row, with the
//! errors that refuse them. SQLite applies the parts one by one; Postgres first folds each
//! row's parts into one statement row (`postgres/plan.rs`).

use std::fmt::Display;

use crate::rows::run_name;
use crate::types::*;

/// The work of one write transaction.
pub(crate) enum Write {
    BeginRun(NewRun),
    Commit(Batch),
    RunStatus(RunKey, RunStatus, Micros),
    Request(RunRequest),
    /// A run's parameters replaced (as JSON).
    RunParams(RunKey, String),
    /// Why a run could not do its work.
    RunCause(RunKey, String),
    /// A host's health in a run, replacing what was there.
    HostHealth(RunKey, HostHealthRecord),
}

impl Write {
    /// The run whose rows the write touches.
    pub fn run(&self) -> &RunKey {
        match self {
            Write::BeginRun(run) => &run.key,
            Write::Commit(batch) => &batch.run,
            Write::RunStatus(run, ..)
            | Write::RunParams(run, _)
            | Write::RunCause(run, _)
            | Write::HostHealth(run, _) => run,
            Write::Request(request) => &request.run,
        }
    }
}

/// One change of a batch, taken apart. Every part keeps the index of its change: a backend
/// that applies a batch out of order reports a refusal by it.
pub(crate) enum Op<'a> {
    Trigger(NewTrigger<'a>),
    CreateTask(NewTask<'a>),
    EditTask(TaskEdit<'a>),
    ArmDelay(NewDelay<'a>),
    FireDelay(FiredDelay<'a>),
    ScheduleRetry(NewRetry<'a>),
    TakeRetry(TakenRetry<'a>),
    ReleaseGrant(GrantRelease<'a>),
}

/// The shared-pool grant of one attempt of a task, to delete (nothing held: nothing to do).
pub(crate) struct GrantRelease<'a> {
    pub step: &'a str,
    pub sequence: &'a str,
    pub attempt: i32,
}

pub(crate) struct NewTrigger<'a> {
    pub change: usize,
    pub event: &'a str,
    pub sequence: &'a str,
    pub at: Micros,
}

/// A task row to insert. Postgres folds every later change of the batch to the row into it.
pub(crate) struct NewTask<'a> {
    pub change: usize,
    pub step: &'a str,
    pub sequence: &'a str,
    pub status: TaskStatus,
    pub attempt: i32,
    pub host: Option<&'a str>,
    pub pid: Option<i64>,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub failure_class: Option<&'a str>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A change to a task row, `kind`, that applies only while the row is at `from` and `attempt`.
pub(crate) struct TaskEdit<'a> {
    pub change: usize,
    pub step: &'a str,
    pub sequence: &'a str,
    pub kind: EditKind<'a>,
    pub from: TaskStatus,
    pub attempt: i32,
}

pub(crate) enum EditKind<'a> {
    Move(Move<'a>),
    /// The process id of an active task.
    Pid(i64),
    /// The host an active task runs on.
    Host(&'a str),
    /// A task back to `ready` as a new attempt (its runner died, or it fails and retries).
    Retry {
        new_attempt: i32,
        at: Micros,
    },
}

/// A status change to `to`, recording the outcome it came with.
#[derive(Clone, Copy)]
pub(crate) struct Move<'a> {
    pub to: TaskStatus,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub failure_class: Option<&'a str>,
    pub at: Micros,
}

pub(crate) struct NewDelay<'a> {
    pub change: usize,
    pub assoc: i32,
    pub sequence: &'a str,
    pub due_at: Micros,
    pub fired: bool,
    pub created_at: Micros,
}

/// A delay to mark fired: it applies only while the delay has not fired.
pub(crate) struct FiredDelay<'a> {
    pub change: usize,
    pub assoc: i32,
    pub sequence: &'a str,
}

pub(crate) struct NewRetry<'a> {
    pub change: usize,
    pub step: i32,
    pub sequence: &'a str,
    pub number: i32,
    pub due_at: Micros,
    pub taken: bool,
    pub created_at: Micros,
}

/// A retry to mark taken: it applies only while the retry has not been taken.
pub(crate) struct TakenRetry<'a> {
    pub change: usize,
    pub step: i32,
    pub sequence: &'a str,
    pub number: i32,
}

impl<'a> Op<'a> {
    /// Takes apart `item`, the change at index `change` of its batch.
    pub fn of(change: usize, item: &'a Change) -> Op<'a> {
        let edit = |step, sequence, (from, attempt), kind| {
            Op::EditTask(TaskEdit {
                change,
                step,
                sequence,
                kind,
                from,
                attempt,
            })
        };
        match item {
            Change::Trigger {
                event,
                sequence,
                at,
            } => Op::Trigger(NewTrigger {
                change,
                event,
                sequence,
                at: *at,
            }),
            Change::TaskCreated {
                step,
                sequence,
                status,
                attempt,
                host,
                at,
            } => Op::CreateTask(NewTask {
                change,
                step,
                sequence,
                status: *status,
                attempt: *attempt,
                host: host.as_deref(),
                pid: None,
                result: None,
                error: None,
                failure_class: None,
                created_at: *at,
                updated_at: *at,
            }),
            Change::TaskTransition {
                step,
                sequence,
                attempt,
                from,
                to,
                result,
                error,
                failure_class,
                at,
            } => {
                let to = Move {
                    to: *to,
                    result: result.as_deref(),
                    error: error.as_deref(),
                    failure_class: failure_class.as_deref(),
                    at: *at,
                };
                edit(step, sequence, (*from, *attempt), EditKind::Move(to))
            }
            Change::TaskPid {
                step,
                sequence,
                attempt,
                pid,
            } => edit(step, sequence, active(*attempt), EditKind::Pid(*pid)),
            Change::TaskHost {
                step,
                sequence,
                attempt,
                host,
            } => edit(step, sequence, active(*attempt), EditKind::Host(host)),
            Change::TaskRetry {
                step,
                sequence,
                from,
                attempt,
                new_attempt,
                at,
            } => {
                let kind = EditKind::Retry {
                    new_attempt: *new_attempt,
                    at: *at,
                };
                edit(step, sequence, (*from, *attempt), kind)
            }
            Change::DelayArmed {
                assoc,
                sequence,
                due_at,
                at,
            } => Op::ArmDelay(NewDelay {
                change,
                assoc: *assoc,
                sequence,
                due_at: *due_at,
                fired: false,
                created_at: *at,
            }),
            Change::DelayFired { assoc, sequence } => Op::FireDelay(FiredDelay {
                change,
                assoc: *assoc,
                sequence,
            }),
            Change::RetryScheduled {
                step,
                sequence,
                number,
                due_at,
                at,
            } => Op::ScheduleRetry(NewRetry {
                change,
                step: *step,
                sequence,
                number: *number,
                due_at: *due_at,
                taken: false,
                created_at: *at,
            }),
            Change::RetryTaken {
                step,
                sequence,
                number,
            } => Op::TakeRetry(TakenRetry {
                change,
                step: *step,
                sequence,
                number: *number,
            }),
            Change::GrantReleased {
                step,
                sequence,
                attempt,
            } => Op::ReleaseGrant(GrantRelease {
                step,
                sequence,
                attempt: *attempt,
            }),
        }
    }
}

/// Where a pid expects its task: active, at `attempt`.
fn active(attempt: i32) -> (TaskStatus, i32) {
    (TaskStatus::Active, attempt)
}

impl TaskEdit<'_> {
    /// The status and attempt the row is at after this edit.
    pub fn after(&self) -> (TaskStatus, i32) {
        match self.kind {
            EditKind::Move(to) => (to.to, self.attempt),
            EditKind::Pid(_) | EditKind::Host(_) => (self.from, self.attempt),
            EditKind::Retry { new_attempt, .. } => (TaskStatus::Ready, new_attempt),
        }
    }

    /// The refusal when the row is at another status or attempt (or missing).
    pub fn fenced(&self) -> StoreError {
        fenced(self.step, self.sequence, self.attempt, self.from)
    }
}

impl NewTrigger<'_> {
    pub fn duplicate(&self, run: &RunKey) -> StoreError {
        duplicate("trigger", self.event, self.sequence, run)
    }
}

impl NewTask<'_> {
    pub fn duplicate(&self, run: &RunKey) -> StoreError {
        duplicate("task", self.step, self.sequence, run)
    }
}

impl NewDelay<'_> {
    pub fn duplicate(&self, run: &RunKey) -> StoreError {
        duplicate("delay", self.assoc, self.sequence, run)
    }
}

/// `trigger e[1] of run R recovery 0` (or a task, or a delay) already exists.
fn duplicate(row: &str, name: impl Display, sequence: &str, run: &RunKey) -> StoreError {
    let what = format!("{row} {name}[{sequence}] of {}", run_name(run));
    StoreError::Duplicate { what }
}

impl FiredDelay<'_> {
    /// The refusal when the delay has fired already (or was never armed).
    pub fn fenced(&self) -> StoreError {
        StoreError::DelayFenced {
            assoc: self.assoc,
            sequence: self.sequence.to_owned(),
        }
    }
}

impl NewRetry<'_> {
    pub fn duplicate(&self, run: &RunKey) -> StoreError {
        let what = format!("retry {} of", self.number);
        duplicate(&what, self.step, self.sequence, run)
    }
}

impl TakenRetry<'_> {
    /// The refusal when the retry was taken already (or never scheduled).
    pub fn fenced(&self) -> StoreError {
        StoreError::RetryFenced {
            step: self.step,
            sequence: self.sequence.to_owned(),
            number: self.number,
        }
    }
}

/// The refusal of a task change that found its row at another status or attempt.
pub(crate) fn fenced(step: &str, sequence: &str, attempt: i32, expected: TaskStatus) -> StoreError {
    StoreError::Fenced {
        step: step.to_owned(),
        sequence: sequence.to_owned(),
        attempt,
        expected,
    }
}

pub(crate) fn duplicate_run(run: &RunKey) -> StoreError {
    StoreError::Duplicate {
        what: run_name(run),
    }
}
