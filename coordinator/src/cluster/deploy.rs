//! Installing the agent on a host before the link starts it, over the same SSH connection.
//!
//! # The protocol with the host
//!
//! The prime knows one binary to install ([`LocalAgent`]: `eventor-agent` next to the
//! prime, or the program itself when its closures run remotely), hashed once per process
//! (SHA-256). For each host with work, [`ensure`] runs two short exec channels at most,
//! both under the host's `env:` (so a host sees the same `PATH` its agent will):
//!
//! 1. **Probe**: `uname -sm`, then the file's SHA-256 (or `missing`). One round trip; this
//!    is all a host whose agent already matches costs. Nothing is uploaded then, and the
//!    file is not touched (same inode, same mtime). Hashing a large binary takes a second
//!    on a small host, so a file whose hash was once checked gets a stamp beside it,
//!    `PATH.verified`: the hash with the file's size, inode, mtime and ctime. While those
//!    are unchanged the stamp's hash is answered without reading the file; any write to
//!    the file changes its ctime (which, unlike the mtime, no `cp -p` or `touch` sets
//!    back) and so sends the probe back to `sha256sum`.
//! 2. **Install**, only when the file is missing or its hash differs, and only when the
//!    host's `uname -sm` is the prime's (else [`DeployError::Platform`] says what the host
//!    runs and what to install). One channel runs
//!    `mkdir -p DIR; cat > PATH.upload.TAG; sha256sum …; chmod 755 …; mv -f … PATH`, then
//!    writes the stamp:
//!    the prime streams the binary into its stdin, the host checks the hash of what
//!    arrived, and the rename puts it in place atomically. `TAG` is unique per prime
//!    process, host and attempt, so concurrent runs (or two hosts sharing a home
//!    directory) each write their own temporary file, and anyone starting the agent sees
//!    either the old file or the whole new one, never half of one. A failed upload removes
//!    its temporary file (`trap … EXIT`).
//!
//! With `deploy: never` the probe alone runs: a missing file is [`DeployError::Missing`]
//! (naming the host and the path), a different one is used as it is (the operator owns it).
//!
//! Every wait is bounded: the probe by the handshake timeout, the upload by a minute plus
//! a second per MiB.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eventor_ssh::{ExitStatus, Session, SshError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::hosts::{shell_quote, Deploy, HostSpec};
pub use super::local_agent::LocalAgent;

/// The fixed part of an upload's bound; a second per MiB is added.
const UPLOAD_BASE: Duration = Duration::from_secs(60);
/// Bytes of the binary per write into the channel.
const CHUNK: usize = 256 * 1024;

/// `uname -sm` as this prime's platform would print it.
pub fn local_platform() -> String {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        other => other,
    };
    let arch = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("macos", "aarch64") => "arm64",
        (_, arch) => arch,
    };
    format!("{os} {arch}")
}

/// Why the agent could not be made ready on a host. Never quotes a secret (there is none
/// in these commands).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{host}: checking the agent at {path}")]
    Exec {
        host: String,
        path: String,
        #[source]
        source: Box<SshError>,
    },
    #[error("{host}: {what} timed out after {}", humantime::format_duration(*after))]
    Timeout {
        host: String,
        what: &'static str,
        after: Duration,
    },
    #[error("{host}: checking the agent at {path} failed: {detail}")]
    Probe {
        host: String,
        path: String,
        detail: String,
    },
    #[error(
        "{host}: no agent at {path} (deploy: never): install eventor-agent {} there, \
         or set deploy: auto",
        env!("CARGO_PKG_VERSION")
    )]
    Missing { host: String, path: String },
    #[error("{host}: no agent at {path}, and this prime has none to install: {reason}")]
    NothingToInstall {
        host: String,
        path: String,
        reason: String,
    },
    #[error(
        "{host}: runs {theirs}, this prime {ours}, so it cannot take the prime's agent: \
         install eventor-agent {} built for {theirs} on it, name it with `agent:` and set \
         `deploy: never`",
        env!("CARGO_PKG_VERSION")
    )]
    Platform {
        host: String,
        theirs: String,
        ours: String,
    },
    #[error("{host}: uploading the agent to {path}")]
    Upload {
        host: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host}: installing the agent at {path} failed: {detail}")]
    Install {
        host: String,
        path: String,
        detail: String,
    },
}

/// What [`ensure`] needs beyond the host.
#[derive(Debug, Clone)]
pub struct DeployPlan {
    /// The binary to install (`deploy: auto`), or why there is none.
    pub local: Result<Arc<LocalAgent>, String>,
    /// Bound on the probe.
    pub probe_timeout: Duration,
}

/// What [`ensure`] did on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployed {
    /// The file there already matched (or `deploy: never` found one).
    Present,
    /// The binary was uploaded and installed.
    Installed { bytes: u64, took: Duration },
}

