//! The coordinator's side of a cluster run: which hosts there are ([`hosts`]), one live
//! connection to each host's agent ([`link`]), and the run's central log that every host's
//! output ends up in ([`central_log`]).
//!
//! ```text
//!  hosts file ──load_hosts──▶ HostsFile ──connect_hosts──▶ HostLink per host
//!                                                             │  dispatch / cancel / shutdown
//!                                                             ▼
//!                                     agent (eventor-agent over an ssh exec channel)
//!                                                             │
//!   engine ◀── HostEvent (Started, Finished, Log, Lost, AgentError) ──┘
//!                 └─ Log ──▶ CentralLog ──▶ <logdir>/<flow>/<run_id>.log ──▶ `logs --follow`
//! ```

pub mod central_log;
pub mod hosts;
pub mod link;

pub use central_log::{
    log_path, print_log, CentralLog, CentralLogConfig, CentralLogError, LogFilter, LogLine,
    LogSink, LogTotals, PrintSummary,
};
pub use hosts::{load_hosts, parse_hosts, HostDefaults, HostSpec, HostsError, HostsFile};
pub use link::{
    connect_hosts, ConnectOptions, HostEvent, HostLink, LinkConfig, LinkEnd, LinkError,
};

/// The protocol types that appear in this module's API, so a caller needs no direct
/// dependency on `eventor-protocol`.
pub use eventor_protocol::{Dispatch, LogLevel, LogRecord, Outcome, Stream, TaskKey, Work};
/// The token that stops links (and everything else of a run) at once.
pub use tokio_util::sync::CancellationToken;
