//! The tokio driver: feeds the core, commits its changes, then performs its effects.
//!
//! One turn: take the core's output, commit the changes as one batch, start the tasks, then
//! wait for the next executor event or timer. Events that arrived while the batch was being
//! committed are all handled before the next commit, so under load many transitions share one
//! transaction (group commit) while a lone chain still moves one step per commit, at once.
//!
//! A command's pid is the one change that does not get a commit of its own: it waits in
//! [`HeldPids`] for the next batch (usually the command's own end, or a neighbour's), or at
//! most [`PID_HELD_AT_MOST`]. Nothing the engine does next depends on it; only a recovery
//! after this coordinator died reads it, and one that finds an active task without a pid
//! finds its process group by the task's own variables instead (`api/orphans.rs`).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use eventor_store::{
    now_micros, Batch, Change, GrantRequest, Micros, RunKey, Store, StoreError, Subscription,
    Writer,
};
use tokio::sync::mpsc;

use super::core::{Core, Effect, Input};
use super::events::ExecEvent;
use super::executor::{Executor, StepRuntime};
use super::external::ExternalTriggers;
use super::interrupt::Interrupt;
use eventor_agent::util::sleep_until;
use eventor_agent::TaskContext;
use eventor_protocol::FailureClass;

/// Most executor events folded into one turn, so one batch stays bounded.
const MAX_EVENTS_PER_TURN: usize = 8192;

/// Most closures handed to the closure pool ahead of its threads. A started closure task
/// beyond that waits in the driver's [`Backlog`] as its id (4 bytes) rather than as a job
/// with its context (~150 bytes): a fan-out of a million closures would otherwise queue
/// them all at once. Plenty to keep every pool thread busy between two turns.
const CLOSURES_AHEAD: usize = 1024;

/// How long a started command's pid may wait for a batch to ride along with. A command
/// that ends sooner commits it with its end; one that runs on has it stored by then.
const PID_HELD_AT_MOST: Duration = Duration::from_millis(5);

/// Started commands' pids not committed yet, oldest first, and when the first came.
#[derive(Default)]
struct HeldPids {
    changes: Vec<Change>,
    since: Option<tokio::time::Instant>,
}

impl HeldPids {
    /// Keeps `changes` for the next batch when they are pids alone (none: nothing to commit);
    /// else answers them, with every pid held before them (a task's pid must be applied
    /// before its end, which the fenced update of a pid requires still `active`).
    fn merge(&mut self, changes: Vec<Change>) -> Option<Vec<Change>> {
        if changes.is_empty() {
            return None;
        }
        if changes.iter().all(|c| matches!(c, Change::TaskPid { .. })) {
            self.since.get_or_insert_with(tokio::time::Instant::now);
            self.changes.extend(changes);
            fail::fail_point!("pid-held", |_| std::process::abort());
            return None;
        }
        Some(match self.take() {
            Some(mut held) => {
                held.extend(changes);
                held
            }
            None => changes,
        })
    }

    /// Every held pid, if any.
    fn take(&mut self) -> Option<Vec<Change>> {
        self.since = None;
        (!self.changes.is_empty()).then(|| std::mem::take(&mut self.changes))
    }

    /// When the held pids must be committed, if any are held.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.since.map(|since| since + PID_HELD_AT_MOST)
    }
}

/// Closure tasks committed as started (they are `active` in the store) that wait for room
/// in the closure pool; started in order as earlier closures return.
#[derive(Default)]
struct Backlog(VecDeque<super::core::TaskId>);

impl Backlog {
    /// Starts `task` now, or queues it behind the closures already waiting.
    fn start(&mut self, core: &Core, cx: &DriverContext<'_>, task: super::core::TaskId) {
        let runtime = &cx.state.steps[core.task(task).step.0 as usize];
        let pool_full = cx.executor.closures_pending() >= CLOSURES_AHEAD;
        if runtime.runs_in_closure_pool() && (pool_full || !self.0.is_empty()) {
            return self.0.push_back(task);
        }
        start(core, cx, task);
    }