/// Makes sure `host`'s agent file is there (and, with `deploy: auto`, is the prime's).
pub async fn ensure(
    session: &Session,
    host: &HostSpec,
    plan: &DeployPlan,
) -> Result<Deployed, DeployError> {
    let started = Instant::now();
    let wanted = match (&host.deploy, &plan.local) {
        (Deploy::Auto, Ok(local)) => Some(local.sha256.as_str()),
        _ => None,
    };
    let probe = probe(session, host, wanted, plan.probe_timeout).await?;
    let (host_name, path) = (host.name.clone(), host.agent.clone());
    let local = match (&host.deploy, &plan.local, &probe.sha256) {
        (Deploy::Never, _, Some(_)) | (Deploy::Auto, Err(_), Some(_)) => {
            return Ok(Deployed::Present)
        }
        (Deploy::Never, _, None) => {
            return Err(DeployError::Missing {
                host: host_name,
                path,
            })
        }
        (Deploy::Auto, Err(reason), None) => {
            let reason = reason.clone();
            return Err(DeployError::NothingToInstall {
                host: host_name,
                path,
                reason,
            });
        }
        (Deploy::Auto, Ok(local), _) => local,
    };
    if probe.sha256.as_deref() == Some(local.sha256.as_str()) {
        tracing::debug!(host = %host.name, path = %host.agent, took = ?started.elapsed(),
            "agent up to date");
        return Ok(Deployed::Present);
    }
    let ours = local_platform();
    if probe.platform != ours {
        return Err(DeployError::Platform {
            host: host.name.clone(),
            theirs: probe.platform,
            ours,
        });
    }
    upload(session, host, local).await?;
    let took = started.elapsed();
    tracing::info!(host = %host.name, path = %host.agent, bytes = local.size, took = ?took,
        "agent installed");
    Ok(Deployed::Installed {
        bytes: local.size,
        took,
    })
}

/// The exit code of [`checked_start`]'s check when the stamp does not match.
pub const NOT_VERIFIED: u32 = 97;

/// `agent_command` behind a check of the agent's stamp (no hashing: `stat` and a compare),
/// for a `deploy: auto` host with a binary to install: the agent starts in the same exec
/// when the file is the one a probe verified, and the command exits [`NOT_VERIFIED`]
/// otherwise. `None`: the host is probed first, as always.
pub fn checked_start(host: &HostSpec, plan: &DeployPlan, agent_command: &str) -> Option<String> {
    let (Deploy::Auto, Ok(local)) = (&host.deploy, &plan.local) else {
        return None;
    };
    let check = format!(
        r#"{FILE_ID}
S=$(file_id "$1") && read -r V < "$1.verified" && [ "$V" = "$2 $S" ]"#
    );
    Some(format!(
        "sh -c {} eventor-check {} {} || exit {NOT_VERIFIED}; {agent_command}",
        shell_quote(&check),
        super::hosts::quote_path(&host.agent),
        local.sha256,
    ))
}

/// What the probe found on the host.
struct Probe {
    /// `uname -sm`.
    platform: String,
    /// The file's hash (`present` when none was wanted); `None`: no such file.
    sha256: Option<String>,
}

/// `env K=V… sh -c SCRIPT NAME ARGS…`: the script under the host's `env:`; each argument
/// quoted (a leading `~/` left for the remote shell to expand).
fn script_command(host: &HostSpec, script: &str, args: &[String]) -> String {
    let mut words = Vec::new();
    if !host.env.is_empty() {
        words.push("env".to_string());
        words.extend(
            host.env
                .iter()
                .map(|(k, v)| format!("{k}={}", shell_quote(v))),
        );
    }
    words.extend(["sh", "-c"].map(String::from));
    words.push(shell_quote(script));
    words.push("eventor-deploy".into());
    words.extend(args.iter().map(|a| super::hosts::quote_path(a)));
    words.join(" ")
}

/// `file_id PATH`: what a stamp holds of the file besides its hash: size, inode, mtime and
/// ctime (any write moves the ctime, and nothing sets it back).
const FILE_ID: &str = r#"file_id() { stat -c '%s %i %y %z' "$1" 2>/dev/null; }"#;

/// Writes `$1.verified` for hash `$2` (from the file's current [`FILE_ID`]), by rename so a
/// reader never sees half of it. Best effort: a host that cannot write it only hashes
/// again next time.
const STAMP: &str = r#"stamp() { s=$(file_id "$1") && printf '%s %s\n' "$2" "$s" > "$1.verified.$$" && mv -f "$1.verified.$$" "$1.verified" || rm -f "$1.verified.$$"; }"#;

/// The probe: `$1` the path, `$2` the hash wanted (empty: only whether the file is there).
/// Prints `uname -sm`, then the hash (from a matching stamp, or computed), `present` or
/// `missing`.
const PROBE: &str = r#"uname -sm
if [ ! -f "$1" ]; then echo missing; exit 0; fi
if [ -z "$2" ]; then echo present; exit 0; fi
s=$(file_id "$1")
if [ -n "$s" ] && [ "$(cat "$1.verified" 2>/dev/null)" = "$2 $s" ]; then echo "$2"; exit 0; fi
h=$(sha256sum "$1" | cut -d' ' -f1)
echo "$h"
if [ "$h" = "$2" ]; then stamp "$1" "$2"; fi
exit 0"#;

