//! A batch reduced to its net effect on each row, so a commit costs a handful of set-based
//! statements however many changes it holds.
//!
//! The store's contract is sequential: changes apply in order and the first one that fails
//! fails the batch. Planning keeps that contract while folding every row's changes into one
//! insert or one fenced update:
//! - a row the batch itself creates is known from its creation on, so later changes to it are
//!   checked here (a transition from the wrong status is fenced without asking the database)
//!   and folded into the insert;
//! - a row the batch did not create is fenced by the database on the *first* change that
//!   touches it (the `from` status and attempt it expects); later changes are checked against
//!   what that first change left and folded into the same update.
//!
//! So every change either fails here, decided by the batch alone, or is represented by a
//! database check attributed to its index. The commit reports the failure with the lowest
//! index, which is the one sequential application would have met first. Planning stops at
//! the first change that fails here: nothing after it can be reported.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use crate::rows::{run_label, run_name};
use crate::types::*;

/// The rows one batch inserts and updates, each with the index of the change it answers for.
#[derive(Default)]
pub(super) struct Plan<'a> {
    pub triggers: Vec<NewTrigger<'a>>,
    pub new_tasks: Vec<NewTask<'a>>,
    pub task_updates: Vec<TaskUpdate<'a>>,
    pub new_delays: Vec<NewDelay<'a>>,
    pub fired_delays: Vec<FiredDelay<'a>>,
    /// The first change that fails whatever the database holds; nothing after it is planned.
    pub doomed: Option<Refusal>,
}

/// A change the store refuses, and why.
#[derive(Debug)]
pub(super) struct Refusal {
    pub change: usize,
    pub error: StoreError,
}

pub(super) struct NewTrigger<'a> {
    pub change: usize,
    pub event: &'a str,
    pub sequence: &'a str,
    pub at: Micros,
}

/// A task row to insert, with every later change of the batch already applied to it.
pub(super) struct NewTask<'a> {
    pub change: usize,
    pub step: &'a str,
    pub sequence: &'a str,
    pub status: TaskStatus,
    pub attempt: i32,
    pub host: Option<&'a str>,
    pub pid: Option<i64>,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// A fenced update of an existing task row: it applies only if the row is at `expect`.
/// `None` columns keep what the row holds.
pub(super) struct TaskUpdate<'a> {
    pub change: usize,
    pub step: &'a str,
    pub sequence: &'a str,
    pub expect: (TaskStatus, i32),
    /// Status and attempt after the changes planned so far.
    now: (TaskStatus, i32),
    pub status: Option<TaskStatus>,
    pub attempt: Option<i32>,
    /// Result and error, set together by a transition.
    pub outcome: Option<(Option<&'a str>, Option<&'a str>)>,
    pub updated_at: Option<Micros>,
    pub pid: Option<Option<i64>>,
}

pub(super) struct NewDelay<'a> {
    pub change: usize,
    pub assoc: i32,
    pub sequence: &'a str,
    pub due_at: Micros,
    pub fired: bool,
    pub created_at: Micros,
}

/// A delay the batch fires without having armed it: fenced on `fired = FALSE`.
pub(super) struct FiredDelay<'a> {
    pub change: usize,
    pub assoc: i32,
    pub sequence: &'a str,
}

/// What one change does to a task row, and the status and attempt it expects the row at.
struct Edit<'a> {
    from: TaskStatus,
    attempt: i32,
    kind: EditKind<'a>,
}

enum EditKind<'a> {
    Move {
        to: TaskStatus,
        result: Option<&'a str>,
        error: Option<&'a str>,
        at: Micros,
    },
    Pid(i64),
    Retry {
        new_attempt: i32,
        at: Micros,
    },
}

impl Edit<'_> {
    /// The status and attempt the row is at after this edit.
    fn after(&self) -> (TaskStatus, i32) {
        match self.kind {
            EditKind::Move { to, .. } => (to, self.attempt),
            EditKind::Pid(_) => (self.from, self.attempt),
            EditKind::Retry { new_attempt, .. } => (TaskStatus::Ready, new_attempt),
        }
    }
}

/// Where a key's row is in the plan.
#[derive(Clone, Copy)]
enum Slot {
    New(usize),
    Updated(usize),
}

