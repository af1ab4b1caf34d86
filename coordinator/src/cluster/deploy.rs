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
//!    file is not touched (same inode, same mtime). First the agent's directory, the file
//!    and (through a symlink) the directory of the file it names must be the login user's
//!    (or root's) and writable by nobody else: else the answer is `unsafe: WHY` and the
//!    host is refused ([`DeployError::Unsafe`], naming the path and what is wrong), since
//!    anyone who can write there can replace the agent and its stamp. Hashing a large
//!    binary takes a second on a small host, so a file whose hash was once checked gets a
//!    stamp beside it, `PATH.verified`: the hash with the file's device, inode, size, mtime
//!    and ctime, all of the file a symlink names (`stat -L`, as `sha256sum` reads it), taken
//!    before hashing and written only if they are the same after it (else the answer is
//!    `changed`, which matches no hash). While those are unchanged the stamp's hash is
//!    answered without reading the file; any write to the file changes its ctime (which,
//!    unlike the mtime, no `cp -p` or `touch` sets back) and so sends the probe back to
//!    `sha256sum`.
//! 2. **Install**, only when the file is missing or its hash differs, and only when the
//!    host's `uname -sm` is the prime's (else [`DeployError::Platform`] says what the host
//!    runs and what to install) and its glibc (`getconf GNU_LIBC_VERSION`) is at least the
//!    newest `GLIBC_2.x` the agent's binary names (else [`DeployError::Libc`] says both). One channel runs `mkdir -p -m 700 DIR` (the directory
//!    checked as the probe checks it), `cat > PATH.upload.TAG; chmod 755 …; sha256sum …;
//!    mv -f … PATH`, then writes the stamp (with the identity of the file hashed, its ctime
//!    read after the rename):
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

use super::hosts::{shell_quote, Deploy, HostSpec, ENV_IN};
pub use super::local_agent::LocalAgent;
use eventor_agent::util::error_chain;

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
    #[error("{host}: refusing the agent at {path}: {why}")]
    Unsafe {
        host: String,
        path: String,
        /// Which file or directory, and what is wrong with it (its owner, or who may
        /// write it).
        why: String,
    },
    #[error(
        "{host}: has {theirs}, and this prime's agent needs {needed}: install eventor-agent \
         {} built for it (or a static build) on it, name it with `agent:` and set \
         `deploy: never`",
        env!("CARGO_PKG_VERSION")
    )]
    Libc {
        host: String,
        theirs: String,
        needed: String,
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
    #[error(
        "{host}: no Python interpreter at {path} (the host's `python:`, else the prime's \
         sys.executable)"
    )]
    NoInterpreter { host: String, path: String },
    #[error("{host}: no script at {path}: a Python program's remote steps need it at the same path there")]
    NoScript { host: String, path: String },
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
    /// The supervisor installed beside it ([`companion_path`]), when the prime has one:
    /// `eventor-supervise` next to the binary to install.
    pub companion: Option<Arc<LocalAgent>>,
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
            script_present(session, host, plan.probe_timeout).await?;
            return Ok(Deployed::Present);
        }
        (Deploy::Never, _, None) if !host.agent_args.is_empty() => {
            return Err(DeployError::NoInterpreter {
                host: host_name,
                path,
            })
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
        ensure_companion(session, host, plan).await;
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
    check_libc(host, &probe, local)?;
    upload(session, host, local).await?;
    ensure_companion(session, host, plan).await;
    let took = started.elapsed();
    // Whole milliseconds: a log line, not a benchmark.
    let shown = humantime::format_duration(Duration::from_millis(took.as_millis() as u64));
    tracing::info!(host = %host.name, path = %host.agent, bytes = local.size, took = %shown,
        "agent installed");
    Ok(Deployed::Installed {
        bytes: local.size,
        took,
    })
}

/// Where a host keeps the supervisor of its agent at `agent`: beside it, named after it, so
/// each agent version has its own (the agent looks there first; see
/// `eventor_agent::supervisor`).
pub fn companion_path(agent: &str) -> String {
    format!("{agent}{}", eventor_agent::supervisor::COMPANION_SUFFIX)
}

