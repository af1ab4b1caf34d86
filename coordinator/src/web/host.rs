//! Which `Host` the page answers to, against DNS rebinding: a page the operator visits
//! elsewhere can point a name of its own at this machine's loopback address and read the
//! runs, unless requests naming a host other than this server are refused. Allowed: any IP
//! address (a rebinding attack needs a name it controls, and an address names this server
//! as the browser reached it), `localhost`, and the names given with `--allow-host`. The
//! port is not compared: a name is what an attacker controls, and an SSH forward or a proxy
//! legitimately changes the port.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The names besides IP addresses and `localhost` that the page answers to.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    /// `names` as `--allow-host` gave them (a port, if written, is ignored).
    pub(crate) fn new(names: &[String]) -> AllowedHosts {
        let names = names.iter().map(|n| name_of(n).to_string()).collect();
        AllowedHosts { names }
    }

    /// Whether a request whose `Host` is `host` is served.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = name_of(host);
        let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
        bare.unwrap_or(&name).parse::<IpAddr>().is_ok()
            || name == "localhost"
            || self.names.contains(&name)
    }
}

/// The host part of `host[:port]` or `[v6]:port`, lower-cased, without a trailing dot.
fn name_of(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, _port)) => return format!("[{}]", v6.to_ascii_lowercase()),
            None => host,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Refuses (421) a request naming a host the page does not answer to. A request without
/// any host (HTTP/1.0) cannot come from a browser's page, so it is served.
pub(crate) async fn check_host(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let named = match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_string()),
        None => request
            .headers()
            .get(header::HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
    };
    match named {
        Some(host) if !allowed.allows(&host) => (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "eventor-coord serve answers to its IP addresses, localhost and --allow-host \
                 names, not to {host:?}\n"
            ),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_are_allowed_whatever_the_port() {
        let allowed = AllowedHosts::default();
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "[::1]:8080",
            "[::1]",
            "10.1.2.3:9000",
            "localhost",
            "LocalHost.:9999",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn other_names_are_refused_unless_allowed() {
        let allowed = AllowedHosts::default();
        for host in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
        let allowed = AllowedHosts::new(&["Runs.Example".into(), "box:8080".into()]);
        assert!(allowed.allows("runs.example:8080"));
        assert!(allowed.allows("runs.example."));
        assert!(allowed.allows("box"));
        assert!(!allowed.allows("evil.example"));
    }
}
