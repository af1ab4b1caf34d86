//! Compiling a defined flow into the core's program: names resolved to ids, references
//! checked, and the flow's fingerprint kept with each run.

use std::sync::Arc;

use super::builder::Eventor;
use super::error::EventorError;
use super::state::TargetKind;
use super::step::DefinedStep;
use crate::engine::executor::{RunSettings, StepRuntime};
use crate::engine::prime_env::PrimeEnv;
use crate::engine::program::{
    AssocDef, Cond, EventDef, EventId, PoolDef, PoolId, Program, RetryPolicy, StepDef,
    StepTriggers, Target,
};
use crate::expr::Expr;

impl Eventor {
    /// Resolves every name into the core's program, checking references.
    pub(super) fn compile(&self) -> Result<(Program, Vec<StepRuntime>), EventorError> {
        let config = &self.options.config;
        let mut program = Program {
            name: Arc::from(self.options.name.as_str()),
            max_concurrent: config.max_concurrent,
            pools: self
                .pools
                .iter()
                .map(|(name, capacity)| PoolDef {
                    name: Arc::from(name.as_str()),
                    capacity: *capacity,
                    shared: self.shared_pools.contains(name),
                })
                .collect(),
            ..Program::default()
        };
        for (name, expr) in &self.events {
            let cond = match expr {
                Some(expr) => Some(self.resolve_expr(name, expr)?),
                None => None,
            };
            program.events.push(EventDef {
                name: Arc::from(name.as_str()),
                cond,
                dependents: Vec::new(),
                assocs: Vec::new(),
            });
        }
        let mut runtimes = Vec::with_capacity(self.steps.len());
        program.steps.reserve_exact(self.steps.len());
        for step in &self.steps {
            program.steps.push(self.compile_step(step)?);
            self.check_hosts(step)?;
            runtimes.push(runtime_of(step)?);
        }
        for (index, (event, targets, delay)) in self.assocs.iter().enumerate() {
            let context = format!("association {} (event `{event}`)", index + 1);
            let event = self.event_id(event, &context)?;
            let targets = targets
                .iter()
                .map(|(kind, name)| self.target_id(*kind, name, &context))
                .collect::<Result<_, _>>()?;
            program.assocs.push(AssocDef {
                event,
                targets,
                delay: *delay,
            });
        }
        program.link();
        Ok((program, runtimes))
    }

    fn compile_step(&self, step: &DefinedStep) -> Result<StepDef, EventorError> {
        let ids = |kind: &str, names: &[String]| -> Result<Box<[EventId]>, EventorError> {
            if names.is_empty() {
                return Ok(Box::default()); // most lists: no need to word an error's context
            }
            let context = format!("step `{}` triggers on {kind}", step.name);
            names.iter().map(|n| self.event_id(n, &context)).collect()
        };
        let t = step.triggers();
        let config = step.config();
        Ok(StepDef {
            name: step.name.clone(),
            triggers: StepTriggers {
                ready: ids("ready", &t.ready)?,
                active: ids("active", &t.active)?,
                success: ids("success", &t.success)?,
                failure: ids("failure", &t.failure)?,
                complete: ids("complete", &t.complete)?,
            },
            max_concurrent: config.max_concurrent,
            stop_on_exception: config
                .stop_on_exception
                .unwrap_or(self.options.config.stop_on_exception),
            recovery: config.recovery,
            acquires: self.pool_amounts(step, &config.acquires, true)?,
            releases: self.pool_amounts(
                step,
                config.releases.as_ref().unwrap_or(&config.acquires),
                false,
            )?,
            retry: RetryPolicy {
                retries: config.retries,
                delay: config.retry_delay,
                on: config.retry_on.clone(),
            },
        })
    }

    /// A pinned step needs a hosts file that names its hosts.
    fn check_hosts(&self, step: &DefinedStep) -> Result<(), EventorError> {
        for host in &step.config().hosts {
            let known = self
                .options
                .cluster
                .as_ref()
                .map(|c| c.hosts.host(host).is_some());
            if known != Some(true) {
                let hosts = self.options.cluster.as_ref().map(|c| &c.hosts);
                let names = hosts.iter().flat_map(|h| h.hosts.iter());
                return Err(EventorError::UnknownHost {
                    step: step.name.to_string(),
                    host: host.clone(),
                    hosts_file: hosts.map(|h| h.path.clone()),
                    near: crate::yaml::did_you_mean(host, names.map(|h| h.name.as_str())),
                });
            }
        }
        Ok(())
    }

    /// Resolves `(pool, units)` pairs; an acquisition above the pool's capacity could never
    /// be granted, so it is refused here rather than waiting forever.
    fn pool_amounts(
        &self,
        step: &DefinedStep,
        amounts: &[(String, u32)],
        acquiring: bool,
    ) -> Result<Box<[(PoolId, u32)]>, EventorError> {
        amounts
            .iter()
            .map(|(pool, units)| {
                let index = self.pools.iter().position(|(name, _)| name == pool);
                let index = index.ok_or_else(|| EventorError::UnknownPool {
                    step: step.name.to_string(),
                    pool: pool.clone(),
                })?;
                let capacity = self.pools[index].1;
                if acquiring && *units > capacity {
                    return Err(EventorError::OverCapacity {
                        step: step.name.to_string(),
                        pool: pool.clone(),
                        wanted: *units,
                        capacity,
                    });
                }
                Ok((PoolId(index as u32), *units))
            })
            .collect()
    }