/// Installs the agent's supervisor beside it when the prime has one and the host's differs.
/// Best effort: without it the agent supervises its commands by starting itself again
/// (about 0.7 ms more a command), so a failure here is a warning, not a lost host.
async fn ensure_companion(session: &Session, host: &HostSpec, plan: &DeployPlan) {
    let Some(companion) = &plan.companion else {
        return;
    };
    let spec = HostSpec {
        agent: companion_path(&host.agent),
        agent_args: Vec::new(),
        ..host.clone()
    };
    let wanted = Some(companion.sha256.as_str());
    let installed = match probe(session, &spec, wanted, plan.probe_timeout).await {
        Ok(found) if found.sha256.as_deref() == wanted => Ok(()),
        Ok(_) => upload(session, &spec, companion).await,
        Err(e) => Err(e),
    };
    if let Err(e) = installed {
        tracing::warn!(host = %host.name, error = %error_chain(&e),
            "the agent's supervisor was not installed: the agent supervises its commands itself");
    }
}

/// The exit code of [`checked_start`]'s check when the stamp does not match.
pub const NOT_VERIFIED: u32 = 97;

/// `agent_command` behind a check of the agent's stamp (no hashing: `stat` and a compare),
/// for a `deploy: auto` host with a binary to install: the agent starts in the same exec
/// when the file is the one a probe verified and it and its directory are still safe
/// (a stamp in a directory others can write proves nothing), and the command exits
/// [`NOT_VERIFIED`] otherwise. `None`: the host is probed first, as always.
pub fn checked_start(host: &HostSpec, plan: &DeployPlan, agent_command: &str) -> Option<String> {
    let (Deploy::Auto, Ok(local)) = (&host.deploy, &plan.local) else {
        return None;
    };
    // The companion is checked too (it shares the agent's guarded directory: only the file
    // itself is guarded), so a host that lacks it goes through the full path.
    let check = format!("{GUARD}\n{STAMPED}");
    let (companion, companion_hash) = match &plan.companion {
        Some(c) => (
            super::hosts::quote_path(&companion_path(&host.agent)),
            c.sha256.clone(),
        ),
        None => ("''".to_string(), "''".to_string()),
    };
    Some(format!(
        "sh -c {} eventor-check {} {} {companion} {companion_hash} || exit {NOT_VERIFIED}; {agent_command}",
        shell_quote(&check),
        super::hosts::quote_path(&host.agent),
        local.sha256,
    ))
}

/// What the probe found on the host.
struct Probe {
    /// `uname -sm`.
    platform: String,
    /// The host's glibc (`getconf GNU_LIBC_VERSION`: `glibc 2.36`); `None`: it said none.
    glibc: Option<(u32, u32)>,
    /// The file's hash (`present` when none was wanted); `None`: no such file.
    sha256: Option<String>,
}

/// `sh -c SCRIPT NAME ARGS…`, each argument quoted (a leading `~/` left for the remote
/// shell to expand). The host's `env:` is its tasks' alone: never on a command line.
fn script_command(script: &str, args: &[String]) -> String {
    let mut words: Vec<String> = ["sh", "-c"].map(String::from).into();
    words.push(shell_quote(script));
    words.push("eventor-deploy".into());
    words.extend(args.iter().map(|a| super::hosts::quote_path(a)));
    words.join(" ")
}

/// `file_id PATH`: what a stamp holds of the file besides its hash: device, inode, size,
/// mtime, then `|` and the ctime (any write moves the ctime, and nothing sets it back; a
/// rename may, so the part before `|` tells the same file). Of the file a symlink names,
/// as `sha256sum` reads it.
const FILE_ID: &str = r#"file_id() { stat -L -c '%d %i %s %y|%z' "$1" 2>/dev/null; }"#;

