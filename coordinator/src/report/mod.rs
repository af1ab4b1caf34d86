//! What runs did, read back from the store: run listings, a run's status, the flow as a graph.
//!
//! Everything here only reads. `model` loads runs and tasks and sums them up, `text` and
//! `json` print them for `runs` and `status`, `graph` draws a flow (dot, mermaid, svg) with
//! its steps coloured by their tasks' states.

pub mod error;
pub mod graph;
pub mod json;
pub mod model;
pub mod svg;
pub mod text;
pub mod time;
pub mod waiting;

pub use error::ReportError;
pub use model::{
    list_runs, open_store, own_run_report, run_report, Counts, RunReport, RunSelector, RunSummary,
};
