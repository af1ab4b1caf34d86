//! The binary the prime installs on hosts, hashed once per process: the deploy step
//! compares it with what a host holds, and the hosts file derives the default remote path
//! from its hash.
//!
//! The hash is also kept between runs, in `~/.cache/eventor/hashes/` (or under
//! `$XDG_CACHE_HOME`), next to the file's device, inode, size, mtime and ctime: hashing a
//! 60 MB binary costs every run 50 ms of CPU just as its hosts start, and a file whose
//! ctime (which no user can set) is unchanged was not written since.

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
        let agent =
            hash_remembered(path, cache_dir().as_deref()).map_err(|source| LocalAgentError {
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

/// Where hashes are kept between runs: `$XDG_CACHE_HOME/eventor/hashes`, else
/// `$HOME/.cache/eventor/hashes`; `None` without either.
fn cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(cache.join("eventor").join("hashes"))
}

/// The file's hash: the remembered one in `cache` while the file's identity is unchanged,
/// else computed (and remembered, best effort: a cache that cannot be written only costs
/// the next run a hash).
fn hash_remembered(path: &Path, cache: Option<&Path>) -> std::io::Result<LocalAgent> {
    let before = Identity::of(path)?;
    let entry = cache.map(|dir| dir.join(entry_name(path)));
    let remembered = entry
        .as_deref()
        .and_then(|entry| std::fs::read_to_string(entry).ok())
        .and_then(|text| before.hash_in(&text));
    if let Some(sha256) = remembered {
        return Ok(LocalAgent {
            path: path.to_path_buf(),
            sha256,
            size: before.size,
        });
    }
    let agent = hash_file(path)?;
    // Written only when nothing changed the file while it was read.
    if let (Some(entry), Ok(after)) = (entry, Identity::of(path)) {
        if after == before && agent.size == before.size {
            remember(&entry, &before.line(&agent.sha256));
        }
    }
    Ok(agent)
}

/// What changes whenever the file's bytes may have: device, inode, size, mtime, ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(path: &Path) -> std::io::Result<Identity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// The cache entry for `sha256`: `v1 HASH FIELDS…`.
    fn line(&self, sha256: &str) -> String {
        let Identity {
            dev,
            ino,
            size,
            mtime,
            ctime,
        } = self;
        format!(
            "v1 {sha256} {dev} {ino} {size} {}.{} {}.{}\n",
            mtime.0, mtime.1, ctime.0, ctime.1
        )
    }

    /// The hash of an entry written for this identity.
    fn hash_in(&self, entry: &str) -> Option<String> {
        let sha256 = entry.split(' ').nth(1)?;
        let valid = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && entry == self.line(sha256)).then(|| sha256.to_string())
    }
}

/// The entry's file name: the hash of the binary's path (any path, one plain name).
fn entry_name(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(path.as_os_str().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `line` to `entry` by rename, so a reader never sees half of it; errors ignored.
fn remember(entry: &Path, line: &str) {
    let Some(dir) = entry.parent() else { return };
    let temp = entry.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&temp, line))
        .and_then(|()| std::fs::rename(&temp, entry));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
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

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// A remembered hash is used while the file is unchanged, and a rewrite of the same
    /// size (same mtime even) is hashed again: its ctime moved.
    #[test]
    fn a_remembered_hash_holds_until_the_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (file, cache) = (dir.path().join("bin"), dir.path().join("cache"));
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(hash_remembered(&file, Some(&cache)).unwrap().sha256, ABC);

        // Proof that the entry is read: a planted hash for the same identity is believed.
        let entry = cache.join(entry_name(&file));
        let planted = "f".repeat(64);
        std::fs::write(&entry, Identity::of(&file).unwrap().line(&planted)).unwrap();
        assert_eq!(
            hash_remembered(&file, Some(&cache)).unwrap().sha256,
            planted
        );

        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, b"xyz").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let again = hash_remembered(&file, Some(&cache)).unwrap();
        assert_ne!(again.sha256, planted);
        assert_eq!(again.size, 3);
        assert_eq!(
            std::fs::read_to_string(&entry).unwrap(),
            Identity::of(&file).unwrap().line(&again.sha256)
        );
    }

    #[test]
    fn a_damaged_or_missing_cache_only_costs_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bin");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(hash_remembered(&file, None).unwrap().sha256, ABC);
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join(entry_name(&file)), "v1 zz 1 2 3\n").unwrap();
        assert_eq!(hash_remembered(&file, Some(&cache)).unwrap().sha256, ABC);
        // A cache path under a file cannot be created: still the right hash.
        let blocked = file.join("cache");
        assert_eq!(hash_remembered(&file, Some(&blocked)).unwrap().sha256, ABC);
    }
}