/// `guard PATH WHAT` prints `unsafe: WHY` and fails when PATH is not owned by the login
/// user (or root) or may be written by group or others (the rule itself,
/// `unsafe_owner_or_mode PATH WHAT UID MODE`, is [`STAMPED`]'s too); `guard_agent PATH` guards the
/// agent's directory and, when the file is there, the file and the directory of what it
/// names through a symlink.
const GUARD: &str = r#"unsafe_owner_or_mode() {
  if [ "$3" != "$me" ] && [ "$3" != 0 ]; then echo "unsafe: the $2 $1 is owned by uid $3, not by the login user (uid $me) or root"; return 1; fi
  if [ $((0$4 & 022)) -ne 0 ]; then echo "unsafe: the $2 $1 may be written by group or others (mode $4)"; return 1; fi
}
guard() {
  o=$(stat -L -c '%u %a' "$1" 2>/dev/null) || { echo "unsafe: cannot stat the $2 $1"; return 1; }
  me=$(id -u); unsafe_owner_or_mode "$1" "$2" "${o% *}" "${o#* }"
}
guard_agent() {
  guard "$(dirname "$1")" directory || return 1
  if [ ! -e "$1" ]; then return 0; fi
  guard "$1" file || return 1
  r=$(readlink -f "$1") && guard "$(dirname "$r")" directory
}"#;

