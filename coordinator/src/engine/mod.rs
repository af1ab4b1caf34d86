//! The engine: the compiled program, the IO-free scheduling core, the executor that runs
//! tasks, and the tokio driver that ties them to the store.

mod closure_pool;
pub mod command;
pub mod core;
pub mod driver;
pub mod executor;
pub mod external;
pub mod program;
pub mod remote;

#[cfg(test)]
mod core_props;
#[cfg(test)]
mod golden;
