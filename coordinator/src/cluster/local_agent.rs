//! The binary the prime installs on hosts, hashed once per process: the deploy step
//! compares it with what a host holds, and the hosts file derives the default remote path
//! from its hash.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

/// The agent binary's file name, looked for next to the running executable by default.
pub const AGENT_BINARY: &str = "eventor-agent";

/// Bytes read per step while hashing.
const CHUNK: usize = 256 * 1024;

/// The agent binary to install could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the agent to install, {}", path.display())]
pub struct LocalAgentError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The binary the prime installs on hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAgent {
    pub path: PathBuf,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    pub size: u64,
}

impl LocalAgent {
    /// The binary at `path`, hashed once per process (later calls reuse the hash).
    pub fn of(path: &Path) -> Result<LocalAgent, LocalAgentError> {
        static SEEN: OnceLock<Mutex<HashMap<PathBuf, LocalAgent>>> = OnceLock::new();
        let seen = SEEN.get_or_init(Default::default);
        if let Some(agent) = seen.lock().expect("hash cache").get(path) {
            return Ok(agent.clone());
        }
        let agent = hash_file(path).map_err(|source| LocalAgentError {
            path: path.to_path_buf(),
            source,
        })?;
        seen.lock()
            .expect("hash cache")
            .insert(path.to_path_buf(), agent.clone());
        Ok(agent)
    }

    /// Where hosts keep this binary by default: `~/.cache/eventor/NAME-VERSION-HASH`, so
    /// builds never overwrite each other's file.
    pub fn default_remote_path(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| AGENT_BINARY.to_string());
        let version = env!("CARGO_PKG_VERSION");
        format!("~/.cache/eventor/{name}-{version}-{}", &self.sha256[..16])
    }
}

fn hash_file(path: &Path) -> std::io::Result<LocalAgent> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(LocalAgent {
        path: path.to_path_buf(),
        sha256,
        size,
    })
}
