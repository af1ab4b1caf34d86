//! Many hosts at once: connect to all of them over SSH together, then per host check (and
//! install) its agent ([`deploy`]), forward the store to a `store_via: ssh` host
//! ([`store_tunnel`]), and start its [`HostLink`]. [`open_links`] is the one way a run
//! (`remote.rs`) and a reconnect (`reconnect.rs`) make links, so a host that comes back
//! gets exactly what it had the first time.

use std::sync::Arc;

use eventor_agent::util::error_chain;
use eventor_agent::MaxConcurrent;
use eventor_protocol::{StoreAccess, StoreTls};
use eventor_ssh::{self as ssh, ClientSettings, Session, SshConfig, SshError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::deploy::{self, DeployPlan, LocalAgent};
use super::hosts::{Deploy, HostSpec, HostsFile, StoreVia};
use super::link::{EnvLines, HostEvent, HostLink, LinkConfig, LinkError, LinkSettings};
use super::store_tunnel;

/// A run's cluster settings, built once (from the hosts file and the run's options, see
/// [`ClusterSettings::for_run`]) and shared by its first connect and every reconnect;
/// [`ClusterSettings::link_config`] makes each host's [`LinkConfig`] from them.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The hosts, with the agent each one starts.
    pub hosts: HostsFile,
    pub run_id: String,
    /// The store every agent records in, sent in the handshake (password included), never
    /// on a command line.
    pub store: Option<StoreAccess>,
    /// The TLS the agents reach `store` with, sent with it (certificates and key as their
    /// contents, never as files on the hosts).
    pub store_tls: Option<StoreTls>,
    /// The binary installed on `deploy: auto` hosts whose agent is missing or differs
    /// (see [`deploy`]); `None`: `eventor-agent` next to this program.
    pub install: Option<std::path::PathBuf>,
    /// Heartbeat, loss and handshake bounds of every link.
    pub link: LinkSettings,
    /// Home, user and ssh-agent socket for SSH; `config_file` is replaced by the hosts
    /// file's `ssh_config`.
    pub ssh: ClientSettings,
    /// Look for an agent of this run that outlived its prime and re-adopt it rather than
    /// start another (a reconnect, a recovery, a continue); a fresh run does not.
    pub adopt: bool,
}

impl ClusterSettings {
    /// The default [`LinkSettings`], SSH settings from the environment, no store.
    pub fn new(hosts: HostsFile, run_id: impl Into<String>) -> ClusterSettings {
        ClusterSettings {
            hosts,
            run_id: run_id.into(),
            store: None,
            store_tls: None,
            install: None,
            link: LinkSettings::default(),
            ssh: ClientSettings::from_env(),
            adopt: false,
        }
    }

    /// The link settings for `host`.
    pub fn link_config(&self, host: &HostSpec) -> LinkConfig {
        let command = if self.adopt {
            // The survivor's socket name (not a secret: the socket's directory is private).
            let name = eventor_agent::adopt::socket_name(&self.run_id, &host.name);
            let mut host = host.clone();
            host.launch
                .push((eventor_agent::adopt::RESUME_VAR.to_string(), name));
            host.agent_command(&[])
        } else {
            host.agent_command(&[])
        };
        LinkConfig {
            settings: self.link,
            max_concurrent_tasks: MaxConcurrent::at_most(host.max_concurrent.unwrap_or(0) as usize),
            store: self.store.clone(),
            store_tls: self.store_tls.clone(),
            lease: Some(host.lease),
            same_version: host.deploy == Deploy::Auto,
            env_lines: EnvLines(host.env_lines()),
            ..LinkConfig::new(&host.name, command, &self.run_id)
        }
    }
}

/// Connects to the hosts called `names` and starts a link to each, all at once (N hosts
/// take about one connect and one handshake). Results are in the order of `names`.
pub async fn open_links(
    settings: &ClusterSettings,
    names: &[String],
    events: mpsc::Sender<HostEvent>,
    shutdown: &CancellationToken,
) -> Vec<Result<HostLink, LinkError>> {
    let specs: Vec<Option<&HostSpec>> = names.iter().map(|n| settings.hosts.host(n)).collect();
    let ssh_settings = ClientSettings {
        config_file: settings.hosts.ssh_config.clone(),
        max_startups: settings.hosts.max_startups,
        ..settings.ssh.clone()
    };
    let config = match SshConfig::load(ssh_settings) {
        Ok(config) => config,
        Err(e) => {
            let e = Arc::new(e);
            let fail = |name: &String| LinkError::SshConfig {
                host: name.clone(),
                source: e.clone(),
            };
            return names.iter().map(|n| Err(fail(n))).collect();
        }
    };
    let known: Vec<&HostSpec> = specs.iter().flatten().copied().collect();
    let aliases: Vec<&str> = known.iter().map(|h| h.ssh.as_str()).collect();
    // The local agent is hashed while the hosts are connected to, not after.
    let connected = async {
        tokio::select! {
            s = ssh::connect_all(&config, &aliases) => s,
            _ = shutdown.cancelled() => Vec::new(),
        }
    };
    let (sessions, plan) = tokio::join!(connected, deploy_plan(&known, settings));
    let mut links = start_all(&known, sessions, settings, &plan, events, shutdown).await;
    links.reverse();
    let mut out = Vec::with_capacity(names.len());
    for (name, spec) in names.iter().zip(&specs) {
        let cancelled = || LinkError::Cancelled { host: name.clone() };
        out.push(match spec {
            None => Err(LinkError::UnknownHost { host: name.clone() }),
            Some(_) => links.pop().unwrap_or_else(|| Err(cancelled())),
        });
    }
    out
}

