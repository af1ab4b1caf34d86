//! A program as its own agent: the prime starts the same program on each host (told so by
//! environment), and there it serves the prime's tasks, its own closure steps included.
//! The store (and its password) comes in the handshake like any agent's, never by
//! environment or command line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use eventor_agent::{AgentError, AgentOptions, StepAction};
use eventor_protocol::{StoreAccess, StoreTls};
use eventor_store::{PgLocation, StoreLocation, TlsMaterial, TlsSetupError};
use tokio_util::sync::CancellationToken;

use super::deploy::LocalAgent;
use super::error::ClusterError;
use super::hosts::{Deploy, HostsFile};

/// The variable that starts a program as its own agent (set by the prime), and the one
/// that tells it its host's name. (Its store comes in the handshake.)
const AGENT_MODE_VAR: &str = "EVENTOR_AGENT_MODE";
const AGENT_HOST_VAR: &str = "EVENTOR_AGENT_HOST";

/// What the prime told this process by environment: `Some` in agent mode. Read once, by
/// the first [`agent_mode`].
static AGENT_MODE: OnceLock<Option<Told>> = OnceLock::new();

/// What the prime tells a program it starts as its agent.
#[derive(Debug)]
struct Told {
    /// The host's name in the cluster.
    host: Option<String>,
    /// The socket of a surviving agent of the run to look for (see
    /// [`eventor_agent::adopt`]).
    resume: Option<String>,
}

/// Whether this process was started by a prime as the agent of its own closure steps on a
/// cluster host. Call it first in `main` of a program whose closure steps are pinned to
/// other hosts: in agent mode stdout carries the protocol, so print nothing to it, build
/// the same flow, and call `run`, which then serves the prime's tasks. It also does what
/// [`eventor_agent::supervisor::supervise_commands`] does (which see), so the program's
/// commands run under supervisors, here and on the hosts.
///
/// The first call takes the prime's variables out of the process environment (so it must
/// come before any thread is started): a command step it runs, perhaps an eventor program
/// itself, must not start as an agent too. Later calls answer the same.
pub fn agent_mode() -> bool {
    eventor_agent::supervisor::supervise_commands();
    started_as_agent()
}

/// Whether this process was started as an agent, without [`agent_mode`]'s other effect:
/// for `run`, which is not first in `main` and so must never turn supervisors on (the
/// program re-executed as a supervisor would run its flow instead).
pub(crate) fn started_as_agent() -> bool {
    told_by_prime().is_some()
}

/// The prime's variables, taken out of the environment the first time.
fn told_by_prime() -> &'static Option<Told> {
    AGENT_MODE.get_or_init(|| {
        let mode = std::env::var_os(AGENT_MODE_VAR);
        let host = std::env::var(AGENT_HOST_VAR).ok();
        let resume = std::env::var(eventor_agent::adopt::RESUME_VAR).ok();
        for (name, present) in [
            (AGENT_MODE_VAR, mode.is_some()),
            (AGENT_HOST_VAR, host.is_some()),
            (eventor_agent::adopt::RESUME_VAR, resume.is_some()),
        ] {
            if present {
                std::env::remove_var(name);
            }
        }
        mode.map(|_| Told { host, resume })
    })
}

/// Serves a prime on stdin/stdout with `closures` (the program's closure steps by name)
/// until it is done with this host; or, when an agent of the run survives here, carries
/// the prime's bytes to it.
pub async fn serve_program(closures: HashMap<String, StepAction>) -> Result<(), AgentError> {
    let defaults = AgentOptions::default();
    let told = told_by_prime().as_ref();
    let host_name = told.and_then(|t| t.host.clone());
    let resume = told.and_then(|t| t.resume.as_deref());
    let options = AgentOptions {
        host_name: host_name.unwrap_or(defaults.host_name.clone()),
        store: None,
        closures,
        ..defaults
    };
    let (reader, writer) = eventor_agent::stdio::prime_channel();
    // The protocol has its own copy of stdout now: what the program prints later (a step's
    // print, an interpreter's output) goes to stderr instead of into the protocol.
    if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
        tracing::warn!(error = %e, "stdout could not be turned to stderr");
    }
    if let Some(survivor) = eventor_agent::adopt::find_survivor(resume).await {
        return eventor_agent::adopt::bridge(reader, writer, survivor)
            .await
            .map_err(AgentError::Bridge);
    }
    eventor_agent::serve(reader, writer, options, CancellationToken::new())
        .await
        .map(drop)
}

