//! How a check's findings are shown: a few lines per host for people, or one JSON
//! document for scripts (`--json`; its shape is documented in README.md).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use eventor_ssh::{HostConfig, HostKeyStatus, StrictHostKeyChecking};
use serde_json::{json, Value};

use super::probe::{AgentFound, HostKeyFinding, HostProbe, StoreReach};
use super::{CheckReport, FlowSummary, HostCheck};

/// A clock further off than this is pointed out (delays and logs compare times).
const CLOCK_WARNING_MS: f64 = 1000.0;

/// `flow NAME: 3 events, 2 steps, 1 association; hosts a, b; pools none`.
pub fn summary_line(flow: &FlowSummary) -> String {
    let list = |items: Vec<String>| match items.is_empty() {
        true => "none".to_string(),
        false => items.join(", "),
    };
    let pools = flow
        .pools
        .iter()
        .map(|(p, n)| format!("{p} ({n})"))
        .collect();
    format!(
        "flow {}: {} events, {} steps, {} associations; hosts {}; pools {}",
        flow.name,
        flow.events,
        flow.steps,
        flow.assocs,
        list(flow.hosts.clone()),
        list(pools)
    )
}

/// The report as text: per host its settings, then (when probed) one line per finding.
pub fn text(report: &CheckReport) -> String {
    let mut out = String::new();
    if let Some(store) = &report.store {
        let _ = writeln!(out, "store from the prime: {}", reach_text(store));
    }
    for host in &report.hosts {
        host_text(&mut out, host);
    }
    if report.store.is_some() {
        let ready = report.hosts.iter().filter(|h| h.ready()).count();
        let verdict = if report.ready() { "READY" } else { "NOT READY" };
        let _ = writeln!(
            out,
            "{verdict}: {ready} of {} hosts ready",
            report.hosts.len()
        );
        for problem in problems(report) {
            let _ = writeln!(out, "  {problem}");
        }
    }
    out
}

/// Every reason the run would not get through, one line each, for the end of the text.
fn problems(report: &CheckReport) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = report.store.as_ref().and_then(|s| s.error.as_ref()) {
        out.push(format!("the prime: {e}"));
    }
    for host in &report.hosts {
        let Some(p) = &host.probe else { continue };
        let name = &host.spec.name;
        if let Err(e) = &p.connect {
            out.push(format!("{name}: connect: {e}"));
        }
        if let Some(Err(e)) = &p.agent {
            out.push(format!("{name}: {e}"));
        }
        if let Some(e) = p.store.as_ref().and_then(|s| s.error.as_ref()) {
            out.push(e.clone());
        }
    }
    out
}

fn host_text(out: &mut String, host: &HostCheck) {
    let r = &host.resolved;
    let _ = writeln!(out, "{}", host.spec);
    let _ = writeln!(
        out,
        "  resolved: {}@{} identity {}; jumps {}; known_hosts {}; StrictHostKeyChecking {}; ConnectTimeout {}",
        r.user,
        r.address(),
        paths(&r.identity_files),
        jumps(r).join(" → ").if_empty("none"),
        paths(&r.known_hosts_files()),
        checking(r.strict_host_key_checking),
        r.connect_timeout.map(show).unwrap_or_else(|| "none".into()),
    );
    for warning in &r.warnings {
        let _ = writeln!(out, "  warning: {warning}");
    }
    if let Some(probe) = &host.probe {
        probe_text(out, probe);
    }
}

fn probe_text(out: &mut String, p: &HostProbe) {
    let line = match &p.connect {
        Ok(took) => format!("ok in {}", show(*took)),
        Err(e) => format!("FAILED: {e}"),
    };
    let _ = writeln!(out, "  connect: {line}");
    let _ = writeln!(out, "  host key: {}", host_key_text(&p.host_key));
    if let Some(auth) = &p.auth {
        let _ = writeln!(out, "  auth: {}", auth.as_ref().unwrap_or_else(|e| e));
    }
    if let Some(agent) = &p.agent {
        let line = match agent {
            Ok(a) => format!(
                "{} ({}, {}, {})",
                a.path,
                a.version,
                a.os,
                libc_text(&a.libc)
            ),
            Err(e) => format!("FAILED: {e}"),
        };
        let _ = writeln!(out, "  agent: {line}");
    }
    if let Some(store) = &p.store {
        let _ = writeln!(out, "  store: {}", reach_text(store));
    }
    if let Some(clock) = &p.clock_offset_ms {
        let line = match clock {
            Ok(ms) if ms.abs() > CLOCK_WARNING_MS => {
                format!("{ms:+.1} ms from the prime (WARNING: over 1 s)")
            }
            Ok(ms) => format!("{ms:+.1} ms from the prime"),
            Err(e) => format!("unknown: {e}"),
        };
        let _ = writeln!(out, "  clock: {line}");
    }
    let _ = writeln!(out, "  {}", if p.ready() { "ready" } else { "NOT READY" });
}

fn host_key_text(finding: &HostKeyFinding) -> String {
    match finding {
        HostKeyFinding::NotReached => "not checked (no key exchange)".into(),
        HostKeyFinding::Accepted => "accepted".into(),
        HostKeyFinding::Found(HostKeyStatus::Known { key, location }) => {
            format!("known: {key} at {location}")
        }
        HostKeyFinding::Found(HostKeyStatus::Learned { key, file }) => {
            format!("learned: {key}, added to {} (accept-new)", file.display())
        }
        HostKeyFinding::Found(HostKeyStatus::AcceptedUnknown { key }) => {
            format!("unknown, accepted unrecorded: {key}")
        }
        HostKeyFinding::Unknown { name, presented } => {
            format!("UNKNOWN: {presented} for {name} is in no known_hosts file")
        }
        HostKeyFinding::Changed {
            file,
            line,
            recorded,
            presented,
        } => format!(
            "CHANGED: {}:{line} has {recorded}, the server presented {presented}",
            file.display()
        ),
        HostKeyFinding::Revoked { key, file, line } => {
            format!("REVOKED: {key} at {}:{line}", file.display())
        }
        HostKeyFinding::Certificate => "REFUSED: a host certificate (not supported)".into(),
    }
}

