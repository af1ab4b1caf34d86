//! Why a report could not be made: what the user asked for is not there (input), or the store
//! failed (run).

use eventor_store::StoreError;

/// A report's failure. [`ReportError::is_input_error`] says which are the user's (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no store at {path}: the flow has not run here (pass --store)")]
    NoStore { path: String },
    #[error("cannot open store {store}")]
    Open {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error("no run of flow {flow} in {store}")]
    NoRuns { flow: String, store: String },
    #[error("no run of any flow in {store}")]
    Empty { store: String },
    #[error("no run {run_id} in {store}")]
    NoSuchRun { run_id: String, store: String },
    #[error("reading store {store}")]
    Store {
        store: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot write the graph of run {run_id} to {path}")]
    SaveGraph {
        run_id: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ReportError {
    /// Whether the user named something that is not there (exit status 2).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            ReportError::NoStore { .. }
                | ReportError::Open { .. }
                | ReportError::NoRuns { .. }
                | ReportError::Empty { .. }
                | ReportError::NoSuchRun { .. }
        )
    }
}
