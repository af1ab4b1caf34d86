//! A program as its own agent: the prime starts the same program on each host (told so by
//! environment), and there it serves the prime's tasks, its own closure steps included.
//! The store (and its password) comes in the handshake like any agent's, never by
//! environment or command line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use eventor_agent::{AgentError, AgentOptions, StepAction};
use eventor_protocol::StoreAccess;
use eventor_store::StoreLocation;
use tokio_util::sync::CancellationToken;

use super::deploy::LocalAgent;
use super::error::ClusterError;
use super::hosts::{Deploy, HostsFile};

/// The variable that starts a program as its own agent (set by the prime), and the one
/// that tells it its host's name. (Its store comes in the handshake.)
const AGENT_MODE_VAR: &str = "EVENTOR_AGENT_MODE";
const AGENT_HOST_VAR: &str = "EVENTOR_AGENT_HOST";

/// What the prime told this process by environment: `Some` in agent mode, with the host's
/// name if given. Read once, by the first [`agent_mode`].
static AGENT_MODE: OnceLock<Option<Option<String>>> = OnceLock::new();

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
fn told_by_prime() -> &'static Option<Option<String>> {
    AGENT_MODE.get_or_init(|| {
        let mode = std::env::var_os(AGENT_MODE_VAR);
        let host = std::env::var(AGENT_HOST_VAR).ok();
        for (name, present) in [
            (AGENT_MODE_VAR, mode.is_some()),
            (AGENT_HOST_VAR, host.is_some()),
        ] {
            if present {
                std::env::remove_var(name);
            }
        }
        mode.map(|_| host)
    })
}

/// Serves a prime on stdin/stdout with `closures` (the program's closure steps by name)
/// until it is done with this host.
pub async fn serve_program(closures: HashMap<String, StepAction>) -> Result<(), AgentError> {
    let defaults = AgentOptions::default();
    let host_name = told_by_prime().clone().flatten();
    let options = AgentOptions {
        host_name: host_name.unwrap_or(defaults.host_name.clone()),
        store: None,
        closures,
        ..defaults
    };
    let (reader, writer) = eventor_agent::stdio::prime_channel();
    eventor_agent::serve(reader, writer, options, CancellationToken::new())
        .await
        .map(drop)
}

/// The hosts file with this very program as every host's agent, told by environment that it
/// is one, and the program's path (the binary to install). A `deploy: auto` host gets the
/// program installed at its per-version cache path; a `deploy: never` host must have it at
/// the same absolute path (as the original's distributed mode did).
pub(super) fn program_as_agent(hosts: &HostsFile) -> Result<(HostsFile, PathBuf), ClusterError> {
    let program = std::env::current_exe().map_err(ClusterError::ProgramPath)?;
    let mut cached = None;
    let mut hosts = hosts.clone();
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
        host.env.push((AGENT_MODE_VAR.to_string(), "1".to_string()));
        host.env
            .push((AGENT_HOST_VAR.to_string(), host.name.clone()));
    }
    Ok((hosts, program))
}

/// The store as agents are told it in the handshake: a Postgres URL without its password
/// plus the password the prime resolved (its URL, `PGPASSWORD`, `~/.pgpass`, or a config
/// file's `DATABASES` entry, which reaches here inside the location), or an SQLite path
/// made absolute.
pub(super) fn agent_store(location: &StoreLocation) -> StoreAccess {
    match location {
        StoreLocation::Sqlite(path) => {
            let absolute = std::env::current_dir()
                .map(|dir| dir.join(path))
                .unwrap_or_else(|_| path.clone());
            StoreAccess {
                location: format!("sqlite:{}", absolute.display()),
                password: None,
            }
        }
        StoreLocation::Postgres(pg) => StoreAccess {
            location: StoreLocation::Postgres(pg.without_password()).to_string(),
            password: eventor_store::resolve_password(pg),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventor_store::PgLocation;

    #[test]
    fn the_store_goes_to_agents_without_its_password_in_the_url() {
        let pg = PgLocation::new("db", 5433, "evpw", "eventor").with_password("s3/c?r@t:x");
        let access = agent_store(&StoreLocation::Postgres(pg));
        assert_eq!(
            access.location,
            "postgres://evpw@db:5433/eventor?schema=eventor"
        );
        assert_eq!(access.password.as_deref(), Some("s3/c?r@t:x"));
        assert!(!format!("{access:?}").contains("s3/c"));
    }

    #[test]
    fn an_sqlite_store_goes_as_an_absolute_path() {
        let access = agent_store(&StoreLocation::Sqlite("runs.db".into()));
        assert!(
            access.location.starts_with("sqlite:/"),
            "{}",
            access.location
        );
        assert_eq!(access.password, None);
    }
}
