//! Host-key verification: the russh client [`Handler`] that checks the server's key
//! against known_hosts under the host's StrictHostKeyChecking policy.

use std::path::PathBuf;

use russh::client::Handler;
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};
use russh::Preferred;

use super::config::{HostConfig, StrictHostKeyChecking};
use super::error::{HandshakeError, SshError};
use super::known_hosts::{self, describe_key, KnownHosts, Verdict};

/// What one connection knows about the host's key before the handshake.
#[derive(Debug)]
pub(crate) struct HostKeyCheck {
    alias: String,
    /// The known_hosts name: HostKeyAlias, or `host` / `[host]:port`.
    name: String,
    policy: StrictHostKeyChecking,
    known: KnownHosts,
    files: Vec<PathBuf>,
    learn_file: Option<PathBuf>,
    hash_names: bool,
}

impl HostKeyCheck {
    /// Reads the host's known_hosts files (small; read once per connection).
    pub(crate) fn load(host: &HostConfig) -> Result<HostKeyCheck, SshError> {
        let files = host.known_hosts_files();
        let known =
            KnownHosts::load(&files).map_err(|(path, source)| SshError::KnownHostsRead {
                host: host.alias.clone(),
                path,
                source,
            })?;
        for w in &known.warnings {
            tracing::warn!(host = %host.alias, "known_hosts: {w}");
        }
        let name = match &host.host_key_alias {
            Some(alias) => alias.clone(),
            None => known_hosts::host_key_name(&host.host_name, host.port),
        };
        Ok(HostKeyCheck {
            alias: host.alias.clone(),
            name,
            policy: host.strict_host_key_checking,
            known,
            files,
            learn_file: host.user_known_hosts_files.first().cloned(),
            hash_names: host.hash_known_hosts,
        })
    }

    /// russh's preferred algorithms with those on file for this host moved to the front
    /// (as OpenSSH does), so a server with several host keys presents one we know.
    pub(crate) fn preferred(&self) -> Preferred {
        let known = self.known.algorithms_for(&self.name);
        let is_rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
        let same_family = |a: &Algorithm, b: &Algorithm| a == b || (is_rsa(a) && is_rsa(b));
        let is_known = |a: &Algorithm| known.iter().any(|k| same_family(k, a));
        let default = Preferred::DEFAULT.key.iter().cloned();
        let (mut keys, rest): (Vec<_>, Vec<_>) = default.partition(is_known);
        keys.extend(rest);
        Preferred {
            key: keys.into(),
            ..Preferred::DEFAULT
        }
    }

    /// Accepts the key, learns it, or says why not.
    pub(crate) fn check(&self, key: &PublicKey) -> Result<(), SshError> {
        match self.known.verdict(&self.name, key) {
            Verdict::Match(_) => Ok(()),
            Verdict::Revoked(at) => Err(SshError::HostKeyRevoked {
                host: self.alias.clone(),
                key: describe_key(key),
                file: at.file.to_path_buf(),
                line: at.line,
            }),
            // Refused under every policy: a changed key is what StrictHostKeyChecking
            // exists to catch, and `no` refusing it too is our spec (OpenSSH only warns).
            Verdict::Changed { location, recorded } => Err(SshError::HostKeyChanged {
                host: self.alias.clone(),
                file: location.file.to_path_buf(),
                line: location.line,
                recorded,
                presented: describe_key(key),
            }),
            Verdict::Unknown => self.unknown(key),
        }
    }

    fn unknown(&self, key: &PublicKey) -> Result<(), SshError> {
        match self.policy {
            StrictHostKeyChecking::Yes => Err(SshError::HostKeyUnknown {
                host: self.alias.clone(),
                name: self.name.clone(),
                key: describe_key(key),
                files: self.files.clone(),
            }),
            StrictHostKeyChecking::AcceptNew => self.learn(key),
            StrictHostKeyChecking::No => {
                tracing::warn!(host = %self.alias, key = %describe_key(key),
                    "host key not in known_hosts, accepted (StrictHostKeyChecking no)");
                Ok(())
            }
        }
    }

    fn learn(&self, key: &PublicKey) -> Result<(), SshError> {
        let Some(file) = &self.learn_file else {
            tracing::warn!(host = %self.alias, "accept-new: no UserKnownHostsFile to record the key in; accepted unrecorded");
            return Ok(());
        };
        let write_err = |source| SshError::KnownHostsWrite {
            host: self.alias.clone(),
            path: file.clone(),
            source,
        };
        let name = match self.hash_names {
            true => known_hosts::hash_name(&self.name).map_err(write_err)?,
            false => self.name.clone(),
        };
        known_hosts::append(file, &name, key).map_err(write_err)?;
        tracing::info!(host = %self.alias, key = %describe_key(key), file = %file.display(),
            "learned host key (StrictHostKeyChecking accept-new)");
        Ok(())
    }
}

/// russh's callbacks for one connection; only the host-key check matters here.
#[derive(Debug)]
pub(crate) struct ClientHandler {
    check: HostKeyCheck,
    /// The key accepted at the first key exchange: a re-key must present the same one
    /// (and must not learn it a second time).
    accepted: Option<PublicKey>,
}

impl ClientHandler {
    pub(crate) fn new(check: HostKeyCheck) -> ClientHandler {
        ClientHandler {
            check,
            accepted: None,
        }
    }

    fn refuse(e: SshError) -> HandshakeError {
        HandshakeError::Refused(Box::new(e))
    }
}

impl Handler for ClientHandler {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        presented: &PublicKeyOrCertificate,
    ) -> Result<bool, HandshakeError> {
        let key = match presented {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                let host = self.check.alias.clone();
                return Err(Self::refuse(SshError::HostCertificate { host }));
            }
        };
        if let Some(accepted) = &self.accepted {
            return match accepted == key {
                true => Ok(true),
                false => Err(Self::refuse(SshError::HostKeyRekeyChanged {
                    host: self.check.alias.clone(),
                    presented: describe_key(key),
                })),
            };
        }
        self.check.check(key).map_err(Self::refuse)?;
        self.accepted = Some(key.clone());
        Ok(true)
    }
}
