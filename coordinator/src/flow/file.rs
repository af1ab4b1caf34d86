//! The YAML flow file: events, steps, resources, associations and start
//! triggers of one flow, loaded and checked before anything runs.
//!
//! Every error names the file, the line and column, and the field (a path
//! such as `steps.s1.triggers.success[1]`), so a user can go straight to it.
//! The YAML is first read into a tree of located nodes (module `yaml`),
//! then converted by hand; that is what lets semantic errors (an unknown
//! event, a pool asked beyond its capacity) point at the exact value.

use super::config;
use eventor_agent::MaxConcurrent;

use crate::api::names::check_flow_name;
use crate::api::params::{check_param_name, references};
use crate::api::step::Triggers;
use crate::api::AssocTarget;
use crate::engine::program::{RecoverAction, RecoveryPolicy, RetryMatch, RetryOn};
use crate::expr::{self, Expr};
use crate::yaml::{self, At, Entry, Node, Problem, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most sequences one `range` may expand to; keeps a typo such as
/// `[1, 1000000000]` from exhausting memory.
pub const MAX_RANGE_LEN: u64 = eventor_agent::trigger_socket::MAX_RANGE;

const TOP_KEYS: &[&str] = &[
    "name",
    "config",
    "events",
    "resources",
    "steps",
    "assocs",
    "trigger",
    "store",
    "params",
];
const CONFIG_KEYS: &[&str] = &["max_concurrent", "stop_on_exception", "envvar_prefix"];
const EVENT_KEYS: &[&str] = &["expr"];
const POOL_KEYS: &[&str] = &["units", "shared"];
const STEP_KEYS: &[&str] = &[
    "run",
    "env",
    "env_from_prime",
    "cwd",
    "timeout",
    "max_concurrent",
    "stop_on_exception",
    "triggers",
    "acquires",
    "releases",
    "recovery",
    "host",
    "hosts",
    "retries",
    "retry_delay",
    "retry_on",
];
const STATUS_KEYS: &[&str] = &["ready", "active", "success", "failure", "complete"];
const RECOVERY_KEYS: &[&str] = &["ready", "active", "success", "failure", "complete"];
const ASSOC_KEYS: &[&str] = &["event", "targets", "delay"];
/// The keys of a target that says which kind of name it is.
const TARGET_KEYS: &[&str] = &["step", "event"];
const TRIGGER_KEYS: &[&str] = &["event", "sequence", "range"];

/// A loaded and checked flow file. Lists keep the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFile {
    pub path: PathBuf,
    /// `name:`, or the file's stem.
    pub name: String,
    pub config: FlowConfig,
    pub events: Vec<EventSpec>,
    /// Resource pools and their capacities.
    pub resources: Vec<(String, u32)>,
    /// The pools of `resources` shared by every run on the store
    /// (`{lic: {units: 2, shared: true}}`; the plain `{db: 2}` is the run's own).
    pub shared_resources: Vec<String>,
    pub steps: Vec<StepSpec>,
    pub assocs: Vec<AssocSpec>,
    /// The `trigger:` list: which events to fire at start, in which sequences.
    pub triggers: Vec<TriggerSpec>,
    /// `store:`, the flow's store as `--store` takes it (a URL, a path or a `DATABASES`
    /// name of the config); `--store` overrides it, and it overrides a hosts file's.
    pub store: Option<String>,
    /// `params:`: the run's parameters, name → default (`~`: required), given with
    /// `--param NAME=VALUE` and seen by every task as environment variables.
    pub params: BTreeMap<String, Option<String>>,
}

/// The flow's own EVENTOR settings; `None` leaves the global config's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowConfig {
    /// -1 means unlimited.
    pub max_concurrent: Option<MaxConcurrent>,
    pub stop_on_exception: Option<bool>,
    pub envvar_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub name: String,
    /// Present for an expression event.
    pub expr: Option<Expr>,
    /// Line of the event's name in the file.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    /// Shell command; `None` is a step that does nothing and succeeds.
    pub run: Option<String>,
    /// `env:`, whose values may name parameters as `${NAME}`.
    pub env: Vec<(String, String)>,
    /// `env_from_prime:`: variables copied from the prime's environment into its tasks.
    pub env_from_prime: Vec<String>,
    pub cwd: Option<String>,
    pub timeout: Option<Duration>,
    pub max_concurrent: MaxConcurrent,
    pub stop_on_exception: Option<bool>,
    pub triggers: Triggers,
    pub acquires: Vec<(String, u32)>,
    /// `None`: release what was acquired; `Some(empty)`: release nothing.
    pub releases: Option<Vec<(String, u32)>>,
    pub recovery: RecoveryPolicy,
    pub host: Option<String>,
    pub hosts: Vec<String>,
    /// Further attempts after a failed one (`retries:`, default 0).
    pub retries: u32,
    /// `retry_delay:` (default 0).
    pub retry_delay: Duration,
    /// `retry_on:` (default: every class).
    pub retry_on: RetryOn,
    /// Line of the step's name in the file.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssocSpec {
    pub event: String,
    /// Steps and events, in the order written: a bare name, or `{step: NAME}` or
    /// `{event: NAME}` for a name that is both.
    pub targets: Vec<AssocTarget>,
    pub delay: Option<Duration>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    pub event: String,
    /// `["1"]` by default; a `range` gives one entry per number.
    pub sequences: Vec<String>,
    pub line: usize,
}

pub use crate::yaml::Position;

pub use crate::yaml::FileError as FlowError;

/// Reads and checks a flow file.
pub fn load_flow(path: &Path) -> Result<FlowFile, FlowError> {
    let text = yaml::read_file(path, "flow")?;
    parse_flow(&text, path)
}

/// Checks a flow given as text; `path` names it in errors and gives the
/// default flow name.
pub fn parse_flow(text: &str, path: &Path) -> Result<FlowFile, FlowError> {
    let convert = |p| FlowError::from_problem(path, p);
    let root = yaml::parse_document(text).map_err(convert)?;
    build(&root, path).map_err(convert)
}

fn build(root: &Node, path: &Path) -> Result<FlowFile, Problem> {
    let top = At::root(root);
    if root.is_null() {
        return Err(top.problem("the flow file is empty"));
    }
    let top = top.mapping(TOP_KEYS)?;
    let names = Names::collect(&top)?;
    let (resources, shared_resources) = read_resources(&top)?;
    let params = top.get("params").map_or(Ok(BTreeMap::new()), read_params)?;
    let steps = read_steps(&top, &names, &resources, &params)?;
    Ok(FlowFile {
        shared_resources,
        path: path.to_path_buf(),
        name: read_name(&top, path)?,
        config: read_flow_config(&top)?,
        events: read_events(&top, &names)?,
        steps,
        resources,
        assocs: read_assocs(&top, &names)?,
        triggers: read_triggers(&top, &names)?,
        store: top.get("store").map(At::store).transpose()?,
        params,
    })
}

