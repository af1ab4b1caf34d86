//! Flows from files: the YAML flow file ([`file`]), the original's config file
//! ([`config`]), and building an [`Eventor`](crate::Eventor) from them ([`build`]). Every
//! error names the file, line, column and field.

pub mod build;
pub mod config;
pub mod file;

pub use build::{eventor_from_flow, FlowTriggers};
pub use config::{load_config, ConfigError};
pub use file::{load_flow, FlowError, FlowFile};
