//! The state of a run in progress, kept by the `Eventor` between `run` calls.

use eventor_agent::TaskContext;
use eventor_store::{RunGuard, RunKey, Store};
use tokio::sync::mpsc;

use crate::engine::core::{Core, Input};
use crate::engine::driver::PoolWake;
use crate::engine::executor::StepRuntime;
use crate::engine::external::ExternalTriggers;
use crate::engine::interrupt::Interrupt;

/// The state of a run in progress (kept between `run` calls so a second call continues).
pub(super) struct Running {
    pub(super) store: Store,
    pub(super) external: ExternalTriggers,
    /// Held for the whole run: a second coordinator of the same run id is refused. Its
    /// lease is watched while the run goes on (`run_lease.rs`).
    pub(super) guard: RunGuard,
    pub(super) task_triggers: mpsc::UnboundedReceiver<Input>,
    pub(super) key: RunKey,
    pub(super) core: Core,
    pub(super) steps: Vec<StepRuntime>,
    pub(super) template: TaskContext,
    /// The run's stop from outside (the options' own, or one nobody fires).
    pub(super) interrupt: Interrupt,
    /// Wake-ups for tasks waiting on shared pools.
    pub(super) pools: PoolWake,
}
