//! The run modes: a fresh run (restart), a new recovery of an earlier run (recover), or the
//! same recovery carried on (continue); each takes the run's lock and writes (or marks) its
//! row, and builds the core from what the store kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use eventor_store::{
    now_micros, DelayRecord, NewRun, RetryRecord, RunGuard, RunKey, RunRecord, RunStatus,
    TaskRecord, TriggerRecord,
};

use super::open::Opening;
use crate::api::error::{store_error, EventorError};
use crate::api::params;
use crate::api::{leftovers, orphans};
use crate::cluster::survivors::drain_survivors;
use crate::cluster::ClusterSettings;
use crate::engine::core::{
    Core, CoreOptions, Input, PreviousTask, Reruns, StoredDelay, StoredRetry, StoredState,
    StoredTask,
};
use crate::engine::program::{AssocId, EventId, Program, StepId};
use crate::log::CentralLog;

/// What a mode opens: the run's key, its core and its lock, the last request to the run's
/// recovery stored before this coordinator took it (passed over: it was for an earlier
/// coordinator; 0 for a new recovery), and its parameters' values.
pub(super) type Opened = (RunKey, Core, RunGuard, i64, BTreeMap<String, String>);

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
        let params = self.params(None)?;
        let guard = self.lock(&key.run_id).await?;
        self.clear_history(&key.run_id).await?;
        self.store
            .begin_run(self.new_run_row(&key, &params))
            .await
            .map_err(store_error(self.store.describe()))?;
        fail::fail_point!("after-run-row", |_| std::process::abort());
        Ok((key, Core::new(program, options), guard, 0, params))
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
        options.rerun = self.rerun_ids()?;
        let params = self.params(latest.params.as_ref())?;
        let guard = self.lock(&latest.key.run_id).await?;
        self.settle_leftovers(&program, &latest.key).await?;
        let base = self.pick_recovery(&history)?.key.recovery;
        let mut entries = Vec::new();
        let here = eventor_agent::local_host_name();
        for record in history.iter().filter(|r| r.key.recovery <= base) {
            let tasks = store.tasks(record.key.clone()).await.map_err(&err)?;
            if record.host == here {
                let prefix = &flow.options.config.envvar_prefix;
                orphans::stop_orphans(&record.key, prefix, &tasks, flow.options.kill_grace).await;
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
            .begin_run(self.new_run_row(&key, &params))
            .await
            .map_err(&err)?;
        fail::fail_point!("after-recovery-row", |_| std::process::abort());
        let mut core = Core::new(program, options);
        for (event, sequence) in entries {
            core.handle(Input::Trigger { event, sequence }, now_micros());
        }
        Ok((key, core, guard, 0, params))
    }

    /// Before anything is decided: the tasks the run's earlier coordinator left active on
    /// hosts may still run there (their agents run them on for their lease; that
    /// coordinator was gone when this one took the run's lock). Their surviving agents are
    /// re-adopted and followed until those tasks end, their output going into the central
    /// log ([`crate::cluster::survivors`]); on a host where none answers, the lease is
    /// waited out. Their ends are then read like any other, so nothing is started beside a
    /// task still running and nothing that succeeded meanwhile is run again. A stop of this
    /// run (Ctrl-C) ends the wait.
    async fn settle_leftovers(&self, program: &Program, key: &RunKey) -> Result<(), EventorError> {
        let Some(cluster) = &self.flow.options.cluster else {
            return Ok(());
        };
        let hosts = leftovers::leftover_hosts(self.store, key, program, self.steps)
            .await
            .map_err(store_error(self.store.describe()))?;
        if hosts.is_empty() {
            return Ok(());
        }
        let remote_closures = super::attach::remote_closures(self.steps);
        let settings =
            ClusterSettings::for_run(cluster, &key.run_id, self.location, remote_closures)
                .map_err(EventorError::Cluster)?;
        let stop = self.interrupt.stop_token();
        let log = self.open_log(&key.run_id).await?;
        let central = log.as_ref().map(super::attach::central_output);
        let drained = drain_survivors(
            &settings,
            &hosts,
            central.as_ref(),
            self.store,
            stop,
            self.root,
        )
        .await;
        drop(central);
        if let Some(log) = log {
            log.release().await.map_err(EventorError::Log)?;
        }
        if drained.not_found.is_empty() || stop.is_cancelled() {
            return Ok(());
        }
        let wait = crate::cluster::remote::lease_wait(&cluster.hosts, &drained.not_found);
        let hosts = drained.not_found.join(", ");
        let wait_text = humantime::format_duration(wait);
        tracing::warn!(%hosts, wait = %wait_text, "tasks of the run's previous coordinator may still run on these hosts: waiting out their lease before deciding what to run");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
        Ok(())
    }

    /// The run's central log (and console echo), as its options ask.
    async fn open_log(&self, run_id: &str) -> Result<Option<CentralLog>, EventorError> {
        super::attach::open_log(&self.flow.options, run_id).await
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
        let params = self.params(record.params.as_ref())?;
        let guard = self.lock(&key.run_id).await?;
        // Taken with the lock: a request stored from now on is for this coordinator.
        let earlier = store.requests_after(key.clone(), 0).await.map_err(&err)?;
        let requests_seen = earlier.iter().map(|r| r.id).max().unwrap_or(0);
        self.settle_leftovers(&program, &key).await?;
        let tasks = store.tasks(key.clone()).await.map_err(&err)?;
        if record.host == eventor_agent::local_host_name() {
            let (prefix, grace) = (
                &self.flow.options.config.envvar_prefix,
                self.flow.options.kill_grace,
            );
            orphans::stop_orphans(&key, prefix, &tasks, grace).await;
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
        if record.params.as_ref() != Some(&params) {
            store
                .set_run_params(key.clone(), &params)
                .await
                .map_err(&err)?;
        }
        let unstarted = stored.triggers.is_empty();
        let mut core = Core::restore(program, options, stored, now_micros());
        if unstarted {
            for (event, sequence) in self.unstarted_ids() {
                core.handle(Input::Trigger { event, sequence }, now_micros());
            }
        }
        Ok((key, core, guard, requests_seen, params))
    }

    /// The run's parameter values: the user's, else those `stored` by the run's earlier
    /// recovery, else the flow's defaults.
    fn params(
        &self,
        stored: Option<&BTreeMap<String, String>>,
    ) -> Result<BTreeMap<String, String>, EventorError> {
        params::resolve(&self.flow.params, &self.flow.options.params, stored)
    }

    fn new_run_row(&self, key: &RunKey, params: &BTreeMap<String, String>) -> NewRun {
        let options = &self.flow.options;
        NewRun {
            key: key.clone(),
            name: options.name.clone(),
            mode: options.run_mode,
            host: eventor_agent::local_host_name(),
            program: self.flow.describe_program(),
            started_at: now_micros(),
            params: params.clone(),
            env_from_prime: self.flow.env_from_prime_names(),
        }
    }

    /// A new run under an id the store already holds: an input error naming the choices,
    /// or, with `replace_history`, that id's history dropped first (we hold its lock). With
    /// `replace_history` the run's central log starts anew, whether the store held the id
    /// or not (its history pruned, or kept in another store).
    async fn clear_history(&self, run_id: &str) -> Result<(), EventorError> {
        let store = self.store;
        let err = store_error(store.describe());
        let replace = self.flow.options.replace_history;
        if !store.run_history(run_id).await.map_err(&err)?.is_empty() {
            if !replace {
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
        }
        if replace {
            self.start_log_anew(run_id);
        }
        Ok(())
    }

    /// The replaced run's central log is emptied: the new run's lines start it rather than
    /// follow the old ones (a follower of the old log sees it shrink, as a replaced log).
    /// Its graph stays: `eventor-coord` wrote the new run's before the run opened.
    fn start_log_anew(&self, run_id: &str) {
        let options = &self.flow.options;
        let Some(dir) = &options.logdir else {
            return;
        };
        let path = crate::log::log_path(dir, &options.name, run_id);
        let emptied = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path);
        match emptied {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), error = %e, "cannot empty the replaced run's log");
            }
            _ => {}
        }
    }

    /// The recoveries of the run to recover or continue: the given run id, or the latest run
    /// of this flow.
    async fn previous_runs(&self) -> Result<Vec<RunRecord>, EventorError> {
        let (store, options) = (self.store, &self.flow.options);
        let err = store_error(store.describe());
        let no_run = || EventorError::NoPreviousRun {
            mode: options.run_mode,
            flow: options.name.clone(),
            run_id: options.run_id.clone(),
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
            if let Some(step) = self.flow.names.step(&task.step) {
                let previous = PreviousTask {
                    status: task.status,
                    attempt: task.attempt,
                    recovery,
                };
                let sequence = Arc::from(task.sequence.as_str());
                options.previous.insert((step, sequence), previous);
            }
        }
    }

    /// The tasks `--rerun` names, as step ids; a step the flow does not have is input.
    fn rerun_ids(&self) -> Result<Reruns, EventorError> {
        let rerun = &self.flow.options.rerun;
        let ids =
            rerun.iter().map(|task| {
                let step = self.flow.names.step(&task.step).ok_or_else(|| {
                    EventorError::UnknownTarget {
                        context: "--rerun".into(),
                        what: "step",
                        name: task.step.clone(),
                    }
                })?;
                Ok((step, task.sequence.as_deref().map(Arc::from)))
            });
        ids.collect()
    }

    /// The start triggers for a run that stored none, as event ids.
    fn unstarted_ids(&self) -> Vec<(EventId, Arc<str>)> {
        let names = &self.flow.names;
        let ids =
            self.flow.unstarted.iter().filter_map(|(event, sequence)| {
                names.event(event).map(|id| (id, sequence.clone()))
            });
        ids.collect()
    }

    fn stored_triggers(&self, rows: Vec<TriggerRecord>) -> Vec<(EventId, Arc<str>)> {
        rows.into_iter()
            .filter_map(|row| {
                // None: an event this version of the flow no longer has
                let id = self.flow.names.event(&row.event)?;
                Some((id, Arc::from(row.sequence.as_str())))
            })
            .collect()
    }

    fn stored_tasks(&self, rows: Vec<TaskRecord>) -> Vec<StoredTask> {
        rows.into_iter()
            .filter_map(|row| {
                Some(StoredTask {
                    step: self.flow.names.step(&row.step)?,
                    sequence: Arc::from(row.sequence.as_str()),
                    status: row.status,
                    attempt: row.attempt,
                    error: row.error,
                })
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
