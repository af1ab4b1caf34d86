//! Public-key authentication: identity files and ssh-agent keys, tried in OpenSSH's
//! order, until the server accepts one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::client::{AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::MethodKind;
use tokio::net::UnixStream;

use super::config::HostConfig;
use super::error::SshError;
use super::host_key::ClientHandler;
use super::known_hosts::describe_key;

type Agent = AgentClient<UnixStream>;

/// One key to offer, and how to sign with it.
enum Candidate {
    File { label: String, key: Arc<PrivateKey> },
    Agent { label: String, key: PublicKey },
}

impl Candidate {
    fn label(&self) -> &str {
        match self {
            Candidate::File { label, .. } | Candidate::Agent { label, .. } => label,
        }
    }

    fn is_rsa(&self) -> bool {
        match self {
            Candidate::File { key, .. } => key.algorithm().is_rsa(),
            Candidate::Agent { key, .. } => key.algorithm().is_rsa(),
        }
    }
}

/// An identity file as found on disk.
struct IdentityFile {
    path: PathBuf,
    public: Option<PublicKey>,
    private: Result<PrivateKey, String>,
}

/// Logs in as `host.user` with the first key the server accepts, and names that key
/// (`publickey FILE`, `publickey FILE (agent)` or `publickey agent key COMMENT`).
pub(crate) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    host: &HostConfig,
) -> Result<String, SshError> {
    let mut agent = connect_agent(host).await;
    let agent_keys = list_agent_keys(host, agent.as_mut()).await;
    let files = read_identity_files(&host.identity_files).await;
    let (candidates, mut skipped) = order_candidates(host, files, agent_keys);
    let rsa_hash = match candidates.iter().any(Candidate::is_rsa) {
        true => rsa_hash(handle).await,
        false => None,
    };
    let mut tried = Vec::new();
    for candidate in candidates {
        tried.push(candidate.label().to_string());
        let outcome = offer(handle, host, &candidate, agent.as_mut(), rsa_hash).await?;
        match outcome {
            Offer::Accepted => return Ok(format!("publickey {}", candidate.label())),
            Offer::Rejected { more_keys: true } => {}
            Offer::Rejected { more_keys: false } => break,
        }
    }
    tried.append(&mut skipped);
    Err(SshError::NoIdentity {
        host: host.alias.clone(),
        user: host.user.clone(),
        tried,
    })
}

enum Offer {
    Accepted,
    /// `more_keys`: whether the server still takes public keys.
    Rejected {
        more_keys: bool,
    },
}

async fn offer(
    handle: &mut Handle<ClientHandler>,
    host: &HostConfig,
    candidate: &Candidate,
    agent: Option<&mut Agent>,
    rsa_hash: Option<HashAlg>,
) -> Result<Offer, SshError> {
    let auth_err = |source| SshError::Auth {
        host: host.alias.clone(),
        user: host.user.clone(),
        source: Box::new(source),
    };
    let result = match (candidate, agent) {
        (Candidate::File { key, .. }, _) => {
            let key = PrivateKeyWithHashAlg::new(key.clone(), rsa_hash);
            let result = handle.authenticate_publickey(&host.user, key).await;
            result.map_err(auth_err)?
        }
        (Candidate::Agent { key, label }, Some(agent)) => {
            let result = handle
                .authenticate_publickey_with(&host.user, key.clone(), rsa_hash, agent)
                .await;
            match result {
                Ok(r) => r,
                // The agent may refuse (confirm-only keys, locked agent): try the next key.
                Err(e) => {
                    tracing::warn!(host = %host.alias, "ssh-agent could not sign with {label}: {e}");
                    return Ok(Offer::Rejected { more_keys: true });
                }
            }
        }
        (Candidate::Agent { .. }, None) => return Ok(Offer::Rejected { more_keys: true }),
    };
    Ok(match result {
        AuthResult::Success => Offer::Accepted,
        AuthResult::Failure {
            remaining_methods, ..
        } => Offer::Rejected {
            more_keys: remaining_methods.contains(&MethodKind::PublicKey),
        },
    })
}

/// The RSA signature hash the server takes (asked only when an RSA key is on offer,
/// since the question can wait up to a second for the server's extension info).
async fn rsa_hash(handle: &Handle<ClientHandler>) -> Option<HashAlg> {
    match handle.best_supported_rsa_hash().await {
        Ok(Some(hash)) => hash,
        // No server-sig-algs: a server that old only knows ssh-rsa (SHA-1).
        Ok(None) | Err(_) => None,
    }
}

