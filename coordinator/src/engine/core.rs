//! The scheduling core: a state machine that turns inputs into store changes and effects.
//!
//! # How it works
//! The core does no IO and reads no clock. The driver feeds it [`Input`]s (a trigger, a task
//! that finished, a timer that came due) together with the current time, and takes back two
//! lists: the [`Change`]s to commit to the store and the [`Effect`]s to perform (start a
//! task). The driver must commit the changes *before* performing the effects; that one rule
//! is what makes a crash at any point recoverable.
//!
//! Inside, everything is a worklist: firing an event walks its associations (activating
//! steps and events in the same sequence) and the expression events that mention it; creating
//! a task fires its `ready` triggers and queues it; [`Core::schedule`] then starts queued tasks
//! while the global and per-step limits allow. A task that is created and started in the same
//! turn is stored once, as `active`: the batch never holds a `ready` row that is overwritten a
//! microsecond later.
//!
//! # Loops
//! The core knows no loops: a finished task starts its successors at once. A loop (act on
//! due delays, then run until nothing is left but delays not yet due) is the driver's
//! business; it feeds [`Input::TimerDue`] when a delay is due.
//!
//! # What it leaves out
//! Which process runs a task, how long it takes, and the store's own failures are the
//! driver's business. Recovery decisions and resource pools hook in at [`Core::start`].
//!
//! # Shared pools
//! Units of a shared pool are held in the store, for every run on it. A task whose step
//! acquires some takes its run-local units first, then occupies its slot (limits count it)
//! and asks the driver for the shared ones ([`Effect::Acquire`]); [`Input::Granted`] starts
//! it, or sends it to wait (its local units back) until [`Input::PoolsFreed`]. Its grant goes
//! back in the batch of its end ([`Change::GrantReleased`]).
//!
//! # Retries
//! A failed attempt of a step with retries left goes back to `ready` as attempt + 1 (a
//! fenced `TaskRetry`), its units given back, and starts again once its retry's delay row is
//! due (at once without a delay). Its `failure` and `complete` triggers, and the run's
//! failure, wait for the last attempt. An interrupted or stopped run retries nothing.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use eventor_store::{Change, Micros, TaskStatus};

use super::program::{retry_row, AssocId, EventId, Program, RecoverAction, StepId, Target};
pub use eventor_agent::Outcome;

/// Index of a task in the core's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u32);

/// What the driver tells the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Fire `event` in `sequence` (from the program or the command line).
    Trigger { event: EventId, sequence: Arc<str> },
    /// `event` fired in `sequence` by another program and is already in the store: act on it
    /// (associations, expressions) without recording it again.
    RecordedTrigger { event: EventId, sequence: Arc<str> },
    /// A started task reported its process id.
    TaskPid { task: TaskId, pid: i64 },
    /// A task ended.
    TaskFinished { task: TaskId, outcome: Outcome },
    /// The clock reached a timer the core armed; fire every delay now due.
    TimerDue,
    /// The run was stopped from outside: start nothing new (running tasks end as they are
    /// stopped).
    Interrupted { reason: Arc<str> },
    /// The store's answer to [`Effect::Acquire`]: all the task's shared units, or none.
    Granted { task: TaskId, granted: bool },
    /// Shared-pool units may have come back (another coordinator gave some back): the tasks
    /// waiting on them ask again.
    PoolsFreed,
}

/// What the driver must do after committing the changes of the same turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Start(TaskId),
    /// Ask the store for the task's shared-pool units ([`Core::shared_units`]), then answer
    /// with [`Input::Granted`].
    Acquire(TaskId),
}

/// A task as the core knows it.
#[derive(Debug, Clone)]
pub struct Task {
    pub step: StepId,
    pub sequence: Arc<str>,
    pub status: TaskStatus,
    pub attempt: i32,
    /// Retries used in this recovery (each failed attempt that was retried).
    pub retries: u32,
    /// Index of its still-uncommitted `TaskCreated` change, so a start in the same turn can
    /// rewrite the row instead of adding a transition (`u32`: a turn holds at most
    /// [`TURN_CHANGES`] changes plus one task's own).
    pending_create: Option<u32>,
}

/// Limits, gating and the recovery base, fixed for a run.
#[derive(Debug, Clone, Default)]
pub struct CoreOptions {
    /// Each task's latest outcome in the recoveries this run recovers from (empty on a
    /// fresh run).
    pub previous: HashMap<(StepId, Arc<str>), PreviousTask>,
}

