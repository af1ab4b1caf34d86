//! The network half of a check: connecting to every host at once, then on each host
//! asking for the agent's version, the OS, a way to the store and the clock, as small
//! shell commands over the one SSH session.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use eventor_agent::util::error_chain;
use eventor_ssh::{self as ssh, HostKeyStatus, Session, SshConfig, SshError};
use eventor_store::{PgLocation, StoreLocation};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;

use super::{CheckOptions, HostCheck};
use crate::cluster::hosts::{shell_quote, HostSpec, StoreVia};
use crate::cluster::store_tunnel;

/// Output kept from a probe command (they print a line or two).
const MAX_OUTPUT: u64 = 16 * 1024;
/// The shell's exit statuses for a command it could not find or could not execute.
const NOT_FOUND: u32 = 127;
const NOT_EXECUTABLE: u32 = 126;
/// `timeout`'s exit status when it had to stop the command.
const TIMED_OUT: u32 = 124;
/// bash's TCP connect to host `$1`, port `$2`.
const TCP_CONNECT: &str = r#"exec 3<>"/dev/tcp/$1/$2""#;

/// What connecting to and probing one host found.
#[derive(Debug, Clone)]
pub struct HostProbe {
    /// How long connecting (TCP, handshake, login) took, or why it failed.
    pub connect: Result<Duration, String>,
    pub host_key: HostKeyFinding,
    /// The authentication that worked or why none did; `None` when login was not reached.
    pub auth: Option<Result<String, String>>,
    /// `None` when not connected.
    pub agent: Option<Result<AgentFound, String>>,
    /// `None` when not connected.
    pub store: Option<StoreReach>,
    /// Remote clock minus the prime's, in milliseconds; `None` when not connected.
    pub clock_offset_ms: Option<Result<f64, String>>,
}

impl HostProbe {
    /// Connected, with an agent that runs and a way to the store.
    pub fn ready(&self) -> bool {
        self.connect.is_ok()
            && matches!(self.agent, Some(Ok(_)))
            && self.store.as_ref().is_some_and(|s| s.error.is_none())
    }
}

/// The host's key as the check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyFinding {
    /// The connection ended before the key exchange.
    NotReached,
    /// The key was accepted, but login then failed (so no details were kept).
    Accepted,
    Found(HostKeyStatus),
    /// Not in any known_hosts file, and StrictHostKeyChecking refuses it.
    Unknown {
        name: String,
        presented: String,
    },
    Changed {
        file: PathBuf,
        line: usize,
        recorded: String,
        presented: String,
    },
    Revoked {
        key: String,
        file: PathBuf,
        line: usize,
    },
    Certificate,
}

/// The agent binary as found on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFound {
    pub path: String,
    /// What `--version` printed, e.g. `eventor-agent 0.1.0`.
    pub version: String,
    /// `uname -sm`, e.g. `Linux x86_64`.
    pub os: String,
    /// The host's C library as `getconf GNU_LIBC_VERSION` says it (`glibc 2.36`), or
    /// `unknown` (not glibc, or no answer).
    pub libc: String,
}

/// Whether one side (a host, or the prime) reaches the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReach {
    /// What was tried: `host:port`, a socket path or an SQLite file's directory.
    pub address: String,
    pub error: Option<String>,
}

/// One task per host, all at once: connect, then probe. Results are in the order of
/// `checks`.
pub(super) async fn probe_all(
    config: &SshConfig,
    checks: &[HostCheck],
    options: &CheckOptions,
) -> Vec<HostProbe> {
    let mut tasks = JoinSet::new();
    for (index, check) in checks.iter().enumerate() {
        let (config, spec, options) = (config.clone(), check.spec.clone(), options.clone());
        tasks.spawn(async move { (index, probe_host(&config, &spec, &options).await) });
    }
    let mut probes: Vec<Option<HostProbe>> = checks.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, probe)) => probes[index] = Some(probe),
            Err(e) => tracing::error!("a host's check task failed: {e}"),
        }
    }
    let lost = || not_connected_text("the check task failed".into(), HostKeyFinding::NotReached);
    probes.into_iter().map(|p| p.unwrap_or_else(lost)).collect()
}

/// Connects (bounded by the host's ConnectTimeout) and probes.
async fn probe_host(config: &SshConfig, spec: &HostSpec, options: &CheckOptions) -> HostProbe {
    let started = Instant::now();
    match ssh::connect(config, &spec.ssh).await {
        Ok(session) => probe_session(session, spec, options, started.elapsed()).await,
        Err(e) => not_connected(&e),
    }
}

