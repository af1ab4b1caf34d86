//! Property tests of the scheduling core over random programs and random completion orders.
//!
//! Invariants: each task starts at most once per attempt, and at most `retries + 1` times;
//! the limits are never exceeded;
//! the changes the core emits replay cleanly (no duplicate trigger or task, every transition
//! starts from the status the store holds); and an unstopped run that has nothing
//! active has nothing waiting either.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use eventor_store::{Change, TaskStatus};
use proptest::prelude::*;

use eventor_agent::MaxConcurrent;

use super::core::{Core, CoreOptions, Effect, Input, TaskEnd, TaskId};
use super::program::{AssocDef, Cond, EventDef, EventId, Program, StepDef, StepId, Target};

const PLAIN_EVENTS: u32 = 5;

fn cond_strategy() -> impl Strategy<Value = Cond> {
    let leaf = (0..PLAIN_EVENTS).prop_map(|e| Cond::Event(EventId(e)));
    leaf.prop_recursive(3, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(Cond::And),
            prop::collection::vec(inner.clone(), 1..3).prop_map(Cond::Or),
            inner.prop_map(|c| Cond::Not(Box::new(c))),
        ]
    })
}

fn events_strategy(total: u32) -> impl Strategy<Value = Vec<EventId>> {
    prop::collection::vec((0..total).prop_map(EventId), 0..2)
}

fn step_strategy(total_events: u32) -> impl Strategy<Value = StepDef> {
    (
        events_strategy(total_events),
        events_strategy(total_events),
        events_strategy(total_events),
        prop::option::of(1usize..3),
        any::<bool>(),
        0u32..3,
    )
        .prop_map(|(success, failure, complete, max, stop, retries)| StepDef {
            name: Arc::from("step"),
            triggers: super::program::StepTriggers {
                success: success.into(),
                failure: failure.into(),
                complete: complete.into(),
                ..Default::default()
            },
            max_concurrent: MaxConcurrent::at_most(max.unwrap_or(0)),
            stop_on_exception: stop,
            retry: super::program::RetryPolicy {
                retries,
                delay: std::time::Duration::ZERO,
                on: Default::default(),
            },
            ..StepDef::default()
        })
}

fn program_strategy() -> impl Strategy<Value = Program> {
    let exprs = prop::collection::vec(cond_strategy(), 0..3);
    exprs
        .prop_flat_map(|exprs| {
            let total_events = PLAIN_EVENTS + exprs.len() as u32;
            let steps = prop::collection::vec(step_strategy(total_events), 1..6);
            (Just(exprs), steps, prop::option::of(1usize..4)).prop_flat_map(
                move |(exprs, steps, max)| {
                    let n_steps = steps.len() as u32;
                    let target = prop_oneof![
                        (0..n_steps).prop_map(|s| Target::Step(StepId(s))),
                        (0..total_events).prop_map(|e| Target::Event(EventId(e))),
                    ];
                    let assoc = (0..total_events, prop::collection::vec(target, 1..4));
                    let assocs = prop::collection::vec(assoc, 1..8);
                    (Just(exprs), Just(steps), Just(max), assocs)
                },
            )
        })
        .prop_map(|(exprs, steps, max, assocs)| build(exprs, steps, max, assocs))
}

fn build(
    exprs: Vec<Cond>,
    mut steps: Vec<StepDef>,
    max: Option<usize>,
    assocs: Vec<(u32, Vec<Target>)>,
) -> Program {
    let mut events: Vec<EventDef> = (0..PLAIN_EVENTS)
        .map(|i| event_def(format!("e{i}"), None))
        .collect();
    for (i, cond) in exprs.into_iter().enumerate() {
        events.push(event_def(format!("x{i}"), Some(cond)));
    }
    for (i, step) in steps.iter_mut().enumerate() {
        step.name = Arc::from(format!("s{i}").as_str());
    }
    let assocs = assocs
        .into_iter()
        .map(|(event, targets)| AssocDef {
            event: EventId(event),
            targets,
            delay: None,
        })
        .collect();
    let mut program = Program {
        name: Arc::from("prop"),
        events,
        steps,
        assocs,
        pools: vec![],
        max_concurrent: MaxConcurrent::at_most(max.unwrap_or(0)),
    };
    program.link();
    program
}

