//! `store_via: ssh`: a host's agent reaches the store through the prime's SSH connection.
//!
//! For such a host the prime makes a private directory on it (`mktemp -d` under
//! `~/.cache/eventor/tunnel`, 0700, in a parent checked to be the login user's and written
//! by nobody else) and asks its SSH server to listen on a Unix socket there (OpenSSH's
//! `streamlocal-forward`), named as Postgres names its sockets (`.s.PGSQL.PORT`). The agent
//! is told the rewritten location in the handshake (host: that directory), so it connects
//! as to a local Postgres socket; no other user of the host can reach the socket (the
//! directory is the agent's user's alone), nor take its place once the SSH connection is
//! gone (they cannot create a file there).
//!
//! Each connection there comes back to the prime as an SSH channel, which the prime joins
//! to a fresh connection to the store *as the prime reaches it*: TCP with TLS as the
//! prime's `sslmode` says (the prime's certificate check and client certificate), or the
//! Unix socket of a socket-directory host ([`eventor_store::Relay`]). The agent speaks plain
//! text to its socket (as libpq does over Unix sockets); the password travels as for any
//! agent, inside SSH and then inside the prime's TLS session. At most the agent's pool size
//! of forwarded connections are open at once; more are refused. The forwarding tasks end
//! with the run (its shutdown token) or the connection.
use std::time::Duration;

use std::sync::Arc;

use eventor_agent::tls_material;
use eventor_protocol::{StoreAccess, StoreTls};
use eventor_ssh::{ForwardedStream, Session, SshError};
use eventor_store::{PgLocation, PgOptions, Relay, SslMode, StoreLocation};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
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
    #[error("{host}: making the store tunnel's private directory: {why}")]
    Directory { host: String, why: String },
    #[error("{host}: the store's TLS for the tunnel")]
    Tls {
        host: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Makes the private directory and prints its absolute path: `mktemp -d` (0700, a fresh
/// name) under a parent made 0700 and checked to be the login user's and written by nobody
/// else; directories left by runs of more than a day ago are removed first.
const PRIVATE_DIR: &str = r#"umask 077
b="$HOME/.cache/eventor/tunnel"
mkdir -p "$b" || exit 1
o=$(stat -c '%u %a' "$b") || exit 1
[ "${o% *}" = "$(id -u)" ] || { echo "$b is owned by uid ${o% *}, not by the login user"; exit 1; }
chmod 700 "$b" || exit 1
find "$b" -mindepth 1 -maxdepth 1 -type d -mmin +1440 -exec rm -rf {} + 2>/dev/null
mktemp -d "$b/XXXXXXXX""#;

/// Opens `host`'s forward and returns the store access its agent is to use.
pub async fn open(
    session: &Session,
    host: &HostSpec,
    access: Option<&StoreAccess>,
    tls: Option<&StoreTls>,
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
    let relay = relay(&pg, tls).map_err(|source| TunnelError::Tls {
        host: name.clone(),
        source,
    })?;
    let dir = private_dir(session, &name).await?;
    let socket = format!("{dir}/.s.PGSQL.{}", pg.port);
    let forward =
        session
            .forward_remote_socket(&socket)
            .await
            .map_err(|e| TunnelError::Forward {
                host: name.clone(),
                source: Box::new(e),
            })?;
    tracing::debug!(host = %name, socket = %forward.path, "store forwarded over ssh");
    let cap = PgOptions::default().pool_size;
    tokio::spawn(serve(
        forward.connections,
        Arc::new(relay),
        cap,
        name,
        shutdown,
    ));
    // The agent connects to the socket in plain text, as libpq does to a local socket.
    pg.host = dir;
    pg.sslmode = Some(SslMode::Disable);
    (pg.sslrootcert, pg.sslcert, pg.sslkey) = (None, None, None);
    Ok(StoreAccess {
        location: StoreLocation::Postgres(pg).to_string(),
        password: access.password.clone(),
    })
}

/// The prime's connections for the tunnel, with the TLS it resolved for its agents.
fn relay(
    pg: &PgLocation,
    tls: Option<&StoreTls>,
) -> Result<Relay, Box<dyn std::error::Error + Send + Sync>> {
    let pg = match tls {
        Some(tls) => pg.clone().with_tls(tls_material(tls)?),
        None => pg.clone(),
    };
    Ok(Relay::new(&pg, CONNECT_TIMEOUT)?)
}

/// The tunnel's private directory on the host (see [`PRIVATE_DIR`]).
async fn private_dir(session: &Session, host: &str) -> Result<String, TunnelError> {
    let failed = |why: String| TunnelError::Directory {
        host: host.to_string(),
        why,
    };
    let command = format!("sh -c {}", super::hosts::shell_quote(PRIVATE_DIR));
    let run = async {
        let mut channel = session.exec(&command).await?;
        let mut out = String::new();
        let _ = channel.stdout.read_to_string(&mut out).await;
        let status = channel.exit.wait().await?;
        Ok::<_, SshError>((status, out))
    };
    let (status, out) = tokio::time::timeout(CONNECT_TIMEOUT, run)
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|e| failed(eventor_agent::util::error_chain(&e)))?;
    let dir = out.trim();
    match status.success() && dir.starts_with('/') {
        true => Ok(dir.to_string()),
        false => Err(failed(format!(
            "{} ({dir})",
            super::deploy::describe(&status)
        ))),
    }
}

/// Joins each forwarded connection to a new connection to the store, at most `cap` at once.
async fn serve(
    mut connections: tokio::sync::mpsc::Receiver<ForwardedStream>,
    relay: Arc<Relay>,
    cap: usize,
    host: String,
    shutdown: CancellationToken,
) {
    let room = Arc::new(Semaphore::new(cap));
    loop {
        let stream = tokio::select! {
            s = connections.recv() => match s { Some(s) => s, None => return },
            _ = shutdown.cancelled() => return,
        };
        let Ok(permit) = room.clone().try_acquire_owned() else {
            tracing::warn!(host = %host, "a store connection over ssh refused: {cap} are open already (the agent's pool size)");
            continue; // dropped: the channel closes
        };
        let (relay, host, stop) = (relay.clone(), host.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = pipe(stream, &relay) => if let Err(e) = r {
                    tracing::warn!(host = %host, error = %eventor_agent::util::error_chain(&*e), "store connection over ssh");
                },
                _ = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

async fn pipe(
    mut stream: ForwardedStream,
    relay: &Relay,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut store = relay.connect().await?;
    tokio::io::copy_bidirectional(&mut stream, &mut store).await?;
    Ok(())
}