/// The check before a start without a probe: `$1` the agent, `$2` its hash, `$3` the
/// companion or empty, `$4` its hash. It succeeds only when the agent's directory, the
/// agent, the directory of what a symlinked agent names and the companion pass [`GUARD`]'s
/// rules, and the agent and the companion are the files their stamps name (what a probe
/// hashed), by [`GUARD`]'s rule. Two programs run, `id` and one `stat` for every path (`readlink` too for a
/// symlinked agent): each program a host starts costs about a millisecond, and the guard's
/// functions start a dozen. It says nothing: a failure takes the full path, whose probe
/// says what is wrong.
const STAMPED: &str = r#"me=$(id -u) || exit 1
case $1 in */*) d=${1%/*}; d=${d:-/};; *) d=.;; esac
r=
if [ -L "$1" ]; then r=$(readlink -f "$1") || exit 1; r=${r%/*}; r=${r:-/}; fi
out=$(stat -L -c '%u %a %d %i %s %y|%z' "$d" "$1" ${r:+"$r"} ${3:+"$3"} 2>/dev/null) || exit 1
n=0
while IFS= read -r line; do
  n=$((n + 1)); u=${line%% *}; rest=${line#* }; m=${rest%% *}; id=${rest#* }
  unsafe_owner_or_mode path "$n" "$u" "$m" >/dev/null || exit 1
  if [ $n = 2 ]; then agent=$id; fi
  last=$id
done <<EOF
$out
EOF
read -r V < "$1.verified" && [ "$V" = "$2 $agent" ] || exit 1
[ -z "$3" ] || { read -r V < "$3.verified" && [ "$V" = "$4 $last" ]; }"#;

/// `stamp PATH HASH ID` writes `PATH.verified`, by rename so a reader never sees half of
/// it. Best effort: a host that cannot write it only hashes again next time.
const STAMP: &str = r#"stamp() { printf '%s %s\n' "$2" "$3" > "$1.verified.$$" && mv -f "$1.verified.$$" "$1.verified" || rm -f "$1.verified.$$"; }"#;

/// The probe: `$1` the path, `$2` the hash wanted (empty: only whether the file is there).
/// Prints `uname -sm`, the C library (`getconf GNU_LIBC_VERSION`, or `unknown`), then
/// `unsafe: WHY` (see [`GUARD`]), the hash (from a matching stamp, or computed), `changed`
/// (written while it was hashed), `present` or `missing`.
const PROBE: &str = r#"uname -sm
getconf GNU_LIBC_VERSION 2>/dev/null || echo unknown
if [ -d "$(dirname "$1")" ]; then guard_agent "$1" || exit 0; fi
if [ ! -f "$1" ]; then echo missing; exit 0; fi
if [ -z "$2" ]; then echo present; exit 0; fi
s=$(file_id "$1")
if [ -n "$s" ] && [ "$(cat "$1.verified" 2>/dev/null)" = "$2 $s" ]; then echo "$2"; exit 0; fi
h=$(sha256sum "$1" | cut -d' ' -f1)
if [ "$(file_id "$1")" != "$s" ]; then echo changed; exit 0; fi
echo "$h"
if [ "$h" = "$2" ]; then stamp "$1" "$2" "$s"; fi
exit 0"#;

async fn probe(
    session: &Session,
    host: &HostSpec,
    wanted: Option<&str>,
    bound: Duration,
) -> Result<Probe, DeployError> {
    let args = [host.agent.clone(), wanted.unwrap_or("").to_string()];
    let script = format!("{ENV_IN}\n{FILE_ID}\n{GUARD}\n{STAMP}\n{PROBE}");
    let command = script_command(&script, &args);
    let run = async {
        let mut channel = session.exec(&command).await?;
        let _ = send_env(&mut channel.stdin, host).await;
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
    let glibc = lines.next().and_then(glibc_version);
    let found = lines.next().unwrap_or("").trim();
    if !status.success() || platform.is_empty() || found.is_empty() {
        let detail = format!("{} (output: {:?})", describe(&status), out.trim());
        return Err(probe_error(host, detail));
    }
    if let Some(why) = found.strip_prefix("unsafe: ") {
        return Err(DeployError::Unsafe {
            host: host.name.clone(),
            path: host.agent.clone(),
            why: why.to_string(),
        });
    }
    let sha256 = match found {
        "missing" => None,
        line => Some(line.to_string()),
    };
    Ok(Probe {
        platform,
        glibc,
        sha256,
    })
}

/// `2.36` of `glibc 2.36` (as `getconf GNU_LIBC_VERSION` says it), or of `GLIBC_2.36`.
fn glibc_version(text: &str) -> Option<(u32, u32)> {
    let text = text.trim();
    let version = text
        .strip_prefix("glibc ")
        .or_else(|| text.strip_prefix("GLIBC_"))?;
    let (major, minor) = version.split_once('.')?;
    let minor: String = minor.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The newest glibc symbol version the binary at `path` asks for (`GLIBC_2.34`, read from
/// its bytes as the loader's version needs name them), or `None` (no glibc: static).
fn glibc_needed(path: &Path) -> std::io::Result<Option<(u32, u32)>> {
    let bytes = std::fs::read(path)?;
    let marker = b"GLIBC_2.";
    let mut newest = None;
    let mut from = 0;
    // Every `G`, then the whole marker: one pass over the bytes.
    while let Some(found) = bytes[from..].iter().position(|b| *b == b'G') {
        let at = from + found;
        from = at + 1;
        if !bytes[at..].starts_with(marker) {
            continue;
        }
        let tail = &bytes[at..(at + 16).min(bytes.len())];
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let version = std::str::from_utf8(&tail[..end])
            .ok()
            .and_then(glibc_version);
        newest = newest.max(version);
    }
    Ok(newest)
}

/// The glibc the binary at `path` needs (`glibc 2.34`) when the host's, `theirs` as
/// `getconf GNU_LIBC_VERSION` prints it, is older; `None` when it is not, or either is
/// unknown (a static binary needs none).
pub fn glibc_too_old(theirs: &str, path: &Path) -> Option<String> {
    let theirs = glibc_version(theirs)?;
    let needed = glibc_needed(path).ok()??;
    (theirs < needed).then(|| format!("glibc {}.{}", needed.0, needed.1))
}

/// Refuses a host whose glibc is older than the agent needs, before any upload; a host that
/// says nothing of its C library is tried (the agent's start says what is wrong, if it is).
fn check_libc(host: &HostSpec, probe: &Probe, local: &LocalAgent) -> Result<(), DeployError> {
    let (Some(theirs), Ok(Some(needed))) = (probe.glibc, glibc_needed(&local.path)) else {
        return Ok(());
    };
    if theirs >= needed {
        return Ok(());
    }
    Err(DeployError::Libc {
        host: host.name.clone(),
        theirs: format!("glibc {}.{}", theirs.0, theirs.1),
        needed: format!("glibc {}.{}", needed.0, needed.1),
    })
}

/// The install script: `$1` the final path, `$2` the unique tag, `$3` the expected hash.
/// The stamp is written only when the file in place is the one hashed (same device,
/// inode, size and mtime: nothing replaced it since).
const INSTALL: &str = r#"set -e
t="$1.upload.$2"
mkdir -p -m 700 "$(dirname "$1")"
guard_agent "$1" >&2 || exit 4
trap 'rm -f "$t"' EXIT
cat > "$t"
chmod 755 "$t"
s=$(file_id "$t")
h=$(sha256sum "$t" | cut -d' ' -f1)
if [ "$h" != "$3" ]; then echo "the uploaded file has sha256 $h, expected $3" >&2; exit 3; fi
if [ "$(file_id "$t")" != "$s" ]; then echo "the uploaded file changed while it was hashed" >&2; exit 3; fi
mv -f "$t" "$1"
trap - EXIT
a=$(file_id "$1")
if [ "${a%|*}" = "${s%|*}" ]; then stamp "$1" "$3" "$a"; fi"#;

async fn upload(session: &Session, host: &HostSpec, local: &LocalAgent) -> Result<(), DeployError> {
    let args = [host.agent.clone(), upload_tag(host), local.sha256.clone()];
    let script = format!("{FILE_ID}\n{GUARD}\n{STAMP}\n{INSTALL}");
    let command = script_command(&script, &args);
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

/// The host's `env:` on a probe's stdin ([`ENV_IN`]), then its end.
async fn send_env(stdin: &mut eventor_ssh::ExecStdin, host: &HostSpec) -> std::io::Result<()> {
    stdin.write_all(host.env_lines().as_bytes()).await?;
    stdin.flush().await?;
    stdin.shutdown().await
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

pub(super) fn describe(status: &ExitStatus) -> String {
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

/// An interpreter's agent (a Python program's): its script must be readable on the host.
async fn script_present(
    session: &Session,
    host: &HostSpec,
    bound: Duration,
) -> Result<(), DeployError> {
    let Some(script) = host.agent_args.first() else {
        return Ok(());
    };
    let command = format!("test -r {}", shell_quote(script));
    let run = async {
        let channel = session.exec(&command).await?;
        channel.exit.wait().await
    };
    let status = match tokio::time::timeout(bound, run).await {
        Ok(result) => result.map_err(|e| exec_error(host, e))?,
        Err(_) => return Err(timeout(host, "checking the script", bound)),
    };
    if status.success() {
        return Ok(());
    }
    Err(DeployError::NoScript {
        host: host.name.clone(),
        path: script.clone(),
    })
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

    /// The versions read as getconf and the binary's version needs write them; this
    /// prime's own agent needs some glibc 2.x, none newer than the machine it runs on.
    #[test]
    fn glibc_versions_read_as_getconf_and_the_binary_write_them() {
        assert_eq!(glibc_version("glibc 2.36\n"), Some((2, 36)));
        assert_eq!(glibc_version("GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version("unknown"), None);
        let this = std::env::current_exe().unwrap();
        let needed = glibc_needed(&this).unwrap().expect("a glibc build");
        let here = std::process::Command::new("getconf")
            .arg("GNU_LIBC_VERSION")
            .output()
            .unwrap();
        let here = glibc_version(&String::from_utf8_lossy(&here.stdout)).unwrap();
        assert!(needed.0 == 2 && needed <= here, "{needed:?} {here:?}");
    }

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

    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Output, Stdio};

    /// Runs `script` here as a host would (`sh -c SCRIPT eventor-deploy ARGS…`), with
    /// `bin` first in `PATH` when given and `stdin` as its input.
    fn run_here(script: &str, args: &[&str], bin: Option<&Path>, stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg("eventor-deploy")
            .args(args);
        if let Some(bin) = bin {
            let path = std::env::var("PATH").unwrap_or_default();
            command.env("PATH", format!("{}:{path}", bin.display()));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// The probe's answer after `uname -sm` and the C library (which it checks are there).
    fn probe_here(path: &Path, wanted: &str, bin: Option<&Path>) -> String {
        let script = format!("{FILE_ID}\n{GUARD}\n{STAMP}\n{PROBE}");
        let out = run_here(&script, &[path.to_str().unwrap(), wanted], bin, b"");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let glibc = text.lines().nth(1).and_then(glibc_version);
        assert!(glibc.is_some_and(|v| v.0 == 2), "{text}");
        text.lines().nth(2).unwrap_or("").to_string()
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn sha256(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A `sha256sum` that appends to the file it hashes, then says it has `hash`.
    fn writing_sha256sum(dir: &Path, hash: &str) -> std::path::PathBuf {
        let bin = dir.join("fakebin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake = bin.join("sha256sum");
        let script = format!("#!/bin/sh\nprintf x >> \"$1\"\necho \"{hash}  $1\"\n");
        std::fs::write(&fake, script).unwrap();
        chmod(&fake, 0o755);
        bin
    }

    #[test]
    fn a_start_without_a_probe_needs_both_stamps_and_the_guards_rules() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("bin");
        std::fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o755);
        let agent = dir.join("eventor-agent");
        let companion = dir.join("eventor-agent.supervise");
        for file in [&agent, &companion] {
            std::fs::write(file, b"abc").unwrap();
            chmod(file, 0o755);
        }
        let abc = sha256(b"abc");
        // Stamped by the probe, as after an install.
        for file in [&agent, &companion] {
            assert_eq!(probe_here(file, &abc, None), abc);
        }
        let (a, c) = (agent.to_str().unwrap(), companion.to_str().unwrap());
        let script = format!("{GUARD}\n{STAMPED}");
        let starts = |args: &[&str]| run_here(&script, args, None, b"").status.success();
        assert!(starts(&[a, &abc, c, &abc]));
        assert!(starts(&[a, &abc, "", ""]), "no companion wanted");
        assert!(
            !starts(&[a, &sha256(b"x"), c, &abc]),
            "another agent wanted"
        );
        assert!(
            !starts(&[a, &abc, c, &sha256(b"x")]),
            "another companion wanted"
        );
        assert!(!starts(&[
            a,
            &abc,
            dir.join("none").to_str().unwrap(),
            &abc
        ]));
        chmod(&companion, 0o775);
        assert!(!starts(&[a, &abc, c, &abc]), "a group-writable companion");
        chmod(&companion, 0o755);
        // The chmod moved its ctime: stamped again, as a probe would.
        assert_eq!(probe_here(&companion, &abc, None), abc);
        assert!(starts(&[a, &abc, c, &abc]));
        chmod(&dir, 0o775);
        assert!(!starts(&[a, &abc, c, &abc]), "a group-writable directory");
        chmod(&dir, 0o755);
        // Through a symlink: the directory of the file it names is guarded too.
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        chmod(&elsewhere, 0o755);
        std::fs::rename(&agent, elsewhere.join("eventor-agent")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("eventor-agent"), &agent).unwrap();
        assert_eq!(probe_here(&agent, &abc, None), abc);
        assert!(starts(&[a, &abc, c, &abc]), "a symlinked agent");
        chmod(&elsewhere, 0o777);
        assert!(
            !starts(&[a, &abc, c, &abc]),
            "the named file's directory is writable"
        );
        // A rewrite in place moves the ctime: the stamp no longer names the file.
        chmod(&elsewhere, 0o755);
        std::fs::write(elsewhere.join("eventor-agent"), b"abc").unwrap();
        assert!(!starts(&[a, &abc, c, &abc]), "rewritten since its stamp");
    }

    #[test]
    fn an_agent_or_directory_others_may_write_is_refused_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("bin");
        std::fs::create_dir(&dir).unwrap();
        let agent = dir.join("eventor-agent");
        std::fs::write(&agent, b"abc").unwrap();
        chmod(&agent, 0o755);
        let abc = sha256(b"abc");

        chmod(&dir, 0o775);
        let said = probe_here(&agent, &abc, None);
        let expected = format!(
            "unsafe: the directory {} may be written by group or others (mode 775)",
            dir.display()
        );
        assert_eq!(said, expected);
        assert_eq!(probe_here(&dir.join("missing"), &abc, None), expected);
        chmod(&dir, 0o700);
        chmod(&agent, 0o757);
        let said = probe_here(&agent, &abc, None);
        let expected = format!(
            "unsafe: the file {} may be written by group or others (mode 757)",
            agent.display()
        );
        assert_eq!(said, expected);
        chmod(&agent, 0o755);
        assert_eq!(probe_here(&agent, &abc, None), abc);

        // Through a symlink, the directory of the file it names counts too.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        std::fs::write(open.join("real"), b"abc").unwrap();
        chmod(&open.join("real"), 0o755);
        let link = dir.join("linked");
        std::os::unix::fs::symlink(open.join("real"), &link).unwrap();
        let said = probe_here(&link, &abc, None);
        assert!(said.starts_with("unsafe: the directory"), "{said}");
        assert!(
            said.ends_with("open may be written by group or others (mode 777)"),
            "{said}"
        );

        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&agent, Some(54321), None).unwrap();
            let said = probe_here(&agent, &abc, None);
            let expected = format!(
                "unsafe: the file {} is owned by uid 54321, not by the login user (uid 0) or root",
                agent.display()
            );
            assert_eq!(said, expected);
        }
    }

    /// The stamp holds the identity of the file a symlink names (`stat -L`), so a rewrite
    /// of that file is hashed again rather than answered from the stamp.
    #[test]
    fn a_stamp_through_a_symlink_is_of_the_file_hashed() {
        let root = tempfile::tempdir().unwrap();
        let (real, link) = (root.path().join("real"), root.path().join("agent"));
        std::fs::write(&real, b"abc").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let abc = sha256(b"abc");
        assert_eq!(probe_here(&link, &abc, None), abc);
        assert!(root.path().join("agent.verified").exists(), "stamped");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&real, b"xyz").unwrap();
        assert_eq!(probe_here(&link, &abc, None), sha256(b"xyz"));
    }

    #[test]
    fn a_file_written_while_it_is_hashed_is_neither_matched_nor_stamped() {
        let root = tempfile::tempdir().unwrap();
        let agent = root.path().join("agent");
        std::fs::write(&agent, b"abc").unwrap();
        let abc = sha256(b"abc");
        let bin = writing_sha256sum(root.path(), &abc);
        assert_eq!(probe_here(&agent, &abc, Some(&bin)), "changed");
        assert!(!root.path().join("agent.verified").exists(), "no stamp");
    }

    #[test]
    fn an_install_makes_a_private_directory_and_a_stamp_the_probe_believes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache/eventor");
        let agent = dir.join("eventor-agent");
        let script = format!("{FILE_ID}\n{GUARD}\n{STAMP}\n{INSTALL}");
        let abc = sha256(b"abc");
        let args = [agent.to_str().unwrap(), "t1", &abc];
        let out = run_here(&script, &args, None, b"abc");
        assert!(out.status.success(), "{out:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&agent), 0o755);
        // Answered from the stamp: a sha256sum that would write the file is never run.
        let bin = writing_sha256sum(root.path(), &abc);
        assert_eq!(probe_here(&agent, &abc, Some(&bin)), abc);

        chmod(&dir, 0o770);
        let again = [agent.to_str().unwrap(), "t2", &abc];
        let out = run_here(&script, &again, None, b"abc");
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("may be written by group or others (mode 770)"),
            "{stderr}"
        );
    }

    #[test]
    fn this_platform_reads_as_uname_does() {
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(local_platform(), "Linux x86_64");
        }
    }
}
