//! A bounded pool of threads for blocking closure steps.
//!
//! Why not `spawn_blocking`: each closure task would cost a tokio task, a blocking-pool job
//! and a join wake-up, and a fan-out of 100,000 closures would hold 100,000 task futures at
//! once. Here a queued closure is one small job in a channel, a worker runs it and sends its
//! end straight to the driver, and at most `threads` threads ever exist (started on demand).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::core::{Outcome, TaskId};
use super::executor::{outcome_of, ExecEvent};
use crate::step::{with_sync_task, StepResult, TaskContext};

type SyncFn = dyn Fn(&TaskContext) -> StepResult + Send + Sync;

/// One closure to run.
pub struct Job {
    pub task: TaskId,
    pub f: Arc<SyncFn>,
    pub ctx: TaskContext,
    /// Keeps the executor's tracker open until the job has reported.
    pub token: TaskTrackerToken,
}

/// The pool; dropping it lets idle workers exit (running closures finish first).
pub struct ClosurePool {
    jobs: std_mpsc::Sender<Job>,
    shared: Arc<Shared>,
    max_threads: usize,
}

struct Shared {
    queue: Mutex<std_mpsc::Receiver<Job>>,
    events: mpsc::Sender<ExecEvent>,
    threads: AtomicUsize,
    idle: AtomicUsize,
}

impl ClosurePool {
    pub fn new(max_threads: usize, events: mpsc::Sender<ExecEvent>) -> ClosurePool {
        let (jobs, queue) = std_mpsc::channel();
        ClosurePool {
            jobs,
            shared: Arc::new(Shared {
                queue: Mutex::new(queue),
                events,
                threads: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
            }),
            max_threads: max_threads.max(1),
        }
    }

    /// Queues a closure; a worker reports its end as [`ExecEvent::Finished`].
    pub fn submit(&self, job: Job) {
        let task = job.task;
        if self.jobs.send(job).is_err() {
            // Unreachable while the pool lives (workers never drop the receiver first), but
            // a task must never vanish without an end.
            let outcome = Outcome::failure("the closure pool has stopped".to_string());
            let _ = self
                .shared
                .events
                .try_send(ExecEvent::Finished { task, outcome });
            return;
        }
        self.grow_if_needed();
    }

    /// Starts another worker when none is idle and the limit allows.
    fn grow_if_needed(&self) {
        if self.shared.idle.load(Ordering::Acquire) > 0 {
            return;
        }
        let threads = self.shared.threads.load(Ordering::Acquire);
        if threads >= self.max_threads {
            return;
        }
        if self
            .shared
            .threads
            .compare_exchange(threads, threads + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // another submit grew the pool at the same moment
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("eventor-closure".to_string())
            .spawn(move || work(&shared));
        if let Err(e) = spawned {
            self.shared.threads.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "cannot start a closure thread; queued closures wait for a running one");
        }
    }
}

/// A worker: takes jobs until the pool is dropped.
fn work(shared: &Shared) {
    loop {
        shared.idle.fetch_add(1, Ordering::AcqRel);
        let job = match shared.queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => break, // a worker panicked while holding the lock: stop cleanly
        };
        shared.idle.fetch_sub(1, Ordering::AcqRel);
        let Ok(job) = job else { break };
        let outcome = run(&job);
        let _ = shared.events.blocking_send(ExecEvent::Finished {
            task: job.task,
            outcome,
        });
        drop(job.token);
    }
    shared.threads.fetch_sub(1, Ordering::AcqRel);
}

fn run(job: &Job) -> Outcome {
    let result = catch_unwind(AssertUnwindSafe(|| {
        with_sync_task(&job.ctx, || (job.f)(&job.ctx))
    }));
    match result {
        Ok(result) => outcome_of(result),
        Err(payload) => Outcome::failure(format!("step panicked: {}", panic_message(&*payload))),
    }
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}
