//! `store_via: ssh`: a host's agent reaches the store through the prime's SSH connection.
//!
//! For such a host the prime asks its SSH server for a remote port forward on the host's
//! loopback (`tcpip-forward` to `127.0.0.1`, port chosen by the server). Each connection the
//! agent makes to `127.0.0.1:PORT` on its host comes back to the prime as an SSH channel,
//! which the prime joins to a fresh connection to the store *as the prime reaches it* (TCP,
//! or the Unix socket of a socket-directory host). The agent is told the rewritten location
//! in the handshake (host `127.0.0.1`, that port; the password travels as for any agent),
//! so it still records each task's end itself before reporting it.
//!
//! The listener lives on the host only while the SSH connection does, binds loopback
//! only (sshd's `GatewayPorts no`, the default), and is open to the host's other local
//! users exactly as a local Postgres would be: Postgres's own authentication still
//! applies. The forwarding tasks end with the run (its shutdown token) or the connection.

use std::time::Duration;

use eventor_protocol::StoreAccess;
use eventor_ssh::{ForwardedStream, Session, SshError};
use eventor_store::StoreLocation;
use tokio_util::sync::CancellationToken;

use super::hosts::HostSpec;

/// Bound on reaching the store for one forwarded connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a host's store tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("{host}: store_via: ssh needs a Postgres store (the store is {location})")]
    NotPostgres { host: String, location: String },
    #[error("{host}: store_via: ssh, but the run has no store to send the agent")]
    NoStore { host: String },
    #[error("{host}: forwarding the store over ssh")]
    Forward {
        host: String,
        #[source]
        source: Box<SshError>,
    },
}

/// Where the prime reaches the store.
#[derive(Debug, Clone)]
enum Target {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

/// Opens `host`'s forward and returns the store access its agent is to use.
pub async fn open(
    session: &Session,
    host: &HostSpec,
    access: Option<&StoreAccess>,
    shutdown: CancellationToken,
) -> Result<StoreAccess, TunnelError> {
    let name = host.name.clone();
    let access = access.ok_or_else(|| TunnelError::NoStore { host: name.clone() })?;
    let mut pg = match StoreLocation::parse(&access.location) {
        Ok(StoreLocation::Postgres(pg)) => pg,
        _ => {
            let location = access.location.clone();
            return Err(TunnelError::NotPostgres {
                host: name,
                location,
            });
        }
    };
    let target = if pg.host.starts_with('/') {
        Target::Unix(format!("{}/.s.PGSQL.{}", pg.host, pg.port).into())
    } else {
        Target::Tcp(pg.host.clone(), pg.port)
    };
    let forward =
        session
            .forward_remote("127.0.0.1", 0)
            .await
            .map_err(|e| TunnelError::Forward {
                host: name.clone(),
                source: Box::new(e),
            })?;
    tracing::debug!(host = %name, port = forward.port, ?target, "store forwarded over ssh");
    tokio::spawn(serve(forward.connections, target, name, shutdown));
    pg.host = "127.0.0.1".into();
    pg.port = u16::try_from(forward.port).unwrap_or(pg.port);
    Ok(StoreAccess {
        location: StoreLocation::Postgres(pg).to_string(),
        password: access.password.clone(),
    })
}

/// Joins each forwarded connection to a new connection to the store.
async fn serve(
    mut connections: tokio::sync::mpsc::Receiver<ForwardedStream>,
    target: Target,
    host: String,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            s = connections.recv() => match s { Some(s) => s, None => return },
            _ = shutdown.cancelled() => return,
        };
        let (target, host, stop) = (target.clone(), host.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = pipe(stream, &target) => if let Err(e) = r {
                    tracing::warn!(host = %host, "store connection over ssh: {e}");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn pipe(mut stream: ForwardedStream, target: &Target) -> std::io::Result<()> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
    match target {
        Target::Tcp(host, port) => {
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            let mut store = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| timed_out())??;
            store.set_nodelay(true)?;
            tokio::io::copy_bidirectional(&mut stream, &mut store).await?;
        }
        Target::Unix(path) => {
            let connect = tokio::net::UnixStream::connect(path);
            let mut store = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| timed_out())??;
            tokio::io::copy_bidirectional(&mut stream, &mut store).await?;
        }
    }
    Ok(())
}
