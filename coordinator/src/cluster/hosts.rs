//! The hosts file: which cluster hosts a run may use, how to reach each one (an ssh alias
//! resolved through an ssh_config), where its agent binary lives and whether the prime
//! installs it, how its agent reaches the store, how many tasks it takes at once and what
//! environment its agent gets.
//!
//! ```yaml
//! store: postgres://eventor@prime:5432/eventor   # the store every node uses (or --store)
//! ssh_config: ~/.ssh/config                       # the default
//! lease: 30s                                      # the default (per host too)
//! max_startups: 10                                # logins set up at once (the default)
//! env_from_prime: [DB_PASSWORD]                   # copied into every host's tasks
//! quarantine: {failures: 3, within: 10m, cooldown: 5m}   # the default (per host too)
//! hosts:
//!   node1: {}                                     # the name is the ssh alias
//!   node2: {ssh: gpu-box, agent: /opt/eventor/bin/eventor-agent, max_concurrent: 8,
//!           env: {PATH: /opt/bin:/usr/bin}, deploy: never, store_via: ssh}
//! ```
//!
//! `agent:` defaults to `~/.cache/eventor/eventor-agent-VERSION-HASH` on the host (the
//! prime's own agent, named by its version and content hash). `deploy: auto` (the default)
//! has the prime install its agent there when it is missing or differs
//! ([`super::deploy`]); `deploy: never` only checks that it is there. `store_via: ssh`
//! (default `direct`) has the host's agent reach the store through the prime's SSH
//! connection rather than over its own network. `lease:` (default 30 s, at least 1 s) is
//! how long a host's agent keeps running its tasks after it lost the prime: the prime
//! starts no other attempt of such a task before then. `max_startups:` (default 10) is how
//! many SSH logins are set up at once; the rest wait in order (a bastion's sshd refuses
//! beyond 10 by default). `quarantine:` says when a misbehaving host gets no new task
//! ([`super::quarantine`]): after `failures` host-class failures within `within`, for
//! `cooldown` (doubled when it fails again right after); a host's own fields override the
//! file's one by one.
//!
//! It is read with the same located-YAML reader as the flow file, so every error names
//! `FILE:LINE:COL: FIELD: message`, and unknown keys, wrong types and an empty `hosts`
//! mapping are errors rather than silently ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::quarantine::QuarantineRule;
use crate::yaml::{self, At, Entry, Node, Problem};

const TOP_KEYS: &[&str] = &[
    "store",
    "ssh_config",
    "lease",
    "max_startups",
    "env_from_prime",
    "quarantine",
    "hosts",
];
const QUARANTINE_KEYS: &[&str] = &["failures", "within", "cooldown"];
/// How long a host's agent keeps its tasks running after it lost the prime, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

const HOST_KEYS: &[&str] = &[
    "lease",
    "ssh",
    "agent",
    "max_concurrent",
    "env",
    "deploy",
    "store_via",
    "python",
    "quarantine",
];
pub use super::local_agent::AGENT_BINARY;

/// A loaded and checked hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    pub path: PathBuf,
    /// `store:`, the store URL every node uses; `None` when the file names none (the
    /// command line's `--store` then has to).
    pub store: Option<String>,
    /// `ssh_config:` with `~` expanded and a relative path taken from the hosts file's
    /// directory; `None` means OpenSSH's default, `~/.ssh/config` when it exists.
    pub ssh_config: Option<PathBuf>,
    /// `max_startups:`, the SSH logins set up at once.
    pub max_startups: usize,
    /// In the order of the file; never empty.
    pub hosts: Vec<HostSpec>,
    /// `env_from_prime:`: variables copied from the prime's environment into every task on
    /// a host, through the session (never on the agent's command line, never stored).
    pub env_from_prime: Vec<String>,
}

