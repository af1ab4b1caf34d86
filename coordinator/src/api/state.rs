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
use crate::engine::program::{EventId, StepId};
use crate::expr::Expr;

/// A flow and its run. See the crate docs for an example.
pub struct Eventor {
    pub(super) options: EventorOptions,
    pub(super) events: Vec<(String, Option<Expr>)>,
    pub(super) steps: Vec<DefinedStep>,
    /// Every event and step by name.
    pub(super) names: FlowNames,
    /// Targets that name a defined step or event share its name rather than copying it.
    pub(super) assocs: Vec<(String, Vec<(TargetKind, Arc<str>)>, Option<Duration>)>,
    pub(super) pools: Vec<(String, u32)>,
    /// The pools of `pools` that are shared by every run on the store.
    pub(super) shared_pools: Vec<String>,
    pub(super) triggers: Vec<(String, Arc<str>)>,
    /// Start triggers for a recovery or continue of a run that stored none (it died before
    /// its first commit); a run that stored its start replays that instead.
    pub(super) unstarted: Vec<(String, Arc<str>)>,
    pub(super) run_id: Arc<str>,
    /// The flow's parameters: name → default (`None`: required).
    pub(super) params: super::params::DeclaredParams,
    pub(super) running: Option<Run>,
    pub(super) closed: bool,
}

/// A run in progress, kept by the `Eventor` between `run` calls so a second call continues
/// it. Opened by [`Run::open`]; each call goes through [`Run::go`].
pub(super) struct Run {
    pub(super) location: StoreLocation,
    /// The run's cancellation root: the cluster, its links, its reconnect attempts and the
    /// survivors' links are its children. Cancelled when the run is dropped (its future
    /// dropped mid-way included), so nothing it started outlives it.
    pub(super) root: tokio_util::sync::CancellationToken,
    pub(super) _ends_with_run: tokio_util::sync::DropGuard,
    /// Held for the whole run: a second coordinator of the same run id is refused. Its
    /// lease is watched while the run goes on (`run_lease.rs`).
    pub(super) guard: RunGuard,
    pub(super) core: Core,
    /// The store, the run's key, its steps, its triggers' sources, its interrupt (the
    /// options' own, or one nobody fires): what the driver works on.
    pub(super) state: RunState,
    /// Where the run's commands fire its events (`eventor-coord trigger` inside a task);
    /// served as long as the run is (held for that alone).
    pub(super) _trigger_socket: Option<eventor_agent::trigger_socket::TriggerSocket>,
    /// The run's side of that socket (events to the driver, the status from the store),
    /// which its hosts' commands reach too, through their agents.
    pub(super) run_socket: Option<Arc<dyn eventor_agent::trigger_socket::Fire>>,
}

/// The flow's events and steps by name, each kind its own namespace (the original's flows
/// give an event and a step one name); a step's key is the name its spec and program share.
#[derive(Default)]
pub(super) struct FlowNames {
    pub(super) events: HashMap<Arc<str>, EventId>,
    pub(super) steps: HashMap<Arc<str>, StepId>,
}

impl FlowNames {
    pub(super) fn event(&self, name: &str) -> Option<EventId> {
        self.events.get(name).copied()
    }

    pub(super) fn step(&self, name: &str) -> Option<StepId> {
        self.steps.get(name).copied()
    }

    /// The defined name equal to `name`, to share rather than copy.
    pub(super) fn shared(&self, name: &str) -> Option<Arc<str>> {
        let step = self.steps.get_key_value(name).map(|(n, _)| n);
        step.or_else(|| self.events.get_key_value(name).map(|(n, _)| n))
            .cloned()
    }
}

/// Which kind of name an association target says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TargetKind {
    /// A bare name: the step or the event of that name, which must not be both.
    Either,
    Step,
    Event,
}
