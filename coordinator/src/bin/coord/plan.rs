//! `run --dry-run`: the plan of a run, printed without touching the store (none is created,
//! nothing written): the start triggers expanded, the steps in the order the start reaches
//! them with their hosts and pools, and for `--mode recover` what the recovery would skip
//! and rerun (read from the store, which must exist). Plain text, one item a line, stable
//! for scripts.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::process::ExitCode;

use eventor::flow::file::StepSpec;
use eventor::flow::{FlowFile, FlowTriggers};
use eventor::{RecoverAction, RerunTask};
use eventor_store::{RunMode, RunRecord, Store, TaskStatus};

use super::store_choice::Chosen;
use super::{bad, print_out, Failure};

/// What a dry run plans for.
pub struct Planned<'a> {
    pub flow: &'a FlowFile,
    pub mode: RunMode,
    pub triggers: &'a FlowTriggers,
    pub rerun: &'a [RerunTask],
    pub store: &'a Chosen,
    pub run_id: Option<&'a str>,
    pub recovery: Option<i32>,
}

/// Prints the plan; exit 0.
pub fn dry_run(planned: &Planned<'_>) -> Result<ExitCode, Failure> {
    let mut out = String::new();
    let flow = planned.flow;
    let _ = writeln!(
        out,
        "dry run of flow {} (mode {}): nothing is stored or started",
        flow.name, planned.mode
    );
    let _ = writeln!(out, "store: {}", planned.store.location);
    let starts = match planned.mode {
        RunMode::Restart => {
            let starts = fresh_triggers(planned);
            start_triggers(&mut out, &starts);
            starts
        }
        RunMode::Recover => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
            runtime.block_on(recovery_plan(&mut out, planned))?
        }
        RunMode::Continue => {
            let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
            runtime.block_on(continue_plan(&mut out, planned))?
        }
    };
    steps(&mut out, flow, &starts);
    Ok(print_out(&out))
}

/// A new run's start: the file's `trigger:` section, or `--trigger` instead.
fn fresh_triggers(planned: &Planned<'_>) -> Vec<(String, String)> {
    match planned.triggers {
        FlowTriggers::Given(pairs) => pairs.clone(),
        FlowTriggers::FromFile => file_triggers(planned.flow),
    }
}

fn file_triggers(flow: &FlowFile) -> Vec<(String, String)> {
    let each = flow.triggers.iter().flat_map(|t| {
        t.sequences
            .iter()
            .map(move |sequence| (t.event.clone(), sequence.clone()))
    });
    each.collect()
}

fn start_triggers(out: &mut String, triggers: &[(String, String)]) {
    let _ = writeln!(out, "start triggers ({}):", triggers.len());
    for (event, sequence) in triggers {
        let _ = writeln!(out, "  {event}[{sequence}]");
    }
}

