//! A bounded pool of threads for blocking closure steps.
//!
//! Why not `spawn_blocking`: each closure task would cost a tokio task, a blocking-pool job
//! and a join wake-up, and a fan-out of 100,000 closures would hold 100,000 task futures at
//! once. Here a queued closure is one small job in a channel, a worker runs it and sends its
//! end straight to the driver, and at most `threads` threads ever exist (started on demand).

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::task::{end_of, panic_message, with_sync_task, SyncFn, TaskContext, TaskEnd};

/// How long a worker that ran out of jobs keeps looking before it sleeps. In a chain of
/// closures the next job comes one store commit after the last one ended (tens of µs);
/// a sleeping worker costs a thread wake-up per job, dearer than that on a busy or virtual
/// machine. It yields between looks, so it takes no CPU another thread wants.
const LINGER: Duration = Duration::from_micros(200);

/// One closure to run; `K` names its task to whoever takes the end.
pub struct Job<K> {
    pub task: K,
    pub f: Arc<SyncFn>,
    pub ctx: TaskContext,
    /// Keeps the executor's tracker open until the job has reported.
    pub token: TaskTrackerToken,
}

/// Turns a finished job into the event its owner waits for (a plain function: no
/// allocation per job).
pub type Finished<K, E> = fn(K, TaskEnd) -> E;

/// The pool; dropping it lets idle workers exit (running closures finish first).
pub struct ClosurePool<K, E> {
    jobs: std_mpsc::Sender<Job<K>>,
    shared: Arc<Shared<K, E>>,
    max_threads: usize,
}

struct Shared<K, E> {
    queue: Mutex<std_mpsc::Receiver<Job<K>>>,
    events: mpsc::Sender<E>,
    finished: Finished<K, E>,
    threads: AtomicUsize,
    idle: AtomicUsize,
    /// Jobs submitted whose closure has not returned yet (queued or running).
    pending: AtomicUsize,
}

impl<K: Send + 'static, E: Send + 'static> ClosurePool<K, E> {
    /// A pool of at most `max_threads` workers, each end sent on `events` as `finished` makes it.
    pub fn new(max_threads: usize, events: mpsc::Sender<E>, finished: Finished<K, E>) -> Self {
        let (jobs, queue) = std_mpsc::channel();
        ClosurePool {
            jobs,
            shared: Arc::new(Shared {
                queue: Mutex::new(queue),
                events,
                finished,
                threads: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
            }),
            max_threads: max_threads.max(1),
        }
    }

    /// Queues a closure; a worker sends its end.
    pub fn submit(&self, job: Job<K>) {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(std_mpsc::SendError(job)) = self.jobs.send(job) {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            // Unreachable while the pool lives (workers never drop the receiver first), but
            // a task must never vanish without an end.
            let end = TaskEnd::failure("the closure pool has stopped");
            let _ = self
                .shared
                .events
                .try_send((self.shared.finished)(job.task, end));
            return;
        }
        self.grow_if_needed();
    }

    /// Jobs submitted whose closure has not returned yet. It drops *before* a job's end is
    /// sent, so whoever receives an end already sees the room it made.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
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
fn work<K, E>(shared: &Shared<K, E>) {
    shared.idle.fetch_add(1, Ordering::AcqRel);
    while let Ok(job) = next_job(&shared.queue) {
        shared.idle.fetch_sub(1, Ordering::AcqRel);
        let end = run(&job);
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        // Idle before its end goes out: the next job, which that end often causes, then
        // finds this worker about to look instead of starting another thread. Two workers
        // for a chain's one job at a time would hand the queue back and forth, a thread
        // wake-up per step. Should the events be full, a job submitted meanwhile waits for
        // this worker until the driver, which submits and drains, has read some.
        shared.idle.fetch_add(1, Ordering::AcqRel);
        let Job { task, token, .. } = job;
        let _ = shared.events.blocking_send((shared.finished)(task, end));
        drop(token);
    }
    shared.idle.fetch_sub(1, Ordering::AcqRel);
    shared.threads.fetch_sub(1, Ordering::AcqRel);
}

/// The next job: looked for during [`LINGER`], then waited for (an error: the pool is gone,
/// or a worker panicked holding the queue).
fn next_job<K>(queue: &Mutex<std_mpsc::Receiver<Job<K>>>) -> Result<Job<K>, std_mpsc::RecvError> {
    // Looking takes the queue only for a moment, and never waits for it: a worker that
    // waited while another looked would sleep on the lock and be woken by its release.
    let found = linger(LINGER, || match queue.try_lock() {
        Ok(queue) => match queue.try_recv() {
            Ok(job) => ControlFlow::Break(Ok(job)),
            Err(std_mpsc::TryRecvError::Disconnected) => {
                ControlFlow::Break(Err(std_mpsc::RecvError))
            }
            Err(std_mpsc::TryRecvError::Empty) => ControlFlow::Continue(()),
        },
        Err(TryLockError::Poisoned(_)) => ControlFlow::Break(Err(std_mpsc::RecvError)),
        Err(TryLockError::WouldBlock) => ControlFlow::Continue(()),
    });
    match found {
        Some(found) => found,
        None => queue.lock().map_err(|_| std_mpsc::RecvError)?.recv(),
    }
}

/// How long [`linger`] looks without leaving the CPU.
const SPIN: Duration = Duration::from_micros(50);

/// Calls `look` until it breaks or `window` has passed (`None`). For the first [`SPIN`] it
/// looks again at once (a spin-loop hint between looks): what it waits for is usually a few
/// microseconds away on another core, and giving up the CPU would cost more. After that it
/// yields between looks, so it takes no CPU another thread wants.
pub fn linger<R>(window: Duration, mut look: impl FnMut() -> ControlFlow<R>) -> Option<R> {
    let started = Instant::now();
    loop {
        if let ControlFlow::Break(found) = look() {
            return Some(found);
        }
        let waited = started.elapsed();
        if waited >= window {
            return None;
        }
        if waited < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

fn run<K>(job: &Job<K>) -> TaskEnd {
    let result = catch_unwind(AssertUnwindSafe(|| {
        with_sync_task(&job.ctx, || (job.f)(&job.ctx))
    }));
    match result {
        Ok(result) => end_of(result),
        Err(payload) => TaskEnd::failure(format!("step panicked: {}", panic_message(&*payload))),
    }
}
