//! What passes between the engine's parts: the executor's reports to the driver (one closed
//! enum), and the one way the executor hands a pinned task to the cluster.

use std::sync::Arc;

use eventor_agent::TaskContext;
use eventor_protocol::Work;

use super::core::{TaskEnd, TaskId};

/// What the executor (local tasks, and the cluster's remote ones) tells the driver.
#[derive(Debug)]
pub enum ExecEvent {
    Started {
        task: TaskId,
        pid: i64,
    },
    /// `recorded`: the end is in the store already (see [`super::core::Input::TaskFinished`]).
    Finished {
        task: TaskId,
        end: TaskEnd,
        recorded: bool,
    },
}

impl ExecEvent {
    /// The end of `task` (a plain function, so the closure pool can make it without a box).
    pub fn finished(task: TaskId, end: TaskEnd) -> ExecEvent {
        ExecEvent::Finished {
            task,
            end,
            recorded: false,
        }
    }
}

/// Runs tasks of steps pinned to hosts. The cluster implements it; the engine knows only
/// this, so it needs nothing of SSH or links. Every task handed over must end in exactly
/// one [`ExecEvent::Finished`] on the executor's channel.
pub trait PinnedTasks: Send + Sync {
    /// Starts `task` on the least busy of `hosts`. `may_wait`: its step would retry a host
    /// failure, so while its only hosts are quarantined it waits rather than failing.
    fn start(
        &self,
        task: TaskId,
        hosts: &[Arc<str>],
        work: Work,
        ctx: &TaskContext,
        may_wait: bool,
    );

    /// Asks every host to stop the run's tasks there (each still ends in `Finished`).
    fn cancel_all(&self);

    /// Lets go of every host without a word (this prime lost contact with the store): each
    /// agent's lease starts, and its tasks end (in `Finished`) once known dead.
    fn let_go(&self, reason: &str);

    /// Brings back the hosts let go (this prime has its store again): an agent still within
    /// its lease is re-adopted with its tasks.
    fn bring_back(&self);
}
