//! Turns a checked YAML flow file into an [`Eventor`] ready to run.

use std::path::PathBuf;

use super::file::{FlowFile, StepSpec};
use crate::api::{Eventor, EventorError, EventorOptions, Step, StepConfig};

/// Builds the flow's events, steps and associations. The flow's own `config:` keys override
/// `options.config`; `triggers` says which start triggers are queued (the flow file's, or
/// the command line's `--trigger`, which replace them).
pub fn eventor_from_flow(
    flow: &FlowFile,
    mut options: EventorOptions,
    triggers: FlowTriggers,
) -> Result<Eventor, EventorError> {
    apply_flow_config(flow, &mut options);
    let mut eventor = Eventor::new(options)?;
    for (name, default) in &flow.params {
        eventor.declare_param(name, default.as_deref())?;
    }
    for (pool, capacity) in &flow.resources {
        if flow.shared_resources.contains(pool) {
            eventor.add_shared_resource_pool(pool, *capacity)?;
        } else {
            eventor.add_resource_pool(pool, *capacity)?;
        }
    }
    for event in &flow.events {
        eventor.add_event(&event.name, event.expr.clone())?;
    }
    for spec in &flow.steps {
        eventor.add_step(step_from_spec(spec))?;
    }
    for assoc in &flow.assocs {
        eventor.add_assoc(&assoc.event, assoc.targets.iter().cloned(), assoc.delay)?;
    }
    let queued: Vec<(String, String)> = match triggers {
        FlowTriggers::FromFile => flow
            .triggers
            .iter()
            .flat_map(|t| t.sequences.iter().map(|s| (t.event.clone(), s.clone())))
            .collect(),
        FlowTriggers::Given(given) => given,
    };
    for (event, sequence) in queued {
        eventor.trigger_event(event, sequence)?;
    }
    // A recovery or continue of a run that died before it stored its start begins there.
    for t in &flow.triggers {
        for sequence in &t.sequences {
            eventor.start_if_unstarted(&t.event, sequence)?;
        }
    }
    Ok(eventor)
}

/// Which start triggers a flow run uses.
#[derive(Debug, Clone)]
pub enum FlowTriggers {
    /// The flow file's `trigger:` section.
    FromFile,
    /// These (event, sequence) pairs instead (from `--trigger`).
    Given(Vec<(String, String)>),
}

fn apply_flow_config(flow: &FlowFile, options: &mut EventorOptions) {
    options.name = flow.name.clone();
    let config = &mut options.config;
    if let Some(max) = flow.config.max_concurrent {
        config.max_concurrent = max;
    }
    if let Some(stop) = flow.config.stop_on_exception {
        config.stop_on_exception = stop;
    }
    if let Some(prefix) = &flow.config.envvar_prefix {
        config.envvar_prefix = prefix.clone();
    }
}

fn step_from_spec(spec: &StepSpec) -> Step {
    let mut step = Step::new(&spec.name);
    if let Some(run) = &spec.run {
        step = step.command(run);
    }
    step.triggers = spec.triggers.clone();
    step.config(StepConfig {
        max_concurrent: spec.max_concurrent,
        stop_on_exception: spec.stop_on_exception,
        env: spec.env.iter().cloned().collect(),
        env_from_prime: spec.env_from_prime.clone(),
        timeout: spec.timeout,
        cwd: spec.cwd.as_ref().map(PathBuf::from),
        recovery: spec.recovery,
        hosts: spec.host.iter().chain(&spec.hosts).cloned().collect(),
        acquires: spec.acquires.clone(),
        releases: spec.releases.clone(),
        retries: spec.retries,
        retry_delay: spec.retry_delay,
        retry_on: spec.retry_on.clone(),
    })
}
