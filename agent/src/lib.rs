//! eventor-agent: running tasks, wherever they run.
//!
//! The prime runs its local tasks through this crate, and every cluster host runs the same
//! code as the `eventor-agent` binary (or as a program in agent mode):
//!
//! - [`task`]: the task vocabulary: what a step does ([`StepAction`]), who a task is
//!   ([`TaskContext`], [`current_task`]) and how it ended ([`TaskEnd`]);
//! - [`command`]: one command as a task: its own process group, output read line by line,
//!   timeouts and cancels (SIGTERM, a grace period, SIGKILL);
//! - [`supervisor`]: one keeper per runner that starts its commands, so nothing a command
//!   starts outlives it or its runner;
//! - [`closure_pool`]: a bounded pool of threads for blocking closures;
//! - [`runtime`]: the agent side of the protocol: handshake, dispatch, durable ends, output;
//! - [`stdio`]: the channel to the prime (stdin and stdout, pipes driven by the event loop);
//! - [`trigger_socket`]: the way back from a task's command to its own run.
//!
//! Dependencies point one way: this crate knows the protocol and the store, and nothing of
//! the flow, the scheduling core or SSH.

pub mod closure_pool;
pub mod command;
pub mod limit;
pub mod lines;
pub mod runtime;
mod shell;
pub mod stdio;
pub mod supervisor;
pub mod task;
pub mod trigger_socket;
pub mod util;

pub use limit::MaxConcurrent;
pub use runtime::adopt;
pub use runtime::{
    end_changes, local_host_name, serve, tls_material, AgentEnd, AgentError, AgentOptions,
    AgentSummary, PrimeLoss, CAPABILITIES, RECORDS_RESULTS,
};
pub use task::{
    current_task, end_of, StepAction, StepResult, TaskContext, TaskEnd, TriggerError, TriggerSink,
};
