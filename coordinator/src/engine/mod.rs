//! The engine: the compiled program, the IO-free scheduling core, the executor that runs
//! tasks, and the tokio driver that ties them to the store. The parts talk through the
//! closed enums and the one trait in [`events`].

pub mod core;
pub mod driver;
pub mod events;
pub mod executor;
pub mod external;
pub mod interrupt;
pub mod prime_env;
pub mod program;

#[cfg(test)]
mod core_props;
#[cfg(test)]
mod golden;
