//! Running a defined flow: the run modes (restart, recover, continue), the loops, and the
//! run's end as stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventor_agent::{StepAction, TaskContext, TriggerError, TriggerSink};
use eventor_store::{
    now_micros, DelayRecord, NewRun, RetryRecord, RunGuard, RunKey, RunMode, RunRecord, RunStatus,
    Store, StoreError, StoreLocation, TaskRecord, TriggerRecord,
};
use tokio::sync::mpsc;

use super::builder::Eventor;
use super::error::{store_error, EventorError};
use super::options::EventorOptions;
use super::orphans;
use super::outcome::{outcome_of, RunOutcome};
use super::run_lease::{run_failure, RunLease};
use super::running::Running;
use crate::cluster::{Remote, RunCluster};
use crate::engine::core::{
    Core, CoreOptions, Input, PreviousTask, StoredDelay, StoredRetry, StoredState, StoredTask,
};
use crate::engine::driver::{drive, DriverContext, Loops, PoolWake};
use crate::engine::events::{ExecEvent, PinnedTasks};
use crate::engine::executor::{Executor, ExecutorConfig};
use crate::engine::external::ExternalTriggers;
use crate::engine::program::{AssocId, EventId, Program, StepId, Target};
use crate::log::{CentralLog, CentralOutput};

/// Sends the events a running task fires to the driver. Unbounded on purpose: each call
/// comes from a running task's own code, and the driver drains them every turn.
#[derive(Debug)]
struct TaskTriggers {
    events: Arc<HashMap<String, EventId>>,
    sender: mpsc::UnboundedSender<Input>,
}

impl TriggerSink for TaskTriggers {
    fn trigger(&self, event: &str, sequence: Arc<str>) -> Result<(), TriggerError> {
        let event = *self
            .events
            .get(event)
            .ok_or_else(|| TriggerError::UnknownEvent(event.to_string()))?;
        let input = Input::Trigger { event, sequence };
        self.sender.send(input).map_err(|_| TriggerError::RunOver)
    }
}

impl Eventor {
    /// Runs the flow on a runtime of its own; see [`Eventor::run_async`] for `max_loops`.
    pub fn run(&mut self, max_loops: i64) -> Result<RunOutcome, EventorError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(EventorError::InsideRuntime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(EventorError::Runtime)?;
        runtime.block_on(self.run_async(max_loops))
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
        if crate::cluster::agent_mode::started_as_agent() {
            return self.serve_as_agent().await;
        }
        let loops = loops_of(max_loops)?;
        if self.running.is_none() {
            // What can be checked is checked before the run row is written.
            if let Some(dir) = &self.options.logdir {
                check_logdir(&dir.join(&self.options.name))?;
            }
            self.running = Some(self.start_run().await?);
        }
        let result = self.drive_started(loops).await;
        match &result {
            // Another coordinator has the run: nothing more is ours to write.
            Err(EventorError::RunTakenOver { .. }) => {}
            Err(error) => self.record_failed_start(error).await,
            Ok(_) => {}
        }
        result
    }

    /// A run that fails after its row was written (no hosts, no log) is recorded as failed,
    /// with the reason in the log, rather than left `running` forever.
    async fn record_failed_start(&self, error: &EventorError) {
        let Some(running) = &self.running else { return };
        tracing::error!(run_id = %self.run_id, error = %crate::error_chain(error), "the run failed");
        let failed = running
            .store
            .set_run_status(running.key.clone(), RunStatus::Failure, now_micros())
            .await;
        if let Err(e) = failed {
            tracing::warn!(error = %e, "cannot record the run as failed");
        }
    }

