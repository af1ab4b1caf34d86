//! The SSH transport: connect to cluster hosts as ssh_config says, verify their host keys
//! against known_hosts, log in, and run commands (the agent) in exec channels.
//!
//! # Connecting
//!
//! [`SshConfig::load`] reads an ssh_config the way OpenSSH does (`config_file`): each
//! line split into keyword and arguments (`=` syntax, quotes, trailing comments),
//! `Include`d files read in place (absolute, `~/…`, or relative to `~/.ssh`, `*`/`?`
//! globs in sorted order). [`SshConfig::resolve`] then picks the lines that apply to a
//! host alias (`config_match`) exactly as OpenSSH's readconf.c does, in file order:
//! a `Host` line (patterns matched case-sensitively against the alias, a matching
//! `!pattern` vetoing) or a `Match` line switches the lines after it on or off; an
//! Include under an inactive block contributes nothing, and a Match inside an
//! included file does not leak out of it; the first value of each option wins
//! (IdentityFile, CertificateFile, the forwards and SendEnv accumulate). A `Match`
//! line holds when all its criteria hold, each negatable with `!`: `all`; `host`
//! (comma patterns, case-insensitive, against the target host name as resolved so
//! far: the first HostName with `%h` expanded, else the alias); `originalhost` (the
//! alias as typed); `user` (the User so far, else the local user); `localuser`;
//! `exec` (its command, tokens expanded, run by `$SHELL -c` or `/bin/sh -c` with
//! stdin and stdout on /dev/null, synchronously, as ssh runs it; true on exit 0;
//! skipped once an earlier criterion failed); `final` and `canonical` (true only in
//! the final pass). `Match final`, or CanonicalizeHostname on, asks for that final
//! pass: as in ssh, the host name becomes final (expanded, lowercased unless an
//! address), then the whole file is evaluated again with `Host` lines matching that
//! name, adding only options still unset. Host names are not canonicalized (no DNS
//! search): CanonicalizeHostname is reported in the warnings. A malformed Match line,
//! or an exec that cannot run, is an error, as in ssh.
//!
//! The applicable lines are then handed to the `ssh2-config` crate to interpret their
//! values, and resolved into a [`HostConfig`]: HostName (lowercased as ssh does), User,
//! Port, IdentityFile (several, `~`, `${VAR}` and the tokens `%% %C %d %h %i %k %L %l
//! %n %p %r %u` expanded; OpenSSH's seven defaults otherwise), IdentitiesOnly, IdentityAgent,
//! ProxyJump, ConnectTimeout, ConnectionAttempts, ServerAliveInterval/CountMax,
//! TcpKeepAlive, StrictHostKeyChecking, User/GlobalKnownHostsFile, HostKeyAlias
//! (lowercased) and HashKnownHosts. Every other option that is set is named in
//! `HostConfig::warnings` and logged with `tracing::warn!`, never dropped silently.
//! ssh2-config only interprets part of ssh_config; the rest it hands over as raw
//! "unsupported fields", which this module interprets itself. Bad values are
//! reported at load, wherever they are in the file, as ssh does.
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
//! stop at the first malformed line, and report no file name. How the key was accepted
//! ([`HostKeyStatus`]: the known_hosts file:line, learned, or unchecked) and which key
//! logged in stay with the [`Session`] (`host_key()`, `auth_method()`), for
//! `eventor-coord check`.
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
//! certificates are refused); ProxyCommand; hostname canonicalization; forwarding of
//! ports, X11 or the agent; ptys; custom algorithm lists (russh's defaults are used);
//! ControlMaster multiplexing. Dropping an [`ExecChannel`]'s parts does not close the
//! channel: it ends when the command exits or the session closes.

mod auth;
mod config;
mod config_file;
mod config_match;
mod connect;
mod error;
mod exec;
mod forward;
mod host_key;
mod jumps;
pub mod known_hosts;
mod settings;
mod tokens;

pub use config::{ClientSettings, HostConfig, JumpHost, SshConfig, StrictHostKeyChecking};
pub use connect::{connect, connect_all, Session};
pub use error::SshError;
pub use exec::{ExecChannel, ExecStderr, ExecStdin, ExecStdout, ExitStatus, ExitWaiter};
pub use forward::{ForwardedStream, RemoteForward, SocketForward};
pub use host_key::HostKeyStatus;
pub use settings::MAX_STARTUPS;