/// The plan being built, with the keys seen so far.
#[derive(Default)]
struct Planner<'a> {
    plan: Plan<'a>,
    triggers: HashSet<(&'a str, &'a str)>,
    tasks: HashMap<(&'a str, &'a str), Slot>,
    delays: HashMap<(i32, &'a str), Slot>,
}

impl<'a> Plan<'a> {
    /// Plans `batch`, stopping at the first change that fails whatever the database holds.
    pub fn new(batch: &'a Batch) -> Plan<'a> {
        let mut planner = Planner::default();
        for (change, item) in batch.changes.iter().enumerate() {
            if let Err(error) = planner.add(change, item, &batch.run) {
                planner.plan.doomed = Some(Refusal { change, error });
                break;
            }
        }
        planner.plan
    }
}

/// How the first change of `batch` fails when its run does not exist: an insert needs the
/// run, and an update finds no row.
pub(super) fn without_run(batch: &Batch) -> Option<Refusal> {
    let error = match batch.changes.first()? {
        Change::Trigger { .. } | Change::TaskCreated { .. } | Change::DelayArmed { .. } => {
            StoreError::NoSuchRun(run_label(&batch.run))
        }
        Change::TaskTransition {
            step,
            sequence,
            attempt,
            from,
            ..
        } => fenced(step, sequence, *attempt, *from),
        Change::TaskPid {
            step,
            sequence,
            attempt,
            ..
        }
        | Change::TaskRetry {
            step,
            sequence,
            attempt,
            ..
        } => fenced(step, sequence, *attempt, TaskStatus::Active),
        Change::DelayFired { assoc, sequence } => delay_fenced(*assoc, sequence),
    };
    Some(Refusal { change: 0, error })
}

impl<'a> Planner<'a> {
    fn add(&mut self, change: usize, item: &'a Change, run: &RunKey) -> Result<(), StoreError> {
        match item {
            Change::Trigger {
                event,
                sequence,
                at,
            } => self.trigger(change, event, sequence, *at, run),
            Change::TaskCreated {
                step,
                sequence,
                status,
                attempt,
                host,
                at,
            } => {
                let task = NewTask {
                    change,
                    step,
                    sequence,
                    status: *status,
                    attempt: *attempt,
                    host: host.as_deref(),
                    pid: None,
                    result: None,
                    error: None,
                    created_at: *at,
                    updated_at: *at,
                };
                self.create_task(task, run)
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
                let kind = EditKind::Move {
                    to: *to,
                    result: result.as_deref(),
                    error: error.as_deref(),
                    at: *at,
                };
                self.edit_task(change, (step, sequence), edit(*from, *attempt, kind))
            }
            Change::TaskPid {
                step,
                sequence,
                attempt,
                pid,
            } => {
                let pid = edit(TaskStatus::Active, *attempt, EditKind::Pid(*pid));
                self.edit_task(change, (step, sequence), pid)
            }
            Change::TaskRetry {
                step,
                sequence,
                attempt,
                new_attempt,
                at,
            } => {
                let kind = EditKind::Retry {
                    new_attempt: *new_attempt,
                    at: *at,
                };
                let retry = edit(TaskStatus::Active, *attempt, kind);
                self.edit_task(change, (step, sequence), retry)
            }
            Change::DelayArmed {
                assoc,
                sequence,
                due_at,
                at,
            } => {
                let delay = NewDelay {
                    change,
                    assoc: *assoc,
                    sequence,
                    due_at: *due_at,
                    fired: false,
                    created_at: *at,
                };
                self.arm_delay(delay, run)
            }
            Change::DelayFired { assoc, sequence } => self.fire_delay(change, *assoc, sequence),
        }
    }

    fn trigger(
        &mut self,
        change: usize,
        event: &'a str,
        sequence: &'a str,
        at: Micros,
        run: &RunKey,
    ) -> Result<(), StoreError> {
        if !self.triggers.insert((event, sequence)) {
            return Err(duplicate_trigger(run, event, sequence));
        }
        self.plan.triggers.push(NewTrigger {
            change,
            event,
            sequence,
            at,
        });
        Ok(())
    }

