//! The SSH transport: connect to cluster hosts as ssh_config says, verify their host keys
//! against known_hosts, log in, and run commands (the agent) in exec channels.
//!
//! # Connecting
//!
//! [`SshConfig::load`] parses an ssh_config with the `ssh2-config` crate;
//! [`SshConfig::resolve`] turns a host alias into a [`HostConfig`]: HostName, User, Port,
//! IdentityFile (several, `~` and `%` tokens expanded), IdentitiesOnly, IdentityAgent,
//! ProxyJump, ConnectTimeout, ConnectionAttempts, ServerAliveInterval/CountMax,
//! TcpKeepAlive, StrictHostKeyChecking, User/GlobalKnownHostsFile, HostKeyAlias and
//! HashKnownHosts. Every other option that is set is named in `HostConfig::warnings` and
//! logged with `tracing::warn!`, never dropped silently. ssh2-config only interprets part
//! of ssh_config; the rest it hands over as raw "unsupported fields", which this module
//! interprets itself.
//!
//! [`connect`] opens a TCP connection (each attempt bounded by ConnectTimeout, TCP
//! keepalive per TcpKeepAlive, Nagle off because the agent protocol is
//! request/response), or, with ProxyJump, connects to the last hop first (recursively
//! through the earlier hops) and opens a `direct-tcpip` channel to the target, which
//! then carries the target's own SSH session (`russh::client::connect_stream` takes any
//! byte stream). The handshake and login are bounded by ConnectTimeout too, so a host
//! that accepts TCP but never answers cannot hang the coordinator. Without a
//! ConnectTimeout, [`ClientSettings::default_connect_timeout`] applies.
//! ServerAliveInterval and ServerAliveCountMax become russh's keepalive interval and
//! limit. [`connect_all`] runs one task per host, so N hosts cost about one handshake.
//!
//! Login is public-key only, in OpenSSH's order: identity files the ssh-agent holds
//! (signed by the agent), then the agent's other keys unless IdentitiesOnly, then the
//! remaining identity files. Unencrypted key files are used directly; an encrypted one
//! is usable only through the agent. RSA keys sign with the best hash the server lists.
//!
//! # Host keys
//!
//! russh hands the server's key (after verifying the exchange signature) to
//! [`host_key`]'s handler, which looks it up in every known_hosts file under the name
//! OpenSSH would use: HostKeyAlias, else `hostname` on port 22 and `[hostname]:port`
//! otherwise. The parser ([`known_hosts`]) handles comma lists, `*`/`?` wildcards,
//! `!negation`, `[host]:port`, hashed `|1|salt|hash` names (HMAC-SHA1) and `@revoked`.
//! A line naming the host with exactly this key accepts it. A line naming the host with
//! any other key, of the same algorithm or not, refuses it under every
//! StrictHostKeyChecking setting, naming file and line (OpenSSH's `no` would only warn;
//! our spec refuses). An unknown host is refused under `yes` (and `ask`, as nobody can
//! be asked), appended to the first UserKnownHostsFile under `accept-new`, and accepted
//! with a warning under `no`. Before the handshake the algorithms on file for the host
//! are put first in the offer (as OpenSSH does), so a server with several host keys
//! presents one we know instead of tripping the "changed" rule. russh's own
//! known_hosts helpers are not used: they treat a key of another algorithm as unknown,
//! stop at the first malformed line, and report no file name.
//!
//! # Channels
//!
//! [`Session::exec`] opens a session channel, sends `exec` and waits for the server's
//! yes. A pump task then owns the channel's incoming side: data goes to
//! [`ExecStdout`] (an `AsyncRead`; a bounded queue, so a slow reader slows the remote
//! command rather than filling memory), stderr is split into lines for [`ExecStderr`]
//! (bounded too, but dropping and counting lines rather than stalling stdout), and the
//! exit status or signal resolves [`ExitWaiter`]. [`ExecStdin`] is russh's channel
//! writer; `shutdown()` sends EOF, and dropping it without one asks the pump to.
//!
//! # Deliberately left out
//!
//! Password, keyboard-interactive, host-based and GSSAPI login (no prompts: this runs
//! unattended); certificates (user certificates, `@cert-authority` lines, host
//! certificates are refused); ProxyCommand; Match blocks (ssh2-config does not parse
//! them, which is reported); forwarding of ports, X11 or the agent; ptys; custom
//! algorithm lists (russh's defaults are used); ControlMaster multiplexing. Dropping an
//! [`ExecChannel`]'s parts does not close the channel: it ends when the command exits or
//! the session closes.

mod auth;
mod config;
mod connect;
mod error;
mod exec;
mod host_key;
pub mod known_hosts;

pub use config::{ClientSettings, HostConfig, JumpHost, SshConfig, StrictHostKeyChecking};
pub use connect::{connect, connect_all, Session};
pub use error::SshError;
pub use exec::{ExecChannel, ExecStderr, ExecStdin, ExecStdout, ExitStatus, ExitWaiter};
