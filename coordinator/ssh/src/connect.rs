//! Reaching hosts: TCP (with ConnectTimeout, ConnectionAttempts, TcpKeepAlive) or a
//! ProxyJump tunnel, the SSH handshake and login, and [`connect_all`] running many at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::forward::ForwardedStream;
use russh::client::Handle;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use super::auth::authenticate;
use super::config::{HostConfig, SshConfig};
use super::error::{HandshakeError, SshError};
use super::exec::{self, ExecChannel};
use super::host_key::{ClientHandler, HostKeyCheck, HostKeyStatus};
use super::jumps::Jumps;

/// Longest ProxyJump chain followed; deeper means a loop in ssh_config.
const MAX_JUMP_DEPTH: usize = 8;
/// OpenSSH's pause between ConnectionAttempts.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// An authenticated SSH connection to one host.
pub struct Session {
    host: HostConfig,
    handle: Handle<ClientHandler>,
    /// The jump host's session carrying this one's tunnel (shared by every host behind
    /// it); dropped after `handle`.
    jump: Option<Arc<Session>>,
    /// How the host key was accepted (`None` only if russh never asked, which it always does).
    host_key: Option<HostKeyStatus>,
    /// The key that logged in, as [`authenticate`] names it.
    auth: String,
    /// This connection's remote port forwards (shared with its handler).
    forwards: super::forward::Registry,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("alias", &self.host.alias)
            .field("address", &self.host.address())
            .field("jump", &self.jump)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The resolved configuration this session was opened with (warnings included).
    pub fn host(&self) -> &HostConfig {
        &self.host
    }

    pub fn alias(&self) -> &str {
        &self.host.alias
    }

    /// How the server's host key was accepted (known_hosts file:line, learned, or unchecked).
    pub fn host_key(&self) -> Option<&HostKeyStatus> {
        self.host_key.as_ref()
    }

    /// The authentication that worked, e.g. `publickey /home/u/.ssh/id_ed25519`.
    pub fn auth_method(&self) -> &str {
        &self.auth
    }

    /// Runs `command` through the remote user's shell in a new exec channel.
    /// Several commands may run at once on one session.
    pub async fn exec(&self, command: &str) -> Result<ExecChannel, SshError> {
        exec::start(&self.handle, &self.host.alias, command).await
    }

    /// Asks the server to listen on `address:port` on its side (port 0: one it chooses)
    /// and to hand each connection there to us; see [`RemoteForward`](super::RemoteForward).
    pub async fn forward_remote(
        &self,
        address: &str,
        port: u32,
    ) -> Result<super::RemoteForward, SshError> {
        let port = self
            .handle
            .tcpip_forward(address, port)
            .await
            .map_err(|source| SshError::Forward {
                host: self.host.alias.clone(),
                source: Box::new(source),
            })?;
        let connections = self.forwards.register(super::forward::Endpoint::Port(port));
        Ok(super::RemoteForward { port, connections })
    }

    /// Asks the server to listen on the Unix socket `path` on its side (OpenSSH's
    /// streamlocal forward: the socket is the login user's, made with sshd's
    /// `StreamLocalBindMask`, 0177 by default) and to hand each connection there to us.
    /// The socket's directory must exist; a file already at `path` is refused by the
    /// server unless its `StreamLocalBindUnlink` says otherwise.
    pub async fn forward_remote_socket(
        &self,
        path: &str,
    ) -> Result<super::SocketForward, SshError> {
        self.handle
            .streamlocal_forward(path)
            .await
            .map_err(|source| SshError::Forward {
                host: self.host.alias.clone(),
                source: Box::new(source),
            })?;
        let endpoint = super::forward::Endpoint::Socket(path.to_string());
        let connections = self.forwards.register(endpoint);
        Ok(super::SocketForward {
            path: path.to_string(),
            connections,
        })
    }

    /// A connection the server makes for us to `host:port`, as a program on it would
    /// (OpenSSH's `direct-tcpip`, what `ssh -L` uses).
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<ForwardedStream, SshError> {
        let open = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let target = format!("{host}:{port}");
        Ok(open
            .await
            .map_err(|e| self.connect_error(target, e))?
            .into_stream())
    }

    /// A connection the server makes for us to the Unix socket `path` on its side
    /// (OpenSSH's `direct-streamlocal`).
    pub async fn connect_socket(&self, path: &str) -> Result<ForwardedStream, SshError> {
        let open = self.handle.channel_open_direct_streamlocal(path);
        let target = path.to_string();
        Ok(open
            .await
            .map_err(|e| self.connect_error(target, e))?
            .into_stream())
    }

    fn connect_error(&self, target: String, source: russh::Error) -> SshError {
        SshError::ConnectFor {
            host: self.host.alias.clone(),
            target,
            source: Box::new(source),
        }
    }

