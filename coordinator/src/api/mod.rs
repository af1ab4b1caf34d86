//! The API users call: define a flow on an [`Eventor`] (events, [`Step`]s, associations,
//! pools), trigger it, run it ([`RunOutcome`]) and close it.
//!
//! - [`builder`]: the `Eventor` and the define calls;
//! - [`compile`]: names into the core's program, references checked;
//! - [`run`]: a run's lifetime: opened by its mode (restart, recover, continue), the log
//!   and cluster attached, its loops, its stored end;
//! - [`run_lease`]: the prime's lease on its run, watched while it runs;
//! - [`step`], [`options`], [`config`]: what a step, a run and the config file set;
//! - [`outcome`], [`error`]: how a run ended, and why it could not.

pub mod builder;
mod compile;
pub mod config;
pub mod error;
pub mod fire;
mod leftovers;
pub mod names;
pub mod options;
mod orphans;
pub mod outcome;
pub mod params;
mod run;
mod run_lease;
mod state;
pub mod status;
pub mod step;
mod validate;

pub use builder::{AssocTarget, Eventor};
pub use config::{
    ConsoleLevel, DatabaseConfig, DatabaseEntry, DbType, EventorConfig, LoggingConfig,
    UnusableDatabase,
};
pub use error::{ErrorKind, EventorError};
pub use options::{EventorOptions, RerunTask};
pub use outcome::{FailedTask, RunOutcome};
pub use run::check_store_location;
pub use step::{FailureClass, FailureKind, RetryMatch, RetryOn, Step, StepConfig, Triggers};
