//! The prime's side of a cluster run: which hosts there are ([`hosts`]), one live
//! connection to each host's agent ([`link`]), all of a run's links opened at once from
//! its [`ClusterSettings`] (built once per run from the hosts file and the options), with
//! the agent checked and the store forwarded ([`connect`]), the engine's pinned tasks
//! dispatched over them ([`remote`]): which host, when, and what a lost host's tasks
//! become is decided by a state machine without IO ([`core`], golden-tested), and the
//! forwarder (`forwarder.rs`) is the only IO around it. And a program serving as its own agent
//! ([`agent_mode`]). Every host's output ends up in the run's central log ([`crate::log`]).
//! Before a run, [`check`] tells whether each host resolves, connects, has an agent and
//! reaches the store.
//!
//! ```text
//!  hosts file ──load_hosts──▶ HostsFile ──open_links──▶ HostLink per host
//!                                                             │  dispatch / cancel / shutdown
//!                                                             ▼
//!                                     agent (eventor-agent over an ssh exec channel)
//!                                                             │
//!   Forwarder ◀── HostEvent (Started, Ran, Finished, Log, Output, Lost, AgentError) ──┘
//!     │ ▲ Input (host up/lost, agent failed, submit, ran, finished, cancel, tick)
//!     ▼ │ Action (send, cancel, end, reconnect, settle, health ──▶ store's host_health)
//!   ClusterCore (no IO)
//!     └─ end ──▶ ExecEvent ──▶ engine driver
//!                 └─ Log ──▶ CentralLog ──▶ <logdir>/<flow>/<run_id>.log ──▶ `logs --follow`
//! ```

pub mod agent_mode;
pub mod check;
pub mod connect;
pub mod core;
pub mod deploy;
mod error;
mod forwarder;
#[cfg(test)]
mod golden;
pub mod hosts;
pub mod link;
pub mod local_agent;
pub mod placement;
pub mod quarantine;
pub mod reconnect;
pub mod remote;
pub mod store_tunnel;
pub mod survivors;

pub use agent_mode::{agent_mode, ScriptAgent};
pub use connect::{open_links, ClusterSettings};
pub use error::ClusterError;
pub use hosts::{load_hosts, parse_hosts, HostDefaults, HostSpec, HostsError, HostsFile};
pub use link::{HostEvent, HostLink, LinkConfig, LinkEnd, LinkError, LinkSettings};
pub use remote::{ClusterOptions, Remote, RunCluster};

/// The protocol types that appear in this module's API, so a caller needs no direct
/// dependency on `eventor-protocol`.
pub use eventor_protocol::{
    Dispatch, EndStatus, LogLevel, LogRecord, Stream, TaskEnd, TaskKey, Work,
};
/// The token that stops links (and everything else of a run) at once.
pub use tokio_util::sync::CancellationToken;
