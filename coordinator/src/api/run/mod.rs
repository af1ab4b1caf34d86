//! Running a defined flow: a [`Run`] owns a run's lifetime, from its opening (`open.rs`, the
//! run modes in `modes.rs`) through what it attaches (`attach.rs`: the central log and the
//! cluster) and its loops (`drive.rs`) to its stored end (`finish.rs`). The `Eventor` only
//! opens it once and hands it each `run` call.

mod attach;
mod drive;
mod finish;
mod modes;
mod open;

pub use open::check_store_location;

use std::sync::Arc;

use eventor_agent::StepAction;

use super::error::EventorError;
use super::outcome::RunOutcome;
use super::state::{Eventor, Run};
use crate::engine::driver::Loops;
use crate::engine::program::EventId;

/// Refuses a blocking run on a runtime's thread, where waiting for it would panic.
fn outside_runtime() -> Result<(), EventorError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(EventorError::InsideRuntime),
        Err(_) => Ok(()),
    }
}

impl Eventor {
    /// Runs the flow on a runtime of its own; see [`Eventor::run_async`] for `max_loops`.
    pub fn run(&mut self, max_loops: i64) -> Result<RunOutcome, EventorError> {
        outside_runtime()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(EventorError::Runtime)?;
        self.run_on(&runtime, max_loops)
    }

    /// Runs the flow as a task of `runtime` (see [`Eventor::run_async`] for `max_loops`) and
    /// waits for its end on this thread, which must not be one of the runtime's. As a task,
    /// not on the waiting thread, the driver hands work to the tasks' runners and hears
    /// their ends on the runtime's own threads: a thread wake-up fewer each way (1,000
    /// `true` steps in a chain: 1.55x a shell loop on the waiting thread, 1.37x as a task,
    /// in one go). A panic in the run goes on in the caller, as it would on this thread.
    pub fn run_on(
        &mut self,
        runtime: &tokio::runtime::Runtime,
        max_loops: i64,
    ) -> Result<RunOutcome, EventorError> {
        // Checked before anything starts: inside a runtime, waiting would panic with the
        // run already under way.
        outside_runtime()?;
        let mut eventor = std::mem::replace(self, Eventor::taken());
        let driven = runtime.spawn(async move {
            let outcome = eventor.run_async(max_loops).await;
            (eventor, outcome)
        });
        match runtime.block_on(driven) {
            Ok((eventor, outcome)) => {
                *self = eventor;
                outcome
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(EventorError::Runtime(std::io::Error::other(e.to_string()))),
        }
    }

    /// What stands in for an eventor while its run is away on a runtime: closed, so that
    /// one left behind by a panic refuses to run.
    fn taken() -> Eventor {
        Eventor {
            options: Default::default(),
            events: Vec::new(),
            steps: Vec::new(),
            names: Default::default(),
            assocs: Vec::new(),
            pools: Vec::new(),
            shared_pools: Vec::new(),
            triggers: Vec::new(),
            unstarted: Vec::new(),
            run_id: Arc::from(""),
            params: Default::default(),
            running: None,
            closed: true,
        }
    }

    /// Runs the flow on the current runtime. A *loop* acts on the delays that are due, then
    /// runs triggers and tasks until nothing is left to run except delays not yet due.
    /// `max_loops = N` (N ≥ 1) makes at most N loops without waiting for delays (a run that
    /// ends with delays pending is [`RunOutcome::Incomplete`]); `max_loops < 0` keeps going,
    /// sleeping until each pending delay is due, until nothing at all is left. `0` is refused.
    ///
    /// Started by a prime as its agent on another host ([`crate::agent_mode`]), it serves the prime's
    /// tasks on stdin/stdout instead, this program's closure steps included, and returns
    /// success when the prime is done with it.
    pub async fn run_async(&mut self, max_loops: i64) -> Result<RunOutcome, EventorError> {
        if self.closed {
            return Err(EventorError::Closed);
        }
        // Not `agent_mode()`: `run` is not first in `main`, so it must not turn supervisors on.
        if crate::cluster::agent_mode::started_as_agent() {
            return self.serve_as_agent().await;
        }
        let loops = loops_of(max_loops)?;
        if self.running.is_none() {
            let run = Run::open(self).await?;
            self.run_id = run.state.run.run_id.clone();
            self.running = Some(run);
        }
        let starts = self.start_triggers();
        let run = self.running.as_mut().expect("opened above");
        run.trigger(starts);
        let result = run.go(&self.options, loops).await;
        if let Err(error) = &result {
            run.record_failed(error).await;
        }
        result
    }

    /// The triggers queued since the last call (`trigger_event`), as event ids.
    fn start_triggers(&mut self) -> Vec<(EventId, Arc<str>)> {
        let queued: Vec<_> = self.triggers.drain(..).collect();
        let ids = queued.into_iter().filter_map(|(event, sequence)| {
            // checked by trigger_event
            self.names.event(&event).map(|id| (id, sequence))
        });
        ids.collect()
    }

    /// Serves a prime as its agent on this host, with this program's closure steps.
    async fn serve_as_agent(&self) -> Result<RunOutcome, EventorError> {
        let closures = self
            .steps
            .iter()
            .filter(|s| matches!(s.action, StepAction::Sync(_) | StepAction::Async(_)))
            .map(|s| (s.name.to_string(), s.action.clone()))
            .collect();
        crate::cluster::agent_mode::serve_program(closures)
            .await
            .map_err(EventorError::Agent)?;
        Ok(RunOutcome::Success)
    }
}

/// `max_loops` as the driver takes it: negative is no limit, 0 is refused.
fn loops_of(max_loops: i64) -> Result<Loops, EventorError> {
    if max_loops < 0 {
        return Ok(Loops::Unlimited);
    }
    u32::try_from(max_loops)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .map(Loops::AtMost)
        .ok_or(EventorError::BadMaxLoops(max_loops))
}
