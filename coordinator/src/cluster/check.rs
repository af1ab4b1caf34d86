//! Checking before a run (`eventor-coord check`): each host a flow uses is resolved
//! through ssh_config, connected to (all at once), and asked for its agent, its OS, its
//! way to the store and its clock, so a nightly run's failures show up in the afternoon.
//!
//! [`resolve_hosts`] does the part without network; [`probe_hosts`] the rest, each wait
//! bounded (connecting by ConnectTimeout, each remote command by
//! [`CheckOptions::probe_timeout`]). Everything found goes into a [`CheckReport`], whose
//! `ready()` says whether the run would get through; [`render`] prints it as text or JSON.
//! Nothing here prints a store password: stores are shown by their masked `Display`, or
//! as `host:port`.

mod probe;
pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use eventor_ssh::{ClientSettings, HostConfig, SshConfig, SshError};
use eventor_store::StoreLocation;

use super::hosts::{HostSpec, HostsFile};
use crate::flow::FlowFile;

pub use probe::{AgentFound, HostKeyFinding, HostProbe, StoreReach};

/// Why the hosts could not even be resolved: bad input (exit 2 on the command line).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the flow pins steps to host `{host}`, which {}", match hosts_file {
        Some(path) => format!("{} does not list", path.display()),
        None => "needs a hosts file (--hosts)".to_string(),
    })]
    UnknownHost {
        host: String,
        hosts_file: Option<PathBuf>,
    },
    #[error("loading the ssh config")]
    SshConfig(#[source] Box<SshError>),
    #[error("host `{host}`: resolving ssh alias `{alias}`")]
    Resolve {
        host: String,
        alias: String,
        #[source]
        source: Box<SshError>,
    },
}

/// What a check needs besides the hosts.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Home, user and ssh-agent socket; `config_file` is replaced by the hosts file's.
    pub ssh: ClientSettings,
    /// The store as the run would use it (its agents are told the same place).
    pub store: StoreLocation,
    /// Bound on each command run on a host, and on the prime's own store probe.
    pub probe_timeout: Duration,
}

impl CheckOptions {
    /// SSH settings from the environment, 10 s per probe.
    pub fn new(store: StoreLocation) -> CheckOptions {
        CheckOptions {
            ssh: ClientSettings::from_env(),
            store,
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// What a flow holds, in numbers, and the hosts and pools it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSummary {
    pub name: String,
    pub events: usize,
    pub steps: usize,
    pub assocs: usize,
    /// Hosts that steps are pinned to, sorted, without repeats.
    pub hosts: Vec<String>,
    /// Resource pools with their capacities.
    pub pools: Vec<(String, u32)>,
}

impl FlowSummary {
    pub fn of(flow: &FlowFile) -> FlowSummary {
        let mut hosts: Vec<String> = flow
            .steps
            .iter()
            .flat_map(|s| s.host.iter().chain(&s.hosts))
            .cloned()
            .collect();
        hosts.sort();
        hosts.dedup();
        FlowSummary {
            name: flow.name.clone(),
            events: flow.events.len(),
            steps: flow.steps.len(),
            assocs: flow.assocs.len(),
            hosts,
            pools: flow.resources.clone(),
        }
    }
}

/// One host as resolved, and (unless resolving only) what probing it found.
#[derive(Debug)]
pub struct HostCheck {
    pub spec: HostSpec,
    pub resolved: HostConfig,
    pub probe: Option<HostProbe>,
}

impl HostCheck {
    /// Resolved only, or connected with an agent and a way to the store.
    pub fn ready(&self) -> bool {
        self.probe.as_ref().is_none_or(HostProbe::ready)
    }
}

/// Everything a check found.
#[derive(Debug)]
pub struct CheckReport {
    pub hosts: Vec<HostCheck>,
    /// The store as the prime reaches it; `None` when resolving only.
    pub store: Option<StoreReach>,
}

impl CheckReport {
    /// Whether the run would get through: every host and the store ready.
    pub fn ready(&self) -> bool {
        let store_ok = self.store.as_ref().is_none_or(|s| s.error.is_none());
        store_ok && self.hosts.iter().all(HostCheck::ready)
    }
}

/// Resolves the hosts called `names` through the hosts file's ssh_config (no network).
/// A name the hosts file lacks, or an ssh_config that does not load, is an error.
pub fn resolve_hosts(
    hosts: Option<&HostsFile>,
    names: &[String],
    ssh: &ClientSettings,
) -> Result<(SshConfig, Vec<HostCheck>), CheckError> {
    let settings = ClientSettings {
        config_file: hosts.and_then(|h| h.ssh_config.clone()),
        ..ssh.clone()
    };
    // A flow that uses no host needs no ssh_config, not even a readable one.
    let config = match names.is_empty() {
        true => SshConfig::from_text("", settings),
        false => SshConfig::load(settings),
    };
    let config = config.map_err(|e| CheckError::SshConfig(Box::new(e)))?;
    let mut checks = Vec::new();
    for name in names {
        let spec = hosts
            .and_then(|h| h.host(name))
            .ok_or(CheckError::UnknownHost {
                host: name.clone(),
                hosts_file: hosts.map(|h| h.path.clone()),
            })?;
        let resolved = config
            .resolve(&spec.ssh)
            .map_err(|source| CheckError::Resolve {
                host: name.clone(),
                alias: spec.ssh.clone(),
                source: Box::new(source),
            })?;
        checks.push(HostCheck {
            spec: spec.clone(),
            resolved,
            probe: None,
        });
    }
    Ok((config, checks))
}

/// Connects to every host at once and probes each; fills in each host's `probe` and
/// returns the whole report with the prime's own view of the store.
pub async fn probe_hosts(
    config: &SshConfig,
    mut checks: Vec<HostCheck>,
    options: &CheckOptions,
) -> CheckReport {
    let (probes, store) = tokio::join!(
        probe::probe_all(config, &checks, options),
        probe::prime_store(&options.store, options.probe_timeout),
    );
    for (check, found) in checks.iter_mut().zip(probes) {
        check.probe = Some(found);
    }
    CheckReport {
        hosts: checks,
        store: Some(store),
    }
}
