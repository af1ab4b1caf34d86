//! Golden scripts for the scheduling core: a program, inputs in, changes and effects out.
//!
//! Each file in `src/engine/golden/` holds a program, a `----` line, then a transcript. Lines
//! starting with `>` are inputs; the lines after each input are what the core must produce
//! (`+` a store change, `!` an effect, `=` the state afterwards, `quiet` when nothing
//! runs or can start). The test replays the inputs and compares the whole transcript; `UPDATE_GOLDEN=1 cargo test` rewrites the files, and
//! `git diff` then shows exactly which transitions changed.
//!
//! Program lines: `event NAME [= EXPR]`, `pool NAME CAPACITY`,
//! `step NAME [status=ev,ev …] [max=N] [stop=false] [acquires=pool:n,…] [releases=pool:n|-]
//! [recovery=rerun] [recover_failure=skip|rerun] [recover_ready=skip|rerun] [retries=N] [retry_delay=MS]`, `assoc EVENT -> TARGET … [after MS]`,
//! `max_concurrent N`, `previous STEP[SEQ] STATUS ATTEMPT` (the recovery being recovered from),
//! `rerun STEP[SEQ]` or `rerun STEP` (`--rerun`: run again whatever it did before).
//! Inputs: `trigger EVENT SEQ`, `finish STEP[SEQ] ok|fail [TEXT]`, `pid STEP[SEQ] N`,
//! `timer`, `granted|refused STEP[SEQ]` (the store's answer for shared units), `freed`
//! (shared units came back), each optionally preceded by `@MS` (the clock, in milliseconds).
//! `pool NAME UNITS shared` declares a shared pool.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use eventor_store::Change;

use eventor_agent::MaxConcurrent;

use super::core::{Core, CoreOptions, Effect, Input, PreviousTask, Reruns, TaskEnd};
use super::program::{
    AssocDef, Cond, EventDef, EventId, PoolDef, PoolId, Program, RecoverAction, RetryMatch,
    RetryOn, StepDef, StepId, Target,
};
use crate::expr::Expr;

struct Script {
    program: Program,
    previous: HashMap<(StepId, Arc<str>), PreviousTask>,
    rerun: Reruns,
    header: Vec<String>,
    body: Vec<String>,
}

fn parse_script(text: &str) -> Script {
    let mut lines = text.lines();
    let mut header = Vec::new();
    let mut program = Program::default();
    let mut previous = HashMap::new();
    let mut rerun = Reruns::default();
    let mut names: HashMap<String, Target> = HashMap::new();
    let mut pending_exprs = Vec::new();
    for line in lines.by_ref() {
        header.push(line.to_string());
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            Some("----") => break,
            None | Some("#") => {}
            Some(w) if w.starts_with('#') => {}
            Some("event") => {
                let id = EventId(program.events.len() as u32);
                names.insert(words[1].to_string(), Target::Event(id));
                if words.get(2) == Some(&"=") {
                    pending_exprs.push((id, words[3..].join(" ")));
                }
                program.events.push(EventDef {
                    name: Arc::from(words[1]),
                    cond: None,
                    dependents: vec![],
                    assocs: vec![],
                });
            }
            Some("step") => {
                let id = StepId(program.steps.len() as u32);
                names.insert(words[1].to_string(), Target::Step(id));
                let step = parse_step(&words, &names, &program.pools);
                program.steps.push(step);
            }
            Some("pool") => program.pools.push(PoolDef {
                name: Arc::from(words[1]),
                capacity: words[2].parse().expect("pool capacity"),
                shared: words.get(3) == Some(&"shared"),
            }),
            Some("previous") => {
                let (step, sequence) = split_key(words[1]);
                let Some(Target::Step(step)) = names.get(step) else {
                    panic!("previous: unknown step {step}")
                };
                let task = PreviousTask {
                    status: words[2].parse().expect("status"),
                    attempt: words[3].parse().expect("attempt"),
                    recovery: 0,
                };
                previous.insert((*step, Arc::from(sequence)), task);
            }
            Some("rerun") => {
                let (step, sequence) = match words[1].split_once('[') {
                    Some(_) => {
                        let (step, sequence) = split_key(words[1]);
                        (step, Some(Arc::from(sequence)))
                    }
                    None => (words[1], None),
                };
                let Some(Target::Step(step)) = names.get(step) else {
                    panic!("rerun: unknown step {step}")
                };
                rerun.insert((*step, sequence));
            }
            Some("assoc") => program.assocs.push(parse_assoc(&words, &names)),
            Some("max_concurrent") => program.max_concurrent = limit(words[1]),
            Some(other) => panic!("unknown program line {other:?}"),
        }
    }
    for (id, text) in pending_exprs {
        let expr = Expr::parse(&text).expect("golden expression parses");
        program.events[id.0 as usize].cond = Some(resolve(&expr, &names));
    }
    program.link();
    Script {
        program,
        previous,
        rerun,
        header,
        body: lines.map(str::to_string).collect(),
    }
}

fn event_of(names: &HashMap<String, Target>, name: &str) -> EventId {
    match names.get(name) {
        Some(Target::Event(id)) => *id,
        _ => panic!("golden script: unknown event {name} (events must come first)"),
    }
}