/// Every step, in the order the start reaches it: where it runs and what it takes of which
/// pools; a step the start does not reach is said so.
fn steps(out: &mut String, flow: &FlowFile, starts: &[(String, String)]) {
    let _ = writeln!(
        out,
        "steps ({}, in the order the start triggers reach them):",
        flow.steps.len()
    );
    let width = flow.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let reached = reach_order(flow, starts);
    let placed: HashSet<&str> = reached.iter().map(|step| step.name.as_str()).collect();
    let unreached = flow
        .steps
        .iter()
        .filter(|s| !placed.contains(s.name.as_str()));
    for step in reached.iter().copied().chain(unreached) {
        let host = match (&step.host, step.hosts.as_slice()) {
            (Some(host), _) => host.clone(),
            (None, []) => "prime".to_string(),
            (None, hosts) => format!("any of {}", hosts.join(",")),
        };
        let pools = match step.acquires.as_slice() {
            [] => "-".to_string(),
            taken => taken
                .iter()
                .map(|(pool, units)| {
                    let shared = flow.shared_resources.contains(pool);
                    format!("{pool}:{units}{}", if shared { " (shared)" } else { "" })
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let note = match placed.contains(step.name.as_str()) {
            true => "",
            false => "  (not reached from the start triggers)",
        };
        let _ = writeln!(
            out,
            "  {:width$}  host {host}  pools {pools}{note}",
            step.name
        );
    }
}

/// The names of the steps the start triggers reach, in the order they are reached: breadth
/// first from the start events, through each event's associations in the file's order, a
/// step's status events, and an expression event once any of its operands is reached.
fn reach_order<'f>(flow: &'f FlowFile, starts: &[(String, String)]) -> Vec<&'f StepSpec> {
    let mut events: VecDeque<&'f str> = VecDeque::new();
    let mut seen_events: HashSet<&'f str> = HashSet::new();
    let mut order: Vec<&'f StepSpec> = Vec::new();
    let mut placed: HashSet<&'f str> = HashSet::new();
    let steps: HashMap<&str, &'f StepSpec> =
        flow.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let step_named = |name: &str| steps.get(name).copied();
    for (event, _) in starts {
        if let Some(spec) = flow.events.iter().find(|e| e.name == *event) {
            if seen_events.insert(&spec.name) {
                events.push_back(&spec.name);
            }
        }
    }
    while let Some(event) = events.pop_front() {
        let mut fired: Vec<&'f str> = Vec::new();
        for assoc in flow.assocs.iter().filter(|a| a.event == event) {
            for target in &assoc.targets {
                match (target, step_named(target.name())) {
                    (eventor::AssocTarget::Event(name), _) => fired.push(name),
                    (_, Some(step)) => {
                        if placed.insert(&step.name) {
                            order.push(step);
                            fired.extend(status_events(step));
                        }
                    }
                    (_, None) => fired.push(target.name()),
                }
            }
        }
        let dependents = flow.events.iter().filter(|e| {
            e.expr
                .as_ref()
                .is_some_and(|expr| expr.events().contains(&event))
        });
        fired.extend(dependents.map(|e| e.name.as_str()));
        for name in fired {
            if seen_events.insert(name) {
                events.push_back(name);
            }
        }
    }
    order
}

/// The events a step's statuses fire.
fn status_events(step: &StepSpec) -> impl Iterator<Item = &str> {
    let t = &step.triggers;
    [&t.ready, &t.active, &t.success, &t.failure, &t.complete]
        .into_iter()
        .flatten()
        .map(String::as_str)
}

/// What a recovery would do, from the run's stored history: its start triggers, and per
/// task stored before, skip or rerun. Answers the start triggers.
async fn recovery_plan(
    out: &mut String,
    planned: &Planned<'_>,
) -> Result<Vec<(String, String)>, Failure> {
    let flow = planned.flow;
    let store = planned.store.open_existing().await?;
    let history = history(&store, planned).await?;
    let latest = history.last().expect("a non-empty history");
    let base = match planned.recovery {
        None => latest.key.recovery,
        Some(n) if history.iter().any(|r| r.key.recovery == n) => n,
        Some(n) => {
            return Err(bad(anyhow::anyhow!(
                "--recovery {n}: run {} has no recovery {n}",
                latest.key.run_id
            )))
        }
    };
    let _ = writeln!(
        out,
        "recovers run {} from recovery {base} as recovery {}",
        latest.key.run_id,
        latest.key.recovery + 1
    );
    let entry = entry_events(flow);
    let mut starts = Vec::new();
    let mut previous = BTreeMap::new();
    for record in history.iter().filter(|r| r.key.recovery <= base) {
        let triggers = store
            .triggers(record.key.clone())
            .await
            .map_err(run_failure)?;
        let entries = triggers.into_iter().filter(|t| entry.contains(&t.event));
        starts.extend(entries.map(|t| (t.event, t.sequence)));
        // In recovery order: a task's latest recovery wins.
        for task in store.tasks(record.key.clone()).await.map_err(run_failure)? {
            previous.insert((task.step, task.sequence), task.status);
        }
    }
    if starts.is_empty() {
        starts = file_triggers(flow);
    }
    if let FlowTriggers::Given(given) = planned.triggers {
        starts.extend(given.iter().cloned());
    }
    // Each recovery stored its start again: a trigger fires once.
    let mut seen = HashSet::new();
    starts.retain(|trigger| seen.insert(trigger.clone()));
    start_triggers(out, &starts);
    tasks_plan(out, flow, planned.rerun, &previous);
    Ok(starts)
}

/// What a continue would do: carry on the run's recovery from its stored triggers, tasks and
/// delays, with `--trigger`'s events added. Answers the run's triggers, stored and added.
async fn continue_plan(
    out: &mut String,
    planned: &Planned<'_>,
) -> Result<Vec<(String, String)>, Failure> {
    let store = planned.store.open_existing().await?;
    let history = history(&store, planned).await?;
    let latest = history.last().expect("a non-empty history");
    let run = match planned.recovery {
        None => latest,
        Some(n) => history
            .iter()
            .find(|r| r.key.recovery == n)
            .ok_or_else(|| {
                let id = &latest.key.run_id;
                bad(anyhow::anyhow!(
                    "--recovery {n}: run {id} has no recovery {n}"
                ))
            })?,
    };
    let _ = writeln!(
        out,
        "continues run {} recovery {} (stored {}): its stored triggers, tasks and delays carry on",
        run.key.run_id,
        run.key.recovery,
        run.status.as_str()
    );
    let stored = store.triggers(run.key.clone()).await.map_err(run_failure)?;
    let mut starts: Vec<(String, String)> =
        stored.into_iter().map(|t| (t.event, t.sequence)).collect();
    if starts.is_empty() {
        starts = file_triggers(planned.flow);
    }
    if let FlowTriggers::Given(given) = planned.triggers {
        starts.extend(given.iter().cloned());
    }
    let mut seen = HashSet::new();
    starts.retain(|trigger| seen.insert(trigger.clone()));
    start_triggers(out, &starts);
    Ok(starts)
}

/// The run's recoveries, lowest first: `--run-id`'s, else the flow's latest run's.
async fn history(store: &Store, planned: &Planned<'_>) -> Result<Vec<RunRecord>, Failure> {
    let location = &planned.store.location;
    let flow = &planned.flow.name;
    let run_id = match planned.run_id {
        Some(id) => id.to_string(),
        None => match store.latest_run(flow).await.map_err(run_failure)? {
            Some(run) => run.key.run_id.to_string(),
            None => {
                return Err(bad(anyhow::anyhow!(
                    "no run of flow {flow} to recover in {location}"
                )))
            }
        },
    };
    let history = store.run_history(&run_id).await.map_err(run_failure)?;
    if history.is_empty() {
        return Err(bad(anyhow::anyhow!(
            "no run {run_id} to recover in {location}"
        )));
    }
    Ok(history)
}

/// Per task stored before: `skip` or `rerun` as its step's recovery policy (or `--rerun`)
/// says, in the flow's step order, then by sequence.
fn tasks_plan(
    out: &mut String,
    flow: &FlowFile,
    rerun: &[RerunTask],
    previous: &BTreeMap<(String, String), TaskStatus>,
) {
    let _ = writeln!(
        out,
        "tasks stored before ({}; a task not listed runs when it is triggered):",
        previous.len()
    );
    let forced = |step: &str, sequence: &str| {
        rerun
            .iter()
            .any(|r| r.step == step && r.sequence.as_deref().is_none_or(|s| s == sequence))
    };
    for step in &flow.steps {
        let stored = previous.iter().filter(|((name, _), _)| *name == step.name);
        for ((_, sequence), status) in stored {
            let (action, why) = if forced(&step.name, sequence) {
                ("rerun", " (--rerun)")
            } else {
                match step.recovery.for_status(*status) {
                    RecoverAction::Skip => ("skip", ""),
                    _ => ("rerun", ""),
                }
            };
            let task = format!("{}[{sequence}]", step.name);
            let _ = writeln!(out, "  {action:5}  {task}  was {status}{why}");
        }
    }
}

/// The events only a trigger from outside fires (as the engine's `Program::entries`): no
/// expression, no association targets them, no step's status triggers them. A recovery
/// replays exactly these.
fn entry_events(flow: &FlowFile) -> HashSet<String> {
    let mut fired: HashSet<&str> = HashSet::new();
    for assoc in &flow.assocs {
        for target in &assoc.targets {
            if let eventor::AssocTarget::Event(name) | eventor::AssocTarget::Named(name) = target {
                fired.insert(name);
            }
        }
    }
    for step in &flow.steps {
        fired.extend(status_events(step));
    }
    let events = flow.events.iter().filter(|e| e.expr.is_none());
    let entries = events.filter(|e| !fired.contains(e.name.as_str()));
    entries.map(|e| e.name.clone()).collect()
}

fn run_failure(e: eventor_store::StoreError) -> Failure {
    Failure::Run(e.into())
}