/// How a task ended the last time it was recorded, before this recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousTask {
    pub status: TaskStatus,
    pub attempt: i32,
    /// The recovery that recorded it.
    pub recovery: i32,
}

/// A run's stored state, to carry on from (`continue`).
#[derive(Debug, Clone, Default)]
pub struct StoredState {
    pub triggers: Vec<(EventId, Arc<str>)>,
    pub tasks: Vec<StoredTask>,
    /// Every stored delay, fired or not.
    pub delays: Vec<StoredDelay>,
    /// Every stored retry (a delay row of its own), fired or not.
    pub retries: Vec<StoredRetry>,
}

/// A task's retry as stored: its number (1 for the first) and when it is due.
#[derive(Debug, Clone)]
pub struct StoredRetry {
    pub step: StepId,
    pub sequence: Arc<str>,
    pub number: u32,
    pub due: Micros,
    pub fired: bool,
}

#[derive(Debug, Clone)]
pub struct StoredDelay {
    pub assoc: AssocId,
    pub sequence: Arc<str>,
    pub due: Micros,
    pub fired: bool,
}

#[derive(Debug, Clone)]
pub struct StoredTask {
    pub step: StepId,
    pub sequence: Arc<str>,
    pub status: TaskStatus,
    pub attempt: i32,
    pub error: Option<String>,
}

/// A failed task that nothing handled; it makes the run fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub task: TaskId,
    pub error: Option<String>,
}

/// The scheduling state machine. See the module docs.
pub struct Core {
    program: Arc<Program>,
    options: CoreOptions,
    now: Micros,
    /// Bit sets of fired events, per sequence.
    fired: HashMap<Arc<str>, Vec<u64>>,
    tasks: Vec<Task>,
    /// Per sequence, each step's task: a million tasks of one sequence cost a map of 8-byte
    /// entries, not a million copies of the sequence in a key.
    task_index: HashMap<Arc<str>, HashMap<StepId, TaskId>>,
    queue: VecDeque<TaskId>,
    /// Tasks held back by their step's own limit, per step.
    held: HashMap<StepId, VecDeque<TaskId>>,
    /// Tasks whose acquisitions cannot be granted yet, in arrival order.
    resource_wait: VecDeque<TaskId>,
    /// Free units per pool (run-local pools only).
    free: Vec<u32>,
    /// Tasks whose shared units the store is being asked for (each holds its slot).
    granting: HashSet<TaskId>,
    /// Tasks the store refused shared units, waiting for units to come back.
    pool_wait: VecDeque<TaskId>,
    active: usize,
    /// Tasks running now, per step (indexed by step id).
    active_per_step: Vec<u32>,
    delays: BTreeSet<(Micros, AssocId, Arc<str>)>,
    /// Failed tasks waiting for their retry's due time.
    retry_timers: BTreeSet<(Micros, TaskId)>,
    /// Every delay ever armed in this recovery (pending or fired), so a replayed trigger
    /// does not arm one twice.
    armed: HashSet<(AssocId, Arc<str>)>,
    stopped: bool,
    interrupted: Option<Arc<str>>,
    failed: Vec<Failed>,
    work: VecDeque<Work>,
    /// Tasks whose `TaskCreated` change is still in `changes`.
    uncommitted: Vec<TaskId>,
    changes: Vec<Change>,
    effects: Vec<Effect>,
}

/// Whether firing an event writes its trigger row (it may be stored already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Record {
    Yes,
    No,
}

/// Most changes one turn collects before the core stops to let the driver commit them
/// (and start what they started). A fan-out to a million steps is then a stream of batches,
/// never a million rows held at once; the rest of the turn goes on at [`Core::resume`].
pub const TURN_CHANGES: usize = 8192;

/// One pending step of the worklist.
#[derive(Debug)]
enum Work {
    Fire(EventId, Arc<str>),
    /// Fire an event whose trigger row is already stored.
    FireRecorded(EventId, Arc<str>),
    /// Activate the association's targets from index `next` on, in `sequence`: one item for
    /// all of them, not one per target.
    Targets {
        assoc: AssocId,
        next: u32,
        sequence: Arc<str>,
    },
}