    /// Everything of a run after its row is written: start triggers, log, hosts, loops.
    async fn drive_started(&mut self, loops: Loops) -> Result<RunOutcome, EventorError> {
        let pending: Vec<_> = self.triggers.drain(..).collect();
        let location = self.store_location();
        let running = self.running.as_mut().expect("set above");
        for (event, sequence) in pending {
            let Some(Target::Event(event)) = self.names.get(event.as_str()).copied() else {
                continue; // checked by trigger_event
            };
            running
                .core
                .handle(Input::Trigger { event, sequence }, now_micros());
        }
        let store_name = running.store.describe();
        let config = ExecutorConfig {
            closure_threads: self.options.closure_threads,
            kill_grace: self.options.kill_grace,
        };
        let central = match &self.options.logdir {
            Some(dir) => Some(
                CentralLog::open(dir, &self.options.name, &self.run_id)
                    .await
                    .map_err(EventorError::Log)?,
            ),
            None => None,
        };
        let remote = connect_hosts(&self.options, &location, running, central.as_ref()).await?;
        let lease = RunLease::new(&running.guard, &running.interrupt);
        let run = run_loops(running, loops, config, central.as_ref(), remote);
        let result = lease.watch(run).await?;
        if let (Some(log), Ok(outcome)) = (central, &result) {
            if let Err(e) = log.close(&outcome.to_string()).await {
                tracing::warn!(error = %e, "the central log could not be completed");
            }
        }
        let outcome = result.map_err(|source| run_failure(&store_name, source))?;
        let status = match &outcome {
            RunOutcome::Success => RunStatus::Success,
            RunOutcome::Failure { .. } => RunStatus::Failure,
            RunOutcome::Incomplete { .. } => RunStatus::Incomplete,
            RunOutcome::Interrupted { .. } => RunStatus::Interrupted,
        };
        running
            .store
            .set_run_status(running.key.clone(), status, now_micros())
            .await
            .map_err(|source| run_failure(&store_name, source))?;
        tracing::info!(run_id = %self.run_id, "Processing finished with: {outcome}");
        Ok(outcome)
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

    async fn start_run(&mut self) -> Result<Running, EventorError> {
        let (program, steps) = self.compile()?;
        let program = Arc::new(program);
        let location = self.store_location();
        check_sqlite_path(&location)?;
        let store = Store::open(&location)
            .await
            .map_err(store_error(location.to_string()))?;
        let options = CoreOptions::default();
        self.declare_shared_pools(&store).await?;
        let (key, core, guard) = match self.options.run_mode {
            RunMode::Restart => self.begin_fresh(&store, program, options).await?,
            RunMode::Recover => self.begin_recovery(&store, program, options).await?,
            RunMode::Continue => self.carry_on(&store, program, options).await?,
        };
        let pools = self.pool_wake(&store, &key).await?;
        self.run_id = key.run_id.clone();
        self.prune_old_runs(&store).await?;
        tracing::info!(
            run_id = %key.run_id,
            recovery = key.recovery,
            mode = %self.options.run_mode,
            store = %store.describe(),
            "run started"
        );
        let (trigger_tx, task_triggers) = mpsc::unbounded_channel();
        let event_ids: HashMap<String, EventId> = self
            .names
            .iter()
            .filter_map(|(name, target)| match target {
                Target::Event(id) => Some((name.to_string(), *id)),
                Target::Step(_) => None,
            })
            .collect();
        let event_ids = Arc::new(event_ids);
        let external = ExternalTriggers::new(&store, key.clone(), event_ids.clone())
            .await
            .map_err(store_error(store.describe()))?;
        let template = TaskContext {
            run_id: self.run_id.clone(),
            step: Arc::from(""),
            sequence: Arc::from(""),
            recovery: key.recovery,
            attempt: 1,
            flow: Arc::from(self.options.name.as_str()),
            env_prefix: Arc::from(self.options.config.envvar_prefix.as_str()),
            triggers: Some(Arc::new(TaskTriggers {
                events: event_ids,
                sender: trigger_tx,
            })),
        };
        Ok(Running {
            external,
            store,
            guard,
            task_triggers,
            key: key.clone(),
            core,
            steps,
            template,
            interrupt: self.options.interrupt.clone().unwrap_or_default(),
            pools,
        })
    }

    /// Declares the flow's shared pools in the store: a pool another flow declared with other
    /// units is an input error (exit 2), found before anything of the run is stored.
    async fn declare_shared_pools(&self, store: &Store) -> Result<(), EventorError> {
        let shared: Vec<(String, u32)> = self
            .pools
            .iter()
            .filter(|(name, _)| self.shared_pools.contains(name))
            .cloned()
            .collect();
        if shared.is_empty() {
            return Ok(());
        }
        store.declare_pools(shared).await.map_err(|e| match e {
            StoreError::PoolMismatch { .. } => EventorError::PoolMismatch(e.to_string()),
            other => store_error(store.describe())(other),
        })
    }

    /// Gives back what earlier coordinators of this run (it is ours now: we hold its lock)
    /// still held of shared pools, and listens for units other runs give back.
    async fn pool_wake(&self, store: &Store, key: &RunKey) -> Result<PoolWake, EventorError> {
        let err = store_error(store.describe());
        let released = store.release_run_grants(&key.run_id).await.map_err(&err)?;
        if released > 0 {
            tracing::info!(
                grants = released,
                "gave back the shared units earlier coordinators of the run held"
            );
        }
        let (subscription, recheck) = match store {
            Store::Sqlite(_) => (
                store.subscribe_pools().await.map_err(&err)?,
                SQLITE_POOL_RECHECK,
            ),
            Store::Postgres(_) => (
                store.subscribe_pools().await.map_err(&err)?,
                PG_POOL_RECHECK,
            ),
        };
        Ok(PoolWake {
            subscription,
            recheck,
        })
    }

    fn new_run_row(&self, key: &RunKey) -> NewRun {
        NewRun {
            key: key.clone(),
            name: self.options.name.clone(),
            mode: self.options.run_mode,
            host: eventor_agent::local_host_name(),
            program: self.describe_program(),
            started_at: now_micros(),
        }
    }

    /// A new run: recovery 0 of a new run id.
    async fn begin_fresh(
        &self,
        store: &Store,
        program: Arc<Program>,
        options: CoreOptions,
    ) -> Result<(RunKey, Core, RunGuard), EventorError> {
        let key = RunKey {
            run_id: self.run_id.clone(),
            recovery: 0,
        };
        let guard = self.lock(store, &key.run_id).await?;
        self.clear_history(store, &key.run_id).await?;
        store
            .begin_run(self.new_run_row(&key))
            .await
            .map_err(store_error(store.describe()))?;
        fail::fail_point!("after-run-row", |_| std::process::abort());
        Ok((key, Core::new(program, options), guard))
    }

    /// A new run under an id the store already holds: an input error naming the choices,
    /// or, with `replace_history`, that id's history dropped first (we hold its lock).
    async fn clear_history(&self, store: &Store, run_id: &str) -> Result<(), EventorError> {
        let err = store_error(store.describe());
        if store.run_history(run_id).await.map_err(&err)?.is_empty() {
            return Ok(());
        }
        if !self.options.replace_history {
            return Err(EventorError::RunExists {
                run_id: run_id.to_string(),
                store: store.describe(),
            });
        }
        let dropped = store.delete_run(run_id).await.map_err(&err)?;
        tracing::info!(
            run_id,
            recoveries = dropped,
            "replaced the run's stored history"
        );
        Ok(())
    }

    /// Prunes runs of this flow older than `day_to_keep_db` (never a running one: each is
    /// pruned under its run lock, and ours is held).
    async fn prune_old_runs(&self, store: &Store) -> Result<(), EventorError> {
        let Some(days) = self.options.config.days_to_keep else {
            return Ok(());
        };
        let cutoff = now_micros() - i64::from(days) * 86_400_000_000;
        let pruned = store
            .prune(Some(&self.options.name), cutoff)
            .await
            .map_err(store_error(store.describe()))?;
        if !pruned.is_empty() {
            tracing::info!(
                runs = pruned.len(),
                days,
                "pruned runs older than day_to_keep_db"
            );
        }
        Ok(())
    }

    /// Takes the run's lock (held until the run ends); another coordinator holding it is an
    /// input error, reported as such.
    async fn lock(&self, store: &Store, run_id: &str) -> Result<RunGuard, EventorError> {
        store.lock_run(run_id).await.map_err(|source| match source {
            StoreError::RunLocked { .. } => EventorError::RunLocked(source.to_string()),
            other => store_error(store.describe())(other),
        })
    }

    /// The recoveries of the run to recover or continue: the given run id, or the latest run
    /// of this flow.
    async fn previous_runs(&self, store: &Store) -> Result<Vec<RunRecord>, EventorError> {
        let err = store_error(store.describe());
        let no_run = || EventorError::NoPreviousRun {
            mode: self.options.run_mode,
            store: store.describe(),
        };
        let run_id = match &self.options.run_id {
            Some(id) => id.clone(),
            None => {
                let latest = store.latest_run(&self.options.name).await.map_err(&err)?;
                latest.ok_or_else(no_run)?.key.run_id.to_string()
            }
        };
        let history = store.run_history(&run_id).await.map_err(&err)?;
        let Some(last) = history.last() else {
            return Err(no_run());
        };
        if last.program != self.describe_program() {
            tracing::warn!(
                run_id = %run_id,
                recovery = last.key.recovery,
                "the flow changed since that run: steps and events are matched by name"
            );
        }
        Ok(history)
    }

    /// The recovery `wanted` of a run's history, or its latest.
    fn pick_recovery<'h>(
        &self,
        history: &'h [RunRecord],
        store: &Store,
    ) -> Result<&'h RunRecord, EventorError> {
        let latest = history
            .last()
            .expect("previous_runs returns a non-empty history");
        let Some(wanted) = self.options.recovery else {
            return Ok(latest);
        };
        history
            .iter()
            .find(|r| r.key.recovery == wanted)
            .ok_or_else(|| EventorError::NoSuchRecovery {
                run_id: latest.key.run_id.to_string(),
                recovery: wanted,
                store: store.describe(),
            })
    }

    /// Recover: a new recovery whose tasks skip or rerun by their outcome as of the base
    /// recovery (the latest, or `--recovery N`).
    async fn begin_recovery(
        &self,
        store: &Store,
        program: Arc<Program>,
        mut options: CoreOptions,
    ) -> Result<(RunKey, Core, RunGuard), EventorError> {
        let err = store_error(store.describe());
        let history = self.previous_runs(store).await?;
        let latest = history.last().expect("non-empty history");
        let guard = self.lock(store, &latest.key.run_id).await?;
        let base = self.pick_recovery(&history, store)?.key.recovery;
        let mut entries = Vec::new();
        let here = eventor_agent::local_host_name();
        for record in history.iter().filter(|r| r.key.recovery <= base) {
            let tasks = store.tasks(record.key.clone()).await.map_err(&err)?;
            if record.host == here {
                orphans::stop_orphans(&tasks, self.options.kill_grace).await;
            }
            self.note_previous(&mut options, record.key.recovery, tasks);
            let triggers = store.triggers(record.key.clone()).await.map_err(&err)?;
            entries.extend(self.stored_triggers(triggers));
        }
        // The run's own start: its entry events as they were triggered (the flow file's
        // `trigger:` section is not applied again).
        let entry = program.entries();
        entries.retain(|(event, _)| entry[event.0 as usize]);
        if entries.is_empty() {
            entries = self.unstarted_ids();
        }
        let key = RunKey {
            run_id: latest.key.run_id.clone(),
            recovery: latest.key.recovery + 1,
        };
        fail::fail_point!("before-recovery-row", |_| std::process::abort());
        store
            .begin_run(self.new_run_row(&key))
            .await
            .map_err(&err)?;
        fail::fail_point!("after-recovery-row", |_| std::process::abort());
        let mut core = Core::new(program, options);
        for (event, sequence) in entries {
            core.handle(Input::Trigger { event, sequence }, now_micros());
        }
        Ok((key, core, guard))
    }

    /// Notes the tasks of one earlier recovery as each (step, sequence)'s previous outcome.
    /// Called in recovery order, so a task's latest recovery wins, and a recovery that died
    /// before it acted (its run row but no tasks) changes nothing: it never becomes the base
    /// that makes what succeeded earlier look new.
    fn note_previous(&self, options: &mut CoreOptions, recovery: i32, tasks: Vec<TaskRecord>) {
        for task in tasks {
            if let Some(Target::Step(step)) = self.names.get(task.step.as_str()) {
                let previous = PreviousTask {
                    status: task.status,
                    attempt: task.attempt,
                    recovery,
                };
                let sequence = Arc::from(task.sequence.as_str());
                options.previous.insert((*step, sequence), previous);
            }
        }
    }

    /// Continue: the same recovery carries on from its stored triggers, tasks and delays.
    async fn carry_on(
        &self,
        store: &Store,
        program: Arc<Program>,
        options: CoreOptions,
    ) -> Result<(RunKey, Core, RunGuard), EventorError> {
        let err = store_error(store.describe());
        let history = self.previous_runs(store).await?;
        let record = self.pick_recovery(&history, store)?;
        let key = record.key.clone();
        let guard = self.lock(store, &key.run_id).await?;
        let tasks = store.tasks(key.clone()).await.map_err(&err)?;
        if record.host == eventor_agent::local_host_name() {
            orphans::stop_orphans(&tasks, self.options.kill_grace).await;
        }
        let delays = stored_delays(&program, store.delays(key.clone()).await.map_err(&err)?);
        let retries = stored_retries(&program, store.retries(key.clone()).await.map_err(&err)?);
        let stored = StoredState {
            triggers: self.stored_triggers(store.triggers(key.clone()).await.map_err(&err)?),
            tasks: self.stored_tasks(tasks),
            delays,
            retries,
        };
        store
            .set_run_status(key.clone(), RunStatus::Running, now_micros())
            .await
            .map_err(&err)?;
        let unstarted = stored.triggers.is_empty();
        let mut core = Core::restore(program, options, stored, now_micros());
        if unstarted {
            for (event, sequence) in self.unstarted_ids() {
                core.handle(Input::Trigger { event, sequence }, now_micros());
            }
        }
        Ok((key, core, guard))
    }

    /// The start triggers for a run that stored none, as event ids.
    fn unstarted_ids(&self) -> Vec<(EventId, Arc<str>)> {
        let ids = self.unstarted.iter().filter_map(|(event, sequence)| {
            match self.names.get(event.as_str()) {
                Some(Target::Event(id)) => Some((*id, sequence.clone())),
                _ => None,
            }
        });
        ids.collect()
    }

    fn stored_triggers(&self, rows: Vec<TriggerRecord>) -> Vec<(EventId, Arc<str>)> {
        rows.into_iter()
            .filter_map(|row| match self.names.get(row.event.as_str()) {
                Some(Target::Event(id)) => Some((*id, Arc::from(row.sequence.as_str()))),
                _ => None, // an event this version of the flow no longer has
            })
            .collect()
    }

    fn stored_tasks(&self, rows: Vec<TaskRecord>) -> Vec<StoredTask> {
        rows.into_iter()
            .filter_map(|row| match self.names.get(row.step.as_str()) {
                Some(Target::Step(step)) => Some(StoredTask {
                    step: *step,
                    sequence: Arc::from(row.sequence.as_str()),
                    status: row.status,
                    attempt: row.attempt,
                    error: row.error,
                }),
                _ => None,
            })
            .collect()
    }
}