async fn connect_agent(host: &HostConfig) -> Option<Agent> {
    let socket = host.identity_agent.as_ref()?;
    match AgentClient::connect_uds(socket).await {
        Ok(agent) => Some(agent),
        Err(e) => {
            tracing::warn!(host = %host.alias, agent = %socket.display(), "ssh-agent unreachable, not used: {e}");
            None
        }
    }
}

async fn list_agent_keys(host: &HostConfig, agent: Option<&mut Agent>) -> Vec<(PublicKey, String)> {
    let Some(agent) = agent else {
        return Vec::new();
    };
    match agent.request_identities().await {
        Ok(ids) => ids.into_iter().filter_map(plain_agent_key).collect(),
        Err(e) => {
            tracing::warn!(host = %host.alias, "ssh-agent did not list its keys, not used: {e}");
            Vec::new()
        }
    }
}

/// Certificates in the agent are skipped: certificate authentication is not supported.
fn plain_agent_key(id: AgentIdentity) -> Option<(PublicKey, String)> {
    match id {
        AgentIdentity::PublicKey { key, comment } => Some((key, comment)),
        AgentIdentity::Certificate { .. } => None,
    }
}

async fn read_identity_files(paths: &[PathBuf]) -> Vec<IdentityFile> {
    let mut out = Vec::new();
    for path in paths {
        out.push(read_identity_file(path).await);
    }
    out
}

async fn read_identity_file(path: &Path) -> IdentityFile {
    let mut pub_path = path.as_os_str().to_owned();
    pub_path.push(".pub");
    let public = tokio::fs::read_to_string(&pub_path)
        .await
        .ok()
        .and_then(|text| parse_public_line(&text));
    let private = match tokio::fs::read_to_string(path).await {
        Ok(text) => russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
            russh::keys::Error::KeyIsEncrypted => "encrypted, and not in the agent".to_string(),
            e => format!("unreadable: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("missing".to_string()),
        Err(e) => Err(format!("unreadable: {e}")),
    };
    IdentityFile {
        path: path.to_path_buf(),
        public,
        private,
    }
}

/// `type base64 [comment]` from a `.pub` file.
fn parse_public_line(text: &str) -> Option<PublicKey> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let b64 = line.split_ascii_whitespace().nth(1)?;
    russh::keys::parse_public_key_base64(b64).ok()
}

impl IdentityFile {
    fn public_key(&self) -> Option<PublicKey> {
        match &self.private {
            Ok(key) => Some(key.public_key().clone()),
            Err(_) => self.public.clone(),
        }
    }
}

/// OpenSSH's order: identity files the agent holds (signed by the agent), then the
/// agent's other keys (unless IdentitiesOnly), then the remaining identity files.
/// Returns the candidates and a note for each identity file that cannot be offered.
fn order_candidates(
    host: &HostConfig,
    files: Vec<IdentityFile>,
    agent_keys: Vec<(PublicKey, String)>,
) -> (Vec<Candidate>, Vec<String>) {
    let mut via_agent = Vec::new();
    let mut remaining_files = Vec::new();
    let mut skipped = Vec::new();
    let mut used: Vec<PublicKey> = Vec::new();
    for file in files {
        let label = file.path.display().to_string();
        let public = file.public_key();
        if let Some(key) = public.filter(|k| agent_keys.iter().any(|(a, _)| a == k)) {
            used.push(key.clone());
            via_agent.push(Candidate::Agent {
                label: format!("{label} (agent)"),
                key,
            });
            continue;
        }
        match file.private {
            Ok(key) => remaining_files.push(Candidate::File {
                label,
                key: Arc::new(key),
            }),
            Err(why) => skipped.push(format!("{label} ({why})")),
        }
    }
    let other_agent_keys = agent_keys
        .into_iter()
        .filter(|(k, _)| !host.identities_only && !used.contains(k))
        .map(|(key, comment)| Candidate::Agent {
            label: agent_label(&key, &comment),
            key,
        });
    let mut all = via_agent;
    all.extend(other_agent_keys);
    all.extend(remaining_files);
    (all, skipped)
}

fn agent_label(key: &PublicKey, comment: &str) -> String {
    match comment.is_empty() {
        true => format!("agent key {}", describe_key(key)),
        false => format!("agent key {comment}"),
    }
}