fn event_def(name: String, cond: Option<Cond>) -> EventDef {
    EventDef {
        name: Arc::from(name.as_str()),
        cond,
        dependents: vec![],
        assocs: vec![],
    }
}

/// What the store would hold after applying the core's changes, checking each one.
#[derive(Default)]
struct StoreModel {
    triggers: HashSet<(String, String)>,
    tasks: HashMap<(String, String), TaskStatus>,
}

impl StoreModel {
    fn apply(&mut self, change: &Change) -> Result<(), String> {
        match change {
            Change::Trigger {
                event, sequence, ..
            } => {
                let fresh = self
                    .triggers
                    .insert((event.to_string(), sequence.to_string()));
                fresh
                    .then_some(())
                    .ok_or(format!("duplicate trigger {event}[{sequence}]"))
            }
            Change::TaskCreated {
                step,
                sequence,
                status,
                ..
            } => {
                let key = (step.to_string(), sequence.to_string());
                match self.tasks.insert(key, *status) {
                    None => Ok(()),
                    Some(_) => Err(format!("duplicate task {step}[{sequence}]")),
                }
            }
            Change::TaskTransition {
                step,
                sequence,
                from,
                to,
                ..
            } => {
                let key = (step.to_string(), sequence.to_string());
                let stored = self
                    .tasks
                    .get_mut(&key)
                    .ok_or("transition of a missing task")?;
                if stored != from {
                    return Err(format!("{step}[{sequence}] is {stored}, not {from}"));
                }
                *stored = *to;
                Ok(())
            }
            Change::TaskRetry {
                step,
                sequence,
                from,
                ..
            } => {
                let key = (step.to_string(), sequence.to_string());
                let stored = self.tasks.get_mut(&key).ok_or("retry of a missing task")?;
                if stored != from {
                    return Err(format!("retry: {step}[{sequence}] is {stored}, not {from}"));
                }
                *stored = TaskStatus::Ready;
                Ok(())
            }
            Change::TaskPid { .. }
            | Change::TaskHost { .. }
            | Change::GrantReleased { .. }
            | Change::DelayArmed { .. }
            | Change::DelayFired { .. }
            | Change::RetryScheduled { .. }
            | Change::RetryTaken { .. } => Ok(()),
        }
    }
}

/// One random action of the simulated world.
#[derive(Debug, Clone)]
enum Step {
    Trigger(u32, u8),
    /// Finish the n-th running task (modulo how many run) with success or failure.
    Finish(usize, bool),
}