impl Core {
    pub fn new(program: Arc<Program>, options: CoreOptions) -> Core {
        let free = program.pools.iter().map(|p| p.capacity).collect();
        let active_per_step = vec![0; program.steps.len()];
        Core {
            resource_wait: VecDeque::new(),
            free,
            granting: HashSet::new(),
            pool_wait: VecDeque::new(),
            program,
            options,
            now: 0,
            fired: HashMap::new(),
            tasks: Vec::new(),
            task_index: HashMap::new(),
            queue: VecDeque::new(),
            held: HashMap::new(),
            active: 0,
            active_per_step,
            delays: BTreeSet::new(),
            retry_timers: BTreeSet::new(),
            armed: HashSet::new(),
            stopped: false,
            interrupted: None,
            failed: Vec::new(),
            work: VecDeque::new(),
            uncommitted: Vec::new(),
            changes: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// A core that carries on from a run's stored state (`continue`). A task that was active
    /// when its coordinator died runs again as a new attempt (at-least-once); what finished
    /// keeps its outcome, and pools are charged for what those tasks took and gave back.
    pub fn restore(
        program: Arc<Program>,
        options: CoreOptions,
        stored: StoredState,
        now: Micros,
    ) -> Core {
        let mut core = Core::new(program, options);
        core.now = now;
        let retries = retries_by_task(stored.retries);
        for task in stored.tasks {
            let key = (task.step, task.sequence.clone());
            let id = core.restore_task(task);
            if let Some(&(used, pending)) = retries.get(&key) {
                core.restore_retries(id, used, pending);
            }
        }
        for delay in stored.delays {
            core.armed.insert((delay.assoc, delay.sequence.clone()));
            if !delay.fired {
                core.delays.insert((delay.due, delay.assoc, delay.sequence));
            }
        }
        // Replay every stored trigger: what its turn committed is found in place (tasks and
        // delays exist, so nothing is made twice); what was never acted on (a trigger written
        // by another program) happens now.
        for (event, sequence) in &stored.triggers {
            core.fired_bits(sequence)[event.0 as usize / 64] |= 1 << (event.0 % 64);
        }
        for (event, sequence) in stored.triggers {
            core.consequences(event, &sequence);
        }
        core.drain_work();
        core
    }

    fn restore_task(&mut self, stored: StoredTask) -> TaskId {
        let id = TaskId(self.tasks.len() as u32);
        self.index_task(stored.step, &stored.sequence, id);
        self.tasks.push(Task {
            step: stored.step,
            sequence: stored.sequence.clone(),
            status: stored.status,
            attempt: stored.attempt,
            retries: 0,
            pending_create: None,
        });
        match stored.status {
            TaskStatus::Ready => self.queue.push_back(id),
            TaskStatus::Active => {
                self.changes.push(Change::TaskRetry {
                    step: self.program.step(stored.step).name.clone(),
                    sequence: stored.sequence,
                    from: TaskStatus::Active,
                    attempt: stored.attempt,
                    new_attempt: stored.attempt + 1,
                    at: self.now,
                });
                let task = &mut self.tasks[id.0 as usize];
                task.status = TaskStatus::Ready;
                task.attempt += 1;
                self.queue.push_back(id);
            }
            TaskStatus::Success | TaskStatus::Skipped | TaskStatus::Failure => {
                self.take_resources_unchecked(stored.step);
                self.give_back_resources(stored.step);
                if stored.status == TaskStatus::Failure {
                    self.note_failure(id, stored.step, stored.error);
                }
            }
        }
        id
    }

    /// Notes the retries a restored task used; a ready task whose last retry is not due yet
    /// waits for it instead of the queue.
    fn restore_retries(&mut self, task: TaskId, used: u32, pending: Option<Micros>) {
        self.tasks[task.0 as usize].retries = used;
        let Some(due) = pending else { return };
        if self.task(task).status == TaskStatus::Ready {
            self.queue.retain(|&t| t != task);
            self.retry_timers.insert((due, task));
        }
    }

    pub fn program(&self) -> &Arc<Program> {
        &self.program
    }

    pub fn task(&self, id: TaskId) -> &Task {
        &self.tasks[id.0 as usize]
    }

    /// The task of `step` in `sequence`, if it exists.
    pub fn find_task(&self, step: StepId, sequence: &str) -> Option<TaskId> {
        self.task_index.get(sequence)?.get(&step).copied()
    }

    fn index_task(&mut self, step: StepId, sequence: &Arc<str>, id: TaskId) {
        let tasks = match self.task_index.get_mut(sequence) {
            Some(tasks) => tasks,
            None => self.task_index.entry(sequence.clone()).or_default(),
        };
        tasks.insert(step, id);
    }

    /// Applies one input at time `now`, then starts whatever may start.
    pub fn handle(&mut self, input: Input, now: Micros) {
        self.now = now;
        match input {
            Input::Trigger { event, sequence } => self.work.push_back(Work::Fire(event, sequence)),
            Input::RecordedTrigger { event, sequence } => {
                self.work.push_back(Work::FireRecorded(event, sequence))
            }
            Input::TaskPid { task, pid } => self.record_pid(task, pid),
            Input::TaskFinished { task, outcome } => self.finish(task, outcome),
            Input::TimerDue => self.fire_due_delays(),
            Input::Interrupted { reason } => {
                self.stopped = true;
                self.interrupted.get_or_insert(reason);
            }
            Input::Granted { task, granted } => self.granted(task, granted),
            Input::PoolsFreed => self.wake_pool_waiters(),
        }
        self.drain_work();
        self.schedule();
    }

    /// Whether the last turn stopped at [`TURN_CHANGES`] with work left: the driver commits
    /// what it has, then calls [`Core::resume`].
    pub fn has_more_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Goes on with a turn that stopped at [`TURN_CHANGES`] (nothing to do otherwise).
    pub fn resume(&mut self, now: Micros) {
        if self.work.is_empty() {
            return;
        }
        self.now = now;
        self.drain_work();
        self.schedule();
    }

    /// Takes the changes to commit and the effects to perform, in that order.
    pub fn take_output(&mut self) -> (Vec<Change>, Vec<Effect>) {
        // The creates are about to be committed: a later start must add a transition.
        for task in self.uncommitted.drain(..) {
            self.tasks[task.0 as usize].pending_create = None;
        }
        (
            std::mem::take(&mut self.changes),
            std::mem::take(&mut self.effects),
        )
    }

    /// Tasks running now.
    #[cfg(test)]
    pub fn active(&self) -> usize {
        self.active
    }

    /// Tasks created but not started (waiting on a limit, the gate, or a stopped flow).
    pub fn waiting(&self) -> usize {
        self.queue.len()
            + self.resource_wait.len()
            + self.pool_wait.len()
            + self.held.values().map(VecDeque::len).sum::<usize>()
    }

    /// Tasks waiting for shared-pool units (the run waits for them, whatever its loops).
    pub fn pool_waiting(&self) -> usize {
        if self.stopped {
            return 0;
        }
        self.pool_wait.len()
    }

    /// The shared-pool units a task of `task`'s step acquires: `(pool, units)`.
    pub fn shared_units(&self, task: TaskId) -> Vec<(Arc<str>, u32)> {
        let step = self.program.step(self.task(task).step);
        let pools = &self.program.pools;
        let shared = step
            .acquires
            .iter()
            .filter(|(p, _)| pools[p.0 as usize].shared);
        shared
            .map(|(p, n)| (pools[p.0 as usize].name.clone(), *n))
            .collect()
    }

    /// The due time of the earliest pending delay or retry.
    pub fn next_due(&self) -> Option<Micros> {
        let delay = self.delays.first().map(|(due, _, _)| *due);
        let retry = self.retry_timers.first().map(|(due, _)| *due);
        delay.into_iter().chain(retry).min()
    }

    /// Delays and retries not yet due.
    pub fn pending_delays(&self) -> usize {
        self.delays.len() + self.retry_timers.len()
    }

    /// Whether a stop-on-exception failure (or an interrupt) has stopped new starts.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Why the run was interrupted, if it was.
    pub fn interrupted(&self) -> Option<&str> {
        self.interrupted.as_deref()
    }

    pub fn failed(&self) -> &[Failed] {
        &self.failed
    }

    /// Nothing running and nothing that could start now: the run (or the loop) is over,
    /// unless delays are pending.
    pub fn is_quiescent(&self) -> bool {
        self.active == 0 && self.work.is_empty() && (self.stopped || !self.can_start_front())
    }

    fn can_start_front(&self) -> bool {
        self.queue.front().is_some_and(|_| self.global_room())
    }

    fn global_room(&self) -> bool {
        self.program.max_concurrent.allows(self.active)
    }

    /// Works through the worklist until it is empty or the turn holds [`TURN_CHANGES`].
    fn drain_work(&mut self) {
        while self.changes.len() < TURN_CHANGES {
            let Some(work) = self.work.pop_front() else {
                return;
            };
            match work {
                Work::Fire(event, sequence) => self.fire(event, sequence, Record::Yes),
                Work::FireRecorded(event, sequence) => self.fire(event, sequence, Record::No),
                Work::Targets {
                    assoc,
                    next,
                    sequence,
                } => self.activate_next(assoc, next, sequence),
            }
        }
    }

    /// Activates the association's target at `next`. The rest go first in line again, so
    /// the targets still come in order and before anything they set off.
    fn activate_next(&mut self, assoc: AssocId, next: u32, sequence: Arc<str>) {
        let program = self.program.clone();
        let targets = &program.assoc(assoc).targets;
        if (next as usize) + 1 < targets.len() {
            self.work.push_front(Work::Targets {
                assoc,
                next: next + 1,
                sequence: sequence.clone(),
            });
        }
        match targets[next as usize] {
            Target::Event(event) => self.fire(event, sequence, Record::Yes),
            Target::Step(step) => self.create_task(step, sequence),
        }
    }

    fn fired_bits(&mut self, sequence: &Arc<str>) -> &mut Vec<u64> {
        let words = self.program.events.len().div_ceil(64);
        self.fired
            .entry(sequence.clone())
            .or_insert_with(|| vec![0; words])
    }

    pub fn has_fired(&self, event: EventId, sequence: &str) -> bool {
        self.fired
            .get(sequence)
            .is_some_and(|bits| bits[event.0 as usize / 64] & (1 << (event.0 % 64)) != 0)
    }

    /// Fires `event` in `sequence` once; later fires of the same pair do nothing.
    fn fire(&mut self, event: EventId, sequence: Arc<str>, record: Record) {
        if self.has_fired(event, &sequence) {
            return;
        }
        self.fired_bits(&sequence)[event.0 as usize / 64] |= 1 << (event.0 % 64);
        let program = self.program.clone();
        let def = program.event(event);
        if record == Record::Yes {
            self.changes.push(Change::Trigger {
                event: def.name.clone(),
                sequence: sequence.clone(),
                at: self.now,
            });
        }
        self.consequences(event, &sequence);
    }

    /// What firing `event` in `sequence` sets off: its associations and the expression
    /// events that mention it.
    fn consequences(&mut self, event: EventId, sequence: &Arc<str>) {
        let program = self.program.clone();
        let def = program.event(event);
        for &assoc in &def.assocs {
            self.follow_assoc(assoc, sequence);
        }
        for &dependent in &def.dependents {
            self.check_expression(dependent, sequence);
        }
    }

    fn follow_assoc(&mut self, assoc: AssocId, sequence: &Arc<str>) {
        let program = self.program.clone();
        let def = program.assoc(assoc);
        match def.delay {
            Some(delay) => {
                let due = self.now + delay.as_micros() as Micros;
                self.arm_delay(assoc, sequence.clone(), due);
            }
            None => self.activate(assoc, sequence),
        }
    }

    fn activate(&mut self, assoc: AssocId, sequence: &Arc<str>) {
        if self.program.assoc(assoc).targets.is_empty() {
            return;
        }
        self.work.push_back(Work::Targets {
            assoc,
            next: 0,
            sequence: sequence.clone(),
        });
    }

    fn arm_delay(&mut self, assoc: AssocId, sequence: Arc<str>, due: Micros) {
        if !self.armed.insert((assoc, sequence.clone())) {
            return;
        }
        self.changes.push(Change::DelayArmed {
            assoc: assoc.0 as i32,
            sequence: sequence.clone(),
            due_at: due,
            at: self.now,
        });
        // No effect: the driver asks for the next due time itself (`Core::next_due`).
        self.delays.insert((due, assoc, sequence));
    }

    fn fire_due_delays(&mut self) {
        self.fire_due_retries();
        while self
            .delays
            .first()
            .is_some_and(|(due, _, _)| *due <= self.now)
        {
            let Some((_, assoc, sequence)) = self.delays.pop_first() else {
                break;
            };
            self.changes.push(Change::DelayFired {
                assoc: assoc.0 as i32,
                sequence: sequence.clone(),
            });
            self.activate(assoc, &sequence);
        }
    }

    /// Queues every task whose retry is due, marking its retry's row fired.
    fn fire_due_retries(&mut self) {
        while self
            .retry_timers
            .first()
            .is_some_and(|(due, _)| *due <= self.now)
        {
            let Some((_, task)) = self.retry_timers.pop_first() else {
                break;
            };
            self.changes.push(self.retry_fired(task));
            self.queue.push_back(task);
        }
    }

    /// The change that marks `task`'s latest retry row fired.
    fn retry_fired(&self, task: TaskId) -> Change {
        let t = self.task(task);
        let (assoc, sequence) = retry_row(t.step, &t.sequence, t.retries);
        Change::DelayFired { assoc, sequence }
    }

    fn check_expression(&mut self, event: EventId, sequence: &Arc<str>) {
        if self.has_fired(event, sequence) {
            return;
        }
        let program = self.program.clone();
        let Some(cond) = &program.event(event).cond else {
            return;
        };
        if cond.eval(&|e| self.has_fired(e, sequence)) {
            self.work.push_back(Work::Fire(event, sequence.clone()));
        }
    }

    /// Creates the task of `step` in `sequence` unless it exists (one task per step and
    /// sequence in a recovery). In a recovery, the step's policy may carry the previous
    /// outcome over instead of queueing the task.
    fn create_task(&mut self, step: StepId, sequence: Arc<str>) {
        if self.find_task(step, &sequence).is_some() {
            return;
        }
        let previous = self
            .options
            .previous
            .get(&(step, sequence.clone()))
            .cloned();
        let carried = previous.as_ref().and_then(|p| self.carried_over(step, p));
        let attempt = match (&previous, carried) {
            (Some(p), Some(_)) => p.attempt, // not run again: keeps its attempt number
            (Some(p), None) => p.attempt + 1,
            (None, _) => 1,
        };
        let id = TaskId(self.tasks.len() as u32);
        self.index_task(step, &sequence, id);
        self.changes.push(Change::TaskCreated {
            step: self.program.step(step).name.clone(),
            sequence: sequence.clone(),
            status: TaskStatus::Ready,
            attempt,
            host: None,
            at: self.now,
        });
        self.tasks.push(Task {
            step,
            sequence,
            status: TaskStatus::Ready,
            attempt,
            retries: 0,
            pending_create: Some((self.changes.len() - 1) as u32),
        });
        self.uncommitted.push(id);
        self.fire_status_triggers(id, TaskStatus::Ready);
        match carried {
            Some(status) => self.carry_over(id, status),
            None => self.queue.push_back(id),
        }
    }

    /// The task's outcome before this recovery, if it had one.
    fn previous_of(&self, task: TaskId) -> Option<&PreviousTask> {
        let t = self.task(task);
        self.options.previous.get(&(t.step, t.sequence.clone()))
    }

    /// Whether a recovered task is skipped (not run again) by its step's policy.
    fn carried_over(&self, step: StepId, previous: &PreviousTask) -> Option<TaskStatus> {
        let action = self.program.step(step).recovery.for_status(previous.status);
        (action == RecoverAction::Skip).then_some(TaskStatus::Skipped)
    }

    /// Records a recovered task as skipped and goes on as if it had succeeded: its success
    /// triggers fire. An earlier status other than success is kept in the row's note. Its
    /// resources are taken and given back as if it had run, so pools held across steps stay
    /// right.
    fn carry_over(&mut self, task: TaskId, status: TaskStatus) {
        let step = self.task(task).step;
        self.take_resources_unchecked(step);
        self.give_back_resources(step);
        let note = self.previous_of(task).and_then(|p| {
            let was = p.status;
            (!matches!(was, TaskStatus::Success | TaskStatus::Skipped)).then(|| {
                format!(
                    "skipped by recovery policy; was {was} in recovery {}",
                    p.recovery
                )
            })
        });
        self.set_status(task, status, None, note);
        self.fire_status_triggers(task, status);
    }

    fn fire_status_triggers(&mut self, task: TaskId, status: TaskStatus) {
        let program = self.program.clone();
        let sequence = self.task(task).sequence.clone();
        let (direct, complete) = program.step(self.task(task).step).triggers.on(status);
        for &event in direct.iter().chain(complete) {
            self.work.push_back(Work::Fire(event, sequence.clone()));
        }
    }

    /// Starts queued tasks while the limits and the stop flag allow.
    fn schedule(&mut self) {
        loop {
            self.drain_work();
            if self.stopped || !self.global_room() {
                return;
            }
            let Some(&task) = self.queue.front() else {
                return;
            };
            self.queue.pop_front();
            let step = self.task(task).step;
            if self.step_full(step) {
                self.held.entry(step).or_default().push_back(task);
                continue;
            }
            if !self.try_take_resources(step) {
                self.resource_wait.push_back(task);
                continue;
            }
            if self.needs_grant(step) {
                self.ask_or_park(task, step);
                continue;
            }
            self.start(task);
        }
    }

    fn needs_grant(&self, step: StepId) -> bool {
        let pools = &self.program.pools;
        let acquires = &self.program.step(step).acquires;
        acquires.iter().any(|(p, _)| pools[p.0 as usize].shared)
    }

    /// One request at a time: while one is out, later tasks wait their turn (their local
    /// units back), so a refusal costs one store transaction, not one per waiting task.
    fn ask_or_park(&mut self, task: TaskId, step: StepId) {
        if self.granting.is_empty() {
            return self.ask_grant(task);
        }
        self.untake_resources(step);
        self.pool_wait.push_back(task);
    }

    /// Holds the task's slot while the store is asked for its shared units.
    fn ask_grant(&mut self, task: TaskId) {
        self.occupy(task);
        self.granting.insert(task);
        self.effects.push(Effect::Acquire(task));
    }

    /// The store's answer: start the task, or free its slot and local units and wait. A
    /// grant that comes after a stop goes back at once.
    fn granted(&mut self, task: TaskId, granted: bool) {
        if !self.granting.remove(&task) {
            return;
        }
        if granted && !self.stopped {
            self.launch(task);
            return self.wake_pool_waiters(); // the next one asks
        }
        if granted {
            self.changes.push(self.grant_released(task));
        }
        let step = self.task(task).step;
        self.vacate(task);
        self.untake_resources(step);
        self.release_held(step);
        self.pool_wait.push_front(task); // first in line when units come back
    }

    /// Every task waiting on shared units asks again, in arrival order, before the queue.
    fn wake_pool_waiters(&mut self) {
        while let Some(task) = self.pool_wait.pop_back() {
            self.queue.push_front(task);
        }
    }

    fn grant_released(&self, task: TaskId) -> Change {
        let t = self.task(task);
        Change::GrantReleased {
            step: self.program.step(t.step).name.clone(),
            sequence: t.sequence.clone(),
            attempt: t.attempt,
        }
    }

    fn step_full(&self, step: StepId) -> bool {
        let running = self.active_per_step[step.0 as usize] as usize;
        !self.program.step(step).max_concurrent.allows(running)
    }

    /// Moves a task from ready to active. Recovery and resources hook in here.
    fn start(&mut self, task: TaskId) {
        self.occupy(task);
        self.launch(task);
    }

    /// Counts the task against the global and per-step limits.
    fn occupy(&mut self, task: TaskId) {
        self.active += 1;
        let step = self.task(task).step;
        self.active_per_step[step.0 as usize] += 1;
    }

    /// Frees the task's slot in the limits.
    fn vacate(&mut self, task: TaskId) {
        self.active -= 1;
        let step = self.task(task).step;
        let running = &mut self.active_per_step[step.0 as usize];
        *running = running.saturating_sub(1);
    }

    /// Records the (occupying) task active and has the driver start it.
    fn launch(&mut self, task: TaskId) {
        self.set_status(task, TaskStatus::Active, None, None);
        self.effects.push(Effect::Start(task));
        self.fire_status_triggers(task, TaskStatus::Active);
    }

    /// Records a status change: rewrites an uncommitted create, or adds a fenced transition.
    fn set_status(
        &mut self,
        task: TaskId,
        to: TaskStatus,
        result: Option<String>,
        error: Option<String>,
    ) {
        let now = self.now;
        let record = &mut self.tasks[task.0 as usize];
        let from = std::mem::replace(&mut record.status, to);
        if let (Some(index), None, None) = (record.pending_create, &result, &error) {
            if let Change::TaskCreated { status, .. } = &mut self.changes[index as usize] {
                *status = to;
                return;
            }
        }
        self.changes.push(Change::TaskTransition {
            step: self.program.step(record.step).name.clone(),
            sequence: record.sequence.clone(),
            attempt: record.attempt,
            from,
            to,
            result,
            error,
            at: now,
        });
    }

    fn record_pid(&mut self, task: TaskId, pid: i64) {
        let Some(record) = self.tasks.get(task.0 as usize) else {
            return;
        };
        if record.status != TaskStatus::Active {
            return;
        }
        self.changes.push(Change::TaskPid {
            step: self.program.step(record.step).name.clone(),
            sequence: record.sequence.clone(),
            attempt: record.attempt,
            pid,
        });
    }

    fn finish(&mut self, task: TaskId, outcome: Outcome) {
        let Some(record) = self.tasks.get(task.0 as usize) else {
            return;
        };
        if record.status != TaskStatus::Active {
            return; // a stale report (e.g. after a cancel); the store is already right
        }
        let step = record.step;
        let status = if outcome.success {
            TaskStatus::Success
        } else {
            TaskStatus::Failure
        };
        let error = outcome.error.clone();
        if outcome.recorded {
            self.tasks[task.0 as usize].status = status;
        } else {
            self.set_status(task, status, outcome.result, outcome.error);
        }
        self.vacate(task);
        self.release_held(step);
        self.give_back_resources(step);
        if self.needs_grant(step) {
            self.changes.push(self.grant_released(task));
            self.wake_pool_waiters();
        }
        if status == TaskStatus::Failure && self.may_retry(task) {
            return self.retry(task);
        }
        self.fire_status_triggers(task, status);
        if status == TaskStatus::Failure {
            self.note_failure(task, step, error);
        }
    }

    /// Whether a task that just failed gets another attempt: its step has retries left and
    /// the run still starts tasks.
    fn may_retry(&self, task: TaskId) -> bool {
        let t = self.task(task);
        !self.stopped && t.retries < self.program.step(t.step).retry.retries
    }

    /// Puts a failed task back to `ready` as its next attempt, and arms its retry: a delay
    /// row (fired at once when the step has no retry delay).
    fn retry(&mut self, task: TaskId) {
        let delay = self.program.step(self.task(task).step).retry.delay;
        let now = self.now;
        let t = &mut self.tasks[task.0 as usize];
        t.retries += 1;
        t.attempt += 1;
        t.status = TaskStatus::Ready;
        let (step, sequence, attempt) = (t.step, t.sequence.clone(), t.attempt);
        let (assoc, row) = retry_row(step, &sequence, t.retries);
        let due = now + delay.as_micros() as Micros;
        self.changes.push(Change::TaskRetry {
            step: self.program.step(step).name.clone(),
            sequence,
            from: TaskStatus::Failure,
            attempt: attempt - 1,
            new_attempt: attempt,
            at: now,
        });
        self.changes.push(Change::DelayArmed {
            assoc,
            sequence: row,
            due_at: due,
            at: now,
        });
        self.retry_timers.insert((due, task));
        self.fire_due_retries();
    }

    /// Takes every acquisition of `step`, or none of them.
    fn try_take_resources(&mut self, step: StepId) -> bool {
        let program = self.program.clone();
        let acquires = &program.step(step).acquires;
        let local = acquires
            .iter()
            .filter(|(p, _)| !program.pools[p.0 as usize].shared);
        if local
            .clone()
            .any(|&(pool, n)| self.free[pool.0 as usize] < n)
        {
            return false;
        }
        self.take_resources_unchecked(step);
        true
    }

    fn take_resources_unchecked(&mut self, step: StepId) {
        let program = self.program.clone();
        for &(pool, n) in &program.step(step).acquires {
            let free = &mut self.free[pool.0 as usize];
            *free = free.saturating_sub(n);
        }
    }

    /// Gives back what `step` took of run-local pools (its shared units were refused).
    fn untake_resources(&mut self, step: StepId) {
        let program = self.program.clone();
        for &(pool, n) in &program.step(step).acquires {
            let capacity = program.pools[pool.0 as usize].capacity;
            let free = &mut self.free[pool.0 as usize];
            *free = (*free + n).min(capacity);
        }
    }

    /// Gives back what `step` releases, and lets every task waiting on a pool try again.
    fn give_back_resources(&mut self, step: StepId) {
        let program = self.program.clone();
        let releases = &program.step(step).releases;
        for &(pool, n) in releases {
            let capacity = program.pools[pool.0 as usize].capacity;
            let free = &mut self.free[pool.0 as usize];
            *free = (*free + n).min(capacity);
        }
        if !releases.is_empty() {
            while let Some(task) = self.resource_wait.pop_back() {
                self.queue.push_front(task);
            }
        }
    }

    fn note_failure(&mut self, task: TaskId, step: StepId, error: Option<String>) {
        let def = self.program.step(step);
        if def.triggers.handles_failure() {
            return;
        }
        self.failed.push(Failed { task, error });
        if def.stop_on_exception {
            self.stopped = true;
        }
    }

    /// Puts one task held by the step's limit back at the front of the queue.
    fn release_held(&mut self, step: StepId) {
        if let Some(held) = self.held.get_mut(&step) {
            if let Some(task) = held.pop_front() {
                self.queue.push_front(task);
            }
        }
    }
}

/// Per task, how many retries it used and the due time of one not yet fired.
fn retries_by_task(rows: Vec<StoredRetry>) -> HashMap<(StepId, Arc<str>), (u32, Option<Micros>)> {
    let mut out: HashMap<(StepId, Arc<str>), (u32, Option<Micros>)> = HashMap::new();
    for row in rows {
        let entry = out.entry((row.step, row.sequence)).or_default();
        entry.0 = entry.0.max(row.number);
        if !row.fired {
            entry.1 = Some(row.due);
        }
    }
    out
}