    /// Whether the connection has ended (server gone, keepalives unanswered, closed).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Says goodbye to the server (and to the jump hosts). Dropping the session ends it
    /// too, once no channel of it is left.
    pub async fn close(self) {
        let bye = russh::Disconnect::ByApplication;
        let _ = self.handle.disconnect(bye, "", "en").await;
        // The last host behind a jump host says goodbye to it.
        if let Some(jump) = self.jump.and_then(Arc::into_inner) {
            Box::pin(jump.close()).await;
        }
    }
}

/// Connects to and logs in on `alias`, as resolved by `config`.
pub async fn connect(config: &SshConfig, alias: &str) -> Result<Session, SshError> {
    connect_sharing(config, alias, &Arc::default()).await
}

/// [`connect`], sharing the jump connections of `jumps` with the hosts connected with it.
async fn connect_sharing(
    config: &SshConfig,
    alias: &str,
    jumps: &Arc<Jumps<Session>>,
) -> Result<Session, SshError> {
    let host = config.resolve(alias)?;
    connect_host(config, host, 0, jumps).await
}

impl super::jumps::Connection for Session {
    fn is_closed(&self) -> bool {
        Session::is_closed(self)
    }
}

/// Connects to every alias at once; the results are in the order of `aliases`.
/// Each connection runs in its own task, so N hosts take about one handshake's time.
pub async fn connect_all<S: AsRef<str>>(
    config: &SshConfig,
    aliases: &[S],
) -> Vec<Result<Session, SshError>> {
    // A JoinSet aborts the connections still running if this future is dropped.
    let mut tasks = JoinSet::new();
    let mut ids = HashMap::new();
    // Hosts behind one jump host share one connection to it.
    let jumps = Arc::new(Jumps::default());
    for (index, alias) in aliases.iter().enumerate() {
        let (config, alias) = (config.clone(), alias.as_ref().to_string());
        let jumps = jumps.clone();
        let task = tasks.spawn(async move { connect_sharing(&config, &alias, &jumps).await });
        ids.insert(task.id(), index);
    }
    let mut results: Vec<Option<Result<Session, SshError>>> =
        aliases.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next_with_id().await {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some(&index) = ids.get(&id) else { continue };
        results[index] = Some(joined.map(|(_, r)| r).unwrap_or_else(|source| {
            let host = aliases[index].as_ref().to_string();
            Err(SshError::Task { host, source })
        }));
    }
    // Every task was joined above, so every slot is filled.
    results.into_iter().flatten().collect()
}

type SessionFuture<'a> = Pin<Box<dyn Future<Output = Result<Session, SshError>> + Send + 'a>>;

/// Direct, or through the last ProxyJump hop (itself reached through the earlier hops).
fn connect_host<'a>(
    config: &'a SshConfig,
    host: HostConfig,
    depth: usize,
    jumps: &'a Arc<Jumps<Session>>,
) -> SessionFuture<'a> {
    Box::pin(async move {
        let Some((last, earlier)) = host.proxy_jump.split_last() else {
            let _setting_up = startup(config).await;
            let tcp = tcp_connect(&host).await?;
            return login(host, tcp, None).await;
        };
        if depth >= MAX_JUMP_DEPTH {
            return Err(SshError::JumpDepth {
                host: host.alias.clone(),
                max: MAX_JUMP_DEPTH,
            });
        }
        let mut jump_host = config.resolve(&last.host)?;
        jump_host.user = last.user.clone().unwrap_or(jump_host.user);
        jump_host.port = last.port.unwrap_or(jump_host.port);
        // `-J a,b`: b is reached through a; a lone hop keeps its own ProxyJump (OpenSSH).
        if !earlier.is_empty() {
            jump_host.proxy_jump = earlier.to_vec();
        }
        let jump = shared_jump(config, jump_host, depth, jumps)
            .await
            .map_err(|source| SshError::Jump {
                host: host.alias.clone(),
                jump: last.to_string(),
                source,
            })?;
        let _setting_up = startup(config).await;
        let tunnel = open_tunnel(&host, &jump).await?;
        login(host, tunnel, Some(jump)).await
    })
}

/// The connection to a jump host: the one already open to it (by user, address, port and
/// chain), or a new one, shared from then on.
async fn shared_jump(
    config: &SshConfig,
    jump_host: HostConfig,
    depth: usize,
    jumps: &Arc<Jumps<Session>>,
) -> Result<Arc<Session>, Arc<SshError>> {
    let key = format!(
        "{}@{}:{} via {:?}",
        jump_host.user, jump_host.host_name, jump_host.port, jump_host.proxy_jump
    );
    let slot = jumps.slot(key);
    let mut slot = slot.lock().await;
    if let Some(reused) = slot.reuse() {
        return reused;
    }
    let made = connect_host(config, jump_host, depth + 1, jumps)
        .await
        .map(Arc::new)
        .map_err(Arc::new);
    slot.keep(&made);
    made
}