fn parse_step(words: &[&str], names: &HashMap<String, Target>, pools: &[PoolDef]) -> StepDef {
    let mut def = StepDef {
        name: Arc::from(words[1]),
        stop_on_exception: true,
        ..StepDef::default()
    };
    let mut releases = None;
    for word in &words[2..] {
        let (key, value) = word.split_once('=').expect("key=value");
        let events = || value.split(',').map(|e| event_of(names, e)).collect();
        match key {
            "ready" => def.triggers.ready = events(),
            "active" => def.triggers.active = events(),
            "success" => def.triggers.success = events(),
            "failure" => def.triggers.failure = events(),
            "complete" => def.triggers.complete = events(),
            "max" => def.max_concurrent = limit(value),
            "stop" => def.stop_on_exception = value == "true",
            "acquires" => def.acquires = amounts(value, pools).into(),
            "releases" => releases = Some(amounts(value, pools).into()),
            "recovery" => def.recovery.success = RecoverAction::Rerun,
            "recover_failure" => def.recovery.failure = action(value),
            "recover_ready" => def.recovery.ready = action(value),
            "retries" => def.retry.retries = value.parse().expect("retries"),
            "retry_on" => {
                let on = value
                    .split(',')
                    .map(|w| RetryMatch::parse(w).expect("retry_on"));
                def.retry.on = RetryOn(on.collect());
            }
            "retry_delay" => {
                def.retry.delay = Duration::from_millis(value.parse().expect("retry_delay MS"))
            }
            other => panic!("unknown step key {other}"),
        }
    }
    def.releases = releases.unwrap_or_else(|| def.acquires.clone());
    def
}

/// `db:1,cpu:2` (or `-` for none) into pool amounts.
fn amounts(text: &str, pools: &[PoolDef]) -> Vec<(PoolId, u32)> {
    text.split(',')
        .filter(|part| *part != "-")
        .map(|part| {
            let (pool, units) = part.split_once(':').expect("pool:units");
            let index = pools
                .iter()
                .position(|p| &*p.name == pool)
                .expect("known pool");
            (PoolId(index as u32), units.parse().expect("units"))
        })
        .collect()
}

fn split_key(key: &str) -> (&str, &str) {
    let (step, rest) = key.split_once('[').expect("STEP[SEQ]");
    (step, rest.trim_end_matches(']'))
}

fn parse_assoc(words: &[&str], names: &HashMap<String, Target>) -> AssocDef {
    let mut delay = None;
    let mut targets = Vec::new();
    let mut rest = words[3..].iter();
    while let Some(word) = rest.next() {
        if *word == "after" {
            let ms: u64 = rest.next().and_then(|w| w.parse().ok()).expect("after MS");
            delay = Some(Duration::from_millis(ms));
        } else {
            targets.push(*names.get(*word).expect("known target"));
        }
    }
    AssocDef {
        event: event_of(names, words[1]),
        targets,
        delay,
    }
}

fn resolve(expr: &Expr, names: &HashMap<String, Target>) -> Cond {
    match expr {
        Expr::Event { name, .. } => Cond::Event(event_of(names, name)),
        Expr::And(items) => Cond::And(items.iter().map(|e| resolve(e, names)).collect()),
        Expr::Or(items) => Cond::Or(items.iter().map(|e| resolve(e, names)).collect()),
        Expr::Not(inner) => Cond::Not(Box::new(resolve(inner, names))),
    }
}

/// Replays the inputs of a script and renders the transcript.
fn replay(script: &Script) -> String {
    let program = Arc::new(script.program.clone());
    let mut core = Core::new(
        program.clone(),
        CoreOptions {
            previous: script.previous.clone(),
            rerun: script.rerun.clone(),
        },
    );
    let mut out = script.header.join("\n");
    out.push('\n');
    for line in &script.body {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && !line.is_empty()) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let Some(input) = trimmed.strip_prefix('>') else {
            continue; // an expected-output line: regenerated below
        };
        writeln!(out, "{line}").unwrap();
        apply_input(&mut core, &program, input.trim());
        render_output(&mut core, &mut out);
    }
    out
}

fn apply_input(core: &mut Core, program: &Program, input: &str) {
    let mut words: Vec<&str> = input.split_whitespace().collect();
    let mut now = 0;
    if let Some(at) = words.first().and_then(|w| w.strip_prefix('@')) {
        now = at.parse::<i64>().expect("@MS") * 1000;
        words.remove(0);
    }
    match words[0] {
        "trigger" => {
            let event = program
                .events
                .iter()
                .position(|e| &*e.name == words[1])
                .expect("known event");
            let input = Input::Trigger {
                event: EventId(event as u32),
                sequence: Arc::from(words[2]),
            };
            core.handle(input, now);
        }
        "finish" => {
            let task = find(core, program, words[1]);
            let success = words[2] == "ok";
            let text = (words.len() > 3).then(|| words[3..].join(" "));
            let mut end = match (success, text) {
                (true, text) => TaskEnd::success(text),
                (false, text) => TaskEnd {
                    error: text,
                    ..TaskEnd::failure("")
                },
            };
            // `fail:CLASS` fails with that class (`fail:exit:3`, `fail:timeout`).
            if let Some(class) = words[2].strip_prefix("fail:") {
                end = end.classed(class.parse().expect("a failure class"));
            }
            let recorded = false;
            core.handle(
                Input::TaskFinished {
                    task,
                    end,
                    recorded,
                },
                now,
            );
        }
        "pid" => {
            let task = find(core, program, words[1]);
            let pid = words[2].parse().expect("pid");
            core.handle(Input::TaskPid { task, pid }, now);
        }
        "timer" => core.handle(Input::TimerDue, now),
        "granted" | "refused" => {
            let task = find(core, program, words[1]);
            let granted = words[0] == "granted";
            core.handle(Input::Granted { task, granted }, now);
        }
        "freed" => core.handle(Input::PoolsFreed, now),
        other => panic!("unknown input {other}"),
    }
}

