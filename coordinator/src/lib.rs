//! eventor: event-driven task synchronization for one machine and for a cluster.
//!
//! ```no_run
//! use eventor::{Eventor, EventorOptions, Step};
//!
//! let mut ev = Eventor::new(EventorOptions { name: "linear".into(), ..Default::default() })?;
//! ev.add_event("start", None)?.add_event("s1_done", None)?;
//! ev.add_step(Step::new("s1").command("echo one").on_success("s1_done"))?;
//! ev.add_step(Step::new("s2").func(|task| Ok::<_, String>(format!("seq {}", task.sequence))))?;
//! ev.add_assoc("start", ["s1"], None)?.add_assoc("s1_done", ["s2"], None)?;
//! ev.trigger_event("start", "1")?;
//! let outcome = ev.run(-1)?;
//! assert!(outcome.is_success());
//! ev.close();
//! # Ok::<(), eventor::EventorError>(())
//! ```

pub mod api;
pub mod cluster;
mod engine;
pub mod expr;
pub mod flow;
#[cfg(test)]
mod golden_files;
pub mod log;
pub mod report;
pub mod web;
mod yaml;

pub use crate::api::Eventor;
pub use crate::api::{
    check_store_location, AssocTarget, EventorConfig, EventorError, EventorOptions, FailedTask,
    FailureClass, FailureKind, RerunTask, RetryMatch, RetryOn, RunOutcome, Step, StepConfig,
    Triggers,
};
pub use crate::cluster::{agent_mode, ClusterOptions};
pub use crate::engine::interrupt::Interrupt;
pub use crate::engine::program::{RecoverAction, RecoveryPolicy};
pub use crate::expr::Expr;
pub use crate::log::{ConsoleEcho, ConsoleOutput};
pub use crate::yaml::did_you_mean;
pub use eventor_agent::supervisor::{supervise_commands, supervise_commands_with};
pub use eventor_agent::trigger_socket::status as trigger_socket_status;
pub use eventor_agent::util::error_chain;
pub use eventor_agent::{current_task, MaxConcurrent, StepAction, TaskContext, TriggerError};
pub use eventor_store::{RunMode, StoreLocation, TaskStatus};