/// One entry of `hosts:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// The host's name in the cluster: in flow files (`host:`), log lines and events.
    pub name: String,
    /// The ssh_config alias to connect to (default: `name`).
    pub ssh: String,
    /// The agent binary's path on the host (default: `eventor-agent` next to the running
    /// executable, which suits hosts that share the coordinator's file system layout).
    pub agent: String,
    /// Most tasks at once on this host; `None` leaves it to the flow's limits.
    pub max_concurrent: Option<u32>,
    /// Variables of the agent and so of every task it runs, in file order (`env:`): written
    /// on the agent's stdin before the protocol starts ([`ENV_IN`]), never on a command
    /// line.
    pub env: Vec<(String, String)>,
    /// The Python interpreter that runs a Python program as its own agent here (`python:`,
    /// an absolute path); `None`: the prime's own interpreter's path.
    pub python: Option<String>,
    /// Arguments after `agent` on its command line: a Python program's script, when the
    /// agent is the interpreter running it.
    pub agent_args: Vec<String>,
    /// Variables of the agent process itself: the prime's markers (agent mode, the run to
    /// resume), which are no secret; on its command line.
    pub launch: Vec<(String, String)>,
    /// Whether the prime installs its agent at `agent` (`deploy:`).
    pub deploy: Deploy,
    /// How the agent reaches the store (`store_via:`).
    pub store_via: StoreVia,
    /// `lease:` (the host's own, else the file's, else [`DEFAULT_LEASE`]): how long its
    /// agent keeps running its tasks after it lost the prime. No other attempt of such a
    /// task starts before the lease has passed, so a short one trades safety margin for a
    /// quicker retry elsewhere.
    pub lease: Duration,
    /// `quarantine:` (the host's own fields, else the file's, else the defaults): when the
    /// host gets no new task, and for how long.
    pub quarantine: QuarantineRule,
    /// Line of the host's name in the file.
    pub line: usize,
}

/// `deploy:`: whether the prime installs its agent on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deploy {
    /// Upload the prime's agent when the file at `agent` is missing or differs.
    #[default]
    Auto,
    /// Never upload; a missing agent is an error.
    Never,
}

/// `store_via:`: how the host's agent reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreVia {
    /// Over the host's own network, at the address the store URL names.
    #[default]
    Direct,
    /// Through the prime's SSH connection (a port forwarded to the store as the prime
    /// reaches it), for hosts that cannot see the store.
    Ssh,
}

impl HostsFile {
    /// The host called `name`.
    pub fn host(&self, name: &str) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Every host's name, in file order.
    pub fn names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }
}

impl HostSpec {
    /// The remote shell command that starts this host's agent with `args`:
    /// `exec env K=V … AGENT ARGS…` (the [`launch`](Self::launch) markers only), every word
    /// quoted for a POSIX shell; with an `env:`, the agent is started by a shell that first
    /// reads it from stdin ([`ENV_IN`], [`env_lines`](Self::env_lines)). `exec` makes the
    /// agent the channel's process, so its exit status and signals are the channel's.
    pub fn agent_command(&self, args: &[String]) -> String {
        let mut words = vec!["exec".to_string()];
        if !self.launch.is_empty() {
            words.push("env".into());
            words.extend(
                self.launch
                    .iter()
                    .map(|(k, v)| format!("{k}={}", shell_quote(v))),
            );
        }
        if !self.env.is_empty() {
            let script = format!(r#"{ENV_IN}; exec "$0" "$@""#);
            words.extend(["sh".into(), "-c".into(), shell_quote(&script)]);
        }
        words.push(quote_path(&self.agent));
        words.extend(self.agent_args.iter().chain(args).map(|a| shell_quote(a)));
        words.join(" ")
    }

    /// The host's `env:` as [`ENV_IN`] reads it: `NAME=VALUE` lines and an empty one (a
    /// value holding a newline stays out: it would end the list early); empty without any.
    pub fn env_lines(&self) -> String {
        if self.env.is_empty() {
            return String::new();
        }
        let mut text = String::new();
        for (name, value) in self.env.iter().filter(|(_, v)| !v.contains('\n')) {
            text.push_str(&format!("{name}={value}\n"));
        }
        text.push('\n');
        text
    }
}

/// Reads `NAME=VALUE` lines from stdin up to an empty one (or its end) and exports them: how
/// a host's `env:` reaches the agent (and a deploy probe) with no value on a command line.
/// A shell's `read` takes stdin a byte at a time, so what follows (the protocol) is left
/// for the agent.
pub const ENV_IN: &str = r#"while IFS= read -r l && [ -n "$l" ]; do export "$l"; done"#;

/// Quotes `word` for a POSIX shell, leaving plainly safe words as they are.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./=:@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Like [`shell_quote`], but a leading `~/` stays unquoted so the remote shell expands it.
pub(super) fn quote_path(path: &str) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => format!("~/{}", shell_quote(rest)),
        None => shell_quote(path),
    }
}

/// Why a hosts file could not be loaded.
pub use crate::yaml::FileError as HostsError;

