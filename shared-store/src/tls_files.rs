//! How a Postgres location's TLS is decided, the way libpq decides it (see `tls.rs` for
//! the sources, in order): its files read once into [`TlsMaterial`].

use std::path::{Path, PathBuf};

use crate::location::PgLocation;
use crate::tls::{SslMode, TlsMaterial, TlsSetupError};

/// Where each setting comes from when the location does not say: the process environment
/// and home directory, handed in so tests need not touch them.
pub(crate) struct Defaults {
    pub env: fn(&str) -> Option<String>,
    pub home: Option<PathBuf>,
}

impl Defaults {
    /// The real environment and `$HOME`.
    pub fn process() -> Defaults {
        Defaults {
            env: |name| std::env::var(name).ok().filter(|v| !v.is_empty()),
            home: std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from),
        }
    }

    /// `~/.postgresql/NAME`, if it exists.
    fn home_file(&self, name: &str) -> Option<PathBuf> {
        let path = self.home.as_ref()?.join(".postgresql").join(name);
        path.exists().then_some(path)
    }

    /// The URL's path, else the variable's, else the home file's (only if it exists).
    fn file(&self, given: &Option<PathBuf>, var: &str, home: &str) -> Option<PathBuf> {
        given
            .clone()
            .or_else(|| (self.env)(var).map(PathBuf::from))
            .or_else(|| self.home_file(home))
    }
}

/// The TLS `location` connects with (see the module's essay).
pub fn resolve(location: &PgLocation) -> Result<TlsMaterial, TlsSetupError> {
    resolve_with(location, &Defaults::process())
}

pub(crate) fn resolve_with(
    location: &PgLocation,
    defaults: &Defaults,
) -> Result<TlsMaterial, TlsSetupError> {
    if let Some(given) = location.given_tls() {
        return Ok(given.clone());
    }
    let mode = match (location.sslmode, (defaults.env)("PGSSLMODE")) {
        (Some(mode), _) => mode,
        (None, Some(word)) => SslMode::parse(&word).ok_or(TlsSetupError::Mode {
            source_name: "PGSSLMODE",
            value: word,
        })?,
        (None, None) => SslMode::Prefer,
    };
    if mode == SslMode::Disable {
        return Ok(TlsMaterial::disabled());
    }
    let root = defaults.file(&location.sslrootcert, "PGSSLROOTCERT", "root.crt");
    if root.as_deref() == Some(Path::new("system")) {
        return Err(TlsSetupError::SystemRoots);
    }
    // libpq: `require` with a root certificate at hand checks the chain.
    let mode = match (mode, &root) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    let root_cert = match (mode.verifies(), root) {
        (true, Some(path)) => Some(read(&path, "root certificate file")?),
        (true, None) => return Err(TlsSetupError::NoRootCert(mode)),
        (false, _) => None,
    };
    let (client_cert, client_key) = client_files(location, defaults)?;
    Ok(TlsMaterial {
        mode,
        server_name: None,
        root_cert,
        client_cert,
        client_key,
    })
}

type ClientPems = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The client certificate and its key, when a certificate is there.
fn client_files(location: &PgLocation, defaults: &Defaults) -> Result<ClientPems, TlsSetupError> {
    let Some(cert) = defaults.file(&location.sslcert, "PGSSLCERT", "postgresql.crt") else {
        return Ok((None, None));
    };
    let key = defaults
        .file(&location.sslkey, "PGSSLKEY", "postgresql.key")
        .ok_or_else(|| TlsSetupError::NoKey(cert.clone()))?;
    if !crate::pgpass::is_private_file(&key) {
        return Err(TlsSetupError::KeyAccess(key));
    }
    let cert = read(&cert, "client certificate file")?;
    Ok((Some(cert), Some(read(&key, "private key file")?)))
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::StoreLocation;

    fn pg(text: &str) -> PgLocation {
        match StoreLocation::parse(text).unwrap() {
            StoreLocation::Postgres(pg) => pg,
            other => panic!("{other:?}"),
        }
    }

    fn no_env() -> Defaults {
        Defaults {
            env: |_| None,
            home: None,
        }
    }

    #[test]
    fn the_default_is_prefer_without_any_check() {
        let tls = resolve_with(&pg("postgres://h/d"), &no_env()).unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(tls.root_cert, None);
    }

    #[test]
    fn pgsslmode_stands_behind_the_url() {
        let env = Defaults {
            env: |name| (name == "PGSSLMODE").then(|| "disable".to_owned()),
            home: None,
        };
        let from_env = resolve_with(&pg("postgres://h/d"), &env).unwrap();
        assert_eq!(from_env.mode, SslMode::Disable);
        let from_url = resolve_with(&pg("postgres://h/d?sslmode=allow"), &env).unwrap();
        assert_eq!(from_url.mode, SslMode::Allow);
        let bad = Defaults {
            env: |name| (name == "PGSSLMODE").then(|| "sometimes".to_owned()),
            home: None,
        };
        let err = resolve_with(&pg("postgres://h/d"), &bad).unwrap_err();
        assert!(err.to_string().contains("PGSSLMODE"), "{err}");
    }

    #[test]
    fn verify_without_a_root_certificate_is_refused() {
        let err = resolve_with(&pg("postgres://h/d?sslmode=verify-full"), &no_env()).unwrap_err();
        assert!(matches!(
            err,
            TlsSetupError::NoRootCert(SslMode::VerifyFull)
        ));
    }

    #[test]
    fn the_root_certificate_is_read_and_require_then_checks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"-----BEGIN CERTIFICATE-----\n").unwrap();
        let url = format!(
            "postgres://h/d?sslmode=require&sslrootcert={}",
            ca.display()
        );
        let tls = resolve_with(&pg(&url), &no_env()).unwrap();
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(
            tls.root_cert.as_deref(),
            Some(&b"-----BEGIN CERTIFICATE-----\n"[..])
        );
        let home = Defaults {
            env: |_| None,
            home: Some(dir.path().to_owned()),
        };
        std::fs::create_dir(dir.path().join(".postgresql")).unwrap();
        std::fs::copy(&ca, dir.path().join(".postgresql/root.crt")).unwrap();
        let tls = resolve_with(&pg("postgres://h/d?sslmode=verify-full"), &home).unwrap();
        assert!(
            tls.root_cert.is_some(),
            "~/.postgresql/root.crt is the default"
        );
        let missing = pg("postgres://h/d?sslmode=verify-ca&sslrootcert=/no/such/ca.pem");
        assert!(matches!(
            resolve_with(&missing, &no_env()),
            Err(TlsSetupError::Read { .. })
        ));
    }

    #[test]
    fn a_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, b"cert").unwrap();
        std::fs::write(&key, b"key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let url = format!(
            "postgres://h/d?sslmode=require&sslcert={}&sslkey={}",
            cert.display(),
            key.display()
        );
        let err = resolve_with(&pg(&url), &no_env()).unwrap_err();
        assert!(matches!(err, TlsSetupError::KeyAccess(_)), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tls = resolve_with(&pg(&url), &no_env()).unwrap();
        assert_eq!(tls.client_key.as_deref(), Some(&b"key"[..]));
        assert!(!format!("{tls:?}").contains("key\""), "{tls:?}");
    }

    #[test]
    fn given_material_wins() {
        let given = TlsMaterial {
            server_name: Some("db.example".into()),
            ..TlsMaterial::disabled()
        };
        let loc = pg("postgres://h/d?sslmode=verify-full").with_tls(given.clone());
        assert_eq!(resolve_with(&loc, &no_env()).unwrap(), given);
    }
}
