//! What resolving and connecting need from the local environment, outside ssh_config: the
//! home directory, the local user, the ssh-agent socket and a default connect timeout.

use std::path::PathBuf;
use std::time::Duration;

/// What the connection layer needs from the local environment, outside ssh_config.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The ssh_config to read; `None` means `~/.ssh/config` when it exists.
    pub config_file: Option<PathBuf>,
    /// Expands `~` and `%d`, and holds the default identity and known_hosts files.
    pub home: PathBuf,
    /// The login name when ssh_config sets no `User` (also `%u`).
    pub local_user: String,
    /// The ssh-agent socket (`SSH_AUTH_SOCK`) unless `IdentityAgent` says otherwise.
    pub agent_socket: Option<PathBuf>,
    /// Used when ssh_config sets no `ConnectTimeout`, so a dead host cannot hang the
    /// coordinator for the kernel's TCP timeout (about two minutes).
    pub default_connect_timeout: Option<Duration>,
    /// At most this many logins are set up at once (TCP, handshake, authentication); the
    /// rest wait in order. OpenSSH's sshd starts refusing at 10 (`MaxStartups 10:30:100`).
    pub max_startups: usize,
}

/// The default [`ClientSettings::max_startups`].
pub const MAX_STARTUPS: usize = 10;

impl ClientSettings {
    /// Home, user and agent socket from the process environment; a 30 s default timeout.
    pub fn from_env() -> ClientSettings {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(std::env::home_dir)
            .unwrap_or_else(|| PathBuf::from("/"));
        ClientSettings {
            config_file: None,
            home,
            local_user: local_user_name(),
            agent_socket: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            default_connect_timeout: Some(Duration::from_secs(30)),
            max_startups: MAX_STARTUPS,
        }
    }
}

/// `$USER`, `$LOGNAME`, or the passwd entry of our uid.
fn local_user_name() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            return v;
        }
    }
    passwd_name().unwrap_or_else(|| "root".to_string())
}

fn passwd_name() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    })
}