/// What the file's defaults come from; [`HostDefaults::from_env`] outside tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDefaults {
    /// The agent path on hosts without `agent:`; `None` when it cannot be known (then
    /// such a host is an error naming it).
    pub agent: Option<String>,
    /// `$HOME`, for `~` in `ssh_config:`.
    pub home: Option<PathBuf>,
}

impl HostDefaults {
    /// The per-version cache path of the `eventor-agent` next to the running executable
    /// (see [`local_agent_binary`]; without its hash when it cannot be read, and then
    /// there is nothing to install), and `$HOME`.
    pub fn from_env() -> HostDefaults {
        let hashed = local_agent_binary()
            .and_then(|path| super::local_agent::LocalAgent::of(&path).ok())
            .map(|local| local.default_remote_path());
        let version = env!("CARGO_PKG_VERSION");
        let agent = hashed.or_else(|| Some(format!("~/.cache/eventor/{AGENT_BINARY}-{version}")));
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        HostDefaults { agent, home }
    }
}

/// The prime's own agent binary, which it installs on hosts: `eventor-agent` next to the
/// running executable.
pub fn local_agent_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.join(AGENT_BINARY))
}

/// Reads and checks a hosts file.
pub fn load_hosts(path: &Path) -> Result<HostsFile, HostsError> {
    let text = yaml::read_file(path, "hosts")?;
    parse_hosts(&text, path, &HostDefaults::from_env())
}

/// Checks a hosts file given as text; `path` names it in errors and anchors a relative
/// `ssh_config`.
pub fn parse_hosts(
    text: &str,
    path: &Path,
    defaults: &HostDefaults,
) -> Result<HostsFile, HostsError> {
    let convert = |p| HostsError::from_problem(path, p);
    let root = yaml::parse_document(text).map_err(convert)?;
    build(&root, path, defaults).map_err(convert)
}

fn build(root: &Node, path: &Path, defaults: &HostDefaults) -> Result<HostsFile, Problem> {
    let top = At::root(root);
    if root.is_null() {
        return Err(top.problem("the hosts file is empty"));
    }
    let fields = top.mapping(TOP_KEYS)?;
    let hosts_at = fields.required("hosts", &top)?;
    let lease = match fields.get("lease") {
        Some(at) => read_lease(at)?,
        None => DEFAULT_LEASE,
    };
    let quarantine = match fields.get("quarantine") {
        Some(at) => read_quarantine(at, QuarantineRule::default())?,
        None => QuarantineRule::default(),
    };
    let file_wide = FileWide { lease, quarantine };
    Ok(HostsFile {
        path: path.to_path_buf(),
        store: fields.get("store").map(At::store).transpose()?,
        ssh_config: fields
            .get("ssh_config")
            .map(|at| read_ssh_config(at, path, defaults))
            .transpose()?,
        max_startups: match fields.get("max_startups") {
            Some(at) => at.count()? as usize,
            None => eventor_ssh::MAX_STARTUPS,
        },
        hosts: read_hosts(hosts_at, defaults, &file_wide)?,
        env_from_prime: fields
            .get("env_from_prime")
            .map_or(Ok(Vec::new()), At::var_names)?,
    })
}

fn read_ssh_config(at: &At<'_>, file: &Path, defaults: &HostDefaults) -> Result<PathBuf, Problem> {
    let text = at.string()?;
    let path = expand_home(&text, defaults.home.as_deref()).map_err(|m| at.problem(m))?;
    if path.is_absolute() {
        return Ok(path);
    }
    let dir = file.parent().unwrap_or(Path::new(""));
    Ok(dir.join(path))
}

/// `~` and `~/rest` become `$HOME` and `$HOME/rest`; other paths are kept.
fn expand_home(text: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let rest = match text.strip_prefix('~') {
        None => return Ok(PathBuf::from(text)),
        Some("") => "",
        Some(rest) => rest
            .strip_prefix('/')
            .ok_or("only `~` and `~/…` are expanded, not `~user`")?,
    };
    let home = home.ok_or("cannot expand `~`: $HOME is not set")?;
    Ok(home.join(rest))
}

/// A lease: a duration of at least a second (a shorter one would end tasks over a blip).
fn read_lease(at: &At<'_>) -> Result<Duration, Problem> {
    let lease = at.duration()?;
    if lease < Duration::from_secs(1) {
        return Err(at.problem("must be at least 1s"));
    }
    Ok(lease)
}