/// Every probe on one session at once, then goodbye.
async fn probe_session(
    session: Session,
    spec: &HostSpec,
    options: &CheckOptions,
    took: Duration,
) -> HostProbe {
    let limit = options.probe_timeout;
    let (agent, store, clock) = tokio::join!(
        agent(&session, spec, limit),
        host_store(&session, spec, &options.store, limit),
        clock_offset(&session, limit),
    );
    let probe = HostProbe {
        connect: Ok(took),
        host_key: session
            .host_key()
            .cloned()
            .map_or(HostKeyFinding::Accepted, HostKeyFinding::Found),
        auth: Some(Ok(session.auth_method().to_string())),
        agent: Some(agent),
        store: Some(store),
        clock_offset_ms: Some(clock),
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), session.close()).await;
    probe
}

fn not_connected(e: &SshError) -> HostProbe {
    let mut probe = not_connected_text(error_chain(e), host_key_of(e));
    if let Some(auth) = auth_failure(e) {
        probe.auth = Some(Err(auth));
    }
    probe
}

fn not_connected_text(reason: String, host_key: HostKeyFinding) -> HostProbe {
    HostProbe {
        connect: Err(reason),
        host_key,
        auth: None,
        agent: None,
        store: None,
        clock_offset_ms: None,
    }
}

/// What a failed connection says about the host key. Login comes after the key
/// exchange, so a login failure means the key was accepted.
fn host_key_of(e: &SshError) -> HostKeyFinding {
    match e {
        SshError::HostKeyUnknown { name, key, .. } => HostKeyFinding::Unknown {
            name: name.clone(),
            presented: key.clone(),
        },
        SshError::HostKeyChanged {
            file,
            line,
            recorded,
            presented,
            ..
        } => HostKeyFinding::Changed {
            file: file.clone(),
            line: *line,
            recorded: recorded.clone(),
            presented: presented.clone(),
        },
        SshError::HostKeyRevoked {
            key, file, line, ..
        } => HostKeyFinding::Revoked {
            key: key.clone(),
            file: file.clone(),
            line: *line,
        },
        SshError::HostCertificate { .. } => HostKeyFinding::Certificate,
        SshError::NoIdentity { .. } | SshError::Auth { .. } => HostKeyFinding::Accepted,
        _ => HostKeyFinding::NotReached,
    }
}

fn auth_failure(e: &SshError) -> Option<String> {
    match e {
        SshError::NoIdentity { .. } | SshError::Auth { .. } => Some(error_chain(e)),
        _ => None,
    }
}