    /// Hands waiting closures to the pool while it has room.
    fn refill(&mut self, core: &Core, cx: &DriverContext<'_>) {
        while cx.executor.closures_pending() < CLOSURES_AHEAD {
            let Some(task) = self.0.pop_front() else {
                return;
            };
            start(core, cx, task);
        }
    }
}

/// How many loops a run may make. A loop acts on the delays that are due, then runs
/// triggers and tasks until nothing is left to run except delays not yet due (the
/// original's "a single loop entails executing triggers and tasks until there is none").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loops {
    /// Until nothing is left at all, sleeping until each pending delay is due.
    Unlimited,
    /// At most this many loops, without waiting for delays; then the run reports what is
    /// outstanding. At least one.
    AtMost(std::num::NonZeroU32),
}

/// A run's state as the driver works on it, besides its core: kept between `run` calls by
/// the API's `Run`, and lent to the driver whole.
pub struct RunState {
    pub store: Store,
    pub run: RunKey,
    pub steps: Vec<StepRuntime>,
    /// Triggers fired by running tasks ([`TaskContext::trigger_event`]).
    pub task_triggers: mpsc::UnboundedReceiver<Input>,
    /// The per-task context fields shared by every task of the run.
    pub task_template: TaskContext,
    /// Triggers written to the store by other programs.
    pub external: ExternalTriggers,
    /// A stop from outside (a signal, or the run's lease going unconfirmed).
    pub interrupt: Interrupt,
    /// Wake-ups for tasks waiting on shared pools.
    pub pools: PoolWake,
    /// What every task's environment gets: the run's parameters, the hosts' variables from
    /// the prime.
    pub run_env: Arc<super::executor::RunEnv>,
}

/// Everything the driver needs besides the core: the run's state, and this call's
/// executor with the channel its events come on.
pub struct DriverContext<'a> {
    pub state: &'a mut RunState,
    pub executor: &'a Executor,
    pub events: &'a mut mpsc::Receiver<ExecEvent>,
}

/// What wakes tasks waiting for shared-pool units: the store's notification that another
/// process gave some back (Postgres), and a re-check every `recheck` (the safety net, and
/// all SQLite has).
pub struct PoolWake {
    pub subscription: Subscription,
    pub recheck: Duration,
}

impl PoolWake {
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.subscription.next() => {}
            _ = tokio::time::sleep(self.recheck) => {}
        }
    }
}

impl RunState {
    /// Hands the core the triggers other programs stored since the last look, and acts on
    /// their requests (a cancel stops the run).
    async fn rescan(&mut self, core: &mut Core) -> Result<(), StoreError> {
        let interrupt = &self.interrupt;
        self.external
            .rescan(core, &self.store, &self.run, interrupt)
            .await
    }
}

