//! The run modes: a fresh run (restart), a new recovery of an earlier run (recover), or the
//! same recovery carried on (continue); each takes the run's lock and writes (or marks) its
//! row, and builds the core from what the store kept.

use std::sync::Arc;

use eventor_store::{
    now_micros, DelayRecord, NewRun, RetryRecord, RunGuard, RunKey, RunRecord, RunStatus,
    TaskRecord, TriggerRecord,
};

use super::open::Opening;
use crate::api::error::{store_error, EventorError};
use crate::api::{leftovers, orphans};
use crate::engine::core::{
    Core, CoreOptions, Input, PreviousTask, StoredDelay, StoredRetry, StoredState, StoredTask,
};
use crate::engine::program::{AssocId, EventId, Program, StepId, Target};

/// What a mode opens: the run's key, its core and its lock.
pub(super) type Opened = (RunKey, Core, RunGuard);

impl Opening<'_> {
    /// A new run: recovery 0 of a new run id.
    pub(super) async fn fresh(
        &self,
        program: Arc<Program>,
        options: CoreOptions,
    ) -> Result<Opened, EventorError> {
        let key = RunKey {
            run_id: self.flow.run_id.clone(),
            recovery: 0,
        };
        let guard = self.lock(&key.run_id).await?;
        self.clear_history(&key.run_id).await?;
        self.store
            .begin_run(self.new_run_row(&key))
            .await
            .map_err(store_error(self.store.describe()))?;
        fail::fail_point!("after-run-row", |_| std::process::abort());
        Ok((key, Core::new(program, options), guard))
    }

    /// Recover: a new recovery whose tasks skip or rerun by their outcome as of the base
    /// recovery (the latest, or `--recovery N`).
    pub(super) async fn recover(
        &self,
        program: Arc<Program>,
        mut options: CoreOptions,
    ) -> Result<Opened, EventorError> {
        let (store, flow) = (self.store, self.flow);
        let err = store_error(store.describe());
        let history = self.previous_runs().await?;
        let latest = history.last().expect("non-empty history");
        let guard = self.lock(&latest.key.run_id).await?;
        self.wait_out_leases(&program, &latest.key).await?;
        let base = self.pick_recovery(&history)?.key.recovery;
        let mut entries = Vec::new();
        let here = eventor_agent::local_host_name();
        for record in history.iter().filter(|r| r.key.recovery <= base) {
            let tasks = store.tasks(record.key.clone()).await.map_err(&err)?;
            if record.host == here {
                orphans::stop_orphans(&tasks, flow.options.kill_grace).await;
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

    /// Waits, before anything is decided, until the tasks the run's earlier coordinator left
    /// active on hosts cannot be running any more: their agents run them on for their lease
    /// (that coordinator was gone when this one took the run's lock). Their ends, recorded
    /// meanwhile by their agents, are then read like any other, so nothing is started beside
    /// a task still running and nothing that succeeded meanwhile is run again. A stop of this
    /// run (Ctrl-C) ends the wait.
    async fn wait_out_leases(&self, program: &Program, key: &RunKey) -> Result<(), EventorError> {
        let Some(cluster) = &self.flow.options.cluster else {
            return Ok(());
        };
        let hosts = leftovers::leftover_hosts(self.store, key, program, self.steps)
            .await
            .map_err(store_error(self.store.describe()))?;
        if hosts.is_empty() {
            return Ok(());
        }
        let wait = crate::cluster::remote::lease_wait(&cluster.hosts, &hosts);
        tracing::warn!(hosts = ?hosts, wait = ?wait, "tasks of the run's previous coordinator may still run on these hosts: waiting out their lease before deciding what to run");
        let interrupt = self.flow.options.interrupt.clone().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = interrupt.stop_token().cancelled() => {}
        }
        Ok(())
    }

    /// Continue: the same recovery carries on from its stored triggers, tasks and delays.
    pub(super) async fn carry_on(
        &self,
        program: Arc<Program>,
        options: CoreOptions,
    ) -> Result<Opened, EventorError> {
        let store = self.store;
        let err = store_error(store.describe());
        let history = self.previous_runs().await?;
        let record = self.pick_recovery(&history)?;
        let key = record.key.clone();
        let guard = self.lock(&key.run_id).await?;
        self.wait_out_leases(&program, &key).await?;
        let tasks = store.tasks(key.clone()).await.map_err(&err)?;
        if record.host == eventor_agent::local_host_name() {
            orphans::stop_orphans(&tasks, self.flow.options.kill_grace).await;
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

    fn new_run_row(&self, key: &RunKey) -> NewRun {
        let options = &self.flow.options;
        NewRun {
            key: key.clone(),
            name: options.name.clone(),
            mode: options.run_mode,
            host: eventor_agent::local_host_name(),
            program: self.flow.describe_program(),
            started_at: now_micros(),
        }
    }

    /// A new run under an id the store already holds: an input error naming the choices,
    /// or, with `replace_history`, that id's history dropped first (we hold its lock).
    async fn clear_history(&self, run_id: &str) -> Result<(), EventorError> {
        let store = self.store;
        let err = store_error(store.describe());
        if store.run_history(run_id).await.map_err(&err)?.is_empty() {
            return Ok(());
        }
        if !self.flow.options.replace_history {
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

    /// The recoveries of the run to recover or continue: the given run id, or the latest run
    /// of this flow.
    async fn previous_runs(&self) -> Result<Vec<RunRecord>, EventorError> {
        let (store, options) = (self.store, &self.flow.options);
        let err = store_error(store.describe());
        let no_run = || EventorError::NoPreviousRun {
            mode: options.run_mode,
            store: store.describe(),
        };
        let run_id = match &options.run_id {
            Some(id) => id.clone(),
            None => {
                let latest = store.latest_run(&options.name).await.map_err(&err)?;
                latest.ok_or_else(no_run)?.key.run_id.to_string()
            }
        };
        let history = store.run_history(&run_id).await.map_err(&err)?;
        let Some(last) = history.last() else {
            return Err(no_run());
        };
        if last.program != self.flow.describe_program() {
            tracing::warn!(
                run_id = %run_id,
                recovery = last.key.recovery,
                "the flow changed since that run: steps and events are matched by name"
            );
        }
        Ok(history)
    }

    /// The recovery `wanted` of a run's history, or its latest.
    fn pick_recovery<'h>(&self, history: &'h [RunRecord]) -> Result<&'h RunRecord, EventorError> {
        let latest = history
            .last()
            .expect("previous_runs returns a non-empty history");
        let Some(wanted) = self.flow.options.recovery else {
            return Ok(latest);
        };
        history
            .iter()
            .find(|r| r.key.recovery == wanted)
            .ok_or_else(|| EventorError::NoSuchRecovery {
                run_id: latest.key.run_id.to_string(),
                recovery: wanted,
                store: self.store.describe(),
            })
    }

    /// Notes the tasks of one earlier recovery as each (step, sequence)'s previous outcome.
    /// Called in recovery order, so a task's latest recovery wins, and a recovery that died
    /// before it acted (its run row but no tasks) changes nothing: it never becomes the base
    /// that makes what succeeded earlier look new.
    fn note_previous(&self, options: &mut CoreOptions, recovery: i32, tasks: Vec<TaskRecord>) {
        for task in tasks {
            if let Some(Target::Step(step)) = self.flow.names.get(task.step.as_str()) {
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

    /// The start triggers for a run that stored none, as event ids.
    fn unstarted_ids(&self) -> Vec<(EventId, Arc<str>)> {
        let names = &self.flow.names;
        let ids = self.flow.unstarted.iter().filter_map(|(event, sequence)| {
            match names.get(event.as_str()) {
                Some(Target::Event(id)) => Some((*id, sequence.clone())),
                _ => None,
            }
        });
        ids.collect()
    }

    fn stored_triggers(&self, rows: Vec<TriggerRecord>) -> Vec<(EventId, Arc<str>)> {
        rows.into_iter()
            .filter_map(|row| match self.flow.names.get(row.event.as_str()) {
                Some(Target::Event(id)) => Some((*id, Arc::from(row.sequence.as_str()))),
                _ => None, // an event this version of the flow no longer has
            })
            .collect()
    }

    fn stored_tasks(&self, rows: Vec<TaskRecord>) -> Vec<StoredTask> {
        rows.into_iter()
            .filter_map(|row| match self.flow.names.get(row.step.as_str()) {
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