/// How often a task waiting on a shared pool asks again on SQLite, which cannot notify.
const SQLITE_POOL_RECHECK: Duration = Duration::from_millis(250);
/// The same on Postgres, where another coordinator's release notifies: a safety net only.
const PG_POOL_RECHECK: Duration = Duration::from_secs(5);

/// Executor events queued ahead of the driver.
const EXEC_EVENTS: usize = 4096;

/// Drives the core through the requested loops and turns its state into an outcome.
async fn run_loops(
    running: &mut Running,
    loops: Loops,
    config: ExecutorConfig,
    central: Option<&CentralLog>,
    remote: Option<(Remote, mpsc::Sender<ExecEvent>, mpsc::Receiver<ExecEvent>)>,
) -> Result<RunOutcome, StoreError> {
    let (tx, mut rx, remote) = match remote {
        Some((remote, tx, rx)) => (tx, rx, Some(Arc::new(remote))),
        None => {
            let (tx, rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
            (tx, rx, None)
        }
    };
    let central = central.map(central_output);
    let pinned = remote.clone().map(|r| r as Arc<dyn PinnedTasks>);
    let executor = Executor::new(tx, &running.interrupt, config, central, pinned);
    let cx = DriverContext {
        store: &running.store,
        run: running.key.clone(),
        steps: &running.steps,
        executor: &executor,
        events: &mut rx,
        task_triggers: &mut running.task_triggers,
        pools: &mut running.pools,
        external: &mut running.external,
        task_template: &running.template,
        interrupt: &running.interrupt,
    };
    let result = drive(&mut running.core, cx, loops).await;
    executor.shutdown().await;
    drop(executor);
    if let Some(remote) = remote.and_then(|r| Arc::try_unwrap(r).ok()) {
        remote.shutdown(Duration::from_secs(10)).await;
    }
    result?;
    Ok(outcome_of(&running.core))
}

/// The stored delays of associations this flow still has.
fn stored_delays(program: &Program, rows: Vec<DelayRecord>) -> Vec<StoredDelay> {
    let known = |assoc: i32| (0..program.assocs.len() as i64).contains(&i64::from(assoc));
    let rows = rows.into_iter().filter(|row| known(row.assoc));
    rows.map(|row| StoredDelay {
        assoc: AssocId(row.assoc as u32),
        sequence: Arc::from(row.sequence.as_str()),
        due: row.due_at,
        fired: row.fired,
    })
    .collect()
}

/// The stored retries of steps this flow still has.
fn stored_retries(program: &Program, rows: Vec<RetryRecord>) -> Vec<StoredRetry> {
    let known = |step: i32| (0..program.steps.len() as i64).contains(&i64::from(step));
    let rows = rows.into_iter().filter(|row| known(row.step));
    rows.map(|row| StoredRetry {
        step: StepId(row.step as u32),
        sequence: Arc::from(row.sequence.as_str()),
        number: u32::try_from(row.number).unwrap_or(0),
        due: row.due_at,
        taken: row.taken,
    })
    .collect()
}

/// Connects to the hosts the flow's steps are pinned to (none: `None`), all at once.
async fn connect_hosts(
    options: &EventorOptions,
    location: &StoreLocation,
    running: &Running,
    central: Option<&CentralLog>,
) -> Result<Option<(Remote, mpsc::Sender<ExecEvent>, mpsc::Receiver<ExecEvent>)>, EventorError> {
    let Some(cluster) = &options.cluster else {
        return Ok(None);
    };
    let mut names: Vec<String> = running
        .steps
        .iter()
        .flat_map(|s| s.hosts().iter().map(|h| h.to_string()))
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Ok(None);
    }
    let remote_closures = running.steps.iter().any(|s| {
        !s.hosts().is_empty() && matches!(s.action, StepAction::Sync(_) | StepAction::Async(_))
    });
    let program = running.core.program();
    let fenced =
        super::leftovers::leftover_hosts(&running.store, &running.key, program, &running.steps)
            .await
            .map_err(store_error(running.store.describe()))?;
    let run = RunCluster {
        cluster,
        names,
        remote_closures,
        location,
        store: running.store.clone(),
        run: running.key.clone(),
        central: central.map(central_output),
        fenced,
    };
    let (tx, rx) = mpsc::channel::<ExecEvent>(EXEC_EVENTS);
    let remote = Remote::for_run(run, tx.clone())
        .await
        .map_err(EventorError::Cluster)?;
    Ok(Some((remote, tx, rx)))
}