/// Runs the core until it is done (or its loops are used up).
pub async fn drive(
    core: &mut Core,
    mut cx: DriverContext<'_>,
    loops: Loops,
) -> Result<(), StoreError> {
    // Triggers that others wrote before this run (or this continue) started.
    cx.state.rescan(core).await?;
    // The first loop starts with the delays that came due while nothing ran.
    core.handle(Input::TimerDue, now_micros());
    let mut loops_done = 1u32;
    let mut last_look = false;
    let mut backlog = Backlog::default();
    let mut pids = HeldPids::default();
    loop {
        // A task's triggers were sent before its end was, so taking them here, after its end,
        // means none is missed when deciding whether the run is over.
        while let Ok(input) = cx.state.task_triggers.try_recv() {
            core.handle(input, now_micros());
        }
        // The pool's room is known after its closures' ends were taken; the backlog never
        // waits without closures in the pool, whose ends wake the driver again.
        backlog.refill(core, &cx);
        flush(core, &cx, &mut backlog, &mut pids).await?;
        if !core.is_quiescent() {
            last_look = false;
        }
        if core.is_quiescent() {
            match next_step_when_quiescent(core, loops, loops_done) {
                // One last look for triggers others wrote while it ran (SQLite sends no
                // notification): the run ends only when that found nothing new to do.
                Quiet::Done if !last_look && !core.stopped() => {
                    last_look = true;
                    cx.state.rescan(core).await?;
                    continue;
                }
                Quiet::Done => return commit_held(&mut pids, &cx).await,
                Quiet::NextLoop => {
                    core.handle(Input::TimerDue, now_micros());
                    loops_done += 1;
                    continue;
                }
                Quiet::Wait => {}
            }
        }
        match wait_for_input(core, &mut cx, pids.due()).await {
            Woke::Handled => {}
            Woke::PidsDue => commit_held(&mut pids, &cx).await?,
            Woke::ToRescan => cx.state.rescan(core).await?,
            Woke::Interrupted => cx.executor.interrupt(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Quiet {
    Done,
    NextLoop,
    Wait,
}

fn next_step_when_quiescent(core: &Core, loops: Loops, loops_done: u32) -> Quiet {
    if core.pool_waiting() > 0 {
        return Quiet::Wait; // for another run to give shared units back
    }
    let stopped = core.stopped();
    quiet_step(stopped, core.next_due(), now_micros(), loops, loops_done)
}

/// What a quiescent run does next, as data: stop, start the next loop with the delays now
/// due, or (continuous runs only) wait for the next delay.
fn quiet_step(
    stopped: bool,
    next_due: Option<Micros>,
    now: Micros,
    loops: Loops,
    loops_done: u32,
) -> Quiet {
    if stopped {
        return Quiet::Done;
    }
    match (loops, next_due) {
        (_, None) => Quiet::Done,
        (Loops::Unlimited, Some(_)) => Quiet::Wait,
        (Loops::AtMost(max), Some(due)) if due <= now && loops_done < max.get() => Quiet::NextLoop,
        (Loops::AtMost(_), Some(_)) => Quiet::Done,
    }
}

/// Commits the core's changes, then performs its effects, until the core has none left (an
/// answer from the store about shared units makes more, and so does the rest of a turn too
/// big for one batch).
async fn flush(
    core: &mut Core,
    cx: &DriverContext<'_>,
    backlog: &mut Backlog,
    pids: &mut HeldPids,
) -> Result<(), StoreError> {
    loop {
        let (changes, effects) = core.take_output();
        if changes.is_empty() && effects.is_empty() && !core.has_more_work() {
            return Ok(());
        }
        if let Some(changes) = pids.merge(changes) {
            commit(cx, changes).await?;
        }
        for effect in effects {
            match effect {
                Effect::Start(task) => backlog.start(core, cx, task),
                Effect::Acquire(task) => acquire(core, cx, task).await?,
                Effect::Waits { task, pool } => {
                    let t = core.task(task);
                    let step = &core.program().step(t.step).name;
                    tracing::info!(step = %step, sequence = %t.sequence, pool = %pool, "waiting for the pool's units");
                }
            }
        }
        core.resume(now_micros());
    }
}

/// Commits `changes` as one batch of the run.
async fn commit(cx: &DriverContext<'_>, changes: Vec<Change>) -> Result<(), StoreError> {
    let batch = Batch {
        run: cx.state.run.clone(),
        changes,
        writer: Writer::Coordinator,
    };
    cx.state.store.commit(batch).await?;
    fail::fail_point!("after-commit", |_| std::process::abort());
    Ok(())
}

/// Commits the pids held, if any.
async fn commit_held(pids: &mut HeldPids, cx: &DriverContext<'_>) -> Result<(), StoreError> {
    match pids.take() {
        Some(changes) => commit(cx, changes).await,
        None => Ok(()),
    }
}

fn start(core: &Core, cx: &DriverContext<'_>, task: super::core::TaskId) {
    let record = core.task(task);
    let ctx = TaskContext {
        step: core.program().step(record.step).name.clone(),
        sequence: record.sequence.clone(),
        attempt: record.attempt,
        ..cx.state.task_template.clone()
    };
    tracing::info!(step = %ctx.step, sequence = %ctx.sequence, "attempting to run");
    // Retries left that a host failure would spend: a pinned task may wait out a quarantine.
    let retry = &core.program().step(record.step).retry;
    let may_wait = record.attempt as u32 <= retry.retries
        && retry.on.covers(&eventor_protocol::FailureClass::HostLost);
    let step = &cx.state.steps[record.step.0 as usize];
    cx.executor.start(task, step, ctx, may_wait);
}

/// Asks the store for a task's shared-pool units and hands the answer to the core.
async fn acquire(
    core: &mut Core,
    cx: &DriverContext<'_>,
    task: super::core::TaskId,
) -> Result<(), StoreError> {
    let record = core.task(task);
    let request = GrantRequest {
        run: cx.state.run.clone(),
        step: core.program().step(record.step).name.clone(),
        sequence: record.sequence.clone(),
        attempt: record.attempt,
        units: core.shared_units(task),
    };
    let granted = cx.state.store.try_grant(request).await?;
    core.handle(Input::Granted { task, granted }, now_micros());
    Ok(())
}

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    Handled,
    /// Another program may have written triggers: look in the store.
    ToRescan,
    /// The pids held have waited long enough for a batch: commit them.
    PidsDue,
    /// The run was just stopped from outside: stop what runs.
    Interrupted,
}

/// Waits for an executor event (then takes every other one already queued), a task's
/// trigger, the next delay's due time, freed shared units or an interrupt, and hands it to
/// the core; a wake-up from the store's triggers, or the held pids coming due, is returned
/// for the caller to act on.
async fn wait_for_input(
    core: &mut Core,
    cx: &mut DriverContext<'_>,
    pids_due: Option<tokio::time::Instant>,
) -> Woke {
    // Closures running on the pool: their ends are worth a moment's look.
    let closures_running = cx.executor.closures_pending() > 0;
    let events = &mut *cx.events;
    let RunState {
        task_triggers,
        external,
        interrupt,
        pools,
        ..
    } = &mut *cx.state;
    if closures_running && !interrupt.stop_token().is_cancelled() {
        if let Some(event) = linger(events) {
            apply_all(core, events, event);
            return Woke::Handled;
        }
    }
    let pool_waiting = core.pool_waiting() > 0;
    let timer = core.next_due().map(until);
    let first = tokio::select! {
        // The interrupt first: the ends of the tasks it stops must find the core told.
        biased;
        _ = interrupt.stop_token().cancelled(), if core.interrupted().is_none() => {
            let reason = Arc::from(interrupt.reason().unwrap_or("interrupted"));
            core.handle(Input::Interrupted { reason }, now_micros());
            return Woke::Interrupted;
        }
        event = events.recv() => event,
        Some(input) = task_triggers.recv() => {
            core.handle(input, now_micros());
            return Woke::Handled;
        }
        _ = sleep_until(timer.map(|t| tokio::time::Instant::now() + t)) => {
            core.handle(Input::TimerDue, now_micros());
            return Woke::Handled;
        }
        _ = external.wake() => return Woke::ToRescan,
        _ = sleep_until(pids_due) => return Woke::PidsDue,
        _ = pools.wait(), if pool_waiting => {
            core.handle(Input::PoolsFreed, now_micros());
            return Woke::Handled;
        }
    };
    if let Some(first) = first {
        apply_all(core, events, first);
    }
    Woke::Handled
}

/// How long the driver looks for the end of a running closure before it sleeps. A no-op
/// closure ends a few microseconds after it starts; a sleeping driver costs a thread
/// wake-up per step of a chain, dearer than that on a busy or virtual machine. It yields
/// between looks, so it takes no CPU another thread wants.
const LINGER: Duration = Duration::from_micros(200);

/// An executor event that arrives within [`LINGER`], if any.
fn linger(events: &mut mpsc::Receiver<ExecEvent>) -> Option<ExecEvent> {
    eventor_agent::closure_pool::linger(LINGER, || match events.try_recv() {
        Ok(event) => ControlFlow::Break(Some(event)),
        Err(mpsc::error::TryRecvError::Empty) => ControlFlow::Continue(()),
        Err(mpsc::error::TryRecvError::Disconnected) => ControlFlow::Break(None),
    })
    .flatten()
}

/// Hands `first` and every event already queued behind it (up to a turn's worth) to the core.
fn apply_all(core: &mut Core, events: &mut mpsc::Receiver<ExecEvent>, first: ExecEvent) {
    let now = now_micros();
    apply(core, first, now);
    for _ in 1..MAX_EVENTS_PER_TURN {
        match events.try_recv() {
            Ok(event) => apply(core, event, now),
            Err(_) => break,
        }
    }
}

fn apply(core: &mut Core, event: ExecEvent, now: Micros) {
    let input = match event {
        ExecEvent::Started { task, pid } => Input::TaskPid { task, pid },
        ExecEvent::Finished {
            task,
            mut end,
            recorded,
        } => {
            // Whatever a task running at an interrupt died of, the interrupt is why.
            if let Some(reason) = core.interrupted().filter(|_| !end.succeeded()) {
                end.error = Some(reason.to_string());
                end = end.classed(eventor_protocol::FailureClass::Interrupted);
            }
            log_finish(core, task, &end);
            let (attempt, class) = (core.task(task).attempt, end.failure_class());
            core.handle(
                Input::TaskFinished {
                    task,
                    end,
                    recorded,
                },
                now,
            );
            return log_retry(core, task, attempt, class);
        }
    };
    core.handle(input, now);
}

/// Says so when the core gave a failed task another attempt: "attempt 1 failed (exit:3);
/// retrying (attempt 2 of 3)", with the retry delay when there is one.
fn log_retry(core: &Core, task: super::core::TaskId, attempt: i32, class: Option<FailureClass>) {
    let record = core.task(task);
    if record.attempt <= attempt {
        return;
    }
    let step = core.program().step(record.step);
    let of = step.retry.retries + 1;
    let class = class.map(|c| format!(" ({c})")).unwrap_or_default();
    let after = match step.retry.delay.is_zero() {
        true => String::new(),
        false => format!(" in {}", humantime::format_duration(step.retry.delay)),
    };
    tracing::warn!(step = %step.name, sequence = %record.sequence,
        "attempt {attempt} failed{class}; retrying (attempt {} of {of}){after}", record.attempt);
}

fn log_finish(core: &Core, task: super::core::TaskId, end: &super::core::TaskEnd) {
    let record = core.task(task);
    let step: &Arc<str> = &core.program().step(record.step).name;
    match &end.error {
        None => {
            tracing::info!(step = %step, sequence = %record.sequence, "completed with status success")
        }
        Some(error) => {
            tracing::warn!(step = %step, sequence = %record.sequence, %error, "completed with status failure")
        }
    }
    let Some(class) = end.failure_class() else {
        return;
    };
    if let Some(retry_on) = core.refused_by_retry_on(task, &class) {
        let attempt = record.attempt;
        tracing::warn!(step = %step, sequence = %record.sequence,
            "attempt {attempt} failed ({class}), not retried: retry_on is {retry_on}");
    }
}

fn until(due: Micros) -> Duration {
    Duration::from_micros(due.saturating_sub(now_micros()).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::{quiet_step, Loops, Quiet};
    use std::num::NonZeroU32;

    fn at_most(n: u32) -> Loops {
        Loops::AtMost(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn a_quiescent_run_stops_waits_or_loops_again() {
        // (stopped, next due, loops, loops done) -> what next, at time 100
        let cases = [
            (false, None, Loops::Unlimited, 1, Quiet::Done),
            (false, Some(500), Loops::Unlimited, 1, Quiet::Wait),
            (true, Some(500), Loops::Unlimited, 1, Quiet::Done),
            (false, Some(500), at_most(1), 1, Quiet::Done),
            (false, Some(500), at_most(5), 1, Quiet::Done),
            (false, Some(100), at_most(2), 1, Quiet::NextLoop),
            (false, Some(100), at_most(2), 2, Quiet::Done),
            (false, None, at_most(3), 1, Quiet::Done),
        ];
        for (stopped, due, loops, done, want) in cases {
            let got = quiet_step(stopped, due, 100, loops, done);
            assert_eq!(
                got, want,
                "stopped {stopped}, due {due:?}, {loops:?}, done {done}"
            );
        }
    }
}