fn reach_text(reach: &StoreReach) -> String {
    match &reach.error {
        None => format!("{} reachable", reach.address),
        Some(e) => format!("FAILED: {e}"),
    }
}

/// The report as JSON; without probes (resolving only) just `{"hosts": [...]}`.
pub fn json(report: &CheckReport) -> Value {
    let hosts: Vec<Value> = report.hosts.iter().map(host_json).collect();
    match &report.store {
        None => json!({ "hosts": hosts }),
        Some(store) => json!({
            "hosts": hosts,
            "store": reach_json(store),
            "ready": report.ready(),
        }),
    }
}

fn host_json(host: &HostCheck) -> Value {
    let r = &host.resolved;
    let mut value = json!({
        "host": host.spec.name,
        "ssh_alias": host.spec.ssh,
        "hostname": r.host_name,
        "port": r.port,
        "user": r.user,
        "identity_files": r.identity_files,
        "proxy_jump": jumps(r),
        "user_known_hosts_files": r.user_known_hosts_files,
        "strict_host_key_checking": checking(r.strict_host_key_checking),
        "connect_timeout": r.connect_timeout.map(|t| t.as_secs_f64()),
        "warnings": r.warnings,
    });
    if let (Some(p), Value::Object(map)) = (&host.probe, &mut value) {
        map.extend(probe_json(p, &host.spec.agent));
    }
    value
}

fn probe_json(p: &HostProbe, agent_path: &str) -> serde_json::Map<String, Value> {
    let connect = match &p.connect {
        Ok(took) => json!({"ok": true, "ms": took.as_millis()}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let auth = p.auth.as_ref().map(|a| match a {
        Ok(method) => json!({"ok": true, "method": method}),
        Err(e) => json!({"ok": false, "error": e}),
    });
    let agent = p.agent.as_ref().map(|a| agent_json(a, agent_path));
    let clock = p.clock_offset_ms.as_ref().and_then(|c| c.as_ref().ok());
    let fields = json!({
        "connect": connect,
        "host_key": host_key_json(&p.host_key),
        "auth": auth,
        "agent": agent,
        "store": p.store.as_ref().map(reach_json),
        "clock_offset_ms": clock,
        "ready": p.ready(),
    });
    match fields {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// The host's C library, and what the prime's agent needs when that is newer: the
/// warning a run's install would turn into a refusal.
fn libc_text(libc: &str) -> String {
    match super::probe::glibc_too_old(libc) {
        Some(needed) => format!(
            "{libc}; WARNING: the prime's agent needs {needed} (scripts/build-agent.sh builds a portable one)"
        ),
        None => libc.to_string(),
    }
}

fn agent_json(agent: &Result<AgentFound, String>, path: &str) -> Value {
    match agent {
        Ok(a) => json!({"ok": true, "path": a.path, "version": a.version, "os": a.os,
            "libc": a.libc, "libc_too_old_for": super::probe::glibc_too_old(&a.libc)}),
        Err(e) => json!({"ok": false, "path": path, "error": e}),
    }
}

fn host_key_json(finding: &HostKeyFinding) -> Value {
    match finding {
        HostKeyFinding::NotReached => json!({"status": "not_checked"}),
        HostKeyFinding::Accepted => json!({"status": "accepted"}),
        HostKeyFinding::Found(HostKeyStatus::Known { key, location }) => json!({
            "status": "known", "key": key,
            "file": location.file, "line": location.line,
        }),
        HostKeyFinding::Found(HostKeyStatus::Learned { key, file }) => {
            json!({"status": "learned", "key": key, "file": file})
        }
        HostKeyFinding::Found(HostKeyStatus::AcceptedUnknown { key }) => {
            json!({"status": "unknown_accepted", "key": key})
        }
        HostKeyFinding::Unknown { name, presented } => {
            json!({"status": "unknown", "name": name, "presented": presented})
        }
        HostKeyFinding::Changed {
            file,
            line,
            recorded,
            presented,
        } => json!({
            "status": "changed", "file": file, "line": line,
            "recorded": recorded, "presented": presented,
        }),
        HostKeyFinding::Revoked { key, file, line } => {
            json!({"status": "revoked", "key": key, "file": file, "line": line})
        }
        HostKeyFinding::Certificate => json!({"status": "certificate_refused"}),
    }
}

fn reach_json(reach: &StoreReach) -> Value {
    json!({"ok": reach.error.is_none(), "address": reach.address, "error": reach.error})
}

fn jumps(host: &HostConfig) -> Vec<String> {
    host.proxy_jump.iter().map(ToString::to_string).collect()
}

fn checking(mode: StrictHostKeyChecking) -> &'static str {
    match mode {
        StrictHostKeyChecking::Yes => "yes",
        StrictHostKeyChecking::AcceptNew => "accept-new",
        StrictHostKeyChecking::No => "no",
    }
}

fn paths<P: AsRef<Path>>(paths: &[P]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .map(|p| p.as_ref().display().to_string())
        .collect();
    shown.join(", ").if_empty("none")
}

fn show(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// `"none"` (or another word) in place of an empty list in text.
trait IfEmpty {
    fn if_empty(self, word: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, word: &str) -> String {
        if self.is_empty() {
            word.to_string()
        } else {
            self
        }
    }
}