/// The binary to install, hashed (once per process, off the runtime's threads), when any
/// host may need it.
async fn deploy_plan(hosts: &[&HostSpec], settings: &ClusterSettings) -> DeployPlan {
    let auto = hosts.iter().any(|h| h.deploy == Deploy::Auto);
    let path = settings
        .install
        .clone()
        .or_else(super::hosts::local_agent_binary);
    let companion = match &path {
        Some(path) if auto => local_companion(path).await,
        _ => None,
    };
    let local = match path {
        Some(path) if auto => tokio::task::spawn_blocking(move || LocalAgent::of(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| error_chain(&e)))
            .map(Arc::new),
        Some(_) => Err("no host installs it".to_string()),
        None => Err("this program's path is unknown".to_string()),
    };
    DeployPlan {
        local,
        companion,
        probe_timeout: settings.link.handshake_timeout,
    }
}

/// The dedicated supervisor next to the binary to install, hashed, when there is one that
/// speaks this version's arguments (installed beside each host's agent).
async fn local_companion(binary: &std::path::Path) -> Option<Arc<LocalAgent>> {
    let dir = binary.parent()?.to_path_buf();
    let hashed = tokio::task::spawn_blocking(move || {
        let program = eventor_agent::supervisor::dedicated_supervisor(&dir)?;
        LocalAgent::of(&program).ok()
    });
    hashed.await.ok().flatten().map(Arc::new)
}

/// Forwards the store to a `store_via: ssh` host, makes sure of its agent, then starts its
/// link. An agent a probe verified before (its stamp still matches) starts straight away,
/// in the exec that checks the stamp (one channel instead of two: at 16 hosts the hosts'
/// `sshd`s starting programs is most of the connect time); otherwise, or when that check
/// fails, the agent is probed (and installed) first.
async fn deploy_and_start(
    session: Session,
    host: HostSpec,
    plan: DeployPlan,
    mut config: LinkConfig,
    events: mpsc::Sender<HostEvent>,
    shutdown: CancellationToken,
) -> Result<HostLink, LinkError> {
    let name = host.name.clone();
    let cancelled = || LinkError::Cancelled { host: name.clone() };
    let session = Arc::new(session);
    if host.store_via == StoreVia::Ssh {
        let (store, tls) = (config.store.as_ref(), config.store_tls.as_ref());
        let tunnel = tokio::select! {
            t = store_tunnel::open(&session, &host, store, tls, shutdown.clone()) => t?,
            _ = shutdown.cancelled() => return Err(cancelled()),
        };
        config.store = Some(tunnel);
        // The prime speaks TLS to the store for the tunnel: nothing of it goes to the host.
        config.store_tls = None;
    }
    if let Some(command) = deploy::checked_start(&host, &plan, &config.agent_command) {
        let quick = LinkConfig {
            agent_command: command,
            ..config.clone()
        };
        let started = HostLink::start(session.clone(), quick, events.clone(), shutdown.clone());
        match started.await {
            // The stamp did not match (97), or the command could not even run (a login shell
            // that is not POSIX, say): the full path below says what is wrong, if anything.
            Err(LinkError::Handshake {
                exit_code: Some(code),
                ..
            }) => tracing::debug!(host = %name, code, "agent not started by its stamp: probing it"),
            started => return started,
        }
    }
    tokio::select! {
        done = deploy::ensure(&session, &host, &plan) => { done?; }
        _ = shutdown.cancelled() => return Err(cancelled()),
    }
    HostLink::start(session, config, events, shutdown).await
}

/// Starts a link on each session concurrently; results in the order of `hosts`.
async fn start_all(
    hosts: &[&HostSpec],
    sessions: Vec<Result<Session, SshError>>,
    settings: &ClusterSettings,
    plan: &DeployPlan,
    events: mpsc::Sender<HostEvent>,
    shutdown: &CancellationToken,
) -> Vec<Result<HostLink, LinkError>> {
    let mut tasks = JoinSet::new();
    let mut results: Vec<Option<Result<HostLink, LinkError>>> =
        hosts.iter().map(|_| None).collect();
    for (index, (host, session)) in hosts.iter().zip(sessions).enumerate() {
        let host_name = host.name.clone();
        let session = match session {
            Ok(session) => session,
            Err(source) => {
                results[index] = Some(Err(LinkError::Connect {
                    host: host_name,
                    source: Box::new(source),
                }));
                continue;
            }
        };
        let config = settings.link_config(host);
        let (events, shutdown) = (events.clone(), shutdown.clone());
        let (host, plan) = ((*host).clone(), plan.clone());
        tasks.spawn(async move {
            let started = deploy_and_start(session, host, plan, config, events, shutdown);
            (index, started.await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        // A start task only fails by panicking, which the hosts' other links survive.
        if let Ok((index, result)) = joined {
            results[index] = Some(result);
        }
    }
    hosts
        .iter()
        .zip(results)
        .map(|(host, r)| {
            r.unwrap_or_else(|| {
                Err(LinkError::Cancelled {
                    host: host.name.clone(),
                })
            })
        })
        .collect()
}
