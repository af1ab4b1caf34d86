//! Golden scripts for the cluster's core: hosts and tasks in, the core's actions out.
//!
//! Each file in `src/cluster/golden/` holds settings, a `----` line, then a transcript.
//! Lines starting with `>` are inputs, each optionally preceded by `@MS` (the monotonic
//! clock, in milliseconds); the lines after each input are what the core answers (`!` an
//! action, `=` the table afterwards). The test replays the inputs and compares the whole
//! transcript; `UPDATE_GOLDEN=1 cargo test` rewrites the files, and `git diff` shows exactly
//! which decisions changed.
//!
//! Settings: `lease MS` (every host's, unless its `up` line says `lease=MS`), `margin MS`,
//! `floor MS` (all 0 when absent), `quarantine FAILURES WITHIN_MS COOLDOWN_MS` (every
//! host's; 3, 10 min, 5 min when absent).
//! Inputs (a task is `NAME` or `NAME#ATTEMPT`, attempt 1 by default; tasks of one name are
//! one engine task, as a retry is):
//! `up HOST CAP [norecord] [lease=MS] [adopt TASK,TASK…]`, `lost HOST REASON…`,
//! `submit TASK HOST,HOST… [wait]` (`wait`: its step would retry a host failure),
//! `undelivered TASK REASON…`, `ran TASK`, `finish TASK ok|fail [TEXT…]` (`fail cannot
//! start …` is a start failure), `unrecorded TASK`, `cancel`, `tick`, `letgo REASON…`,
//! `agentfail HOST REASON…`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use eventor_agent::TaskEnd;
use eventor_protocol::TaskKey;

use super::core::{Action, ClusterCore, HealthState, Input, LeaseRule};
use super::quarantine::{QuarantineRule, QuarantineRules};
use crate::engine::core::TaskId;

/// The engine tasks a script names, by name and by id.
#[derive(Default)]
struct Names {
    ids: HashMap<String, TaskId>,
    names: Vec<String>,
}

impl Names {
    fn key(&mut self, label: &str) -> (TaskId, TaskKey) {
        let (name, attempt) = match label.split_once('#') {
            Some((name, n)) => (name, n.parse().expect("attempt number")),
            None => (label, 1),
        };
        let next = TaskId(self.names.len() as u32);
        let id = *self.ids.entry(name.to_string()).or_insert(next);
        if id == next {
            self.names.push(name.to_string());
        }
        let key = TaskKey {
            run_id: "run".into(),
            step: name.into(),
            sequence: "1".into(),
            recovery: 0,
            attempt,
        };
        (id, key)
    }

    fn of(&self, task: TaskId) -> &str {
        &self.names[task.0 as usize]
    }
}

fn label(key: &TaskKey) -> String {
    match key.attempt {
        1 => key.step.clone(),
        n => format!("{}#{n}", key.step),
    }
}

fn millis(text: &str) -> Duration {
    Duration::from_millis(text.parse().expect("milliseconds"))
}

fn hosts(list: &str) -> Vec<Arc<str>> {
    list.split(',').map(Arc::from).collect()
}

/// One input line (after `> ` and any `@MS`) as the core's input.
fn parse_input(words: &[&str], names: &mut Names, lease: Duration) -> Input<()> {
    let rest = |from: usize| words[from.min(words.len())..].join(" ");
    match words[0] {
        "up" => {
            let adopted = match words.iter().position(|w| *w == "adopt") {
                Some(at) => words[at + 1].split(',').map(|t| names.key(t).1).collect(),
                None => Vec::new(),
            };
            let own = words.iter().find_map(|w| w.strip_prefix("lease="));
            Input::HostUp {
                host: Arc::from(words[1]),
                cap: words[2].parse().expect("capacity"),
                records: !words.contains(&"norecord"),
                lease: own.map(millis).unwrap_or(lease),
                adopted,
            }
        }
        "lost" => Input::HostLost {
            host: Arc::from(words[1]),
            reason: rest(2),
        },
        "submit" => {
            let (task, key) = names.key(words[1]);
            let hosts = hosts(words[2]);
            Input::Submit {
                task,
                hosts,
                key,
                payload: (),
                may_wait: words.get(3) == Some(&"wait"),
            }
        }
        "undelivered" => Input::Undelivered {
            key: names.key(words[1]).1,
            error: rest(2),
        },
        "ran" => Input::Ran {
            key: names.key(words[1]).1,
        },
        "finish" => {
            let key = names.key(words[1]).1;
            let end = match words[2] {
                "ok" => TaskEnd::exited(0),
                _ => TaskEnd::failure(rest(3)),
            };
            Input::Finished { key, end }
        }
        "unrecorded" => Input::Unrecorded {
            key: names.key(words[1]).1,
        },
        "agentfail" => Input::AgentFailed {
            host: Arc::from(words[1]),
            reason: rest(2),
        },
        "cancel" => Input::CancelAll,
        "letgo" => Input::LetGo { reason: rest(1) },
        "back" => Input::BringBack,
        "tick" => Input::Tick,
        other => panic!("unknown input {other:?}"),
    }
}

