//! A relay's connection to the server: what the prime's end of a `store_via: ssh` tunnel
//! joins each forwarded connection to. The client at the other end (a host's agent) speaks
//! Postgres in plain text over a private channel (a Unix socket in a 0700 directory on its
//! host, then the prime's SSH connection); this side reaches the server as the prime does
//! and, before any byte of the client's, negotiates TLS as the prime's `sslmode` says (an
//! `SSLRequest`, then the handshake with the prime's certificate check and client
//! certificate). The client's startup message then travels inside that TLS session, so the
//! password and the data never cross the network in clear, and no CA or key file is
//! needed, sent or left on the host.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::tls::PgTls;
use crate::location::PgLocation;
use crate::tls::{SslMode, TlsSetupError};
use crate::tls_files;

/// The `SSLRequest` message: its length (8), then the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A byte stream to the server, plain or TLS.
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Why a relayed connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("connecting to {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {target}: timed out after {}", humantime::format_duration(*after))]
    TimedOut { target: String, after: Duration },
    #[error("{target} does not accept TLS, which sslmode={mode} requires")]
    NoTls { target: String, mode: &'static str },
    #[error("TLS with {target}")]
    Tls {
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Connects to one store's server for relays, its TLS resolved once.
pub struct Relay {
    host: String,
    port: u16,
    mode: SslMode,
    tls: PgTls,
    timeout: Duration,
}

impl Relay {
    /// For the store at `location`, as this machine reaches it (its `sslmode` and its files,
    /// read now); each connection gives up after `timeout`.
    pub fn new(location: &PgLocation, timeout: Duration) -> Result<Relay, TlsSetupError> {
        let material = tls_files::resolve(location)?;
        let tls = PgTls::new(&material)?;
        Ok(Relay {
            host: location.host.clone(),
            port: location.port,
            mode: material.mode,
            tls,
            timeout,
        })
    }

    /// A new connection, ready for the client's startup message.
    pub async fn connect(&self) -> Result<Box<dyn Duplex>, RelayError> {
        let target = self.target();
        let connecting = self.open(&target);
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(connected) => connected,
            Err(_) => Err(RelayError::TimedOut {
                target,
                after: self.timeout,
            }),
        }
    }

    fn target(&self) -> String {
        match self.host.starts_with('/') {
            true => format!("{}/.s.PGSQL.{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    async fn open(&self, target: &str) -> Result<Box<dyn Duplex>, RelayError> {
        let io = |source| RelayError::Connect {
            target: target.to_string(),
            source,
        };
        // As libpq: no TLS over a Unix socket (it never leaves this machine).
        if self.host.starts_with('/') {
            return Ok(Box::new(UnixStream::connect(target).await.map_err(io)?));
        }
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        // `allow` tries plain text first, and a relay cannot try twice for its client.
        if matches!(self.mode, SslMode::Disable | SslMode::Allow) {
            return Ok(Box::new(tcp));
        }
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        match tcp.read_u8().await.map_err(io)? {
            b'S' => self.tls_over(tcp, target).await,
            _ if self.mode.requires_tls() => Err(RelayError::NoTls {
                target: target.to_string(),
                mode: self.mode.as_str(),
            }),
            // `prefer`: the server said no, the session goes on in plain text.
            _ => Ok(Box::new(tcp)),
        }
    }

    async fn tls_over(&self, tcp: TcpStream, target: &str) -> Result<Box<dyn Duplex>, RelayError> {
        let tls = |source| RelayError::Tls {
            target: target.to_string(),
            source,
        };
        let stream = self.tls.handshake(tcp, &self.host).await.map_err(tls)?;
        Ok(Box::new(stream))
    }
}
