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

pub mod agent;
pub mod cluster;
pub mod config;
pub mod engine;
mod eventor;
pub mod expr;
pub mod flow_file;
pub mod flow_run;

pub mod ssh;
mod step;
mod yaml;

pub use crate::config::EventorConfig;
pub use crate::engine::program::{RecoverAction, RecoveryPolicy};
pub use crate::eventor::{
    agent_mode, ClusterOptions, Eventor, EventorError, EventorOptions, FailedTask, RunOutcome,
};
pub use crate::expr::Expr;
pub use crate::step::{
    current_task, Step, StepAction, StepConfig, TaskContext, TaskStatus, Triggers,
};
pub use eventor_store::{RunMode, StoreLocation};