/// A program run by an interpreter (a Python script): the prime starts `interpreter
/// script` on each host (the host's `python:` instead of `interpreter` when it names
/// one); both must be at those paths there, as nothing is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptAgent {
    pub interpreter: PathBuf,
    pub script: PathBuf,
}

/// The hosts file with this very program as every host's agent, told by environment that it
/// is one, and the program's path when it is to be installed. A `deploy: auto` host gets the
/// program installed at its per-version cache path; a `deploy: never` host must have it at
/// the same absolute path (as the original's distributed mode did), and so must every host
/// of a `script` (with its interpreter).
pub(super) fn program_as_agent(
    hosts: &HostsFile,
    script: Option<&ScriptAgent>,
) -> Result<(HostsFile, Option<PathBuf>), ClusterError> {
    let mut hosts = hosts.clone();
    let install = match script {
        Some(script) => {
            for host in &mut hosts.hosts {
                let interpreter = script.interpreter.display().to_string();
                host.agent = host.python.clone().unwrap_or(interpreter);
                host.agent_args = vec![script.script.display().to_string()];
                host.deploy = Deploy::Never;
            }
            None
        }
        None => Some(binary_as_agent(&mut hosts)?),
    };
    for host in &mut hosts.hosts {
        host.launch
            .push((AGENT_MODE_VAR.to_string(), "1".to_string()));
        host.launch
            .push((AGENT_HOST_VAR.to_string(), host.name.clone()));
    }
    Ok((hosts, install))
}

/// Every host's agent: this executable, at its own path or at the install's cache path.
fn binary_as_agent(hosts: &mut HostsFile) -> Result<PathBuf, ClusterError> {
    let program = std::env::current_exe().map_err(ClusterError::ProgramPath)?;
    let mut cached = None;
    for host in &mut hosts.hosts {
        host.agent = match host.deploy {
            Deploy::Never => program.display().to_string(),
            Deploy::Auto => match &cached {
                Some(path) => String::clone(path),
                None => {
                    let local = LocalAgent::of(&program)?;
                    cached.insert(local.default_remote_path()).clone()
                }
            },
        };
    }
    Ok(program)
}

/// The store as agents are told it in the handshake: a Postgres URL without its password
/// plus the password the prime resolved (its URL, `PGPASSWORD`, `~/.pgpass`, or a config
/// file's `DATABASES` entry, which reaches here inside the location) and its TLS (the
/// `sslmode` resolved here, also in the URL, and the files' contents), or an SQLite path
/// made absolute.
pub(super) fn agent_store(
    location: &StoreLocation,
) -> Result<(StoreAccess, Option<StoreTls>), TlsSetupError> {
    let access = match location {
        StoreLocation::Sqlite(path) => {
            let absolute = std::env::current_dir()
                .map(|dir| dir.join(path))
                .unwrap_or_else(|_| path.clone());
            StoreAccess {
                location: format!("sqlite:{}", absolute.display()),
                password: None,
            }
        }
        StoreLocation::Postgres(pg) => return agent_pg(pg),
    };
    Ok((access, None))
}

fn agent_pg(pg: &PgLocation) -> Result<(StoreAccess, Option<StoreTls>), TlsSetupError> {
    let tls = eventor_store::tls_files::resolve(pg)?;
    let access = StoreAccess {
        location: StoreLocation::Postgres(pg.for_agents(tls.mode)).to_string(),
        password: eventor_store::resolve_password(pg),
    };
    Ok((access, Some(wire_tls(tls, pg))))
}

