//! What an `Eventor` and its run hold, below everything that acts on them: the flow's
//! definitions (`builder.rs` defines them, `compile.rs` compiles them) and the [`Run`] in
//! progress (`run/` opens and drives it), so neither of those needs the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventor_store::{RunGuard, StoreLocation};

use super::options::EventorOptions;
use super::step::DefinedStep;
use crate::engine::core::Core;
use crate::engine::driver::RunState;
use crate::engine::program::Target;
use crate::expr::Expr;

/// A flow and its run. See the crate docs for an example.
pub struct Eventor {
    pub(super) options: EventorOptions,
    pub(super) events: Vec<(String, Option<Expr>)>,
    pub(super) steps: Vec<DefinedStep>,
    /// Every event and step by name; a step's key is the name its spec and program share.
    pub(super) names: HashMap<Arc<str>, Target>,
    /// Targets that name a defined step or event share its name rather than copying it.
    pub(super) assocs: Vec<(String, Vec<Arc<str>>, Option<Duration>)>,
    pub(super) pools: Vec<(String, u32)>,
    /// The pools of `pools` that are shared by every run on the store.
    pub(super) shared_pools: Vec<String>,
    pub(super) triggers: Vec<(String, Arc<str>)>,
    /// Start triggers for a recovery or continue of a run that stored none (it died before
    /// its first commit); a run that stored its start replays that instead.
    pub(super) unstarted: Vec<(String, Arc<str>)>,
    pub(super) run_id: Arc<str>,
    pub(super) running: Option<Run>,
    pub(super) closed: bool,
}

/// A run in progress, kept by the `Eventor` between `run` calls so a second call continues
/// it. Opened by [`Run::open`]; each call goes through [`Run::go`].
pub(super) struct Run {
    pub(super) location: StoreLocation,
    /// Held for the whole run: a second coordinator of the same run id is refused. Its
    /// lease is watched while the run goes on (`run_lease.rs`).
    pub(super) guard: RunGuard,
    pub(super) core: Core,
    /// The store, the run's key, its steps, its triggers' sources, its interrupt (the
    /// options' own, or one nobody fires): what the driver works on.
    pub(super) state: RunState,
}