/// A flow's parameters: name → default (`None`: required).
type Params = BTreeMap<String, Option<String>>;

/// `params:`: NAME → default string, or `~` for a required parameter.
fn read_params(at: &At<'_>) -> Result<Params, Problem> {
    let mut out = BTreeMap::new();
    for entry in at.entries("parameter")? {
        check_param_name(&entry.name).map_err(|why| entry.key.problem(why))?;
        let default = if entry.value.node.is_null() {
            None
        } else {
            Some(entry.value.string()?)
        };
        out.insert(entry.name, default);
    }
    Ok(out)
}

fn read_name(top: &yaml::Fields<'_>, path: &Path) -> Result<String, Problem> {
    let Some(at) = top.get("name") else {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        return Ok(stem
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "flow".into()));
    };
    let name = at.string()?;
    check_flow_name(&name).map_err(|why| at.problem(why))?;
    Ok(name)
}

fn read_flow_config(top: &yaml::Fields<'_>) -> Result<FlowConfig, Problem> {
    let Some(at) = top.get("config") else {
        return Ok(FlowConfig::default());
    };
    let fields = at.mapping(CONFIG_KEYS)?;
    Ok(FlowConfig {
        max_concurrent: fields
            .get("max_concurrent")
            .map(config::read_max_concurrent)
            .transpose()?,
        stop_on_exception: fields
            .get("stop_on_exception")
            .map(At::boolean)
            .transpose()?,
        envvar_prefix: fields
            .get("envvar_prefix")
            .map(config::read_prefix)
            .transpose()?,
    })
}

/// The event and step names of the file, known before anything refers to
/// them so that every reference can be checked where it is written.
struct Names {
    events: HashMap<String, usize>,
    steps: HashMap<String, usize>,
}

impl Names {
    fn collect(top: &yaml::Fields<'_>) -> Result<Names, Problem> {
        let events = named_lines(&section_entries(top, "events", "event")?, "event")?;
        let step_entries = section_entries(top, "steps", "step")?;
        let steps = named_lines(&step_entries, "step")?;
        // An event and a step may share a name (the original's flows do); an association
        // target that names both says which (`read_target`).
        Ok(Names { events, steps })
    }

    fn is_event(&self, name: &str) -> bool {
        self.events.contains_key(name)
    }

    fn is_step(&self, name: &str) -> bool {
        self.steps.contains_key(name)
    }

    /// Checks that `name` (found at `at`) is a declared event.
    fn check_event(&self, name: &str, at: &At<'_>) -> Result<(), Problem> {
        if self.is_event(name) {
            Ok(())
        } else if self.is_step(name) {
            Err(at.problem(format!("`{name}` is a step, not an event")))
        } else {
            Err(at.problem(format!("unknown event `{name}`{}", self.near_event(name))))
        }
    }

    /// "; did you mean `e`?" for an unknown event name close to a declared one.
    fn near_event(&self, name: &str) -> String {
        yaml::did_you_mean(name, self.events.keys().map(String::as_str))
    }

    /// "; did you mean `s`?" for an unknown step name close to a declared one.
    fn near_step(&self, name: &str) -> String {
        yaml::did_you_mean(name, self.steps.keys().map(String::as_str))
    }
}

/// Names of a section's entries with the line of each, checking that each
/// name can be written in an expression.
fn named_lines(entries: &[Entry<'_>], noun: &str) -> Result<HashMap<String, usize>, Problem> {
    let mut out = HashMap::new();
    for entry in entries {
        if !expr::is_valid_name(&entry.name) {
            let message = format!(
                "invalid {noun} name `{}`: use letters, digits and `_ . : -`, \
                 starting with a letter or `_` (and not `and`, `or`, `not`)",
                entry.name
            );
            return Err(entry.key.problem(message));
        }
        out.insert(entry.name.clone(), entry.key.node.line);
    }
    Ok(out)
}

fn section_entries<'a>(
    top: &yaml::Fields<'a>,
    section: &str,
    noun: &str,
) -> Result<Vec<Entry<'a>>, Problem> {
    top.get(section)
        .map_or(Ok(Vec::new()), |at| at.entries(noun))
}

/// Pools and their units, and the names of the shared ones.
type Pools = (Vec<(String, u32)>, Vec<String>);

/// Pools and their units (`db: 2`, or `lic: {units: 2, shared: true}`), and which are shared.
fn read_resources(top: &yaml::Fields<'_>) -> Result<Pools, Problem> {
    let (mut out, mut shared) = (Vec::new(), Vec::new());
    for entry in section_entries(top, "resources", "resource pool")? {
        if entry.value.node.scalar_text().is_some() {
            out.push((entry.name, entry.value.count()?));
            continue;
        }
        let fields = entry.value.mapping(POOL_KEYS)?;
        let units = fields.required("units", &entry.value)?.count()?;
        if fields.get("shared").map(At::boolean).transpose()? == Some(true) {
            shared.push(entry.name.clone());
        }
        out.push((entry.name, units));
    }
    Ok((out, shared))
}

fn read_events(top: &yaml::Fields<'_>, names: &Names) -> Result<Vec<EventSpec>, Problem> {
    let entries = section_entries(top, "events", "event")?;
    entries.iter().map(|e| read_event(e, names)).collect()
}

fn read_event(entry: &Entry<'_>, names: &Names) -> Result<EventSpec, Problem> {
    let fields = entry.value.mapping(EVENT_KEYS)?;
    let expr = fields
        .get("expr")
        .map(|at| read_expr(at, names))
        .transpose()?;
    Ok(EventSpec {
        name: entry.name.clone(),
        expr,
        line: entry.key.node.line,
    })
}

fn read_expr(at: &At<'_>, names: &Names) -> Result<Expr, Problem> {
    let text = at.string()?;
    let in_text = |e: expr::ExprError| at.problem(format!("{} at column {}", e.message, e.column));
    let expr = Expr::parse(&text).map_err(in_text)?;
    // The first unknown name, kept for its "did you mean".
    let unknown = std::cell::RefCell::new(None);
    let known = |name: &str| {
        let known = names.is_event(name);
        if !known {
            unknown.borrow_mut().get_or_insert_with(|| name.to_string());
        }
        known
    };
    expr.check_names(&known).map_err(|e| {
        let near = unknown.borrow().as_deref().map(|n| names.near_event(n));
        let mut problem = in_text(e);
        problem.message.push_str(&near.unwrap_or_default());
        problem
    })?;
    Ok(expr)
}

fn read_steps(
    top: &yaml::Fields<'_>,
    names: &Names,
    pools: &[(String, u32)],
    params: &Params,
) -> Result<Vec<StepSpec>, Problem> {
    let entries = section_entries(top, "steps", "step")?;
    entries
        .iter()
        .map(|e| read_step(e, names, pools, params))
        .collect()
}

