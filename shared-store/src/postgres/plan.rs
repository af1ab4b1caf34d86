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

use crate::change::*;
use crate::rows::run_label;
use crate::types::*;

/// The rows one batch inserts and updates, each with the index of the change it answers for.
/// A new task, delay or retry carries every later change of the batch to it already applied.
#[derive(Default)]
pub(super) struct Plan<'a> {
    pub triggers: Vec<NewTrigger<'a>>,
    pub new_tasks: Vec<NewTask<'a>>,
    pub task_updates: Vec<TaskUpdate<'a>>,
    pub new_delays: Vec<NewDelay<'a>>,
    /// Delays the batch fires without having armed them: fenced on `fired = FALSE`.
    pub fired_delays: Vec<FiredDelay<'a>>,
    pub new_retries: Vec<NewRetry<'a>>,
    /// Retries the batch takes without having scheduled them: fenced on `taken = FALSE`.
    pub taken_retries: Vec<TakenRetry<'a>>,
    /// Shared-pool grants the batch gives back (deleted after the rows above).
    pub released_grants: Vec<GrantRelease<'a>>,
    /// The first change that fails whatever the database holds; nothing after it is planned.
    pub doomed: Option<Refusal>,
}

/// A change the store refuses, and why.
#[derive(Debug)]
pub(super) struct Refusal {
    pub change: usize,
    pub error: StoreError,
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
    /// Result, error and failure class, set together by a transition.
    pub outcome: Option<(Option<&'a str>, Option<&'a str>, Option<&'a str>)>,
    pub updated_at: Option<Micros>,
    pub pid: Option<Option<i64>>,
    /// Never cleared: a retried task shows where it last ran until its new attempt ends.
    pub host: Option<&'a str>,
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
    retries: HashMap<(i32, &'a str, i32), Slot>,
}

impl<'a> Plan<'a> {
    /// Plans `batch`, stopping at the first change that fails whatever the database holds.
    pub fn new(batch: &'a Batch) -> Plan<'a> {
        let mut planner = Planner::default();
        for (change, item) in batch.changes.iter().enumerate() {
            if let Err(error) = planner.add(Op::of(change, item), &batch.run) {
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
    let error = match Op::of(0, batch.changes.first()?) {
        Op::Trigger(_)
        | Op::CreateTask(_)
        | Op::ArmDelay(_)
        | Op::ScheduleRetry(_)
        | Op::ReleaseGrant(_) => StoreError::NoSuchRun(run_label(&batch.run)),
        Op::EditTask(edit) => edit.fenced(),
        Op::FireDelay(delay) => delay.fenced(),
        Op::TakeRetry(retry) => retry.fenced(),
    };
    Some(Refusal { change: 0, error })
}

impl<'a> Planner<'a> {
    fn add(&mut self, op: Op<'a>, run: &RunKey) -> Result<(), StoreError> {
        match op {
            Op::Trigger(trigger) => self.trigger(trigger, run),
            Op::CreateTask(task) => self.create_task(task, run),
            Op::EditTask(edit) => self.edit_task(edit),
            Op::ArmDelay(delay) => self.arm_delay(delay, run),
            Op::FireDelay(delay) => self.fire_delay(delay),
            Op::ScheduleRetry(retry) => self.schedule_retry(retry, run),
            Op::TakeRetry(retry) => self.take_retry(retry),
            Op::ReleaseGrant(release) => {
                self.plan.released_grants.push(release);
                Ok(())
            }
        }
    }

    fn trigger(&mut self, trigger: NewTrigger<'a>, run: &RunKey) -> Result<(), StoreError> {
        if !self.triggers.insert((trigger.event, trigger.sequence)) {
            return Err(trigger.duplicate(run));
        }
        self.plan.triggers.push(trigger);
        Ok(())
    }

    /// A second creation of a key fails: the first one (or the row an earlier update of the
    /// batch found) is there.
    fn create_task(&mut self, task: NewTask<'a>, run: &RunKey) -> Result<(), StoreError> {
        match self.tasks.entry((task.step, task.sequence)) {
            Entry::Occupied(_) => Err(task.duplicate(run)),
            Entry::Vacant(slot) => {
                slot.insert(Slot::New(self.plan.new_tasks.len()));
                self.plan.new_tasks.push(task);
                Ok(())
            }
        }
    }

    fn edit_task(&mut self, edit: TaskEdit<'a>) -> Result<(), StoreError> {
        let key = (edit.step, edit.sequence);
        let expected = (edit.from, edit.attempt);
        match self.tasks.get(&key).copied() {
            Some(Slot::New(at)) => {
                let task = &mut self.plan.new_tasks[at];
                if (task.status, task.attempt) != expected {
                    return Err(edit.fenced());
                }
                task.apply(&edit);
            }
            Some(Slot::Updated(at)) => {
                let update = &mut self.plan.task_updates[at];
                if update.now != expected {
                    return Err(edit.fenced());
                }
                update.apply(&edit);
            }
            None => {
                let mut update = TaskUpdate::fenced_at(&edit);
                update.apply(&edit);
                self.tasks
                    .insert(key, Slot::Updated(self.plan.task_updates.len()));
                self.plan.task_updates.push(update);
            }
        }
        Ok(())
    }

    fn arm_delay(&mut self, delay: NewDelay<'a>, run: &RunKey) -> Result<(), StoreError> {
        match self.delays.entry((delay.assoc, delay.sequence)) {
            Entry::Occupied(_) => Err(delay.duplicate(run)),
            Entry::Vacant(slot) => {
                slot.insert(Slot::New(self.plan.new_delays.len()));
                self.plan.new_delays.push(delay);
                Ok(())
            }
        }
    }

    fn fire_delay(&mut self, delay: FiredDelay<'a>) -> Result<(), StoreError> {
        let key = (delay.assoc, delay.sequence);
        match self.delays.get(&key).copied() {
            Some(Slot::New(at)) if !self.plan.new_delays[at].fired => {
                self.plan.new_delays[at].fired = true;
                Ok(())
            }
            // Armed and fired already in this batch, or fired by an earlier change of it.
            Some(_) => Err(delay.fenced()),
            None => {
                self.delays
                    .insert(key, Slot::Updated(self.plan.fired_delays.len()));
                self.plan.fired_delays.push(delay);
                Ok(())
            }
        }
    }
}

impl<'a> Planner<'a> {
    fn schedule_retry(&mut self, retry: NewRetry<'a>, run: &RunKey) -> Result<(), StoreError> {
        match self
            .retries
            .entry((retry.step, retry.sequence, retry.number))
        {
            Entry::Occupied(_) => Err(retry.duplicate(run)),
            Entry::Vacant(slot) => {
                slot.insert(Slot::New(self.plan.new_retries.len()));
                self.plan.new_retries.push(retry);
                Ok(())
            }
        }
    }

    fn take_retry(&mut self, retry: TakenRetry<'a>) -> Result<(), StoreError> {
        let key = (retry.step, retry.sequence, retry.number);
        match self.retries.get(&key).copied() {
            Some(Slot::New(at)) if !self.plan.new_retries[at].taken => {
                self.plan.new_retries[at].taken = true;
                Ok(())
            }
            // Scheduled and taken already in this batch, or taken by an earlier change of it.
            Some(_) => Err(retry.fenced()),
            None => {
                self.retries
                    .insert(key, Slot::Updated(self.plan.taken_retries.len()));
                self.plan.taken_retries.push(retry);
                Ok(())
            }
        }
    }
}

impl<'a> NewTask<'a> {
    fn apply(&mut self, edit: &TaskEdit<'a>) {
        (self.status, self.attempt) = edit.after();
        match edit.kind {
            EditKind::Move(to) => {
                (self.result, self.error, self.updated_at) = (to.result, to.error, to.at);
                self.failure_class = to.failure_class;
            }
            EditKind::Pid(pid) => self.pid = Some(pid),
            EditKind::Host(host) => self.host = Some(host),
            EditKind::Retry { at, .. } => (self.pid, self.updated_at) = (None, at),
        }
    }
}

impl<'a> TaskUpdate<'a> {
    /// An update fenced by the database on `edit`'s expectation; `edit` is not applied yet.
    fn fenced_at(edit: &TaskEdit<'a>) -> Self {
        TaskUpdate {
            change: edit.change,
            step: edit.step,
            sequence: edit.sequence,
            expect: (edit.from, edit.attempt),
            now: (edit.from, edit.attempt),
            status: None,
            attempt: None,
            outcome: None,
            updated_at: None,
            pid: None,
            host: None,
        }
    }

    fn apply(&mut self, edit: &TaskEdit<'a>) {
        self.now = edit.after();
        match edit.kind {
            EditKind::Move(to) => {
                self.status = Some(to.to);
                self.outcome = Some((to.result, to.error, to.failure_class));
                self.updated_at = Some(to.at);
            }
            EditKind::Pid(pid) => self.pid = Some(Some(pid)),
            EditKind::Host(host) => self.host = Some(host),
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
            writer: Writer::Coordinator,
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
            failure_class: None,
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
            from: Active,
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
        assert_eq!(update.outcome, Some((Some("r2"), None, None)));
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