async fn probe(
    session: &Session,
    host: &HostSpec,
    wanted: Option<&str>,
    bound: Duration,
) -> Result<Probe, DeployError> {
    let args = [host.agent.clone(), wanted.unwrap_or("").to_string()];
    let command = script_command(host, &format!("{FILE_ID}\n{STAMP}\n{PROBE}"), &args);
    let run = async {
        let mut channel = session.exec(&command).await?;
        let mut out = String::new();
        let _ = channel.stdout.read_to_string(&mut out).await;
        let status = channel.exit.wait().await?;
        Ok::<_, SshError>((status, out))
    };
    let (status, out) = match tokio::time::timeout(bound, run).await {
        Ok(result) => result.map_err(|e| exec_error(host, e))?,
        Err(_) => return Err(timeout(host, "checking the agent", bound)),
    };
    let mut lines = out.lines();
    let platform = lines.next().unwrap_or("").trim().to_string();
    let found = lines.next().unwrap_or("").trim();
    if !status.success() || platform.is_empty() || found.is_empty() {
        let detail = format!("{} (output: {:?})", describe(&status), out.trim());
        return Err(probe_error(host, detail));
    }
    let sha256 = match found {
        "missing" => None,
        line => Some(line.to_string()),
    };
    Ok(Probe { platform, sha256 })
}

/// The install script: `$1` the final path, `$2` the unique tag, `$3` the expected hash.
const INSTALL: &str = r#"set -e
t="$1.upload.$2"
mkdir -p "$(dirname "$1")"
trap 'rm -f "$t"' EXIT
cat > "$t"
h=$(sha256sum "$t" | cut -d' ' -f1)
if [ "$h" != "$3" ]; then echo "the uploaded file has sha256 $h, expected $3" >&2; exit 3; fi
chmod 755 "$t"
mv -f "$t" "$1"
trap - EXIT
stamp "$1" "$3""#;

async fn upload(session: &Session, host: &HostSpec, local: &LocalAgent) -> Result<(), DeployError> {
    let args = [host.agent.clone(), upload_tag(host), local.sha256.clone()];
    let command = script_command(host, &format!("{FILE_ID}\n{STAMP}\n{INSTALL}"), &args);
    let bound = UPLOAD_BASE + Duration::from_secs(local.size / (1024 * 1024));
    let run = async {
        let mut channel = session
            .exec(&command)
            .await
            .map_err(|e| exec_error(host, e))?;
        let sent = send_file(&local.path, &mut channel.stdin).await;
        drop(channel.stdin);
        let mut stderr = Vec::new();
        while let Some(line) = channel.stderr.next_line().await {
            stderr.push(line);
        }
        let status = channel.exit.wait().await.map_err(|e| exec_error(host, e))?;
        if let Err(source) = sent {
            let path = host.agent.clone();
            return Err(DeployError::Upload {
                host: host.name.clone(),
                path,
                source,
            });
        }
        if !status.success() {
            let detail = format!("{}: {}", describe(&status), stderr.join(" | "));
            let path = host.agent.clone();
            return Err(DeployError::Install {
                host: host.name.clone(),
                path,
                detail,
            });
        }
        Ok(())
    };
    match tokio::time::timeout(bound, run).await {
        Ok(result) => result,
        Err(_) => Err(timeout(host, "uploading the agent", bound)),
    }
}

async fn send_file(path: &Path, stdin: &mut eventor_ssh::ExecStdin) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stdin.write_all(&buf[..n]).await?;
    }
    stdin.flush().await?;
    stdin.shutdown().await
}

/// Unique per prime process, host and attempt.
fn upload_tag(host: &HostSpec) -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}.{}.{n}.{nanos}", host.name, std::process::id())
}

fn describe(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exit status {code}"),
        ExitStatus::Signal { name, .. } => format!("killed by signal {name}"),
    }
}

fn exec_error(host: &HostSpec, source: SshError) -> DeployError {
    DeployError::Exec {
        host: host.name.clone(),
        path: host.agent.clone(),
        source: Box::new(source),
    }
}

fn probe_error(host: &HostSpec, detail: String) -> DeployError {
    DeployError::Probe {
        host: host.name.clone(),
        path: host.agent.clone(),
        detail,
    }
}

fn timeout(host: &HostSpec, what: &'static str, after: Duration) -> DeployError {
    DeployError::Timeout {
        host: host.name.clone(),
        what,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_path_names_the_version_and_the_hash() {
        let agent = LocalAgent {
            path: "/opt/x/eventor-agent".into(),
            sha256: "0123456789abcdef0123".into(),
            size: 1,
        };
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            agent.default_remote_path(),
            format!("~/.cache/eventor/eventor-agent-{version}-0123456789abcdef")
        );
    }

    #[test]
    fn hashes_a_file_once() {
        let dir = std::env::temp_dir().join(format!("eventor-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bin");
        std::fs::write(&file, b"abc").unwrap();
        let agent = LocalAgent::of(&file).unwrap();
        assert_eq!(
            agent.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(agent.size, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn this_platform_reads_as_uname_does() {
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(local_platform(), "Linux x86_64");
        }
    }
}
