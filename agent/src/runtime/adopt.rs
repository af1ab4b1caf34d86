//! Where an agent that lost its prime waits for the next one: a private Unix socket per
//! (run, host), and the bridge a newly started agent becomes when it finds one.
//!
//! The socket lives in a directory only the agent's user may enter (0700, owned by that
//! user; anything else is refused and the agent simply cannot be re-adopted), so only a
//! login as that user, which is what a prime's SSH session is, can reach it. Its name is a
//! hash of the run id and the host's cluster name, which both the prime and the agent know:
//! the prime passes it to the agent it starts ([`RESUME_VAR`]), and that agent, finding a
//! live socket of that name, carries bytes between its channel and the survivor instead of
//! serving itself (see the protocol's "Re-adoption").

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The variable through which a prime names the socket of a survivor to look for; the
/// agent takes it out of its environment before any task can inherit it.
pub const RESUME_VAR: &str = "EVENTOR_AGENT_RESUME";

/// A socket path longer than this does not fit `sockaddr_un` everywhere.
const MAX_SOCKET_PATH: usize = 100;

/// How long the bridge waits for the survivor's last bytes once the prime's side ended.
const BRIDGE_DRAIN: Duration = Duration::from_secs(2);

/// The socket's file name for the agent of `run_id` on the cluster's host `host`.
pub fn socket_name(run_id: &str, host: &str) -> String {
    // FNV-1a: a name, not a secret; the directory's permissions are the protection.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in run_id.bytes().chain([0]).chain(host.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}.sock")
}

/// Where the sockets live by default: `$XDG_RUNTIME_DIR/eventor`, else
/// `~/.cache/eventor/run`; `None` without either.
pub fn default_den() -> Option<PathBuf> {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        Some(runtime) => Some(PathBuf::from(runtime).join("eventor")),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/eventor/run")),
    }
}

/// The private directory `dir`, created 0700, and refused unless owned by us and closed to
/// group and others.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(other(format!(
            "{} is not a directory of ours",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(other(format!(
            "{} is open to group or others (mode {:o}); want 0700",
            dir.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(())
}

/// The survivor's side: the socket it listens on; removed when dropped.
#[derive(Debug)]
pub(super) struct Den {
    listener: UnixListener,
    path: PathBuf,
}

impl Den {
    /// Listens on the socket `name` in the private directory `dir`. A live agent already
    /// there keeps it (this one then cannot be re-adopted); a stale file of a dead one is
    /// replaced.
    pub(super) async fn listen(dir: &Path, name: &str) -> io::Result<Den> {
        private_dir(dir)?;
        let path = dir.join(name);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(other(format!(
                "{} is too long for a socket",
                path.display()
            )));
        }
        if UnixStream::connect(&path).await.is_ok() {
            return Err(other(format!(
                "another agent listens on {}",
                path.display()
            )));
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Den { listener, path })
    }

    /// The next prime's connection (through its bridge).
    pub(super) async fn accept(&self) -> io::Result<UnixStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }

    /// Where the held output spills: a file beside the socket.
    pub(super) fn spill_path(&self) -> PathBuf {
        self.path.with_extension("held")
    }
}

impl Drop for Den {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The default den, made private (0700, ours) if need be; an error says why it cannot be.
pub fn private_den() -> io::Result<PathBuf> {
    let dir = default_den().ok_or_else(|| other("neither XDG_RUNTIME_DIR nor HOME is set"))?;
    private_dir(&dir)?;
    Ok(dir)
}

/// Connects to a survivor's socket `name` (none: not looked for) in the default den, if
/// one is alive there.
pub async fn find_survivor(name: Option<&str>) -> Option<UnixStream> {
    let name = name.filter(|n| !n.contains('/'))?;
    let dir = default_den()?;
    private_dir(&dir).ok()?;
    UnixStream::connect(dir.join(name)).await.ok()
}

/// Carries bytes between the prime's channel and the survivor until the survivor closes
/// its side (or, once the prime's side ended, for [`BRIDGE_DRAIN`] more at most).
pub async fn bridge<R, W>(
    mut from_prime: R,
    mut to_prime: W,
    survivor: UnixStream,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut from_survivor, mut to_survivor) = survivor.into_split();
    let upstream = async {
        let copied = tokio::io::copy(&mut from_prime, &mut to_survivor).await;
        // The prime is gone: the survivor sees its end of stream and waits for the next.
        let _ = to_survivor.shutdown().await;
        copied
    };
    let downstream = async {
        let copied = tokio::io::copy(&mut from_survivor, &mut to_prime).await;
        let _ = to_prime.flush().await;
        copied
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        down = &mut downstream => down.map(drop),
        up = &mut upstream => {
            let _ = tokio::time::timeout(BRIDGE_DRAIN, downstream).await;
            up.map(drop)
        }
    }
}

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_by_run_and_host_and_fit_a_socket_path() {
        let a = socket_name("run-1", "node1");
        assert_eq!(a, socket_name("run-1", "node1"));
        assert_ne!(a, socket_name("run-1", "node2"));
        assert_ne!(a, socket_name("run-11", "node1"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(socket_name("ab", "c"), socket_name("a", "bc"));
        assert_eq!(a.len(), 21);
    }
}