    fn event_id(&self, name: &str, context: &str) -> Result<EventId, EventorError> {
        self.names
            .event(name)
            .ok_or_else(|| EventorError::UnknownEvent {
                context: context.to_string(),
                name: name.to_string(),
            })
    }

    /// An association's target: the step or event it names; a bare name that is both must
    /// say which.
    fn target_id(
        &self,
        kind: TargetKind,
        name: &str,
        context: &str,
    ) -> Result<Target, EventorError> {
        let step = self.names.step(name).map(Target::Step);
        let event = self.names.event(name).map(Target::Event);
        let found = match kind {
            TargetKind::Either if step.is_some() && event.is_some() => {
                return Err(EventorError::AmbiguousTarget {
                    context: context.to_string(),
                    name: name.to_string(),
                })
            }
            TargetKind::Either => step.or(event),
            TargetKind::Step => step,
            TargetKind::Event => event,
        };
        let what = match kind {
            TargetKind::Either => "step or event",
            TargetKind::Step => "step",
            TargetKind::Event => "event",
        };
        found.ok_or_else(|| EventorError::UnknownTarget {
            context: context.to_string(),
            what,
            name: name.to_string(),
        })
    }

    fn resolve_expr(&self, event: &str, expr: &Expr) -> Result<Cond, EventorError> {
        let context = format!("expression of event `{event}`");
        let all = |items: &[Expr]| -> Result<Vec<Cond>, EventorError> {
            items.iter().map(|e| self.resolve_expr(event, e)).collect()
        };
        Ok(match expr {
            Expr::Event { name, column } => {
                let at = if *column > 0 {
                    format!(" (column {column})")
                } else {
                    String::new()
                };
                Cond::Event(self.event_id(name, &format!("{context}{at}"))?)
            }
            Expr::And(items) => Cond::And(all(items)?),
            Expr::Or(items) => Cond::Or(all(items)?),
            Expr::Not(inner) => Cond::Not(Box::new(self.resolve_expr(event, inner)?)),
        })
    }

    /// The flow's shape as JSON, kept with the run for later inspection and `continue`.
    ///
    /// Sizes and a fingerprint rather than the whole definition: a fan-out of 100,000 steps
    /// would otherwise write (and briefly hold) megabytes of JSON per run. Recover and
    /// continue compare the fingerprint to warn when the flow changed in between.
    pub(super) fn describe_program(&self) -> String {
        format!(
            r#"{{"events":{},"steps":{},"assocs":{},"fingerprint":"{:016x}"}}"#,
            self.events.len(),
            self.steps.len(),
            self.assocs.len(),
            self.fingerprint()
        )
    }

    /// FNV-1a over the names and wiring of the flow: stable across builds and platforms.
    fn fingerprint(&self) -> u64 {
        let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
        for (name, expr) in &self.events {
            hash.text(name);
            hash.text(&expr.as_ref().map(|e| e.to_string()).unwrap_or_default());
        }
        for step in &self.steps {
            hash.text(&step.name);
            let t = step.triggers();
            for list in [&t.ready, &t.active, &t.success, &t.failure, &t.complete] {
                list.iter().for_each(|e| hash.text(e));
                hash.text("|");
            }
        }
        for (event, targets, delay) in &self.assocs {
            hash.text(event);
            for (kind, name) in targets {
                // A bare name hashes as it always did, so older runs keep their fingerprint.
                match kind {
                    TargetKind::Either => {}
                    TargetKind::Step => hash.text("step:"),
                    TargetKind::Event => hash.text("event:"),
                }
                hash.text(name);
            }
            hash.text(&delay.map(|d| d.as_micros().to_string()).unwrap_or_default());
        }
        hash.0
    }
}

/// How a step's tasks run, from its spec; its `env_from_prime` is read here, so a variable
/// the prime lacks stops the run before anything is stored.
fn runtime_of(step: &DefinedStep) -> Result<StepRuntime, EventorError> {
    let config = step.config();
    let whose = format!("step {}", step.name);
    let settings = RunSettings {
        hosts: config.hosts.iter().map(|h| Arc::from(h.as_str())).collect(),
        env: config.env.clone().into_iter().collect(),
        from_prime: PrimeEnv::read(&config.env_from_prime, &whose)?,
        cwd: config.cwd.clone(),
        timeout: config.timeout,
    };
    Ok(StepRuntime::new(step.action.clone(), settings))
}

/// The FNV-1a hash, fed field by field (each field ends with a separator byte).
struct Fnv(u64);

impl Fnv {
    fn text(&mut self, text: &str) {
        for byte in text.bytes().chain([0xff]) {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