fn world_strategy() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        1 => (0..PLAIN_EVENTS, 1u8..4).prop_map(|(e, s)| Step::Trigger(e, s)),
        4 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(i, ok)| Step::Finish(i, ok)),
    ];
    prop::collection::vec(step, 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn core_invariants_hold(program in program_strategy(), world in world_strategy()) {
        let program = Arc::new(program);
        let mut core = Core::new(program.clone(), CoreOptions::default());
        let mut model = StoreModel::default();
        let mut running: Vec<TaskId> = Vec::new();
        let mut started: HashSet<(TaskId, i32)> = HashSet::new();
        let mut tick = 0;
        let mut feed = |core: &mut Core, input: Input, running: &mut Vec<TaskId>| -> Result<(), TestCaseError> {
            tick += 1;
            core.handle(input, tick);
            let (changes, effects) = core.take_output();
            for change in &changes {
                model.apply(change).map_err(TestCaseError::fail)?;
            }
            for effect in effects {
                let task = match effect {
                    Effect::Start(task) => task,
                    Effect::Waits { .. } => continue,
                    Effect::Acquire(_) => {
                        return Err(TestCaseError::fail("no shared pools here: nothing to acquire"))
                    }
                };
                let attempt = core.task(task).attempt;
                prop_assert!(started.insert((task, attempt)), "task {task:?} started twice");
                let retries = program.step(core.task(task).step).retry.retries;
                prop_assert!(attempt as u32 <= retries + 1, "attempt {attempt} over the retries");
                running.push(task);
            }
            check_limits(core, &program, running)?;
            Ok(())
        };
        // Play the world, then let every running task finish so the run can end.
        let tail = std::iter::repeat_n(Step::Finish(0, true), 200);
        for step in world.into_iter().chain(tail) {
            let input = match step {
                Step::Trigger(event, seq) => Input::Trigger {
                    event: EventId(event),
                    sequence: Arc::from(seq.to_string().as_str()),
                },
                Step::Finish(_, _) if running.is_empty() => continue,
                Step::Finish(i, ok) => {
                    let task = running.remove(i % running.len());
                    let end = if ok { TaskEnd::success(None) } else { TaskEnd { error: None, ..TaskEnd::failure("") } };
                    Input::TaskFinished { task, end, recorded: false }
                }
            };
            feed(&mut core, input, &mut running)?;
        }
        prop_assert!(running.is_empty());
        prop_assert_eq!(core.active(), 0);
        if !core.stopped() {
            prop_assert_eq!(core.waiting(), 0, "nothing may wait in an unstopped, idle run");
        }
    }
}

fn check_limits(core: &Core, program: &Program, running: &[TaskId]) -> Result<(), TestCaseError> {
    prop_assert_eq!(core.active(), running.len());
    if let Some(max) = program.max_concurrent.get() {
        prop_assert!(
            running.len() <= max,
            "{} running over the limit {}",
            running.len(),
            max
        );
    }
    let mut per_step: HashMap<StepId, usize> = HashMap::new();
    for task in running {
        *per_step.entry(core.task(*task).step).or_default() += 1;
    }
    for (step, count) in per_step {
        if let Some(max) = program.step(step).max_concurrent.get() {
            prop_assert!(
                count <= max,
                "step {:?}: {} running over {}",
                step,
                count,
                max
            );
        }
    }
    Ok(())
}

/// A fan-out bigger than one turn comes out in parts of at most `TURN_CHANGES` changes:
/// each task is created once, and each part starts only tasks created in it or before.
#[test]
fn a_big_fan_out_streams_in_parts() {
    const STEPS: u32 = 2 * super::core::TURN_CHANGES as u32 + 100;
    let steps = (0..STEPS).map(|_| StepDef::default()).collect();
    let targets = (0..STEPS).map(|s| Target::Step(StepId(s))).collect();
    let program = Arc::new(build(vec![], steps, None, vec![(0, targets)]));
    let mut core = Core::new(program, CoreOptions::default());
    let sequence: Arc<str> = Arc::from("1");
    let input = Input::Trigger {
        event: EventId(0),
        sequence,
    };
    core.handle(input, 1);
    let (mut parts, mut created, mut started) = (0, HashSet::new(), 0);
    loop {
        let (changes, effects) = core.take_output();
        if changes.is_empty() && effects.is_empty() && !core.has_more_work() {
            break;
        }
        assert!(
            changes.len() <= super::core::TURN_CHANGES + 1,
            "{}",
            changes.len()
        );
        for change in &changes {
            if let Change::TaskCreated { step, .. } = change {
                assert!(created.insert(step.clone()), "{step} created twice");
            }
        }
        for effect in effects {
            let Effect::Start(task) = effect else {
                continue;
            };
            let name = core.program().step(core.task(task).step).name.clone();
            assert!(
                created.contains(&name),
                "{name} started before it was committed"
            );
            started += 1;
        }
        parts += 1;
        core.resume(3);
    }
    assert_eq!((created.len(), started), (STEPS as usize, STEPS as usize));
    assert!(parts >= 3, "{parts} parts");
}