/// `quarantine:`: the fields given replace those of `base` (the file's, or the defaults).
fn read_quarantine(at: &At<'_>, base: QuarantineRule) -> Result<QuarantineRule, Problem> {
    let fields = at.mapping(QUARANTINE_KEYS)?;
    let positive = |key: &str| -> Result<Option<Duration>, Problem> {
        let Some(at) = fields.get(key) else {
            return Ok(None);
        };
        match at.duration()? {
            d if d.is_zero() => Err(at.problem("must be more than zero")),
            d => Ok(Some(d)),
        }
    };
    Ok(QuarantineRule {
        failures: match fields.get("failures") {
            Some(at) => at.count()?,
            None => base.failures,
        },
        within: positive("within")?.unwrap_or(base.within),
        cooldown: positive("cooldown")?.unwrap_or(base.cooldown),
    })
}

/// What the file says for every host, unless the host says otherwise.
struct FileWide {
    lease: Duration,
    quarantine: QuarantineRule,
}

fn read_hosts(
    at: &At<'_>,
    defaults: &HostDefaults,
    file_wide: &FileWide,
) -> Result<Vec<HostSpec>, Problem> {
    let entries = at.entries("host")?;
    if entries.is_empty() {
        return Err(at.problem("no hosts: name at least one"));
    }
    entries
        .iter()
        .map(|e| read_host(e, defaults, file_wide))
        .collect()
}

fn read_host(
    entry: &Entry<'_>,
    defaults: &HostDefaults,
    file_wide: &FileWide,
) -> Result<HostSpec, Problem> {
    check_host_name(entry)?;
    let fields = entry.value.mapping(HOST_KEYS)?;
    let ssh = match fields.get("ssh") {
        Some(at) => read_word(at)?,
        None => entry.name.clone(),
    };
    let agent = match fields.get("agent") {
        Some(at) => read_word(at)?,
        None => defaults.agent.clone().ok_or_else(|| {
            entry.key.problem(format!(
                "no `agent` given and `{AGENT_BINARY}` next to this program cannot be read"
            ))
        })?,
    };
    Ok(HostSpec {
        name: entry.name.clone(),
        ssh,
        agent,
        max_concurrent: fields.get("max_concurrent").map(At::count).transpose()?,
        env: fields
            .get("env")
            .map(read_env)
            .transpose()?
            .unwrap_or_default(),
        python: fields.get("python").map(read_python).transpose()?,
        agent_args: Vec::new(),
        launch: Vec::new(),
        deploy: match read_choice(fields.get("deploy"), &["auto", "never"])? {
            Some("never") => Deploy::Never,
            _ => Deploy::Auto,
        },
        store_via: match read_choice(fields.get("store_via"), &["direct", "ssh"])? {
            Some("ssh") => StoreVia::Ssh,
            _ => StoreVia::Direct,
        },
        lease: fields
            .get("lease")
            .map(read_lease)
            .transpose()?
            .unwrap_or(file_wide.lease),
        quarantine: match fields.get("quarantine") {
            Some(at) => read_quarantine(at, file_wide.quarantine)?,
            None => file_wide.quarantine,
        },
        line: entry.key.node.line,
    })
}

/// One of `choices`, or `None` when the key is absent.
fn read_choice(
    at: Option<&At<'_>>,
    choices: &[&'static str],
) -> Result<Option<&'static str>, Problem> {
    let Some(at) = at else { return Ok(None) };
    let text = at.string()?;
    match choices.iter().find(|c| **c == text) {
        Some(choice) => Ok(Some(*choice)),
        None => Err(at.problem(format!("must be one of: {}", choices.join(", ")))),
    }
}

/// Names appear unquoted in log lines and on command lines, so they are kept plain.
fn check_host_name(entry: &Entry<'_>) -> Result<(), Problem> {
    let name = &entry.name;
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if name.is_empty() || name.starts_with('-') || !name.chars().all(plain) {
        let message = format!(
            "invalid host name `{name}`: use letters, digits, `.`, `_` and `-` (not first)"
        );
        return Err(entry.key.problem(message));
    }
    Ok(())
}

/// A non-empty string without whitespace or control characters (an alias, a path).
fn read_word(at: &At<'_>) -> Result<String, Problem> {
    let word = at.string()?;
    if word.is_empty() {
        return Err(at.problem("must not be empty"));
    }
    if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(at.problem("must not contain spaces or control characters"));
    }
    Ok(word)
}

