//! eventor: event-driven task synchronization for one machine and for a cluster.

pub mod config;
pub mod expr;
pub mod flow_file;