fn read_step(
    entry: &Entry<'_>,
    names: &Names,
    pools: &[(String, u32)],
    params: &Params,
) -> Result<StepSpec, Problem> {
    let f = entry.value.mapping(STEP_KEYS)?;
    let string = |key| f.get(key).map(At::string).transpose();
    let (host, hosts) = read_hosts(&f)?;
    Ok(StepSpec {
        name: entry.name.clone(),
        run: string("run")?,
        env: f
            .get("env")
            .map_or(Ok(Vec::new()), |at| read_env(at, &entry.name, params))?,
        env_from_prime: f
            .get("env_from_prime")
            .map_or(Ok(Vec::new()), At::var_names)?,
        cwd: string("cwd")?,
        timeout: f.get("timeout").map(read_timeout).transpose()?,
        max_concurrent: f
            .get("max_concurrent")
            .map(read_step_limit)
            .transpose()?
            .unwrap_or_default(),
        stop_on_exception: f.get("stop_on_exception").map(At::boolean).transpose()?,
        triggers: f
            .get("triggers")
            .map_or(Ok(Triggers::default()), |at| read_step_triggers(at, names))?,
        acquires: f
            .get("acquires")
            .map_or(Ok(Vec::new()), |at| read_amounts(at, pools))?,
        releases: f
            .get("releases")
            .map(|at| read_amounts(at, pools))
            .transpose()?,
        recovery: f
            .get("recovery")
            .map_or(Ok(RecoveryPolicy::default()), read_recovery)?,
        host,
        hosts,
        retries: f.get("retries").map(read_retries).transpose()?.unwrap_or(0),
        retry_delay: f
            .get("retry_delay")
            .map(At::duration)
            .transpose()?
            .unwrap_or_default(),
        retry_on: f
            .get("retry_on")
            .map(read_retry_on)
            .transpose()?
            .unwrap_or_default(),
        line: entry.key.node.line,
    })
}

/// `retries:`: a whole number of further attempts, 0 or more.
fn read_retries(at: &At<'_>) -> Result<u32, Problem> {
    let n = at.integer()?;
    u32::try_from(n)
        .map_err(|_| at.problem(format!("must be between 0 and {}, found {n}", u32::MAX)))
}

/// `retry_on:`: failure classes (`exit`, `"exit:75"`, `signal`, `timeout`, `host_lost`,
/// `start`, `store`, `interrupted`), a list or one of them.
fn read_retry_on(at: &At<'_>) -> Result<RetryOn, Problem> {
    let mut on = Vec::new();
    for (word, item) in at.names()? {
        let Some(one) = RetryMatch::parse(&word) else {
            let words = RetryMatch::words();
            let near = yaml::did_you_mean(&word, words.iter().copied());
            let known = words.join(", ");
            let message =
                format!("unknown failure class `{word}`{near} (known: {known}, exit:CODE)");
            return Err(item.problem(message));
        };
        if !on.contains(&one) {
            on.push(one);
        }
    }
    if on.is_empty() {
        return Err(at.problem("must list at least one failure class"));
    }
    Ok(RetryOn(on))
}

/// `env:`; a `${NAME}` in a value must name a parameter (else the error names the step and
/// the variable).
fn read_env(at: &At<'_>, step: &str, params: &Params) -> Result<Vec<(String, String)>, Problem> {
    let mut out = Vec::new();
    for entry in at.entries("variable")? {
        let bad_name = entry.name.is_empty() || entry.name.contains(['=', '\0']);
        if bad_name {
            let message = format!("invalid environment variable name `{}`", entry.name);
            return Err(entry.key.problem(message));
        }
        let value = entry.value.string()?;
        if value.contains('\0') {
            return Err(entry.value.problem("must not contain a NUL character"));
        }
        let unknown = references(&value)
            .into_iter()
            .find(|n| !params.contains_key(*n));
        if let Some(name) = unknown {
            let known: Vec<&str> = params.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            let why = format!(
                "step `{step}` variable `{}`: `${{{name}}}` names no parameter (the flow's parameters: {known})",
                entry.name
            );
            return Err(entry.value.problem(why));
        }
        out.push((entry.name, value));
    }
    Ok(out)
}

fn read_timeout(at: &At<'_>) -> Result<Duration, Problem> {
    let timeout = at.duration()?;
    if timeout.is_zero() {
        return Err(at.problem("must be longer than zero"));
    }
    Ok(timeout)
}

fn read_step_limit(at: &At<'_>) -> Result<MaxConcurrent, Problem> {
    let n = at.integer()?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .map(MaxConcurrent::at_most)
        .ok_or_else(|| at.problem(format!("must be at least 1, found {n}")))
}

fn read_step_triggers(at: &At<'_>, names: &Names) -> Result<Triggers, Problem> {
    let fields = at.mapping(STATUS_KEYS)?;
    let events = |status| -> Result<Vec<String>, Problem> {
        let Some(at) = fields.get(status) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (name, item) in at.names()? {
            names.check_event(&name, &item)?;
            out.push(name);
        }
        Ok(out)
    };
    Ok(Triggers {
        ready: events("ready")?,
        active: events("active")?,
        success: events("success")?,
        failure: events("failure")?,
        complete: events("complete")?,
    })
}

/// `{pool: amount}` for `acquires` and `releases`, checked against the
/// declared pools: asking more than a pool holds could never be granted.
fn read_amounts(at: &At<'_>, pools: &[(String, u32)]) -> Result<Vec<(String, u32)>, Problem> {
    let mut out = Vec::new();
    for entry in at.entries("resource pool")? {
        let Some((_, capacity)) = pools.iter().find(|(p, _)| *p == entry.name) else {
            let message = format!("unknown resource pool `{}`", entry.name);
            return Err(entry.key.problem(message));
        };
        let amount = entry.value.count()?;
        if amount > *capacity {
            let message = format!(
                "asks for {amount} but pool `{}` has capacity {capacity}",
                entry.name
            );
            return Err(entry.value.problem(message));
        }
        out.push((entry.name, amount));
    }
    Ok(out)
}

fn read_recovery(at: &At<'_>) -> Result<RecoveryPolicy, Problem> {
    let fields = at.mapping(RECOVERY_KEYS)?;
    let mut policy = RecoveryPolicy::default();
    // `complete` first: it sets success and failure, which their own keys then refine.
    if let Some(at) = fields.get("complete") {
        let action = read_recovery_choice(at)?;
        (policy.success, policy.failure) = (action, action);
    }
    let slots = [
        ("ready", &mut policy.ready),
        ("active", &mut policy.active),
        ("success", &mut policy.success),
        ("failure", &mut policy.failure),
    ];
    for (key, slot) in slots {
        if let Some(at) = fields.get(key) {
            *slot = read_recovery_choice(at)?;
        }
    }
    Ok(policy)
}

fn read_recovery_choice(at: &At<'_>) -> Result<RecoverAction, Problem> {
    match at.string()?.as_str() {
        "skip" => Ok(RecoverAction::Skip),
        "rerun" => Ok(RecoverAction::Rerun),
        other => Err(at.problem(format!("expected `skip` or `rerun`, found `{other}`"))),
    }
}

