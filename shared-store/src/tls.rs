//! What TLS a Postgres connection uses: the `sslmode` and [`TlsMaterial`] (the CA and
//! client certificate files' bytes, not their paths), which is what a connection uses and
//! what the prime hands its agents in the session setup, and why TLS failed. How a
//! location's TLS is decided, the way libpq decides it, is `tls_files.rs`:
//!
//! Sources, each the first that has one: the URL's `sslmode`, `PGSSLMODE`, `prefer`; the
//! URL's `sslrootcert`, `PGSSLROOTCERT`, `~/.postgresql/root.crt` if it exists; the same for
//! `sslcert` (`PGSSLCERT`, `~/.postgresql/postgresql.crt`) and `sslkey` (`PGSSLKEY`,
//! `~/.postgresql/postgresql.key`), as `PGPASSWORD` stands behind the URL's password. As in
//! libpq, `require` with a root certificate checks the chain (it becomes `verify-ca`);
//! `prefer` and `allow` check nothing; a private key that its group or others may read is
//! refused. Material given with the location (an agent's, from its prime) wins over all of
//! it, as a given password does. Nothing here holds a secret in an error or in `Debug`.

use std::fmt;
use std::path::PathBuf;

/// libpq's `sslmode`: whether TLS is used, and what of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// Plain text first; TLS when the server refuses a connection without it.
    Allow,
    /// TLS when the server offers it, else plain text (the default); no certificate check.
    Prefer,
    /// TLS or nothing; no certificate check.
    Require,
    /// TLS, the certificate chain checked against the root certificate.
    VerifyCa,
    /// TLS, the chain checked and the certificate's names matched against the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq word for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Reads a libpq word; `None` for anything else.
    pub fn parse(word: &str) -> Option<SslMode> {
        [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ]
        .into_iter()
        .find(|mode| mode.as_str() == word)
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS a connection uses, with the files already read: the same on the prime and on
/// each agent. `Debug` does not show the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub mode: SslMode,
    /// The name the certificate must match under `verify-full`, when it is not the host
    /// connected to (an agent reaching the store through a tunnel); `None`: that host.
    pub server_name: Option<String>,
    /// The root certificates (PEM) the chain is checked against.
    pub root_cert: Option<Vec<u8>>,
    /// The client's certificate chain (PEM), offered when the server asks for one.
    pub client_cert: Option<Vec<u8>>,
    /// The client certificate's private key (PEM).
    pub client_key: Option<Vec<u8>>,
}

impl TlsMaterial {
    /// Plain text, nothing else.
    pub fn disabled() -> TlsMaterial {
        TlsMaterial {
            mode: SslMode::Disable,
            server_name: None,
            root_cert: None,
            client_cert: None,
            client_key: None,
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |pem: &Option<Vec<u8>>| pem.as_ref().map(Vec::len);
        f.debug_struct("TlsMaterial")
            .field("mode", &self.mode)
            .field("server_name", &self.server_name)
            .field("root_cert_bytes", &size(&self.root_cert))
            .field("client_cert_bytes", &size(&self.client_cert))
            .field("client_key", &self.client_key.as_ref().map(|_| "****"))
            .finish()
    }
}

/// Why the TLS settings cannot be used. Names files, never their contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("invalid {source_name}={value:?} (one of disable, allow, prefer, require, verify-ca, verify-full)")]
    Mode {
        source_name: &'static str,
        value: String,
    },
    #[error("sslmode={0} checks the server's certificate, but no root certificate was given (sslrootcert, PGSSLROOTCERT) and ~/.postgresql/root.crt does not exist")]
    NoRootCert(SslMode),
    #[error("sslrootcert=system is not supported: give the CA file's path")]
    SystemRoots,
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the client certificate {0} has no private key (sslkey, PGSSLKEY, ~/.postgresql/postgresql.key)")]
    NoKey(PathBuf),
    #[error(
        "private key file {0} has group or world access; permissions should be u=rw (0600) or less"
    )]
    KeyAccess(PathBuf),
    #[error("{what} holds no usable PEM {expected}")]
    Pem {
        what: &'static str,
        expected: &'static str,
    },
    #[error("the client certificate or its key was refused")]
    ClientAuth(#[source] rustls::Error),
}

/// Why the server was refused, or refused us, over TLS: each failure in its own words.
/// Never holds a secret: names, the mode and what the certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsRefusal {
    #[error("the server requires TLS for this user (it accepts no connection without encryption), and sslmode={0} did not use it: use sslmode=verify-full (or require)")]
    ServerRequiresTls(SslMode),
    #[error("the server does not support TLS, which sslmode={0} requires")]
    ServerWithoutTls(SslMode),
    #[error(
        "the server's certificate is not trusted ({problem}): subject {subject}, issuer {issuer}"
    )]
    Untrusted {
        problem: String,
        subject: String,
        issuer: String,
    },
    #[error("the server's certificate does not match the name {expected} (its names: {presented}; subject {subject})")]
    NameMismatch {
        expected: String,
        presented: String,
        subject: String,
    },
}
