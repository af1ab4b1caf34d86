//! The SSH layer's error: every variant names the host alias and the step that failed,
//! with the underlying cause kept in `#[source]` rather than pasted into the message.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why connecting to, or running a command on, a host failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    #[error("reading ssh config {path}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing ssh config {path}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: ssh2_config::SshParserError,
    },
    #[error("ssh config {}: Include nested deeper than {max} files (is there a loop?)", path.display())]
    IncludeDepth { path: PathBuf, max: usize },
    #[error("ssh config {at}: bad Match line: {reason}")]
    ConfigMatch { at: String, reason: String },
    #[error("ssh config {at}: running Match exec `{command}`")]
    MatchExec {
        at: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: bad {option} value {value:?}: {reason}")]
    ConfigValue {
        host: String,
        option: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{host}: resolving {addr}")]
    Resolve {
        host: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: {addr} resolves to no address")]
    NoAddress { host: String, addr: String },
    #[error("{host}: connect to {addr}")]
    Connect {
        host: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: connect to {addr} timed out after {}", secs(*after))]
    ConnectTimeout {
        host: String,
        addr: String,
        after: Duration,
    },
    #[error("{host}: ssh handshake with {addr}")]
    Handshake {
        host: String,
        addr: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: ssh login to {addr} timed out after {}", secs(*after))]
    LoginTimeout {
        host: String,
        addr: String,
        after: Duration,
    },
    #[error(
        "{host}: host key unknown: {key} for {name} is not in {} (StrictHostKeyChecking yes)",
        paths(files)
    )]
    HostKeyUnknown {
        host: String,
        name: String,
        key: String,
        files: Vec<PathBuf>,
    },
    #[error("{host}: host key changed: known_hosts {}:{line} has {recorded}, server presented {presented}", file.display())]
    HostKeyChanged {
        host: String,
        file: PathBuf,
        line: usize,
        recorded: String,
        presented: String,
    },
    #[error("{host}: host key revoked: {key} is marked @revoked in {}:{line}", file.display())]
    HostKeyRevoked {
        host: String,
        key: String,
        file: PathBuf,
        line: usize,
    },
    #[error("{host}: host key changed during the session: server re-keyed with {presented}")]
    HostKeyRekeyChanged { host: String, presented: String },
    #[error("{host}: server presented a host certificate, which is not supported")]
    HostCertificate { host: String },
    #[error("{host}: reading known_hosts {}", path.display())]
    KnownHostsRead {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: adding the host key to {}", path.display())]
    KnownHostsWrite {
        host: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: no identity accepted for {user} (tried {})", list(tried))]
    NoIdentity {
        host: String,
        user: String,
        tried: Vec<String>,
    },
    #[error("{host}: authenticating as {user}")]
    Auth {
        host: String,
        user: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: via jump host {jump}")]
    Jump {
        host: String,
        jump: String,
        /// Shared: the hosts behind one jump host fail with its one cause.
        #[source]
        source: std::sync::Arc<SshError>,
    },
    #[error("{host}: opening a tunnel to {target} through {jump}")]
    Tunnel {
        host: String,
        jump: String,
        target: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: ProxyJump chain deeper than {max} hops (is there a loop?)")]
    JumpDepth { host: String, max: usize },
    #[error("{host}: opening a session channel")]
    Channel {
        host: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: sending exec request for `{command}`")]
    Exec {
        host: String,
        command: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: server refused to run `{command}`")]
    ExecRefused { host: String, command: String },
    #[error("{host}: asking the server to forward a port (is AllowTcpForwarding on?)")]
    Forward {
        host: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: connection lost before `{command}` exited")]
    ConnectionLost { host: String, command: String },
    #[error("{host}: asking the server to connect to {target} for us (is AllowTcpForwarding on?)")]
    ConnectFor {
        host: String,
        target: String,
        #[source]
        source: Box<russh::Error>,
    },
    #[error("{host}: `{command}` ended without an exit status")]
    NoExitStatus { host: String, command: String },
    #[error("{host}: connect task failed")]
    Task {
        host: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl SshError {
    /// Whether the host could not be reached for a network reason (refused, timed out,
    /// unreachable, lost during the handshake), as opposed to a mistake in the set-up (the
    /// config, a key, a host key, a refused login) that trying again will not mend.
    pub fn is_network(&self) -> bool {
        match self {
            SshError::Resolve { .. }
            | SshError::NoAddress { .. }
            | SshError::Connect { .. }
            | SshError::ConnectTimeout { .. }
            | SshError::Handshake { .. }
            | SshError::LoginTimeout { .. }
            | SshError::Tunnel { .. }
            | SshError::ConnectionLost { .. } => true,
            SshError::Jump { source, .. } => source.is_network(),
            _ => false,
        }
    }

    /// Whether the set-up is wrong: the ssh config, a key, the host key, the login. The
    /// user must fix it; trying again changes nothing.
    pub fn is_set_up(&self) -> bool {
        match self {
            SshError::Jump { source, .. } => source.is_set_up(),
            SshError::ConfigRead { .. }
            | SshError::ConfigParse { .. }
            | SshError::IncludeDepth { .. }
            | SshError::ConfigMatch { .. }
            | SshError::ConfigValue { .. }
            | SshError::HostKeyUnknown { .. }
            | SshError::HostKeyChanged { .. }
            | SshError::HostKeyRevoked { .. }
            | SshError::HostCertificate { .. }
            | SshError::KnownHostsRead { .. }
            | SshError::NoIdentity { .. }
            | SshError::Auth { .. }
            | SshError::JumpDepth { .. } => true,
            _ => false,
        }
    }
}

/// What russh's handshake hands back: its own error, or our refusal of the host key.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    Ssh(russh::Error),
    Refused(Box<SshError>),
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        HandshakeError::Ssh(e)
    }
}

/// `5s`, or `1500ms` when not a whole number of seconds.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing: no identity file and no agent key".to_string()
    } else {
        items.join(", ")
    }
}

fn paths(files: &[PathBuf]) -> String {
    let mut out = String::new();
    for (i, f) in files.iter().map(PathBuf::as_path).enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{}", Path::display(f));
    }
    if out.is_empty() {
        out.push_str("any known_hosts file (UserKnownHostsFile none)");
    }
    out
}