fn find(core: &Core, program: &Program, key: &str) -> super::core::TaskId {
    let (step, sequence) = split_key(key);
    let step = program
        .steps
        .iter()
        .position(|s| &*s.name == step)
        .expect("known step");
    core.find_task(StepId(step as u32), sequence)
        .expect("task exists")
}

fn render_output(core: &mut Core, out: &mut String) {
    let (changes, effects) = core.take_output();
    for change in changes {
        writeln!(out, "  + {}", render_change(core.program(), &change)).unwrap();
    }
    for effect in effects {
        let text = match effect {
            Effect::Start(task) => {
                let t = core.task(task);
                format!("start {}[{}]", core.program().step(t.step).name, t.sequence)
            }
            Effect::Waits { task, pool } => {
                let t = core.task(task);
                let step = &core.program().step(t.step).name;
                format!("{step}[{}] waits for pool {pool}", t.sequence)
            }
            Effect::Acquire(task) => {
                let t = core.task(task);
                let step = &core.program().step(t.step).name;
                format!(
                    "acquire {:?} for {step}[{}]",
                    core.shared_units(task),
                    t.sequence
                )
            }
        };
        writeln!(out, "  ! {text}").unwrap();
    }
    let stopped = if core.stopped() { " stopped" } else { "" };
    // Whether the driver would see the run (or loop) as over: nothing runs or can start.
    let quiet = if core.is_quiescent() { " quiet" } else { "" };
    writeln!(
        out,
        "  = active {} waiting {} delays {} failed {}{stopped}{quiet}",
        core.active(),
        core.waiting(),
        core.pending_delays(),
        core.failed().len()
    )
    .unwrap();
}

fn render_change(program: &Program, change: &Change) -> String {
    let retry = |step: i32, sequence: &str, number: i32| {
        let name = &program.step(StepId(step as u32)).name;
        format!("retry #{number} of {name}[{sequence}]")
    };
    match change {
        Change::Trigger {
            event, sequence, ..
        } => format!("trigger {event}[{sequence}]"),
        Change::TaskCreated {
            step,
            sequence,
            status,
            attempt,
            ..
        } => format!("create {step}[{sequence}] {status} attempt {attempt}"),
        Change::TaskTransition {
            step,
            sequence,
            from,
            to,
            error,
            ..
        } => {
            let error = error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            format!("{step}[{sequence}] {from} -> {to}{error}")
        }
        Change::TaskPid {
            step,
            sequence,
            pid,
            ..
        } => format!("pid {step}[{sequence}] {pid}"),
        Change::TaskHost {
            step,
            sequence,
            host,
            ..
        } => format!("host {step}[{sequence}] {host}"),
        Change::TaskRetry {
            step,
            sequence,
            new_attempt,
            ..
        } => format!("retry {step}[{sequence}] as attempt {new_attempt}"),
        Change::DelayArmed {
            assoc,
            sequence,
            due_at,
            ..
        } => format!("arm delay #{assoc}[{sequence}] due @{}", due_at / 1000),
        Change::RetryScheduled {
            step,
            sequence,
            number,
            due_at,
            ..
        } => format!(
            "arm {} due @{}",
            retry(*step, sequence, *number),
            due_at / 1000
        ),
        Change::GrantReleased {
            step,
            sequence,
            attempt,
        } => format!("release grant of {step}[{sequence}] attempt {attempt}"),
        Change::DelayFired { assoc, sequence } => format!("fire delay #{assoc}[{sequence}]"),
        Change::RetryTaken {
            step,
            sequence,
            number,
        } => format!("fire {}", retry(*step, sequence, *number)),
    }
}

#[test]
fn golden_scripts() {
    crate::golden_files::check_golden_dir("src/engine/golden", |text| replay(&parse_script(text)));
}

/// A limit as a script writes it (a number; anything else: none).
fn limit(text: &str) -> MaxConcurrent {
    MaxConcurrent::at_most(text.parse().unwrap_or(0))
}

/// A recovery action as a script writes it.
fn action(text: &str) -> RecoverAction {
    match text {
        "skip" => RecoverAction::Skip,
        "rerun" => RecoverAction::Rerun,
        other => panic!("unknown recovery action {other}"),
    }
}