/// `python:`: an interpreter's absolute path (the host runs it without a shell's search).
fn read_python(at: &At<'_>) -> Result<String, Problem> {
    let path = read_word(at)?;
    if !path.starts_with('/') {
        return Err(at.problem(format!("must be an absolute path, not `{path}`")));
    }
    Ok(path)
}

/// Variables go on the agent's command line (`env NAME=value`), so names are shell
/// identifiers.
fn read_env(at: &At<'_>) -> Result<Vec<(String, String)>, Problem> {
    let mut out = Vec::new();
    for entry in at.entries("variable")? {
        if !is_identifier(&entry.name) {
            let message = format!(
                "invalid environment variable name `{}`: use letters, digits and `_`, not a digit first",
                entry.name
            );
            return Err(entry.key.problem(message));
        }
        let value = entry.value.string()?;
        if value.contains('\0') {
            return Err(entry.value.problem("must not contain a NUL character"));
        }
        out.push((entry.name, value));
    }
    Ok(out)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for HostSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ssh == self.name {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{} (ssh {})", self.name, self.ssh)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> HostDefaults {
        HostDefaults {
            agent: Some("/opt/coord/eventor-agent".into()),
            home: Some("/home/ev".into()),
        }
    }

    fn parse(text: &str) -> Result<HostsFile, HostsError> {
        parse_hosts(text, Path::new("conf/cluster.yaml"), &defaults())
    }

    #[test]
    fn a_lease_is_the_hosts_own_else_the_files_else_thirty_seconds() {
        let file = parse("hosts:\n  a: {}\n").unwrap();
        assert_eq!(file.host("a").unwrap().lease, DEFAULT_LEASE);
        let file = parse("lease: 2m\nhosts:\n  a: {}\n  b: {lease: 5s}\n").unwrap();
        assert_eq!(file.host("a").unwrap().lease, Duration::from_secs(120));
        assert_eq!(file.host("b").unwrap().lease, Duration::from_secs(5));
        let error = parse("hosts:\n  a: {lease: 200ms}\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("conf/cluster.yaml:2:") && error.contains("at least 1s"),
            "{error}"
        );
    }

    #[test]
    fn a_quarantine_field_is_the_hosts_own_else_the_files_else_the_default() {
        let file = parse(
            "quarantine: {failures: 2, cooldown: 1m}\nhosts:\n  a: {}\n  b: {quarantine: {cooldown: 3s}}\n",
        )
        .unwrap();
        let a = file.host("a").unwrap().quarantine;
        assert_eq!(
            (a.failures, a.within, a.cooldown),
            (2, Duration::from_secs(600), Duration::from_secs(60))
        );
        let b = file.host("b").unwrap().quarantine;
        assert_eq!((b.failures, b.cooldown), (2, Duration::from_secs(3)));
        for (bad, field) in [
            ("hosts:\n  a: {quarantine: {cooldown: 0s}}\n", "cooldown"),
            ("hosts:\n  a: {quarantine: {failures: 0}}\n", "failures"),
            ("quarantine: {within: soon}\nhosts:\n  a: {}\n", "within"),
            ("quarantine: {after: 3}\nhosts:\n  a: {}\n", "after"),
        ] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(
                error.contains("conf/cluster.yaml:") && error.contains(field),
                "{error}"
            );
        }
    }

    #[test]
    fn reads_the_documented_example() {
        let text = "store: postgres://eventor@prime:5432/eventor
ssh_config: ~/.ssh/config
hosts:
  node1: {}
  node2: {ssh: gpu-box, agent: /opt/eventor/bin/eventor-agent, max_concurrent: 8, env: {PATH: /opt/bin:/usr/bin}}
";
        let file = parse(text).unwrap();
        assert_eq!(
            file.store.as_deref(),
            Some("postgres://eventor@prime:5432/eventor")
        );
        assert_eq!(
            file.ssh_config.as_deref(),
            Some(Path::new("/home/ev/.ssh/config"))
        );
        let node1 = file.host("node1").unwrap();
        assert_eq!(
            (node1.ssh.as_str(), node1.agent.as_str(), node1.line),
            ("node1", "/opt/coord/eventor-agent", 4)
        );
        assert_eq!((node1.max_concurrent, node1.env.len()), (None, 0));
        let node2 = file.host("node2").unwrap();
        assert_eq!(node2.ssh, "gpu-box");
        assert_eq!(node2.agent, "/opt/eventor/bin/eventor-agent");
        assert_eq!(node2.max_concurrent, Some(8));
        assert_eq!(node2.env, vec![("PATH".into(), "/opt/bin:/usr/bin".into())]);
        assert_eq!(
            (node1.deploy, node1.store_via),
            (Deploy::Auto, StoreVia::Direct)
        );
        assert_eq!(file.names(), vec!["node1", "node2"]);
    }

    #[test]
    fn defaults_and_relative_ssh_config() {
        let file = parse("ssh_config: ssh/config\nhosts: {a:}\n").unwrap();
        assert_eq!(file.store, None);
        assert_eq!(
            file.ssh_config.as_deref(),
            Some(Path::new("conf/ssh/config"))
        );
        assert_eq!(parse("hosts: {a:}").unwrap().ssh_config, None);
    }

    #[test]
    fn agent_command_quotes_for_the_shell_and_holds_no_env_value() {
        let file =
            parse("hosts:\n  a: {agent: ~/bin/eventor agent, env: {P: \"it's\", Q: plain}}\n");
        assert!(file.is_err(), "spaces in agent are refused");
        let mut file =
            parse("hosts:\n  a: {agent: ~/bin/eventor-agent, env: {P: \"it's\", Q: plain}}\n")
                .unwrap();
        let args = ["--store".to_string(), "postgres://x y".to_string()];
        let command = file.hosts[0].agent_command(&args);
        assert!(!command.contains("it'"), "no env value: {command}");
        assert!(
            command.ends_with(r#"exec "$0" "$@"' ~/bin/eventor-agent --store 'postgres://x y'"#),
            "{command}"
        );
        assert_eq!(file.hosts[0].env_lines(), "P=it's\nQ=plain\n\n");
        file.hosts[0].env.clear();
        file.hosts[0].launch.push(("M".into(), "it's".into()));
        assert_eq!(
            file.hosts[0].agent_command(&[]),
            r"exec env M='it'\''s' ~/bin/eventor-agent"
        );
    }

    #[test]
    fn python_is_an_absolute_interpreter_path_or_a_problem() {
        let file = parse("hosts:\n  a: {python: /opt/py/bin/python3}\n  b: {}\n").unwrap();
        assert_eq!(file.hosts[0].python.as_deref(), Some("/opt/py/bin/python3"));
        assert_eq!(file.hosts[1].python, None);
        let err = parse("hosts:\n  a: {python: python3}\n").unwrap_err();
        assert!(err.to_string().contains("absolute path"), "{err}");
        assert!(parse("hosts:\n  a: {python: ''}\n").is_err());
    }

    #[test]
    fn env_from_prime_is_a_list_of_variable_names() {
        let file =
            parse("env_from_prime: [DB_PASSWORD, API_TOKEN]\nhosts:\n  node1: {}\n").unwrap();
        assert_eq!(file.env_from_prime, ["DB_PASSWORD", "API_TOKEN"]);
        let err = parse("env_from_prime: [DB-PASSWORD]\nhosts:\n  node1: {}\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("env_from_prime[0]: invalid environment variable name `DB-PASSWORD`"),
            "{err}"
        );
    }

    #[test]
    fn deploy_and_store_via() {
        let file = parse("hosts:\n  a: {deploy: never, store_via: ssh}\n").unwrap();
        assert_eq!(file.hosts[0].deploy, Deploy::Never);
        assert_eq!(file.hosts[0].store_via, StoreVia::Ssh);
        let err = parse("hosts:\n  a: {deploy: sometimes}\n").unwrap_err();
        assert!(
            err.to_string().contains("must be one of: auto, never"),
            "{err}"
        );
    }

    #[test]
    fn missing_default_agent_is_an_error_at_the_host() {
        let defaults = HostDefaults {
            agent: None,
            home: None,
        };
        let err = parse_hosts("hosts:\n  a: {}\n", Path::new("h.yaml"), &defaults).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("h.yaml:2:3: hosts.a: no `agent` given"),
            "{err}"
        );
        let err = parse_hosts(
            "ssh_config: ~/x\nhosts: {a: {agent: /a}}\n",
            Path::new("h.yaml"),
            &defaults,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "h.yaml:1:13: ssh_config: cannot expand `~`: $HOME is not set"
        );
    }
}