/// A probe command's end.
struct Ran {
    code: Option<u32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` on the host, bounded by `limit`.
async fn run(session: &Session, command: &str, limit: Duration) -> Result<Ran, String> {
    run_with(session, command, "", limit).await
}

/// [`run`] with `input` on the command's stdin (then its end).
async fn run_with(
    session: &Session,
    command: &str,
    input: &str,
    limit: Duration,
) -> Result<Ran, String> {
    let ran = tokio::time::timeout(limit, run_unbounded(session, command, input)).await;
    match ran {
        Ok(result) => result.map_err(|e| error_chain(&e)),
        Err(_) => Err(format!(
            "`{command}` did not end within {}",
            humantime::format_duration(limit)
        )),
    }
}

async fn run_unbounded(session: &Session, command: &str, input: &str) -> Result<Ran, SshError> {
    let mut channel = session.exec(command).await?;
    // A command that reads its stdin (the agent's env, see `HostSpec::env_lines`) gets
    // `input`, then its end, rather than waiting for more.
    let _ = channel.stdin.write_all(input.as_bytes()).await;
    let _ = channel.stdin.shutdown().await;
    let mut stdout = Vec::new();
    // A read error is the connection ending, which the exit status reports below.
    let _ = (&mut channel.stdout)
        .take(MAX_OUTPUT)
        .read_to_end(&mut stdout)
        .await;
    let mut stderr = Vec::new();
    while let Some(line) = channel.stderr.next_line().await {
        stderr.push(line);
    }
    let status = channel.exit.wait().await?;
    Ok(Ran {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).trim().to_string(),
        stderr: stderr.join("; "),
    })
}

/// The agent's version (run as a run would start it, with its env) and the OS.
async fn agent(session: &Session, spec: &HostSpec, limit: Duration) -> Result<AgentFound, String> {
    let version_command = spec.agent_command(&["--version".to_string()]);
    let env = spec.env_lines();
    let platform = platform_command(spec);
    let (version, os) = tokio::join!(
        run_with(session, &version_command, &env, limit),
        run_with(session, &platform, &env, limit),
    );
    // The command carries the host's env, which may hold secrets: name it by the agent.
    let shown = format!("{} --version", spec.agent);
    let version = version.map_err(|e| {
        let e = e.replace(&version_command, &shown);
        format!("agent {}: {e}", spec.agent)
    })?;
    let path = spec.agent.clone();
    let (os, libc) = match os {
        Ok(ran) if ran.code == Some(0) => {
            let mut lines = ran.stdout.lines();
            let os = lines.next().unwrap_or_default().trim().to_string();
            (os, lines.next().unwrap_or("unknown").trim().to_string())
        }
        Ok(ran) => (
            format!("unknown (uname -sm: {})", describe(&ran)),
            "unknown".into(),
        ),
        Err(e) => (format!("unknown ({e})"), "unknown".into()),
    };
    let version = match version.code {
        Some(0) => version.stdout,
        Some(NOT_FOUND) => {
            // A run would install it: say now if the host's C library would refuse it.
            let refused = glibc_too_old(&libc)
                .map(|needed| {
                    format!("; the host has {libc}, and the prime's agent needs {needed}")
                })
                .unwrap_or_default();
            return Err(format!(
                "agent {path} not found ({}){refused}",
                version.stderr
            ));
        }
        Some(NOT_EXECUTABLE) => {
            return Err(format!(
                "agent {path} is not executable ({})",
                version.stderr
            ))
        }
        _ => {
            return Err(format!(
                "agent {path} --version failed: {}",
                describe(&version)
            ))
        }
    };
    Ok(AgentFound {
        path,
        version,
        os,
        libc,
    })
}

/// What the prime's agent to install needs when the host's `libc` (`glibc 2.x`) is older.
pub(super) fn glibc_too_old(libc: &str) -> Option<String> {
    let binary = crate::cluster::hosts::local_agent_binary()?;
    crate::cluster::deploy::glibc_too_old(libc, &binary)
}

/// [`PLATFORM_COMMAND`] under the host's `env:` (read from stdin, as the agent's start and
/// the deploy's probe read it), so a `PATH` there counts as it will for the agent.
fn platform_command(spec: &HostSpec) -> String {
    use crate::cluster::hosts::{shell_quote, ENV_IN};
    match spec.env.is_empty() {
        true => PLATFORM_COMMAND.to_string(),
        false => format!(
            "sh -c {}",
            shell_quote(&format!("{ENV_IN}\n{PLATFORM_COMMAND}"))
        ),
    }
}

/// The platform and the C library, as the deploy's probe reads them.
const PLATFORM_COMMAND: &str = "uname -sm; getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown";

fn describe(ran: &Ran) -> String {
    let code = match ran.code {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".to_string(),
    };
    match ran.stderr.is_empty() {
        true => code,
        false => format!("{code}: {}", ran.stderr),
    }
}

/// Whether the host's agent would get into the store: for Postgres, a login through the
/// host (an SSH channel the host's server connects for us, as its agent would connect:
/// to the store's address, its socket, or its `store_via: ssh` tunnel) with the
/// password and TLS its agent would be given; where the host's server does not connect
/// for us, only whether the host reaches the store's address.
async fn host_store(
    session: &Session,
    spec: &HostSpec,
    store: &StoreLocation,
    limit: Duration,
) -> StoreReach {
    if let StoreLocation::Postgres(pg) = store {
        if let Some(reach) = host_login(session, spec, pg, limit).await {
            return reach;
        }
    }
    let host = spec.name.as_str();
    let (address, command) = store_probe_command(store, limit);
    let error = match run(session, &command, limit + Duration::from_secs(1)).await {
        Ok(ran) if ran.code == Some(0) => None,
        Ok(ran) if ran.code == Some(TIMED_OUT) => Some(format!(
            "{host}: no answer from the store at {address} within {}",
            humantime::format_duration(limit)
        )),
        Ok(ran) => Some(unreachable_reason(host, store, &address, &ran)),
        Err(e) => Some(format!("{host}: checking the store: {e}")),
    };
    StoreReach { address, error }
}

/// The login through the host; `None` when its server would not connect for us.
async fn host_login(
    session: &Session,
    spec: &HostSpec,
    pg: &PgLocation,
    limit: Duration,
) -> Option<StoreReach> {
    let host = spec.name.as_str();
    if spec.store_via == StoreVia::Ssh {
        return Some(tunnel_login(session, spec, pg, limit).await);
    }
    let (address, stream) = match pg.host.starts_with('/') {
        true => {
            let socket = format!("{}/.s.PGSQL.{}", pg.host, pg.port);
            (socket.clone(), session.connect_socket(&socket).await)
        }
        false => (
            host_port(&pg.host, pg.port),
            session.connect_tcp(&pg.host, pg.port).await,
        ),
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(host, error = %error_chain(&e), "no login through the host: probing its way to the store only");
            return None;
        }
    };
    let login = eventor_store::check_login(pg, Some(Box::new(stream)), limit).await;
    let error = login
        .err()
        .map(|e| format!("{host}: the store refused its agent: {}", error_chain(&e)));
    Some(StoreReach { address, error })
}

/// The login a `store_via: ssh` host's agent would make: through a tunnel opened as the
/// run opens it, in plain text to its socket (the prime speaks TLS to the store).
async fn tunnel_login(
    session: &Session,
    spec: &HostSpec,
    pg: &PgLocation,
    limit: Duration,
) -> StoreReach {
    let host = spec.name.as_str();
    let address = "the prime's ssh connection (store_via: ssh)".to_string();
    let failed = |why: String| StoreReach {
        address: address.clone(),
        error: Some(format!("{host}: {why}")),
    };
    let location = StoreLocation::Postgres(pg.clone());
    let (access, tls) = match crate::cluster::agent_mode::agent_store(&location) {
        Ok(found) => found,
        Err(e) => return failed(error_chain(&e)),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_tunnel = stop.clone().drop_guard();
    let opened = store_tunnel::open(session, spec, Some(&access), tls.as_ref(), stop).await;
    let tunneled = match opened.map(|a| (StoreLocation::parse(&a.location), a.password)) {
        Ok((Ok(StoreLocation::Postgres(pg)), password)) => match password {
            Some(password) => pg.with_password(&password),
            None => pg,
        },
        Ok(_) => return failed("the tunnel's location is not Postgres".into()),
        Err(e) => return failed(error_chain(&e)),
    };
    let socket = format!("{}/.s.PGSQL.{}", tunneled.host, tunneled.port);
    let stream = match session.connect_socket(&socket).await {
        Ok(stream) => stream,
        Err(e) => return failed(error_chain(&e)),
    };
    match eventor_store::check_login(&tunneled, Some(Box::new(stream)), limit).await {
        Ok(()) => StoreReach {
            address,
            error: None,
        },
        Err(e) => failed(format!("the store refused its agent: {}", error_chain(&e))),
    }
}

fn unreachable_reason(host: &str, store: &StoreLocation, address: &str, ran: &Ran) -> String {
    match store {
        StoreLocation::Sqlite(_) => {
            format!("{host}: the store's directory {address} is missing or not writable")
        }
        StoreLocation::Postgres(_) => format!(
            "{host} cannot reach the store at {address} ({})",
            describe(ran)
        ),
    }
}

/// What to try from a host, and the shell command that tries it: a TCP connect (bash's
/// /dev/tcp, bounded by `timeout`) for a Postgres server, the socket for a Postgres
/// socket directory, the directory for an SQLite file.
fn store_probe_command(store: &StoreLocation, limit: Duration) -> (String, String) {
    match store {
        StoreLocation::Postgres(pg) if pg.host.starts_with('/') => {
            let socket = format!("{}/.s.PGSQL.{}", pg.host, pg.port);
            (socket.clone(), format!("test -S {}", shell_quote(&socket)))
        }
        StoreLocation::Postgres(pg) => {
            // The host is an argument of the inner shell, never part of its script: a URL
            // is the user's text, and its host must not run as a command on every host.
            let command = format!(
                "timeout {} bash -c {} eventor-store-probe {} {}",
                limit.as_secs().max(1),
                shell_quote(TCP_CONNECT),
                shell_quote(&pg.host),
                pg.port
            );
            (host_port(&pg.host, pg.port), command)
        }
        StoreLocation::Sqlite(path) => {
            let dir = sqlite_dir(path);
            let quoted = shell_quote(&dir.display().to_string());
            let command = format!("test -d {quoted} && test -w {quoted}");
            (dir.display().to_string(), command)
        }
    }
}

/// `host:port`, or `[v6]:port`.
fn host_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// The SQLite file's directory, absolute as the agents are told it (from the prime's
/// working directory, which hosts sharing the file system see the same).
fn sqlite_dir(path: &Path) -> PathBuf {
    let absolute = std::env::current_dir()
        .map(|dir| dir.join(path))
        .unwrap_or_else(|_| path.to_path_buf());
    match absolute.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("/"),
    }
}

/// The prime's own way to the store: a TCP connect, the socket, or the directory.
pub(super) async fn prime_store(store: &StoreLocation, limit: Duration) -> StoreReach {
    match store {
        // A login as the run will make it: the server's own word on the role, its password,
        // the database and TLS.
        StoreLocation::Postgres(pg) => {
            let address = match pg.host.starts_with('/') {
                true => format!("{}/.s.PGSQL.{}", pg.host, pg.port),
                false => host_port(&pg.host, pg.port),
            };
            let login = eventor_store::check_login(pg, None, limit).await;
            let error = login.err().map(|e| error_chain(&e));
            StoreReach { address, error }
        }
        StoreLocation::Sqlite(path) => {
            let dir = sqlite_dir(path);
            let error = (!dir.is_dir())
                .then(|| format!("the store's directory {} is missing", dir.display()));
            let address = dir.display().to_string();
            StoreReach { address, error }
        }
    }
}

/// Clock samples taken; the one with the shortest round trip counts.
const CLOCK_SAMPLES: usize = 3;
/// Says it is ready, then prints the time once for each line it reads.
const CLOCK_COMMAND: &str = "echo; for i in 1 2 3; do read -r l || exit; date +%s.%N; done";

/// The host's clock minus the prime's, in milliseconds: the remote `date` against the
/// middle of the round trip that asked for it. The shell is started first and says so,
/// and the time is asked for over stdin, so starting the shell (slow on a busy host) is
/// not part of the round trip.
async fn clock_offset(session: &Session, limit: Duration) -> Result<f64, String> {
    let sample = tokio::time::timeout(limit, clock_samples(session));
    let offset = sample.await.map_err(|_| {
        format!(
            "`{CLOCK_COMMAND}` did not end within {}",
            humantime::format_duration(limit)
        )
    })??;
    Ok((offset * 1000.0 * 10.0).round() / 10.0)
}

/// Offset in seconds of the sample with the shortest round trip.
async fn clock_samples(session: &Session) -> Result<f64, String> {
    let mut channel = session
        .exec(CLOCK_COMMAND)
        .await
        .map_err(|e| error_chain(&e))?;
    let mut stdout = BufReader::new(&mut channel.stdout);
    let mut line = String::new();
    read_line(&mut stdout, &mut line).await?;
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..CLOCK_SAMPLES {
        let before = unix_seconds();
        let ask = channel.stdin.write_all(b"\n").await;
        ask.map_err(|e| format!("asking for the time: {e}"))?;
        read_line(&mut stdout, &mut line).await?;
        let after = unix_seconds();
        let remote: f64 = line
            .trim()
            .parse()
            .map_err(|_| format!("date +%s.%N printed {:?}", line.trim()))?;
        let sample = (after - before, remote - (before + (after - before) / 2.0));
        best = Some(best.map_or(sample, |b| if sample.0 < b.0 { sample } else { b }));
    }
    best.map(|(_, offset)| offset)
        .ok_or_else(|| "no clock sample".into())
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut String,
) -> Result<(), String> {
    line.clear();
    match reader.read_line(line).await {
        Ok(0) => Err("the clock command ended early".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading the remote time: {e}")),
    }
}

fn unix_seconds() -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    now.map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(text: &str) -> (String, String) {
        store_probe_command(&StoreLocation::parse(text).unwrap(), Duration::from_secs(3))
    }

    #[test]
    fn a_postgres_server_is_tried_by_tcp_without_its_password() {
        let (address, command) = probe("postgres://ev:s3cret@10.1.2.3:5433/db?schema=x");
        assert_eq!(address, "10.1.2.3:5433");
        assert_eq!(
            command,
            r#"timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' eventor-store-probe 10.1.2.3 5433"#
        );
    }

    #[test]
    fn a_store_host_with_shell_characters_is_one_quoted_argument() {
        let (address, command) = probe("postgres://ev@x%24%28touch%20%2Ftmp%2Fp%29%3B%27q:5432/db");
        assert_eq!(address, "x$(touch /tmp/p);'q:5432");
        assert!(
            command.ends_with(r#" eventor-store-probe 'x$(touch /tmp/p);'\''q' 5432"#),
            "{command}"
        );
    }

    #[test]
    fn a_postgres_socket_and_an_sqlite_directory_are_tested_as_files() {
        let (address, command) = probe("postgres://ev@%2Fvar%2Frun%2Fpg:5432/db");
        assert_eq!(address, "/var/run/pg/.s.PGSQL.5432");
        assert_eq!(command, "test -S /var/run/pg/.s.PGSQL.5432");
        let (address, command) = probe("sqlite:/data/my runs/flow.run.db");
        assert_eq!(address, "/data/my runs");
        assert_eq!(
            command,
            "test -d '/data/my runs' && test -w '/data/my runs'"
        );
    }
}