fn read_hosts(f: &yaml::Fields<'_>) -> Result<(Option<String>, Vec<String>), Problem> {
    let host = f.get("host").map(read_host).transpose()?;
    let Some(at) = f.get("hosts") else {
        return Ok((host, Vec::new()));
    };
    if host.is_some() {
        return Err(at.problem("`host` and `hosts` are both set; use one of them"));
    }
    let mut hosts: Vec<String> = Vec::new();
    for item in at.items()? {
        let name = read_host(&item)?;
        if hosts.contains(&name) {
            return Err(item.problem(format!("host `{name}` is listed twice")));
        }
        hosts.push(name);
    }
    if hosts.is_empty() {
        return Err(at.problem("must list at least one host"));
    }
    Ok((None, hosts))
}

fn read_host(at: &At<'_>) -> Result<String, Problem> {
    let host = at.string()?;
    if host.trim().is_empty() {
        return Err(at.problem("must not be empty"));
    }
    Ok(host)
}

fn read_assocs(top: &yaml::Fields<'_>, names: &Names) -> Result<Vec<AssocSpec>, Problem> {
    let Some(at) = top.get("assocs") else {
        return Ok(Vec::new());
    };
    at.items()?
        .iter()
        .map(|item| read_assoc(item, names))
        .collect()
}

fn read_assoc(item: &At<'_>, names: &Names) -> Result<AssocSpec, Problem> {
    let f = item.mapping(ASSOC_KEYS)?;
    let event_at = f.required("event", item)?;
    let event = event_at.string()?;
    names.check_event(&event, event_at)?;
    let targets_at = f.required("targets", item)?;
    let targets = read_targets(targets_at, names)?;
    if targets.is_empty() {
        return Err(targets_at.problem("must name at least one step or event"));
    }
    Ok(AssocSpec {
        event,
        targets,
        delay: f.get("delay").map(At::duration).transpose()?,
        line: item.node.line,
    })
}

/// An association's `targets`: one target or a list of them.
fn read_targets(at: &At<'_>, names: &Names) -> Result<Vec<AssocTarget>, Problem> {
    if matches!(at.node.value, Value::Map(_)) || at.node.scalar_text().is_some() {
        return Ok(vec![read_target(at, names)?]);
    }
    at.items()?
        .iter()
        .map(|item| read_target(item, names))
        .collect()
}

/// One target: a name that is a step or an event (not both), or `{step: NAME}` or
/// `{event: NAME}`.
fn read_target(at: &At<'_>, names: &Names) -> Result<AssocTarget, Problem> {
    if matches!(at.node.value, Value::Map(_)) {
        let f = at.mapping(TARGET_KEYS)?;
        return match (f.get("step"), f.get("event")) {
            (Some(step), None) => {
                let name = step.string()?;
                if !names.is_step(&name) {
                    let near = names.near_step(&name);
                    return Err(step.problem(format!("unknown step `{name}`{near}")));
                }
                Ok(AssocTarget::Step(name))
            }
            (None, Some(event)) => {
                let name = event.string()?;
                if !names.is_event(&name) {
                    let near = names.near_event(&name);
                    return Err(event.problem(format!("unknown event `{name}`{near}")));
                }
                Ok(AssocTarget::Event(name))
            }
            (Some(_), Some(event)) => Err(event.problem("give `step` or `event`, not both")),
            (None, None) => Err(at.problem("missing `step` or `event`")),
        };
    }
    let name = at.string()?;
    match (names.is_step(&name), names.is_event(&name)) {
        (true, true) => Err(at.problem(format!(
            "`{name}` is both a step and an event: write {{step: {name}}} or {{event: {name}}}"
        ))),
        (false, false) => {
            let known = names.steps.keys().chain(names.events.keys());
            let near = yaml::did_you_mean(&name, known.map(String::as_str));
            Err(at.problem(format!("unknown step or event `{name}`{near}")))
        }
        _ => Ok(AssocTarget::Named(name)),
    }
}

fn read_triggers(top: &yaml::Fields<'_>, names: &Names) -> Result<Vec<TriggerSpec>, Problem> {
    let Some(at) = top.get("trigger") else {
        return Ok(Vec::new());
    };
    at.items()?
        .iter()
        .map(|item| read_trigger(item, names))
        .collect()
}

fn read_trigger(item: &At<'_>, names: &Names) -> Result<TriggerSpec, Problem> {
    let f = item.mapping(TRIGGER_KEYS)?;
    let event_at = f.required("event", item)?;
    let event = event_at.string()?;
    names.check_event(&event, event_at)?;
    let sequences = match (f.get("sequence"), f.get("range")) {
        (Some(_), Some(range)) => {
            return Err(range.problem("`sequence` and `range` are both set; use one of them"))
        }
        (Some(at), None) => vec![read_sequence(at)?],
        (None, Some(at)) => read_range(at)?,
        (None, None) => vec!["1".to_string()],
    };
    Ok(TriggerSpec {
        event,
        sequences,
        line: item.node.line,
    })
}

fn read_sequence(at: &At<'_>) -> Result<String, Problem> {
    let sequence = at.string()?;
    if sequence.is_empty() {
        return Err(at.problem("must not be empty"));
    }
    Ok(sequence)
}

