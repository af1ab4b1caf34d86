//! TLS on the wire to Postgres: the rustls client a [`TlsMaterial`] asks for (ring as the
//! crypto provider), the certificate check of each `sslmode`, and a failed connection told
//! as a [`TlsRefusal`] when TLS is why it failed.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls::{SslMode, TlsMaterial, TlsRefusal, TlsSetupError};

type Inner = MakeRustlsConnect;

/// The TLS side of every connection to one store; cheap to clone (one shared config).
#[derive(Clone)]
pub(super) struct PgTls {
    inner: Inner,
    /// The name the certificate must match, when it is not the host connected to.
    server_name: Option<String>,
}

/// The stream of a connection made with [`PgTls`] (plain or TLS).
pub(super) type PgStream = <Inner as MakeTlsConnect<Socket>>::Stream;

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = PgStream;
    type TlsConnect = <Inner as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <Inner as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        let name = self.server_name.as_deref().unwrap_or(domain);
        <Inner as MakeTlsConnect<Socket>>::make_tls_connect(&mut self.inner, name)
    }
}

impl PgTls {
    /// The rustls client for `material`: its certificate check, its client certificate.
    pub fn new(material: &TlsMaterial) -> Result<PgTls, TlsSetupError> {
        let provider = Arc::new(provider());
        let verifier = verifier(material, &provider)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsSetupError::ClientAuth)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&material.client_cert, &material.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "the client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsSetupError::Pem {
                    what: "the private key",
                    expected: "private key",
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(TlsSetupError::ClientAuth)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(PgTls {
            inner: MakeRustlsConnect::new(config),
            server_name: material.server_name.clone(),
        })
    }
}

impl PgTls {
    /// The connector for one connection over a stream of type `S` to `host` (the name
    /// the material gives, if any, is checked instead).
    pub(super) fn connector_for<S>(
        &self,
        host: &str,
    ) -> Result<<Inner as MakeTlsConnect<S>>::TlsConnect, <Inner as MakeTlsConnect<S>>::Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let name = self.server_name.as_deref().unwrap_or(host);
        <Inner as MakeTlsConnect<S>>::make_tls_connect(&mut self.inner.clone(), name)
    }

    /// The TLS handshake on `stream` (its `SSLRequest` already answered yes), the
    /// certificate checked against `host` or the name the material gives.
    pub(super) async fn handshake<S>(
        &self,
        stream: S,
        host: &str,
    ) -> Result<<Inner as MakeTlsConnect<S>>::Stream, Box<dyn std::error::Error + Send + Sync>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        use tokio_postgres::tls::TlsConnect;
        Ok(self.connector_for::<S>(host)?.connect(stream).await?)
    }
}

/// ring, not aws-lc: ring is already built for the SSH client (russh), while aws-lc-rs
/// would add a C library build of its own. rustls 0.23.48 deprecates ring's provider for
/// lacking post-quantum key exchange, which a link to Postgres can do without for now.
#[allow(deprecated)]
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// What of the server's certificate `material.mode` checks.
fn verifier(
    material: &TlsMaterial,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsSetupError> {
    let Some(pem) = material
        .root_cert
        .as_ref()
        .filter(|_| material.mode.verifies())
    else {
        return Ok(Arc::new(Unchecked(provider.clone())));
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem, "the root certificate file")? {
        roots.add(cert).map_err(TlsSetupError::ClientAuth)?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|_| TlsSetupError::Pem {
            what: "the root certificate file",
            expected: "CA certificate",
        })?;
    Ok(Arc::new(Checked {
        webpki,
        names: material.mode == SslMode::VerifyFull,
    }))
}

/// Every certificate of a PEM text; none is an error.
fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bad = || TlsSetupError::Pem {
        what,
        expected: "certificate",
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad())?;
    match certs.is_empty() {
        true => Err(bad()),
        false => Ok(certs),
    }
}

/// `verify-ca` and `verify-full`: the chain against the root certificates, and (`names`)
/// the host against the certificate's names. A refusal says what the certificate is.
#[derive(Debug)]
struct Checked {
    webpki: Arc<WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Checked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let problem = match checked {
            Err(rustls::Error::InvalidCertificate(problem)) => problem,
            other => return other,
        };
        let refusal = match problem {
            // The chain is checked first: a name error means the chain was good.
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                if !self.names =>
            {
                return Ok(ServerCertVerified::assertion())
            }
            problem => refusal(end_entity, server_name, problem),
        };
        let other = OtherError(Arc::new(refusal));
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            other,
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer`, `allow` and `require` without a root certificate: libpq checks no certificate
/// then. The handshake's signatures are still checked, so the session is keyed to whatever
/// certificate was shown.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The refusal of `cert` for `problem`, with what the certificate says it is.
fn refusal(
    cert: &CertificateDer<'_>,
    expected: &ServerName<'_>,
    problem: CertificateError,
) -> TlsRefusal {
    let (subject, issuer) = names_of(cert);
    match problem {
        CertificateError::NotValidForNameContext { presented, .. } => TlsRefusal::NameMismatch {
            expected: expected.to_str().into_owned(),
            presented: presented.join(", "),
            subject,
        },
        CertificateError::NotValidForName => TlsRefusal::NameMismatch {
            expected: expected.to_str().into_owned(),
            presented: "not given".into(),
            subject,
        },
        problem => TlsRefusal::Untrusted {
            problem: match problem {
                CertificateError::UnknownIssuer => {
                    "not issued by the root certificate given (sslrootcert)".into()
                }
                other => format!("{other}"),
            },
            subject,
            issuer,
        },
    }
}

/// The certificate's subject and issuer as RFC 4514 text (the peer's bytes: never panics).
fn names_of(cert: &CertificateDer<'_>) -> (String, String) {
    use x509_cert::der::Decode;
    match x509_cert::Certificate::from_der(cert.as_ref()) {
        Ok(cert) => (
            cert.tbs_certificate.subject.to_string(),
            cert.tbs_certificate.issuer.to_string(),
        ),
        Err(_) => ("(unreadable)".into(), "(unreadable)".into()),
    }
}

/// The TLS reason `e` happened under `mode`, if TLS was the reason.
pub(super) fn refusal_of(e: &tokio_postgres::Error, mode: SslMode) -> Option<TlsRefusal> {
    if requires_tls(e) {
        return Some(TlsRefusal::ServerRequiresTls(mode));
    }
    let cause = std::error::Error::source(e)?;
    if cause.to_string() == "server does not support TLS" {
        return Some(TlsRefusal::ServerWithoutTls(mode));
    }
    let io = cause.downcast_ref::<std::io::Error>()?;
    let rustls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    match rustls {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<TlsRefusal>().cloned()
        }
        _ => None,
    }
}

/// The server's refusal of a connection without TLS (`pg_hba.conf`: `hostssl` only, or a
/// `hostnossl … reject`): its message then ends with "no encryption".
pub(super) fn requires_tls(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().contains("no encryption")
    })
}