/// A place among the logins being set up (held until this one is done).
async fn startup(config: &SshConfig) -> Option<tokio::sync::SemaphorePermit<'_>> {
    // Never closed; a closed one would only mean no pacing.
    config.startups().acquire().await.ok()
}

/// A direct-tcpip channel from the jump host to the target, used as the target's socket.
async fn open_tunnel(
    host: &HostConfig,
    jump: &Session,
) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static, SshError> {
    let open = jump.handle.channel_open_direct_tcpip(
        host.host_name.clone(),
        u32::from(host.port),
        "127.0.0.1",
        0,
    );
    let channel = within(host.connect_timeout, open, || connect_timeout(host))
        .await?
        .map_err(|source| SshError::Tunnel {
            host: host.alias.clone(),
            jump: jump.alias().to_string(),
            target: host.address(),
            source: Box::new(source),
        })?;
    Ok(channel.into_stream())
}

/// TCP to the host, retried per ConnectionAttempts, each attempt bounded by ConnectTimeout.
async fn tcp_connect(host: &HostConfig) -> Result<TcpStream, SshError> {
    let mut attempt = 1;
    loop {
        let once = within(host.connect_timeout, tcp_once(host), || {
            connect_timeout(host)
        });
        match once.await.and_then(|r| r) {
            Ok(stream) => return Ok(stream),
            Err(e) if attempt < host.connection_attempts => {
                tracing::debug!(host = %host.alias, attempt, "{e}; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Every address the name resolves to, in order, until one accepts.
async fn tcp_once(host: &HostConfig) -> Result<TcpStream, SshError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.host_name.as_str(), host.port))
        .await
        .map_err(|source| SshError::Resolve {
            host: host.alias.clone(),
            addr: host.address(),
            source,
        })?
        .collect();
    let mut last_error = None;
    for addr in addrs {
        match tcp_to(addr, host.tcp_keep_alive).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(source) => SshError::Connect {
            host: host.alias.clone(),
            addr: host.address(),
            source,
        },
        None => SshError::NoAddress {
            host: host.alias.clone(),
            addr: host.address(),
        },
    })
}

async fn tcp_to(addr: SocketAddr, keep_alive: bool) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_keepalive(keep_alive)?;
    let stream = socket.connect(addr).await?;
    // The agent protocol is request/response: don't let Nagle hold small frames back.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Handshake, host-key check and authentication over `stream`, bounded by ConnectTimeout.
async fn login<S>(
    host: HostConfig,
    stream: S,
    jump: Option<Arc<Session>>,
) -> Result<Session, SshError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let check = HostKeyCheck::load(&host)?;
    let config = Arc::new(russh::client::Config {
        keepalive_interval: host.server_alive_interval,
        keepalive_max: host.server_alive_count_max,
        preferred: check.preferred(),
        ..Default::default()
    });
    let handler = ClientHandler::new(check);
    let host_key = handler.status();
    let forwards = handler.forwards();
    let attempt = async {
        let mut handle = russh::client::connect_stream(config, stream, handler)
            .await
            .map_err(|e| handshake_error(&host, e))?;
        let auth = authenticate(&mut handle, &host).await?;
        Ok::<_, SshError>((handle, auth))
    };
    let (handle, auth) = within(host.connect_timeout, attempt, || SshError::LoginTimeout {
        host: host.alias.clone(),
        addr: host.address(),
        after: host.connect_timeout.unwrap_or_default(),
    })
    .await??;
    tracing::debug!(host = %host.alias, addr = %host.address(), "ssh session open");
    let host_key = host_key.get().cloned();
    Ok(Session {
        host,
        handle,
        jump,
        host_key,
        auth,
        forwards,
    })
}

fn handshake_error(host: &HostConfig, e: HandshakeError) -> SshError {
    match e {
        HandshakeError::Refused(e) => *e,
        HandshakeError::Ssh(source) => SshError::Handshake {
            host: host.alias.clone(),
            addr: host.address(),
            source: Box::new(source),
        },
    }
}

fn connect_timeout(host: &HostConfig) -> SshError {
    SshError::ConnectTimeout {
        host: host.alias.clone(),
        addr: host.address(),
        after: host.connect_timeout.unwrap_or_default(),
    }
}

/// `fut`, cut off after `limit` (if any) with the error `on_timeout` makes.
async fn within<F: Future>(
    limit: Option<Duration>,
    fut: F,
    on_timeout: impl FnOnce() -> SshError,
) -> Result<F::Output, SshError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| on_timeout()),
        None => Ok(fut.await),
    }
}