fn show_action(out: &mut String, action: &Action<()>, names: &Names) {
    let _ = match action {
        Action::Send { host, key, .. } => writeln!(out, "  ! send {} -> {host}", label(key)),
        Action::Cancel { host, key } => writeln!(out, "  ! cancel {} on {host}", label(key)),
        Action::End {
            task,
            end,
            recorded,
        } => {
            let how = match (&end.error, end.succeeded()) {
                (_, true) => "ok".to_string(),
                (Some(error), false) => format!("failed: {error}"),
                (None, false) => "failed".to_string(),
            };
            let recorded = if *recorded { " (recorded)" } else { "" };
            writeln!(out, "  ! end {} {how}{recorded}", names.of(*task))
        }
        Action::Reconnect { host } => writeln!(out, "  ! reconnect {host}"),
        Action::Health { host, health } => {
            let state = match &health.state {
                HealthState::Up => "up".to_string(),
                HealthState::Away { reason } => format!("away ({reason})"),
                HealthState::Quarantined { until, reason } => {
                    format!("quarantined until @{} ({reason})", until.as_millis())
                }
            };
            let failures = match health.failures.len() {
                0 => String::new(),
                n => format!(" [failures: {n}]"),
            };
            writeln!(out, "  ! health {host} {state}{failures}")
        }
        Action::Settle {
            host,
            reason,
            tasks,
        } => {
            let tasks: Vec<String> = tasks.iter().map(|(_, k)| label(k)).collect();
            writeln!(out, "  ! settle {} of {host} ({reason})", tasks.join(" "))
        }
    };
}

fn show_state(out: &mut String, core: &ClusterCore<()>) {
    let counts = core.counts();
    let _ = write!(
        out,
        "  = in flight {} waiting {} limbo {}",
        counts.in_flight, counts.waiting, counts.limbo
    );
    if let Some(at) = core.next_deadline() {
        let _ = write!(out, " until @{}", at.as_millis());
    }
    out.push('\n');
}

/// The settings at the top of a script: the hosts' lease and the core's rules.
fn parse_settings(header: &[&str]) -> (Duration, LeaseRule, QuarantineRules) {
    let (mut lease, mut rule) = (Duration::ZERO, LeaseRule::default());
    let mut quarantine = QuarantineRules::default();
    for line in header {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["lease", ms] => lease = millis(ms),
            ["margin", ms] => rule.margin = millis(ms),
            ["floor", ms] => rule.floor = millis(ms),
            ["quarantine", failures, within, cooldown] => {
                quarantine.default = QuarantineRule {
                    failures: failures.parse().expect("failures"),
                    within: millis(within),
                    cooldown: millis(cooldown),
                }
            }
            _ => {}
        }
    }
    (lease, rule, quarantine)
}

/// Replays a script's inputs; answers the whole file as it should read.
fn replay(text: &str) -> String {
    let (header, body) = text.split_once("----\n").expect("a ---- line");
    let header_lines: Vec<&str> = header.lines().collect();
    let (lease, rule, quarantine) = parse_settings(&header_lines);
    let mut core = ClusterCore::new(rule, quarantine);
    let mut names = Names::default();
    let mut now = Duration::ZERO;
    let mut out = format!("{header}----\n");
    for line in body.lines() {
        let Some(input) = line.strip_prefix("> ") else {
            if line.starts_with('#') || line.is_empty() {
                out += line;
                out.push('\n');
            }
            continue;
        };
        out += line;
        out.push('\n');
        let mut words: Vec<&str> = input.split_whitespace().collect();
        if let Some(ms) = words[0].strip_prefix('@') {
            now = millis(ms);
            words.remove(0);
        }
        let input = parse_input(&words, &mut names, lease);
        for action in core.handle(now, input) {
            show_action(&mut out, &action, &names);
        }
        show_state(&mut out, &core);
    }
    out
}

#[test]
fn cluster_golden_scripts() {
    crate::golden_files::check_golden_dir("src/cluster/golden", replay);
}