/// The TLS as it travels; the certificate names the store's host as the prime knows it,
/// whatever address (a tunnel's) the agent connects to.
fn wire_tls(tls: TlsMaterial, pg: &PgLocation) -> StoreTls {
    let host = (!pg.host.starts_with('/')).then(|| pg.host.clone());
    StoreTls {
        mode: tls.mode.as_str().to_owned(),
        server_name: tls.server_name.or(host),
        root_cert: tls.root_cert,
        client_cert: tls.client_cert,
        client_key: tls.client_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventor_store::PgLocation;

    #[test]
    fn the_store_goes_to_agents_without_its_password_in_the_url() {
        let mut pg = PgLocation::new("db", 5433, "evpw", "eventor").with_password("s3/c?r@t:x");
        pg.sslmode = Some(eventor_store::SslMode::Disable);
        let (access, tls) = agent_store(&StoreLocation::Postgres(pg)).unwrap();
        assert_eq!(
            access.location,
            "postgres://evpw@db:5433/eventor?schema=eventor&sslmode=disable"
        );
        let tls = tls.unwrap();
        assert_eq!(
            (tls.mode.as_str(), tls.server_name.as_deref()),
            ("disable", Some("db"))
        );
        assert_eq!(access.password.as_deref(), Some("s3/c?r@t:x"));
        assert!(!format!("{access:?}").contains("s3/c"));
    }

    /// The CA travels as its contents (no path of the prime's in the URL), with the mode
    /// resolved here in the URL too, for an agent too old for the TLS.
    #[test]
    fn the_stores_ca_goes_to_agents_as_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"the CA").unwrap();
        let url = format!(
            "postgres://evpw@db/eventor?sslmode=require&sslrootcert={}",
            ca.display()
        );
        let (access, tls) = agent_store(&StoreLocation::parse(&url).unwrap()).unwrap();
        assert_eq!(
            access.location,
            "postgres://evpw@db:5432/eventor?schema=eventor&sslmode=verify-ca"
        );
        let tls = tls.unwrap();
        assert_eq!(
            tls.mode, "verify-ca",
            "require with a root certificate, as libpq"
        );
        assert_eq!(tls.root_cert.as_deref(), Some(&b"the CA"[..]));
    }

    /// A Python program's agent is its interpreter running its script (a host's `python:`
    /// first), never installed, told it is an agent like any program.
    #[test]
    fn a_script_is_started_by_its_interpreter_or_the_hosts_python_and_never_installed() {
        let text = "hosts:\n  a: {}\n  b: {python: /opt/py/bin/python3}\n";
        let defaults = super::super::hosts::HostDefaults {
            agent: Some("/usr/bin/python3".into()),
            home: None,
        };
        let file = super::super::hosts::parse_hosts(text, "h.yaml".as_ref(), &defaults).unwrap();
        let script = ScriptAgent {
            interpreter: "/venv/bin/python".into(),
            script: "/work/my flow.py".into(),
        };
        let (hosts, install) = program_as_agent(&file, Some(&script)).unwrap();
        assert_eq!(install, None);
        assert!(hosts.hosts.iter().all(|h| h.deploy == Deploy::Never));
        assert_eq!(
            hosts.hosts[0].agent_command(&[]),
            "exec env EVENTOR_AGENT_MODE=1 EVENTOR_AGENT_HOST=a /venv/bin/python '/work/my flow.py'"
        );
        assert_eq!(
            hosts.hosts[1].agent_command(&[]),
            "exec env EVENTOR_AGENT_MODE=1 EVENTOR_AGENT_HOST=b /opt/py/bin/python3 '/work/my flow.py'"
        );
    }

    #[test]
    fn an_sqlite_store_goes_as_an_absolute_path() {
        let (access, tls) = agent_store(&StoreLocation::Sqlite("runs.db".into())).unwrap();
        assert_eq!(tls, None);
        assert!(
            access.location.starts_with("sqlite:/"),
            "{}",
            access.location
        );
        assert_eq!(access.password, None);
    }
}