/// The central log as this host's output goes into it.
fn central_output(log: &CentralLog) -> CentralOutput {
    CentralOutput {
        sink: log.sink(),
        host: Arc::from(eventor_agent::local_host_name().as_str()),
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

/// An SQLite store must be a durable file in an existing directory: a directory, a missing
/// directory or `:memory:` is the user's mistake (exit 2), found before anything is stored.
fn check_sqlite_path(location: &StoreLocation) -> Result<(), EventorError> {
    let StoreLocation::Sqlite(path) = location else {
        return Ok(());
    };
    let refuse = |why: &str| EventorError::BadStore {
        store: location.to_string(),
        why: why.to_string(),
    };
    if path.as_os_str() == ":memory:" {
        return Err(refuse("an in-memory database keeps nothing: name a file"));
    }
    if path.is_dir() {
        return Err(refuse("is a directory, not a database file"));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|dir| !dir.is_dir()) {
        return Err(refuse("its directory does not exist"));
    }
    Ok(())
}

/// The central log's folder must be writable before the run starts (exit 2 otherwise).
fn check_logdir(dir: &std::path::Path) -> Result<(), EventorError> {
    let refuse = |source| EventorError::LogdirUnwritable {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(refuse)?;
    let probe = dir.join(format!(".eventor-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(refuse)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