    /// A second creation of a key fails: the first one (or the row an earlier update of the
    /// batch found) is there.
    fn create_task(&mut self, task: NewTask<'a>, run: &RunKey) -> Result<(), StoreError> {
        match self.tasks.entry((task.step, task.sequence)) {
            Entry::Occupied(_) => Err(duplicate_task(run, task.step, task.sequence)),
            Entry::Vacant(slot) => {
                slot.insert(Slot::New(self.plan.new_tasks.len()));
                self.plan.new_tasks.push(task);
                Ok(())
            }
        }
    }

    fn edit_task(
        &mut self,
        change: usize,
        (step, sequence): (&'a str, &'a str),
        edit: Edit<'a>,
    ) -> Result<(), StoreError> {
        let refused = || fenced(step, sequence, edit.attempt, edit.from);
        match self.tasks.get(&(step, sequence)).copied() {
            Some(Slot::New(at)) => {
                let task = &mut self.plan.new_tasks[at];
                if (task.status, task.attempt) != (edit.from, edit.attempt) {
                    return Err(refused());
                }
                task.apply(&edit);
            }
            Some(Slot::Updated(at)) => {
                let update = &mut self.plan.task_updates[at];
                if update.now != (edit.from, edit.attempt) {
                    return Err(refused());
                }
                update.apply(&edit);
            }
            None => {
                let mut update = TaskUpdate::fenced_at(change, step, sequence, &edit);
                update.apply(&edit);
                let slot = Slot::Updated(self.plan.task_updates.len());
                self.tasks.insert((step, sequence), slot);
                self.plan.task_updates.push(update);
            }
        }
        Ok(())
    }

    fn arm_delay(&mut self, delay: NewDelay<'a>, run: &RunKey) -> Result<(), StoreError> {
        match self.delays.entry((delay.assoc, delay.sequence)) {
            Entry::Occupied(_) => Err(duplicate_delay(run, delay.assoc, delay.sequence)),
            Entry::Vacant(slot) => {
                slot.insert(Slot::New(self.plan.new_delays.len()));
                self.plan.new_delays.push(delay);
                Ok(())
            }
        }
    }

