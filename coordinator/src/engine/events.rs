//! What passes between the engine's parts: the executor's reports to the driver (one closed
//! enum), and the one way the executor hands a pinned task to the cluster.

use std::sync::Arc;

use eventor_agent::TaskContext;
use eventor_protocol::Work;

use super::core::{Outcome, TaskId};

/// What the executor (local tasks, and the cluster's remote ones) tells the driver.
#[derive(Debug)]
pub enum ExecEvent {
    Started { task: TaskId, pid: i64 },
    Finished { task: TaskId, outcome: Outcome },
}

impl ExecEvent {
    /// The end of `task` (a plain function, so the closure pool can make it without a box).
    pub fn finished(task: TaskId, outcome: Outcome) -> ExecEvent {
        ExecEvent::Finished { task, outcome }
    }
}

/// Runs tasks of steps pinned to hosts. The cluster implements it; the engine knows only
/// this, so it needs nothing of SSH or links. Every task handed over must end in exactly
/// one [`ExecEvent::Finished`] on the executor's channel.
pub trait PinnedTasks: Send + Sync {
    /// Starts `task` on the least busy of `hosts`.
    fn start(&self, task: TaskId, hosts: &[Arc<str>], work: Work, ctx: &TaskContext);

    /// Asks every host to stop the run's tasks there (each still ends in `Finished`).
    fn cancel_all(&self);

    /// Lets go of every host without a word (this prime lost contact with the store): each
    /// agent's lease starts, and its tasks end (in `Finished`) once known dead.
    fn let_go(&self, reason: &str);
}
