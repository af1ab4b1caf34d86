//! Host-key verification: the russh client [`Handler`] that checks the server's key
//! against known_hosts under the host's StrictHostKeyChecking policy.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use russh::client::Handler;
use russh::keys::{Algorithm, PublicKey, PublicKeyOrCertificate};
use russh::Preferred;

use super::config::{HostConfig, StrictHostKeyChecking};
use super::error::{HandshakeError, SshError};
use super::known_hosts::{self, describe_key, KnownHosts, Location, Verdict};

/// How a server's host key was accepted, kept with the session (for `eventor-coord check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A known_hosts line holds exactly this key (`key` as [`describe_key`] names it).
    Known { key: String, location: Location },
    /// The host was unknown and its key was added to `file` (StrictHostKeyChecking accept-new).
    Learned { key: String, file: PathBuf },
    /// The host was unknown and its key accepted unrecorded (StrictHostKeyChecking no, or
    /// accept-new without a UserKnownHostsFile).
    AcceptedUnknown { key: String },
}

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
            cipher: cipher_order(),
            ..Preferred::DEFAULT
        }
    }

    /// Accepts the key (saying how), learns it, or says why not.
    pub(crate) fn check(&self, key: &PublicKey) -> Result<HostKeyStatus, SshError> {
        match self.known.verdict(&self.name, key) {
            Verdict::Match(location) => Ok(HostKeyStatus::Known {
                key: describe_key(key),
                location,
            }),
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

    fn unknown(&self, key: &PublicKey) -> Result<HostKeyStatus, SshError> {
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
                Ok(HostKeyStatus::AcceptedUnknown {
                    key: describe_key(key),
                })
            }
        }
    }

    fn learn(&self, key: &PublicKey) -> Result<HostKeyStatus, SshError> {
        let Some(file) = &self.learn_file else {
            tracing::warn!(host = %self.alias, "accept-new: no UserKnownHostsFile to record the key in; accepted unrecorded");
            return Ok(HostKeyStatus::AcceptedUnknown {
                key: describe_key(key),
            });
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
        Ok(HostKeyStatus::Learned {
            key: describe_key(key),
            file: file.clone(),
        })
    }
}

/// russh's callbacks for one connection; only the host-key check matters here.
#[derive(Debug)]
pub(crate) struct ClientHandler {
    check: HostKeyCheck,
    /// The key accepted at the first key exchange: a re-key must present the same one
    /// (and must not learn it a second time).
    accepted: Option<PublicKey>,
    /// How that first key was accepted, shared with the caller (the handler itself moves
    /// into russh).
    status: Arc<OnceLock<HostKeyStatus>>,
    /// Where connections to our remote port forwards go (see `forward.rs`).
    forwards: super::forward::Registry,
}

impl ClientHandler {
    pub(crate) fn new(check: HostKeyCheck) -> ClientHandler {
        ClientHandler {
            check,
            accepted: None,
            status: Arc::default(),
            forwards: Default::default(),
        }
    }

    /// The registry of this connection's remote port forwards, shared with the session.
    pub(crate) fn forwards(&self) -> super::forward::Registry {
        self.forwards.clone()
    }

    /// Where the accepted key's [`HostKeyStatus`] appears once the key exchange is done.
    pub(crate) fn status(&self) -> Arc<OnceLock<HostKeyStatus>> {
        self.status.clone()
    }

    fn refuse(e: SshError) -> HandshakeError {
        HandshakeError::Refused(Box::new(e))
    }
}

impl Handler for ClientHandler {
    type Error = HandshakeError;

    /// A connection to one of our remote forwards: taken if its port is registered,
    /// refused (by dropping `reply`) otherwise.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), HandshakeError> {
        let endpoint = super::forward::Endpoint::Port(connected_port);
        if self.forwards.wants(&endpoint) {
            reply.accept().await;
            self.forwards.deliver(&endpoint, channel);
        }
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        socket_path: &str,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), HandshakeError> {
        // Dropping `reply` refuses a connection nobody asked for.
        let endpoint = super::forward::Endpoint::Socket(socket_path.to_string());
        if self.forwards.wants(&endpoint) {
            reply.accept().await;
            self.forwards.deliver(&endpoint, channel);
        }
        Ok(())
    }

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
        let status = self.check.check(key).map_err(Self::refuse)?;
        let _ = self.status.set(status);
        self.accepted = Some(key.clone());
        Ok(true)
    }
}

/// AES-256-GCM first where the CPU does AES in hardware: it is then the cheapest cipher to
/// decrypt, and a flood of task output through the link is bound by it (100 MB by
/// `ssh -c`: 0.35 s against 0.41 s for ChaCha20-Poly1305 here). Elsewhere russh's order,
/// ChaCha20-Poly1305 first, as OpenSSH's.
fn cipher_order() -> std::borrow::Cow<'static, [russh::cipher::Name]> {
    use russh::cipher::{AES_256_GCM, CHACHA20_POLY1305};
    let default = Preferred::DEFAULT.cipher;
    if !aes_in_hardware() {
        return default;
    }
    let rest = default
        .iter()
        .filter(|c| **c != AES_256_GCM && **c != CHACHA20_POLY1305);
    [AES_256_GCM, CHACHA20_POLY1305]
        .into_iter()
        .chain(rest.copied())
        .collect()
}

fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("aes");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes");
    #[allow(unreachable_code)]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cipher_order_keeps_russh_s_ciphers_and_puts_aes_gcm_first_on_aes_hardware() {
        let order = cipher_order();
        let mut ours: Vec<&str> = order.iter().map(|c| c.as_ref()).collect();
        let mut theirs: Vec<&str> = Preferred::DEFAULT
            .cipher
            .iter()
            .map(|c| c.as_ref())
            .collect();
        let first = ours[0];
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "the same ciphers, reordered");
        let expected = match aes_in_hardware() {
            true => russh::cipher::AES_256_GCM.as_ref(),
            false => russh::cipher::CHACHA20_POLY1305.as_ref(),
        };
        assert_eq!(first, expected);
    }
}