/// `[from, to]`, both included, as decimal sequence strings.
fn read_range(at: &At<'_>) -> Result<Vec<String>, Problem> {
    let items = at.items()?;
    let [from_at, to_at] = items.as_slice() else {
        let message = format!("expected [from, to], found a list of {}", items.len());
        return Err(at.problem(message));
    };
    let bound = |at: &At<'_>| -> Result<u64, Problem> {
        let n = at.integer()?;
        u64::try_from(n).map_err(|_| at.problem(format!("must not be negative, found {n}")))
    };
    let (from, to) = (bound(from_at)?, bound(to_at)?);
    if from > to {
        return Err(at.problem(format!("`from` ({from}) is greater than `to` ({to})")));
    }
    if to - from >= MAX_RANGE_LEN {
        let message = format!("covers more than {MAX_RANGE_LEN} sequences");
        return Err(at.problem(message));
    }
    Ok((from..=to).map(|n| n.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = r#"name: nightly
config: {max_concurrent: 4, stop_on_exception: true, envvar_prefix: NIGHTLY_}
events:
  start: {}
  s1_done: {}
  s2_done:
  both: {expr: "s1_done & s2_done"}
resources: {db: 2, lic: {units: 3, shared: true}, cpu: {units: 4}}
steps:
  s1: {run: "echo one >> out.txt", triggers: {success: [s1_done]}}
  s2: {run: "./load.sh", env: {MODE: fast, LEVEL: 007, ON: yes}, timeout: 30s, cwd: /tmp, max_concurrent: 1, stop_on_exception: false, triggers: {complete: s2_done}}
  s3: {run: "echo three", acquires: {db: 1}, releases: {db: 1}, recovery: {success: rerun, failure: skip}, host: node1}
  s4: {}
  s5: {acquires: {db: 2}, releases: {}, hosts: [a, b], timeout: 1h 30m, retries: 2, retry_delay: 30s}
assocs:
  - {event: start, targets: [s1, s2]}
  - {event: both, targets: [s3, s4], delay: 10s}
trigger:
  - {event: start}
  - {event: start, sequence: "7"}
  - {event: start, range: [2, 100]}
"#;

    fn parse(text: &str) -> Result<FlowFile, FlowError> {
        parse_flow(text, Path::new("flow.yaml"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(flow) => panic!("expected an error, got {flow:?}\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn loads_the_documented_example() {
        let flow = parse(EXAMPLE).unwrap();
        assert_eq!(flow.name, "nightly");
        assert_eq!(
            flow.config,
            FlowConfig {
                max_concurrent: Some(MaxConcurrent::at_most(4)),
                stop_on_exception: Some(true),
                envvar_prefix: Some("NIGHTLY_".into()),
            }
        );
        let events: Vec<(&str, usize)> = flow
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.line))
            .collect();
        assert_eq!(
            events,
            [("start", 4), ("s1_done", 5), ("s2_done", 6), ("both", 7)]
        );
        assert_eq!(
            flow.events[3].expr,
            Some(Expr::parse("s1_done & s2_done").unwrap())
        );
        let pools = [("db", 2), ("lic", 3), ("cpu", 4)].map(|(n, u)| (n.to_string(), u));
        assert_eq!(flow.resources, pools);
        assert_eq!(flow.shared_resources, ["lic"]);
        let names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2", "s3", "s4", "s5"]);
        assert_eq!(flow.steps[0].triggers.success, ["s1_done"]);
        assert_eq!(flow.steps[0].line, 10);
        assert_eq!(flow.assocs[1].line, 17);
        assert_eq!(flow.triggers[2].line, 21);
    }

    #[test]
    fn reads_retry_on_as_kinds_and_exit_codes() {
        let yaml = "steps:\n  s: {retries: 3, retry_on: [exit:75, timeout, host_lost, \"exit:75\"]}\n  t: {}\n";
        let flow = parse(yaml).unwrap();
        let want = RetryOn(vec![
            RetryMatch::ExitCode(75),
            RetryMatch::Kind(eventor_protocol::FailureKind::Timeout),
            RetryMatch::Kind(eventor_protocol::FailureKind::HostLost),
        ]);
        assert_eq!(flow.steps[0].retry_on, want);
        assert_eq!(flow.steps[1].retry_on, RetryOn::default());
    }

    #[test]
    fn reads_step_fields() {
        let flow = parse(EXAMPLE).unwrap();
        let s2 = &flow.steps[1];
        assert_eq!(s2.run.as_deref(), Some("./load.sh"));
        // Plain scalars keep their spelling: 007 is not 7, yes is not true.
        let env: Vec<(&str, &str)> = s2
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("MODE", "fast"), ("LEVEL", "007"), ("ON", "yes")]);
        assert_eq!(s2.timeout, Some(Duration::from_secs(30)));
        assert_eq!(s2.cwd.as_deref(), Some("/tmp"));
        assert_eq!(s2.max_concurrent, MaxConcurrent::at_most(1));
        assert_eq!(s2.stop_on_exception, Some(false));
        assert_eq!(s2.triggers.complete, ["s2_done"]);
        let s3 = &flow.steps[2];
        assert_eq!(s3.acquires, [("db".to_string(), 1)]);
        assert_eq!(s3.releases, Some(vec![("db".to_string(), 1)]));
        assert_eq!(
            s3.recovery,
            RecoveryPolicy {
                success: RecoverAction::Rerun,
                failure: RecoverAction::Skip,
                ..RecoveryPolicy::default()
            }
        );
        assert_eq!(s3.host.as_deref(), Some("node1"));
        let s4 = &flow.steps[3];
        assert_eq!(s4.run, None);
        assert_eq!(s4.releases, None);
        assert_eq!(s4.recovery, RecoveryPolicy::default());
        let s5 = &flow.steps[4];
        assert_eq!(s5.releases, Some(vec![]));
        assert_eq!(s5.hosts, ["a", "b"]);
        assert_eq!(s5.timeout, Some(Duration::from_secs(5400)));
        assert_eq!((s5.retries, s5.retry_delay), (2, Duration::from_secs(30)));
        assert_eq!((s4.retries, s4.retry_delay), (0, Duration::ZERO));
    }

    #[test]
    fn reads_assocs_and_triggers() {
        let flow = parse(EXAMPLE).unwrap();
        assert_eq!(
            flow.assocs[0],
            AssocSpec {
                event: "start".into(),
                targets: vec!["s1".into(), "s2".into()],
                delay: None,
                line: 16,
            }
        );
        assert_eq!(flow.assocs[1].delay, Some(Duration::from_secs(10)));
        assert_eq!(flow.triggers[0].sequences, ["1"]);
        assert_eq!(flow.triggers[1].sequences, ["7"]);
        let range = &flow.triggers[2].sequences;
        assert_eq!(range.len(), 99);
        assert_eq!((range[0].as_str(), range[98].as_str()), ("2", "100"));
    }

    #[test]
    fn defaults_name_to_the_file_stem() {
        let flow = parse_flow("steps: {a: {}}", Path::new("/x/etl.daily.yaml")).unwrap();
        assert_eq!(flow.name, "etl.daily");
        assert_eq!(flow.config, FlowConfig::default());
        assert!(flow.events.is_empty() && flow.assocs.is_empty() && flow.triggers.is_empty());
        assert_eq!(parse_flow("steps:", Path::new("")).unwrap().name, "flow");
    }

    #[test]
    fn a_flow_may_name_its_store() {
        let flow = parse("store: postgres://eventor@db/eventor?schema=nightly\n").unwrap();
        let store = flow.store.as_deref();
        assert_eq!(store, Some("postgres://eventor@db/eventor?schema=nightly"));
        assert_eq!(parse("events: {e: {}}\n").unwrap().store, None);
    }

    #[test]
    fn reads_parameters_with_defaults_and_required_ones() {
        let flow = parse(
            "params: {RUN_DATE: ~, REGION: eu}\n\
             steps:\n  s1: {run: x, env: {DAY: '${RUN_DATE}'}, env_from_prime: DB_PASSWORD}\n",
        )
        .unwrap();
        let expected: BTreeMap<String, Option<String>> = [
            ("REGION".into(), Some("eu".into())),
            ("RUN_DATE".into(), None),
        ]
        .into();
        assert_eq!(flow.params, expected);
        assert_eq!(flow.steps[0].env_from_prime, ["DB_PASSWORD"]);
        assert!(parse("events: {e: {}}\n").unwrap().params.is_empty());
    }

    #[test]
    fn durations() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("6h", Duration::from_secs(6 * 3600)),
            ("1h 30m", Duration::from_secs(5400)),
            ("45", Duration::from_secs(45)),
            ("'45'", Duration::from_secs(45)),
            ("1.5", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in cases {
            let yaml = format!("events: {{e: {{}}}}\nsteps: {{s: {{}}}}\nassocs: [{{event: e, targets: [s], delay: {text}}}]");
            let flow = parse(&yaml).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(flow.assocs[0].delay, Some(want), "{text}");
        }
    }

    /// (flow text, expected error), one line per case in the file.
    const ERROR_CASES: &[(&str, &str)] = &[
        // YAML syntax
        (
            "steps:\n  s1: {run: [a, b}\n",
            "flow.yaml:2:13: yaml: mismatched bracket '[' closed by '}'",
        ),
        ("steps:\n  s1: a: b\n", "flow.yaml:2:8: yaml: mapping values are not allowed in this context"),
        ("", "flow.yaml:1:1: top level: the flow file is empty"),
        // parameters: names, and `${NAME}` in a step's env
        (
            "params:\n  RUN_DATE: ~\n  run-day: x\n",
            "flow.yaml:3:3: params.run-day: invalid parameter name `run-day`: letters, digits and `_`, not starting with a digit",
        ),
        (
            "params:\n  EVENTOR_DAY: x\n",
            "flow.yaml:2:3: params.EVENTOR_DAY: invalid parameter name `EVENTOR_DAY`: `EVENTOR_` names are the run's own variables",
        ),
        (
            "params: {RUN_DATE: ~}\nsteps:\n  s1: {run: x, env: {DAY: 'd=${RUN_DAY}'}}\n",
            "flow.yaml:3:27: steps.s1.env.DAY: step `s1` variable `DAY`: `${RUN_DAY}` names no parameter (the flow's parameters: RUN_DATE)",
        ),
        (
            "steps:\n  s1: {run: x, env_from_prime: [DB_PASSWORD, 9X]}\n",
            "flow.yaml:2:46: steps.s1.env_from_prime[1]: invalid environment variable name `9X`: use letters, digits and `_`, not a digit first",
        ),
        // unknown keys, at every level
        ("stepz: {}\n", "flow.yaml:1:1: stepz: unknown key; did you mean `steps`?"),
        (
            "steps:\n  s1: {run: x, tiemout: 3s}\n",
            "flow.yaml:2:16: steps.s1.tiemout: unknown key; did you mean `timeout`?",
        ),
        (
            "steps:\n  s1:\n    bogus: 1\n",
            "flow.yaml:3:5: steps.s1.bogus: unknown key; expected one of: run, env, env_from_prime, cwd, timeout, \
             max_concurrent, stop_on_exception, triggers, acquires, releases, recovery, host, hosts, \
             retries, retry_delay, retry_on",
        ),
        (
            "events: {e: {}}\nsteps:\n  s1: {triggers: {sucess: [e]}}\n",
            "flow.yaml:3:19: steps.s1.triggers.sucess: unknown key; did you mean `success`?",
        ),
        (
            "steps:\n  s1: {recovery: {succes: skip}}\n",
            "flow.yaml:2:19: steps.s1.recovery.succes: unknown key; did you mean `success`?",
        ),
        (
            "steps:\n  s1: {retries: 2, retry_on: [timeout, exit, hostlost]}\n",
            "flow.yaml:2:46: steps.s1.retry_on[2]: unknown failure class `hostlost`; did you mean \
             `host_lost`? (known: exit, signal, timeout, host_lost, start, store, interrupted, \
             exit:CODE)",
        ),
        (
            "steps:\n  s1: {retry_on: 'exit:x'}\n",
            "flow.yaml:2:18: steps.s1.retry_on: unknown failure class `exit:x`; did you mean \
             `exit`? (known: exit, signal, timeout, host_lost, start, store, interrupted, exit:CODE)",
        ),
        (
            "config: {max_concurent: 3}\n",
            "flow.yaml:1:10: config.max_concurent: unknown key; did you mean `max_concurrent`?",
        ),
        (
            "events:\n  e: {exp: a}\n",
            "flow.yaml:2:7: events.e.exp: unknown key; did you mean `expr`?",
        ),
        (
            "events: {e: {}}\nsteps: {s: {}}\nassocs:\n  - {event: e, targets: [s], dealy: 1s}\n",
            "flow.yaml:4:30: assocs[0].dealy: unknown key; did you mean `delay`?",
        ),
        (
            "events: {e: {}}\ntrigger:\n  - {event: e, seq: 2}\n",
            "flow.yaml:3:16: trigger[0].seq: unknown key; did you mean `sequence`?",
        ),
        // wrong types
        ("- a\n- b\n", "flow.yaml:1:1: top level: expected a mapping, found a list"),
        ("steps: [a, b]\n", "flow.yaml:1:8: steps: expected a mapping, found a list"),
        (
            "steps:\n  s1: {timeout: [1]}\n",
            "flow.yaml:2:17: steps.s1.timeout: expected a duration, found a list",
        ),
        (
            "steps:\n  s1: {max_concurrent: lots}\n",
            "flow.yaml:2:24: steps.s1.max_concurrent: expected a whole number, found `lots`",
        ),
        (
            "steps:\n  s1: {max_concurrent: 0}\n",
            "flow.yaml:2:24: steps.s1.max_concurrent: must be at least 1, found 0",
        ),
        (
            "steps:\n  s1: {retries: -1}\n",
            "flow.yaml:2:17: steps.s1.retries: must be between 0 and 4294967295, found -1",
        ),
        (
            "steps:\n  s1: {retry_delay: soon}\n",
            "flow.yaml:2:21: steps.s1.retry_delay: invalid duration `soon`: expected number at 0",
        ),
        (
            "steps:\n  s1: {stop_on_exception: maybe}\n",
            "flow.yaml:2:27: steps.s1.stop_on_exception: expected true or false, found `maybe`",
        ),
        (
            "steps:\n  s1: {run: {a: 1}}\n",
            "flow.yaml:2:13: steps.s1.run: expected a string, found a mapping",
        ),
        (
            "config: {envvar_prefix: A-B}\n",
            "flow.yaml:1:25: config.envvar_prefix: invalid prefix `A-B`: use letters, digits \
             and `_`, not starting with a digit",
        ),
        (
            "steps:\n  s1: {recovery: {failure: retry}}\n",
            "flow.yaml:2:28: steps.s1.recovery.failure: expected `skip` or `rerun`, found `retry`",
        ),
        (
            "resources: {db: 0}\n",
            "flow.yaml:1:17: resources.db: must be between 1 and 4294967295, found 0",
        ),
        // duplicate and clashing names
        (
            "events:\n  start: {}\n  start: {}\n",
            "flow.yaml:3:3: events.start: duplicate event `start` (first defined at line 2)",
        ),
        (
            "steps:\n  s1: {}\n  s2: {}\n  s1: {run: x}\n",
            "flow.yaml:4:3: steps.s1: duplicate step `s1` (first defined at line 2)",
        ),
        (
            "steps:\n  s1: {run: a, run: b}\n",
            "flow.yaml:2:16: steps.s1.run: duplicate key `run` (first defined at line 2)",
        ),
        (
            "events: {x: {}}\nsteps: {x: {}}\nassocs:\n  - {event: x, targets: [x]}\n",
            "flow.yaml:4:26: assocs[0].targets[0]: `x` is both a step and an event: write \
             {step: x} or {event: x}",
        ),
        (
            "events: {x: {}}\nsteps: {x: {}}\nassocs:\n  - {event: x, targets: [{step: y}]}\n",
            "flow.yaml:4:33: assocs[0].targets[0].step: unknown step `y`",
        ),
        (
            "events: {e: {}}\nsteps: {s: {}}\nassocs:\n  - {event: e, targets: [{event: s}]}\n",
            "flow.yaml:4:34: assocs[0].targets[0].event: unknown event `s`",
        ),
        (
            "events: {x: {}}\nsteps: {x: {}}\nassocs:\n  - {event: x, targets: [{step: x, event: \
             x}]}\n",
            "flow.yaml:4:43: assocs[0].targets[0].event: give `step` or `event`, not both",
        ),
        (
            "events: {x: {}}\nsteps: {x: {}}\nassocs:\n  - {event: x, targets: [{stp: x}]}\n",
            "flow.yaml:4:27: assocs[0].targets[0].stp: unknown key; did you mean `step`?",
        ),
        (
            "events:\n  bad name: {}\n",
            "flow.yaml:2:3: events.bad name: invalid event name `bad name`: use letters, digits \
             and `_ . : -`, starting with a letter or `_` (and not `and`, `or`, `not`)",
        ),
        // expressions
        (
            "events:\n  s1_done: {}\n  both: {expr: \"s1_done & s9\"}\n",
            "flow.yaml:3:16: events.both.expr: unknown event `s9` at column 11",
        ),
        (
            "events:\n  s1_done: {}\n  both: {expr: \"s1_done & (s2 | )\"}\n",
            "flow.yaml:3:16: events.both.expr: expected an event name, found ')' at column 17",
        ),
        (
            "events:\n  a: {}\n  both:\n    expr: a & (a\n",
            "flow.yaml:4:11: events.both.expr: unclosed '(' at column 5",
        ),
        // assocs
        (
            "events: {e: {}}\nsteps: {s1: {}}\nassocs:\n  - {event: e, targets: [s1]}\n  - {event: e, targets: [s1, s9]}\n",
            "flow.yaml:5:30: assocs[1].targets[1]: unknown step or event `s9`; did you mean `s1`?",
        ),
        (
            "events: {e: {}}\nsteps: {s1: {}}\nassocs:\n  - {event: nope, targets: [s1]}\n",
            "flow.yaml:4:13: assocs[0].event: unknown event `nope`",
        ),
        (
            "events: {e: {}}\nsteps: {s1: {}}\nassocs:\n  - {event: s1, targets: [e]}\n",
            "flow.yaml:4:13: assocs[0].event: `s1` is a step, not an event",
        ),
        (
            "events: {e: {}}\nassocs:\n  - {event: e}\n",
            "flow.yaml:3:5: assocs[0]: missing `targets`",
        ),
        (
            "events: {e: {}}\nassocs:\n  - {event: e, targets: []}\n",
            "flow.yaml:3:25: assocs[0].targets: must name at least one step or event",
        ),
        (
            "events: {e: {}}\nassocs: {event: e}\n",
            "flow.yaml:2:9: assocs: expected a list, found a mapping",
        ),
        // step triggers and start triggers
        (
            "events: {a: {}}\nsteps:\n  s1:\n    triggers:\n      success: [a, b]\n",
            "flow.yaml:5:20: steps.s1.triggers.success[1]: unknown event `b`",
        ),
        (
            "events: {a: {}}\nsteps:\n  s1:\n    triggers: {failure: zz}\n",
            "flow.yaml:4:25: steps.s1.triggers.failure: unknown event `zz`",
        ),
        (
            "events: {a: {}}\ntrigger:\n  - {event: a}\n  - event: b\n",
            "flow.yaml:4:12: trigger[1].event: unknown event `b`",
        ),
        (
            "events: {a: {}}\ntrigger:\n  - {sequence: 2}\n",
            "flow.yaml:3:5: trigger[0]: missing `event`",
        ),
        // "did you mean" for names as for keys
        (
            "events: {start: {}}\ntrigger: [{event: strat}]\n",
            "flow.yaml:2:19: trigger[0].event: unknown event `strat`; did you mean `start`?",
        ),
        (
            "events: {s1_done: {}}\nsteps:\n  s1: {triggers: {success: s1_dne}}\n",
            "flow.yaml:3:28: steps.s1.triggers.success: unknown event `s1_dne`; did you mean \
             `s1_done`?",
        ),
        (
            "events: {load_done: {}, both: {expr: \"load_dnoe | load_done\"}}\n",
            "flow.yaml:1:38: events.both.expr: unknown event `load_dnoe` at column 1; did you \
             mean `load_done`?",
        ),
        (
            "events: {e: {}}\nsteps: {extract: {}}\nassocs:\n  - {event: e, targets: [{step: extrct}]}\n",
            "flow.yaml:4:33: assocs[0].targets[0].step: unknown step `extrct`; did you mean \
             `extract`?",
        ),
        // store
        ("store: ''\n", "flow.yaml:1:8: store: must not be empty"),
        (
            "store: mysql://db/x\n",
            "flow.yaml:1:8: store: unsupported store scheme mysql:// (use postgres://, \
             sqlite:PATH or a file path)",
        ),
        // durations
        (
            "steps:\n  s1: {timeout: 3 parsecs}\n",
            "flow.yaml:2:17: steps.s1.timeout: invalid duration `3 parsecs`: unknown time unit \
             \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, \
             years (and few variations)",
        ),
        (
            "steps:\n  s1: {timeout: -5}\n",
            "flow.yaml:2:17: steps.s1.timeout: must not be negative, found -5",
        ),
        (
            "steps:\n  s1: {timeout: 0s}\n",
            "flow.yaml:2:17: steps.s1.timeout: must be longer than zero",
        ),
        // ranges
        (
            "events: {a: {}}\ntrigger:\n  - {event: a, range: [5, 2]}\n",
            "flow.yaml:3:23: trigger[0].range: `from` (5) is greater than `to` (2)",
        ),
        (
            "events: {a: {}}\ntrigger:\n  - {event: a, range: [-1, 2]}\n",
            "flow.yaml:3:24: trigger[0].range[0]: must not be negative, found -1",
        ),
        (
            "events: {a: {}}\ntrigger:\n  - {event: a, range: [1, 2, 3]}\n",
            "flow.yaml:3:23: trigger[0].range: expected [from, to], found a list of 3",
        ),
        (
            "events: {a: {}}\ntrigger:\n  - {event: a, range: [0, 100000]}\n",
            "flow.yaml:3:23: trigger[0].range: covers more than 100000 sequences",
        ),
        (
            "events: {a: {}}\ntrigger:\n  - {event: a, sequence: 1, range: [1, 2]}\n",
            "flow.yaml:3:36: trigger[0].range: `sequence` and `range` are both set; use one of them",
        ),
        // resources
        (
            "resources: {db: 2}\nsteps:\n  s1: {acquires: {db: 3}}\n",
            "flow.yaml:3:23: steps.s1.acquires.db: asks for 3 but pool `db` has capacity 2",
        ),
        (
            "resources: {db: 2}\nsteps:\n  s1: {acquires: {cache: 1}}\n",
            "flow.yaml:3:19: steps.s1.acquires.cache: unknown resource pool `cache`",
        ),
        (
            "resources: {db: 2}\nsteps:\n  s1: {releases: {db: 5}}\n",
            "flow.yaml:3:23: steps.s1.releases.db: asks for 5 but pool `db` has capacity 2",
        ),
        // hosts
        (
            "steps:\n  s1: {host: a, hosts: [b]}\n",
            "flow.yaml:2:24: steps.s1.hosts: `host` and `hosts` are both set; use one of them",
        ),
        (
            "steps:\n  s1: {hosts: [b, b]}\n",
            "flow.yaml:2:19: steps.s1.hosts[1]: host `b` is listed twice",
        ),
        // environment
        (
            "steps:\n  s1: {env: {A=B: x}}\n",
            "flow.yaml:2:14: steps.s1.env.A=B: invalid environment variable name `A=B`",
        ),
    ];

    #[test]
    fn an_event_and_a_step_may_share_a_name_and_targets_say_which() {
        let text = "events: {go: {}, s1: {}}\nsteps: {s1: {triggers: {success: [s1]}}, s2: {}}\n\
                    assocs:\n  - {event: go, targets: [{step: s1}, {event: s1}]}\n  \
                    - {event: s1, targets: s2}\n";
        let flow = parse_flow(text, Path::new("flow.yaml")).unwrap();
        let targets: Vec<&[AssocTarget]> = flow.assocs.iter().map(|a| &a.targets[..]).collect();
        assert_eq!(
            targets,
            [
                &[
                    AssocTarget::Step("s1".into()),
                    AssocTarget::Event("s1".into())
                ][..],
                &[AssocTarget::Named("s2".into())][..],
            ]
        );
    }

    #[test]
    fn reports_errors_with_file_line_column_and_field() {
        let mismatches: Vec<String> = ERROR_CASES
            .iter()
            .filter_map(|(text, want)| {
                let got = err(text);
                (got != *want).then(|| format!("{text:?}\n  got: {got}\n want: {want}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn errors_expose_position_and_field() {
        let e = parse("steps:\n  s1: {run: x, tiemout: 3s}\n").unwrap_err();
        let at = e.position().unwrap();
        assert_eq!((at.line, at.column), (2, Some(16)));
        assert_eq!(e.field(), Some("steps.s1.tiemout"));
        let syntax = parse("a: [").unwrap_err();
        assert!(matches!(syntax, FlowError::Syntax { .. }));
        assert_eq!(syntax.field(), None);
    }

    #[test]
    fn load_flow_reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etl.yaml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let flow = load_flow(&path).unwrap();
        assert_eq!(
            (flow.path.as_path(), flow.name.as_str()),
            (path.as_path(), "nightly")
        );

        let missing = dir.path().join("missing.yaml");
        let e = load_flow(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read the flow file", missing.display())),
            "{e}"
        );

        std::fs::write(&path, "steps:\n  s1: {tiemout: 1}\n").unwrap();
        let e = load_flow(&path).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2:8: steps.s1.tiemout: unknown key; did you mean `timeout`?",
                path.display()
            )
        );
    }

    #[test]
    fn sequences_keep_their_spelling() {
        let text = "events: {a: {}}\ntrigger:\n  - {event: a, sequence: 007}\n  - {event: a, sequence: 1.50}\n  - {event: a, sequence: &s 0x1F}\n  - {event: a, sequence: *s}\n";
        let flow = parse(text).unwrap();
        let seqs: Vec<&str> = flow
            .triggers
            .iter()
            .map(|t| t.sequences[0].as_str())
            .collect();
        assert_eq!(seqs, ["007", "1.50", "0x1F", "0x1F"]);
    }

    #[test]
    fn field_paths_stay_on_one_line() {
        let e = parse("steps:\n  \"a\\nb\": {}\n").unwrap_err().to_string();
        assert!(
            e.starts_with("flow.yaml:2:3: steps.a\\nb: invalid step name `a\\nb`"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn anchors_and_merges_resolve() {
        let text =
            "steps:\n  a: &base {run: x, timeout: 5}\n  b: *base\n  c: {<<: *base, host: h}\n";
        let flow = parse(text).unwrap();
        assert_eq!(flow.steps[1].run.as_deref(), Some("x"));
        assert_eq!(flow.steps[2].timeout, Some(Duration::from_secs(5)));
        assert_eq!(flow.steps[2].host.as_deref(), Some("h"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("steps: {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&deep).is_err());
        let just_too_deep = format!("steps: {}{}", "[".repeat(24), "]".repeat(24));
        let e = parse(&just_too_deep).unwrap_err().to_string();
        assert_eq!(e, "flow.yaml:1:31: yaml: nested more than 24 levels deep");
        let nested_maps = format!(
            "steps:{}",
            (1..200)
                .map(|i| format!("\n{}k:", " ".repeat(i)))
                .collect::<String>()
        );
        assert!(parse(&nested_maps).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_yaml_like_text(
            parts in prop::collection::vec(prop_oneof![
                Just("steps:"), Just("events:"), Just("assocs:"), Just("trigger:"),
                Just("resources:"), Just("config:"), Just("\n"), Just("\n  "), Just("\n    "),
                Just("- "), Just("{"), Just("}"), Just("["), Just("]"), Just(", "), Just(": "),
                Just("s1"), Just("e"), Just("&a "), Just("*a"), Just("<<: "), Just("expr: "),
                Just("\"a & (b\""), Just("run"), Just("timeout: 3 parsecs"), Just("range: [5, 2]"),
                Just("targets"), Just("event"), Just("acquires"), Just("db"), Just("2"),
                Just("-1"), Just("~"), Just("yes"), Just("'x'"), Just("? "), Just("!!str "),
                Just("#c"), Just("---\n"), Just("|\n  x"),
            ], 0..40)
        ) {
            let text: String = parts.concat();
            let _ = parse(&text);
        }
    }
}
