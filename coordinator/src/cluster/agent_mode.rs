//! A program as its own agent: the prime starts the same program on each host (told so by
//! environment), and there it serves the prime's tasks, its own closure steps included.

use std::collections::HashMap;

use eventor_agent::{AgentOptions, StepAction};
use eventor_store::StoreLocation;
use tokio_util::sync::CancellationToken;

use super::hosts::HostsFile;

/// The variable that starts a program as its own agent (set by the prime), and the ones
/// that tell it its store and its host's name.
const AGENT_MODE_VAR: &str = "EVENTOR_AGENT_MODE";
const AGENT_STORE_VAR: &str = "EVENTOR_AGENT_STORE";
const AGENT_HOST_VAR: &str = "EVENTOR_AGENT_HOST";

/// Whether this process was started by a prime as the agent of its own closure steps on a
/// cluster host. Call it first in `main` of a program whose closure steps are pinned to
/// other hosts: in agent mode stdout carries the protocol, so print nothing to it, build
/// the same flow, and call `run`, which then serves the prime's tasks.
pub fn agent_mode() -> bool {
    std::env::var_os(AGENT_MODE_VAR).is_some()
}

/// Serves a prime on stdin/stdout with `closures` (the program's closure steps by name)
/// until it is done with this host.
pub async fn serve_program(closures: HashMap<String, StepAction>) -> Result<(), String> {
    let store = match std::env::var(AGENT_STORE_VAR) {
        Ok(url) => Some(StoreLocation::parse(&url).map_err(|e| e.to_string())?),
        Err(_) => None,
    };
    let defaults = AgentOptions::default();
    let options = AgentOptions {
        host_name: std::env::var(AGENT_HOST_VAR).unwrap_or(defaults.host_name.clone()),
        store,
        closures,
        ..defaults
    };
    let stdio = (tokio::io::stdin(), tokio::io::stdout());
    eventor_agent::serve(stdio.0, stdio.1, options, CancellationToken::new())
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The hosts file with this very program as every host's agent (found at the same absolute
/// path, as the original's distributed mode did), told by environment that it is one.
pub(super) fn program_as_agent(hosts: &HostsFile, store: &str) -> Result<HostsFile, String> {
    let program =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let mut hosts = hosts.clone();
    for host in &mut hosts.hosts {
        host.agent = program.display().to_string();
        host.env.push((AGENT_MODE_VAR.to_string(), "1".to_string()));
        host.env
            .push((AGENT_STORE_VAR.to_string(), store.to_string()));
        host.env
            .push((AGENT_HOST_VAR.to_string(), host.name.clone()));
    }
    Ok(hosts)
}

/// The store as agents are told it: the URL without its password (agents find theirs in
/// `PGPASSWORD` or `~/.pgpass`), an SQLite path made absolute.
pub(super) fn agent_store_url(location: &StoreLocation) -> String {
    match location {
        StoreLocation::Sqlite(path) => {
            let absolute = std::env::current_dir()
                .map(|dir| dir.join(path))
                .unwrap_or_else(|_| path.clone());
            format!("sqlite:{}", absolute.display())
        }
        other => other.to_string(),
    }
}
