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
//! # Stop on exception
//! An unhandled failure of a step with `stop_on_exception` stops the flow: nothing more
//! starts, and no task is created any more either (as in the original). Events still fire and
//! are recorded, so a recovery, which replays the run's triggers, creates those tasks then,
//! as new ones: a task stored `ready` in a stopped run would instead be taken for one that
//! was waiting, and a `ready: skip` policy would skip a step that never ran.
//!
//! # Retries
//! A failed attempt of a step with retries left goes back to `ready` as attempt + 1 (a
//! fenced `TaskRetry`), its units given back, and starts again once its retry row is due (at
//! once without a delay). Its `failure` and `complete` triggers, and the run's
//! failure, wait for the last attempt. An interrupted or stopped run retries nothing.
//!
//! # Layout
//! This file holds the types, the inputs and outputs and the dispatch ([`Core::handle`]);
//! each concern is an `impl Core` of its own: `triggers` (firing events), `tasks` (creating,
//! starting and ending tasks), `limits` (slots and run-local units), `pools` (shared units),
//! `delays`, `retries` and `restore` (continue and recovery).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use eventor_store::{Change, Micros, TaskStatus};

use super::program::{AssocId, EventId, Program, StepId};
pub use eventor_agent::TaskEnd;

mod delays;
mod limits;
mod pools;
mod restore;
mod retries;
mod tasks;
mod triggers;

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
    /// A task ended; `recorded`: its end is already in the store (an agent or the
    /// cluster wrote it), so the core acts on it without writing it.
    TaskFinished {
        task: TaskId,
        end: TaskEnd,
        recorded: bool,
    },
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
    /// The task found a run-local pool short, the first time it waits: the driver logs it.
    Waits {
        task: TaskId,
        pool: Arc<str>,
    },
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
    /// It has waited for a pool's units before (said once).
    pub waited: bool,
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
    /// Tasks a recovery runs again whatever their previous outcome (`--rerun`): a step in
    /// one sequence, or in every one (`None`).
    pub rerun: Reruns,
}

/// The tasks `--rerun` names: a step in one sequence, or in every one (`None`).
pub type Reruns = HashSet<(StepId, Option<Arc<str>>)>;

impl CoreOptions {
    /// Whether the task of `step` in `sequence` is to run again whatever it did before.
    pub fn reruns(&self, step: StepId, sequence: &Arc<str>) -> bool {
        !self.rerun.is_empty()
            && (self.rerun.contains(&(step, None))
                || self.rerun.contains(&(step, Some(sequence.clone()))))
    }
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
    /// Every stored retry, taken or not.
    pub retries: Vec<StoredRetry>,
}

/// A task's retry as stored: its number (1 for the first) and when it is due.
#[derive(Debug, Clone)]
pub struct StoredRetry {
    pub step: StepId,
    pub sequence: Arc<str>,
    pub number: u32,
    pub due: Micros,
    pub taken: bool,
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
    /// A stop-on-exception failure stopped the flow: from then on no task is created (the
    /// triggers are still recorded, so a recovery acts on them and runs those steps as new).
    stopped_by_failure: bool,
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
            stopped_by_failure: false,
            interrupted: None,
            failed: Vec::new(),
            work: VecDeque::new(),
            uncommitted: Vec::new(),
            changes: Vec::new(),
            effects: Vec::new(),
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

    /// Applies one input at time `now`, then starts whatever may start.
    pub fn handle(&mut self, input: Input, now: Micros) {
        self.now = now;
        match input {
            Input::Trigger { event, sequence } => self.work.push_back(Work::Fire(event, sequence)),
            Input::RecordedTrigger { event, sequence } => {
                self.work.push_back(Work::FireRecorded(event, sequence))
            }
            Input::TaskPid { task, pid } => self.record_pid(task, pid),
            Input::TaskFinished {
                task,
                end,
                recorded,
            } => self.finish(task, end, recorded),
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
}