    fn fire_delay(
        &mut self,
        change: usize,
        assoc: i32,
        sequence: &'a str,
    ) -> Result<(), StoreError> {
        match self.delays.get(&(assoc, sequence)).copied() {
            Some(Slot::New(at)) if !self.plan.new_delays[at].fired => {
                self.plan.new_delays[at].fired = true;
                Ok(())
            }
            // Armed and fired already in this batch, or fired by an earlier change of it.
            Some(_) => Err(delay_fenced(assoc, sequence)),
            None => {
                let slot = Slot::Updated(self.plan.fired_delays.len());
                self.delays.insert((assoc, sequence), slot);
                self.plan.fired_delays.push(FiredDelay {
                    change,
                    assoc,
                    sequence,
                });
                Ok(())
            }
        }
    }
}

fn edit(from: TaskStatus, attempt: i32, kind: EditKind<'_>) -> Edit<'_> {
    Edit {
        from,
        attempt,
        kind,
    }
}

impl<'a> NewTask<'a> {
    fn apply(&mut self, edit: &Edit<'a>) {
        (self.status, self.attempt) = edit.after();
        match edit.kind {
            EditKind::Move {
                result, error, at, ..
            } => {
                (self.result, self.error, self.updated_at) = (result, error, at);
            }
            EditKind::Pid(pid) => self.pid = Some(pid),
            EditKind::Retry { at, .. } => (self.pid, self.updated_at) = (None, at),
        }
    }
}

impl<'a> TaskUpdate<'a> {
    /// An update fenced by the database on `edit`'s expectation; `edit` is not applied yet.
    fn fenced_at(change: usize, step: &'a str, sequence: &'a str, edit: &Edit<'a>) -> Self {
        TaskUpdate {
            change,
            step,
            sequence,
            expect: (edit.from, edit.attempt),
            now: (edit.from, edit.attempt),
            status: None,
            attempt: None,
            outcome: None,
            updated_at: None,
            pid: None,
        }
    }

    fn apply(&mut self, edit: &Edit<'a>) {
        self.now = edit.after();
        match edit.kind {
            EditKind::Move {
                to,
                result,
                error,
                at,
            } => {
                self.status = Some(to);
                self.outcome = Some((result, error));
                self.updated_at = Some(at);
            }
            EditKind::Pid(pid) => self.pid = Some(Some(pid)),
            EditKind::Retry { new_attempt, at } => {
                self.status = Some(TaskStatus::Ready);
                self.attempt = Some(new_attempt);
                self.pid = Some(None);
                self.updated_at = Some(at);
            }
        }
    }

    /// The refusal when the database holds the row at another status or attempt (or not at all).
    pub fn fenced(&self) -> StoreError {
        fenced(self.step, self.sequence, self.expect.1, self.expect.0)
    }
}

pub(super) fn fenced(step: &str, sequence: &str, attempt: i32, expected: TaskStatus) -> StoreError {
    StoreError::Fenced {
        step: step.to_owned(),
        sequence: sequence.to_owned(),
        attempt,
        expected,
    }
}

pub(super) fn delay_fenced(assoc: i32, sequence: &str) -> StoreError {
    StoreError::DelayFenced {
        assoc,
        sequence: sequence.to_owned(),
    }
}

pub(super) fn duplicate_trigger(run: &RunKey, event: &str, sequence: &str) -> StoreError {
    let what = format!("trigger {event}[{sequence}] of {}", run_name(run));
    StoreError::Duplicate { what }
}

pub(super) fn duplicate_task(run: &RunKey, step: &str, sequence: &str) -> StoreError {
    let what = format!("task {step}[{sequence}] of {}", run_name(run));
    StoreError::Duplicate { what }
}

pub(super) fn duplicate_delay(run: &RunKey, assoc: i32, sequence: &str) -> StoreError {
    let what = format!("delay {assoc}[{sequence}] of {}", run_name(run));
    StoreError::Duplicate { what }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use TaskStatus::*;

    fn batch(changes: Vec<Change>) -> Batch {
        Batch {
            run: RunKey {
                run_id: Arc::from("R"),
                recovery: 0,
            },
            changes,
        }
    }

    fn created(step: &str, status: TaskStatus, attempt: i32) -> Change {
        Change::TaskCreated {
            step: step.into(),
            sequence: "1".into(),
            status,
            attempt,
            host: None,
            at: 1,
        }
    }

    fn moved(step: &str, attempt: i32, from: TaskStatus, to: TaskStatus, at: Micros) -> Change {
        Change::TaskTransition {
            step: step.into(),
            sequence: "1".into(),
            attempt,
            from,
            to,
            result: Some(format!("r{at}")),
            error: None,
            at,
        }
    }

    fn pid(step: &str, attempt: i32, pid: i64) -> Change {
        Change::TaskPid {
            step: step.into(),
            sequence: "1".into(),
            attempt,
            pid,
        }
    }

    fn retry(step: &str, attempt: i32, new_attempt: i32) -> Change {
        Change::TaskRetry {
            step: step.into(),
            sequence: "1".into(),
            attempt,
            new_attempt,
            at: 9,
        }
    }

    fn fire(assoc: i32) -> Change {
        Change::DelayFired {
            assoc,
            sequence: "1".into(),
        }
    }

    fn arm(assoc: i32) -> Change {
        Change::DelayArmed {
            assoc,
            sequence: "1".into(),
            due_at: 5,
            at: 1,
        }
    }

    #[test]
    fn a_created_task_folds_its_life_into_the_insert() {
        let b = batch(vec![
            created("s", Ready, 1),
            moved("s", 1, Ready, Active, 2),
            pid("s", 1, 77),
            moved("s", 1, Active, Success, 3),
        ]);
        let plan = Plan::new(&b);
        assert!(plan.doomed.is_none() && plan.task_updates.is_empty());
        let task = &plan.new_tasks[0];
        assert_eq!(
            (task.status, task.attempt, task.pid),
            (Success, 1, Some(77))
        );
        assert_eq!(
            (task.result, task.created_at, task.updated_at),
            (Some("r3"), 1, 3)
        );
    }

    #[test]
    fn an_existing_task_is_fenced_once_on_its_first_change() {
        let b = batch(vec![
            moved("s", 2, Ready, Active, 2),
            pid("s", 2, 5),
            retry("s", 2, 3),
        ]);
        let plan = Plan::new(&b);
        let update = &plan.task_updates[0];
        assert_eq!((update.change, update.expect), (0, (Ready, 2)));
        assert_eq!((update.status, update.attempt), (Some(Ready), Some(3)));
        assert_eq!((update.pid, update.updated_at), (Some(None), Some(9)));
        assert_eq!(update.outcome, Some((Some("r2"), None)));
        assert!(matches!(
            update.fenced(),
            StoreError::Fenced {
                attempt: 2,
                expected: Ready,
                ..
            }
        ));
    }

    #[test]
    fn the_batch_fences_its_own_rows() {
        let b = batch(vec![
            created("a", Ready, 1),
            moved("b", 1, Ready, Active, 2),
            moved("a", 2, Ready, Active, 3),
            created("c", Ready, 1),
        ]);
        let plan = Plan::new(&b);
        let doomed = plan.doomed.unwrap();
        assert_eq!(doomed.change, 2);
        assert!(matches!(
            doomed.error,
            StoreError::Fenced { attempt: 2, .. }
        ));
        assert_eq!(plan.new_tasks.len(), 1, "planning stopped at the refusal");
        assert_eq!(plan.task_updates.len(), 1);

        let b = batch(vec![
            moved("b", 1, Ready, Active, 2),
            moved("b", 1, Ready, Active, 3),
        ]);
        assert_eq!(
            Plan::new(&b).doomed.unwrap().change,
            1,
            "the same move twice"
        );
    }

    #[test]
    fn duplicates_within_the_batch() {
        let b = batch(vec![created("a", Ready, 1), created("a", Active, 2)]);
        let doomed = Plan::new(&b).doomed.unwrap();
        assert_eq!(doomed.change, 1);
        let text = doomed.error.to_string();
        assert_eq!(
            text,
            "task a[1] of run R recovery 0 already exists in the store"
        );

        let b = batch(vec![
            moved("a", 1, Ready, Active, 2),
            created("a", Ready, 1),
        ]);
        assert_eq!(
            Plan::new(&b).doomed.unwrap().change,
            1,
            "the update found the row"
        );

        let trig = |at| Change::Trigger {
            event: "e".into(),
            sequence: "1".into(),
            at,
        };
        let b = batch(vec![trig(1), trig(2)]);
        assert_eq!(Plan::new(&b).doomed.unwrap().change, 1);
    }

    #[test]
    fn delays_armed_fired_and_refired() {
        let plan_of = |changes| {
            let b = batch(changes);
            let plan = Plan::new(&b);
            let fired: Vec<bool> = plan.new_delays.iter().map(|d| d.fired).collect();
            (
                fired,
                plan.fired_delays.len(),
                plan.doomed.map(|d| d.change),
            )
        };
        assert_eq!(plan_of(vec![arm(1), fire(1)]), (vec![true], 0, None));
        assert_eq!(
            plan_of(vec![arm(1), fire(1), fire(1)]),
            (vec![true], 0, Some(2))
        );
        assert_eq!(plan_of(vec![fire(1), fire(1)]), (vec![], 1, Some(1)));
        assert_eq!(plan_of(vec![fire(1), arm(1)]), (vec![], 1, Some(1)));
        assert_eq!(plan_of(vec![arm(1), arm(1)]), (vec![false], 0, Some(1)));
    }

    #[test]
    fn a_missing_run_fails_the_first_change() {
        let refusal = |change| without_run(&batch(vec![change, arm(1)])).unwrap().error;
        assert!(matches!(refusal(arm(1)), StoreError::NoSuchRun(r) if r == "R recovery 0"));
        assert!(matches!(
            refusal(pid("s", 1, 1)),
            StoreError::Fenced {
                expected: Active,
                ..
            }
        ));
        assert!(matches!(
            refusal(fire(3)),
            StoreError::DelayFenced { assoc: 3, .. }
        ));
        assert!(without_run(&batch(vec![])).is_none());
    }
}
