//! ssh_config handling: read the file (`config_file`), pick the lines that apply to one
//! host alias as OpenSSH does (`config_match`: Host, Match, first value wins), let
//! `ssh2-config` interpret those lines' values, and resolve them into a [`HostConfig`]
//! holding every option this layer honours, plus warnings naming each option that is
//! set but not honoured.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ssh2_config::{HostParams, ParseRule};

use super::config_file::{self, Item};
use super::config_match::{self, final_host_name};
use super::error::SshError;
pub use super::settings::ClientSettings;
use super::tokens::TokenValues;

/// How to treat a host key that no known_hosts line names (OpenSSH's meanings).
/// A known host presenting another key is refused under every setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// Refuse unknown hosts (also OpenSSH's `ask`, as nobody can be asked).
    Yes,
    /// Add the key of an unknown host to the first UserKnownHostsFile, then proceed.
    AcceptNew,
    /// Proceed without recording the key (logged as a warning).
    No,
}

/// One `ProxyJump` hop: `[user@]host[:port]`, `host` being looked up in ssh_config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for JumpHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match self.port {
            Some(port) if self.host.contains(':') => write!(f, "[{}]:{port}", self.host),
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}", self.host),
        }
    }
}

/// Everything needed to reach one host, resolved from ssh_config and [`ClientSettings`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// The name the caller used (ssh_config's `Host` pattern match); errors name it.
    pub alias: String,
    pub host_name: String,
    pub port: u16,
    pub user: String,
    /// Explicit `IdentityFile`s, or OpenSSH's default ones under `~/.ssh`.
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    /// `None` when no agent is to be used.
    pub identity_agent: Option<PathBuf>,
    /// Hops in order: connect to the first, tunnel to the next, …, then to this host.
    pub proxy_jump: Vec<JumpHost>,
    pub connect_timeout: Option<Duration>,
    pub connection_attempts: u32,
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: usize,
    pub tcp_keep_alive: bool,
    pub strict_host_key_checking: StrictHostKeyChecking,
    /// Searched, and the first one learns new keys.
    pub user_known_hosts_files: Vec<PathBuf>,
    /// Searched only.
    pub global_known_hosts_files: Vec<PathBuf>,
    pub host_key_alias: Option<String>,
    pub hash_known_hosts: bool,
    /// Options set for this host that are not honoured, one sentence each.
    pub warnings: Vec<String>,
}

impl HostConfig {
    /// `host:port` as used in messages.
    pub fn address(&self) -> String {
        if self.host_name.contains(':') {
            format!("[{}]:{}", self.host_name, self.port)
        } else {
            format!("{}:{}", self.host_name, self.port)
        }
    }

    /// Every known_hosts file searched, user files first.
    pub fn known_hosts_files(&self) -> Vec<PathBuf> {
        let user = self.user_known_hosts_files.iter();
        user.chain(&self.global_known_hosts_files)
            .cloned()
            .collect()
    }
}

/// A parsed ssh_config plus the [`ClientSettings`] it is resolved against; cheap to clone.
#[derive(Debug, Clone)]
pub struct SshConfig {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    items: Vec<Item>,
    path: PathBuf,
    settings: ClientSettings,
    warnings: Vec<String>,
    /// Logins being set up at once (see `jumps.rs`).
    startups: Arc<tokio::sync::Semaphore>,
}

impl SshConfig {
    /// Reads `settings.config_file` (which must exist), or `~/.ssh/config` when present.
    pub fn load(settings: ClientSettings) -> Result<SshConfig, SshError> {
        let path = match &settings.config_file {
            Some(path) => path.clone(),
            None => settings.home.join(".ssh/config"),
        };
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && settings.config_file.is_none() =>
            {
                String::new()
            }
            Err(source) => return Err(SshError::ConfigRead { path, source }),
        };
        Self::parse_text(&text, &path, settings)
    }

    /// Parses ssh_config text (tests, or configs that are not files).
    pub fn from_text(text: &str, settings: ClientSettings) -> Result<SshConfig, SshError> {
        Self::parse_text(text, Path::new("<text>"), settings)
    }

    fn parse_text(
        text: &str,
        path: &Path,
        settings: ClientSettings,
    ) -> Result<SshConfig, SshError> {
        let items = config_file::parse(text, path, &settings.home)?;
        // OpenSSH rejects a bad value wherever it is, not only in blocks that apply.
        let mut every_setting = Vec::new();
        all_settings(&items, &mut every_setting);
        interpret(&every_setting, path, &settings)?;
        let startups = Arc::new(tokio::sync::Semaphore::new(settings.max_startups.max(1)));
        let inner = Arc::new(Inner {
            items,
            path: path.to_path_buf(),
            settings,
            warnings: Vec::new(),
            startups,
        });
        Ok(SshConfig { inner })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// The logins being set up at once, at most `max_startups`.
    pub(crate) fn startups(&self) -> &tokio::sync::Semaphore {
        &self.inner.startups
    }

    /// Problems with the file as a whole (per-host ones are in [`HostConfig::warnings`]).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Resolves `alias`; unhonoured options become `warnings` (also logged).
    pub fn resolve(&self, alias: &str) -> Result<HostConfig, SshError> {
        let Inner {
            items,
            path,
            settings,
            ..
        } = self.inner.as_ref();
        let applied = config_match::applicable(items, alias, settings)?;
        let params = interpret(&applied.lines, path, settings)?.query(alias);
        let host = Resolver {
            alias,
            params: &params,
            extra: lowercase_keys(&params.unsupported_fields),
            settings,
            warnings: applied.warnings,
        }
        .resolve()?;
        for w in &host.warnings {
            tracing::warn!(host = %alias, "ssh config: {w}");
        }
        Ok(host)
    }
}

/// ssh2-config's reading of option lines that all apply (no Host line: all global).
fn interpret(
    lines: &[String],
    path: &Path,
    settings: &ClientSettings,
) -> Result<ssh2_config::SshConfig, SshError> {
    // Unknown and unsupported options are kept (not fatal) so we can report them.
    let rules = ParseRule::ALLOW_UNKNOWN_FIELDS | ParseRule::ALLOW_UNSUPPORTED_FIELDS;
    let text = lines.join("\n");
    ssh2_config::SshConfig::default()
        .home_dir(&settings.home)
        .parse(&mut text.as_bytes(), rules)
        .map_err(|source| SshError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })
}

/// Every option line, in every block and included file.
fn all_settings(items: &[Item], out: &mut Vec<String>) {
    for item in items {
        match item {
            Item::Setting(line) => out.push(line.text.clone()),
            Item::Include(files) => files.iter().for_each(|f| all_settings(f, out)),
            Item::Host(_) | Item::Match(_) => {}
        }
    }
}

fn lowercase_keys(map: &HashMap<String, Vec<String>>) -> HashMap<String, Vec<String>> {
    let lower = |(k, v): (&String, &Vec<String>)| (k.to_ascii_lowercase(), v.clone());
    map.iter().map(lower).collect()
}

/// One resolution: the merged params of a host and the warnings gathered on the way.
struct Resolver<'a> {
    alias: &'a str,
    params: &'a HostParams,
    /// ssh2-config's "unsupported" options (it parses but does not interpret them).
    extra: HashMap<String, Vec<String>>,
    settings: &'a ClientSettings,
    warnings: Vec<String>,
}

/// OpenSSH 9's defaults, in its order (an id_xmss or id_dsa, if present, is skipped
/// at login as a key type russh does not offer).
const DEFAULT_IDENTITIES: [&str; 7] = [
    "id_rsa",
    "id_ecdsa",
    "id_ecdsa_sk",
    "id_ed25519",
    "id_ed25519_sk",
    "id_xmss",
    "id_dsa",
];

/// ssh2-config "unsupported" options that this module interprets itself.
const INTERPRETED: [&str; 8] = [
    "identitiesonly",
    "identityagent",
    "stricthostkeychecking",
    "userknownhostsfile",
    "globalknownhostsfile",
    "serveralivecountmax",
    "hostkeyalias",
    "hashknownhosts",
];

impl Resolver<'_> {
    fn resolve(mut self) -> Result<HostConfig, SshError> {
        let p = self.params;
        let host_name = final_host_name(p.host_name.as_deref(), self.alias);
        let port = p.port.unwrap_or(22);
        let user = p.user.clone().unwrap_or(self.settings.local_user.clone());
        // ssh lowercases the alias before using it (known_hosts names are lowercase).
        let host_key_alias = self.first("hostkeyalias").map(str::to_ascii_lowercase);
        let tokens = TokenValues {
            alias: self.alias.to_string(),
            host: host_name.clone(),
            port: port.to_string(),
            user: user.clone(),
            local_user: self.settings.local_user.clone(),
            home: self.settings.home.to_string_lossy().into_owned(),
            key_alias: host_key_alias.clone().unwrap_or(host_name.clone()),
        };
        let host = HostConfig {
            alias: self.alias.to_string(),
            identity_files: self.identity_files(&tokens),
            identities_only: self.flag("identitiesonly", "IdentitiesOnly", false)?,
            identity_agent: self.identity_agent(&tokens),
            proxy_jump: self.proxy_jump()?,
            connect_timeout: nonzero(p.connect_timeout).or(self.settings.default_connect_timeout),
            connection_attempts: p.connection_attempts.unwrap_or(1).clamp(1, 100) as u32,
            server_alive_interval: nonzero(p.server_alive_interval),
            server_alive_count_max: self.count_max()?,
            tcp_keep_alive: p.tcp_keep_alive.unwrap_or(true),
            strict_host_key_checking: self.strict()?,
            user_known_hosts_files: self.known_hosts("userknownhostsfile", &tokens, USER_KH),
            global_known_hosts_files: self.known_hosts("globalknownhostsfile", &tokens, GLOBAL_KH),
            host_key_alias,
            hash_known_hosts: self.flag("hashknownhosts", "HashKnownHosts", false)?,
            host_name,
            port,
            user,
            warnings: Vec::new(),
        };
        self.warn_unhonoured();
        Ok(HostConfig {
            warnings: self.warnings,
            ..host
        })
    }

    fn first(&self, key: &str) -> Option<&str> {
        self.extra.get(key)?.first().map(String::as_str)
    }

    fn bad(&self, option: &'static str, value: &str, reason: &'static str) -> SshError {
        SshError::ConfigValue {
            host: self.alias.to_string(),
            option,
            value: value.to_string(),
            reason,
        }
    }

    fn flag(&self, key: &str, option: &'static str, default: bool) -> Result<bool, SshError> {
        match self.first(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("yes" | "true") => Ok(true),
            Some("no" | "false") => Ok(false),
            Some(other) => Err(self.bad(option, other, "expected yes or no")),
        }
    }

    fn strict(&mut self) -> Result<StrictHostKeyChecking, SshError> {
        let Some(value) = self
            .first("stricthostkeychecking")
            .map(str::to_ascii_lowercase)
        else {
            // OpenSSH's default is `ask`, which without a terminal refuses like `yes`.
            return Ok(StrictHostKeyChecking::Yes);
        };
        match value.as_str() {
            "yes" | "true" => Ok(StrictHostKeyChecking::Yes),
            "accept-new" => Ok(StrictHostKeyChecking::AcceptNew),
            "no" | "false" | "off" => Ok(StrictHostKeyChecking::No),
            "ask" => {
                self.warn("StrictHostKeyChecking ask: nobody can be asked, treated as yes");
                Ok(StrictHostKeyChecking::Yes)
            }
            _ => Err(self.bad(
                "StrictHostKeyChecking",
                &value,
                "expected yes, accept-new, no or ask",
            )),
        }
    }

    fn count_max(&self) -> Result<usize, SshError> {
        match self.first("serveralivecountmax") {
            None => Ok(3),
            Some(v) => v
                .parse()
                .map_err(|_| self.bad("ServerAliveCountMax", v, "expected a number")),
        }
    }

    fn identity_files(&mut self, tokens: &TokenValues) -> Vec<PathBuf> {
        match self.params.identity_file.clone() {
            Some(files) => files
                .iter()
                .map(|f| self.expand_path(&f.to_string_lossy(), tokens, "IdentityFile"))
                .collect(),
            None => {
                let dir = self.settings.home.join(".ssh");
                DEFAULT_IDENTITIES.iter().map(|f| dir.join(f)).collect()
            }
        }
    }

    fn identity_agent(&mut self, tokens: &TokenValues) -> Option<PathBuf> {
        let value = match self.first("identityagent") {
            None => return self.settings.agent_socket.clone(),
            Some(v) => v.to_string(),
        };
        match value.as_str() {
            "none" => None,
            "SSH_AUTH_SOCK" => self.settings.agent_socket.clone(),
            v => match v.strip_prefix('$') {
                Some(var) => std::env::var_os(var).map(PathBuf::from),
                None => Some(self.expand_path(v, tokens, "IdentityAgent")),
            },
        }
    }

    fn proxy_jump(&mut self) -> Result<Vec<JumpHost>, SshError> {
        let Some(specs) = self.params.proxy_jump.clone() else {
            return Ok(Vec::new());
        };
        if specs.iter().any(|s| s.eq_ignore_ascii_case("none")) {
            return Ok(Vec::new());
        }
        let parse = |s: &String| {
            parse_jump(s).ok_or_else(|| self.bad("ProxyJump", s, "expected [user@]host[:port]"))
        };
        specs.iter().filter(|s| !s.is_empty()).map(parse).collect()
    }

    fn known_hosts(&mut self, key: &str, tokens: &TokenValues, defaults: &[&str]) -> Vec<PathBuf> {
        let Some(values) = self.extra.get(key).cloned() else {
            let defaults = defaults.iter();
            return defaults.map(|d| self.expand_path(d, tokens, key)).collect();
        };
        // Several files may be given on one line, space-separated; `none` means none.
        let names: Vec<String> = values
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        if names.iter().any(|n| n == "none") {
            return Vec::new();
        }
        let option = if key == "userknownhostsfile" {
            "UserKnownHostsFile"
        } else {
            "GlobalKnownHostsFile"
        };
        names
            .iter()
            .map(|n| self.expand_path(n, tokens, option))
            .collect()
    }

    /// `~` and `%` tokens, as OpenSSH expands them in file options.
    fn expand_path(&mut self, raw: &str, tokens: &TokenValues, option: &str) -> PathBuf {
        let raw = &self.expand_env(raw, option);
        let tilde = match raw.strip_prefix('~') {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                format!("{}{rest}", tokens.home)
            }
            _ => raw.to_string(),
        };
        match tokens.expand(&tilde) {
            Ok(path) => PathBuf::from(path),
            Err(token) => {
                self.warn(&format!(
                    "{option}: token %{token} is not supported, kept as is"
                ));
                PathBuf::from(tilde)
            }
        }
    }

    /// `${VAR}` from our environment, as ssh expands it in file options.
    fn expand_env(&mut self, raw: &str, option: &str) -> String {
        let mut out = String::new();
        let mut rest = raw;
        while let Some((before, after)) = rest.split_once("${") {
            out.push_str(before);
            let Some((var, after)) = after.split_once('}') else {
                rest = after;
                out.push_str("${");
                break;
            };
            match std::env::var(var) {
                Ok(value) => out.push_str(&value),
                Err(_) => {
                    // ssh refuses the file; a path that may be wrong must not pass silently.
                    self.warn(&format!("{option}: ${{{var}}} is not set, kept as is"));
                    out.push_str(&format!("${{{var}}}"));
                }
            }
            rest = after;
        }
        out.push_str(rest);
        out
    }

    fn warn(&mut self, w: &str) {
        self.warnings.push(w.to_string());
    }

    /// Options that are set but that this layer does not act on.
    fn warn_unhonoured(&mut self) {
        self.warn_parsed_options();
        let mut unsupported: Vec<(String, String)> = self
            .extra
            .iter()
            .filter(|(k, _)| !INTERPRETED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.join(" ")))
            .collect();
        unsupported.sort();
        for (key, value) in unsupported {
            if !harmless(&key, &value) {
                self.warn(&format!("{key} {value}: not supported, ignored"));
            }
        }
        self.warn_unknown_options();
    }

    fn warn_unknown_options(&mut self) {
        let ignore = self.params.ignore_unknown.clone().unwrap_or_default();
        let mut unknown: Vec<String> = self
            .params
            .ignored_fields
            .keys()
            .filter(|k| !ignore.iter().any(|i| i.eq_ignore_ascii_case(k)))
            .cloned()
            .collect();
        unknown.sort();
        for key in unknown {
            self.warn(&format!("unknown option {key}, ignored"));
        }
    }

    /// Options ssh2-config interprets but russh is not told about here.
    fn warn_parsed_options(&mut self) {
        let p = self.params;
        let mut set = Vec::new();
        if p.bind_address.is_some() {
            set.push("BindAddress");
        }
        if p.bind_interface.is_some() {
            set.push("BindInterface");
        }
        if p.certificate_file.is_some() {
            set.push("CertificateFile");
        }
        if p.add_keys_to_agent == Some(true) {
            set.push("AddKeysToAgent yes");
        }
        if p.forward_agent == Some(true) {
            set.push("ForwardAgent yes");
        }
        if p.compression == Some(true) {
            set.push("Compression yes");
        }
        if !p.remote_forward.is_empty() {
            set.push("RemoteForward");
        }
        if p.pubkey_authentication == Some(false) {
            set.push("PubkeyAuthentication no (public keys are the only method here)");
        }
        let algorithms = [
            (&p.ciphers, "Ciphers"),
            (&p.kex_algorithms, "KexAlgorithms"),
            (&p.mac, "MACs"),
            (&p.host_key_algorithms, "HostKeyAlgorithms"),
            (&p.pubkey_accepted_algorithms, "PubkeyAcceptedAlgorithms"),
            (&p.ca_signature_algorithms, "CASignatureAlgorithms"),
        ];
        for (algos, name) in algorithms {
            if !algos.is_default() {
                set.push(name);
            }
        }
        for option in set {
            self.warn(&format!("{option}: not supported, ignored"));
        }
    }
}

const USER_KH: &[&str] = &["~/.ssh/known_hosts", "~/.ssh/known_hosts2"];
const GLOBAL_KH: &[&str] = &["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];

/// Unsupported options whose value is what this layer does anyway.
fn harmless(key: &str, value: &str) -> bool {
    let value = value.to_ascii_lowercase();
    let off = matches!(value.as_str(), "no" | "false" | "none" | "off");
    match key {
        // We never prompt, whatever BatchMode says.
        "batchmode" => true,
        "requesttty" => off || value == "auto",
        "passwordauthentication"
        | "kbdinteractiveauthentication"
        | "challengeresponseauthentication"
        | "gssapiauthentication"
        | "hostbasedauthentication"
        | "checkhostip"
        | "controlmaster"
        | "controlpath"
        | "controlpersist"
        | "forwardx11"
        | "updatehostkeys"
        | "verifyhostkeydns"
        | "visualhostkey"
        | "proxycommand"
        | "addkeystoagent"
        | "exitonforwardfailure" => off,
        _ => false,
    }
}

fn nonzero(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

/// `[user@]host[:port]`, also `ssh://…` and `[v6addr]:port`.
fn parse_jump(spec: &str) -> Option<JumpHost> {
    let spec = spec.strip_prefix("ssh://").unwrap_or(spec);
    let (user, hostport) = match spec.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return None,
        None => (None, spec),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p.parse().ok()?)),
            None if after.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p.parse().ok()?)),
            _ => (hostport, None),
        }
    };
    (!host.is_empty()).then(|| JumpHost {
        user,
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClientSettings {
        ClientSettings {
            config_file: None,
            home: PathBuf::from("/home/ev"),
            local_user: "ev".into(),
            agent_socket: Some(PathBuf::from("/run/agent.sock")),
            default_connect_timeout: Some(Duration::from_secs(30)),
            max_startups: crate::MAX_STARTUPS,
        }
    }

    fn resolve(text: &str, alias: &str) -> HostConfig {
        SshConfig::from_text(text, settings())
            .unwrap()
            .resolve(alias)
            .unwrap()
    }

    const TESTBED: &str = "\
Host node1
    HostName 10.213.0.11
    User root
    Port 22
    IdentityFile /tmp/eventor-testbed/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    UserKnownHostsFile /tmp/eventor-testbed/known_hosts
    ConnectTimeout 5
    BatchMode yes
";

    #[test]
    fn testbed_block() {
        let h = resolve(TESTBED, "node1");
        assert_eq!(h.address(), "10.213.0.11:22");
        assert_eq!(h.user, "root");
        assert_eq!(
            h.identity_files,
            vec![PathBuf::from("/tmp/eventor-testbed/id_ed25519")]
        );
        assert!(h.identities_only);
        assert_eq!(h.strict_host_key_checking, StrictHostKeyChecking::Yes);
        assert_eq!(
            h.user_known_hosts_files,
            vec![PathBuf::from("/tmp/eventor-testbed/known_hosts")]
        );
        assert_eq!(h.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(h.identity_agent, Some(PathBuf::from("/run/agent.sock")));
        assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    }

    #[test]
    fn defaults_for_an_unlisted_host() {
        let h = resolve(TESTBED, "elsewhere");
        assert_eq!(h.host_name, "elsewhere");
        assert_eq!(h.user, "ev");
        assert_eq!(h.port, 22);
        assert_eq!(h.identity_files.len(), 7);
        assert_eq!(
            h.identity_files[3],
            PathBuf::from("/home/ev/.ssh/id_ed25519")
        );
        assert!(!h.identities_only);
        assert_eq!(h.strict_host_key_checking, StrictHostKeyChecking::Yes);
        assert_eq!(
            h.user_known_hosts_files[0],
            PathBuf::from("/home/ev/.ssh/known_hosts")
        );
        assert_eq!(h.global_known_hosts_files.len(), 2);
        assert_eq!(h.connect_timeout, Some(Duration::from_secs(30)));
        assert_eq!(h.server_alive_count_max, 3);
        assert!(h.tcp_keep_alive);
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let text = "\
Host web*
    User alice
    IdentityFile ~/.ssh/web_%h
Host *
    User nobody
    Port 2222
    IdentityFile ~/.ssh/id_ed25519
    ServerAliveInterval 10
    ServerAliveCountMax 5
    StrictHostKeyChecking accept-new
    UserKnownHostsFile ~/kh1 %d/kh2_%n
";
        let h = resolve(text, "web1");
        assert_eq!(h.user, "alice");
        assert_eq!(h.port, 2222);
        assert_eq!(
            h.identity_files,
            vec![
                PathBuf::from("/home/ev/.ssh/web_web1"),
                PathBuf::from("/home/ev/.ssh/id_ed25519")
            ]
        );
        assert_eq!(h.server_alive_interval, Some(Duration::from_secs(10)));
        assert_eq!(h.server_alive_count_max, 5);
        assert_eq!(h.strict_host_key_checking, StrictHostKeyChecking::AcceptNew);
        assert_eq!(
            h.user_known_hosts_files,
            vec![
                PathBuf::from("/home/ev/kh1"),
                PathBuf::from("/home/ev/kh2_web1")
            ]
        );
    }

    #[test]
    fn proxy_jump_forms() {
        let text =
            "Host t\n  ProxyJump bob@j1:2200,j2,[fe80::1]:22,ssh://j3\nHost u\n  ProxyJump none\n";
        let h = resolve(text, "t");
        let hops: Vec<String> = h.proxy_jump.iter().map(ToString::to_string).collect();
        assert_eq!(hops, ["bob@j1:2200", "j2", "[fe80::1]:22", "j3"]);
        assert!(resolve(text, "u").proxy_jump.is_empty());
        assert_eq!(parse_jump("@x"), None);
        assert_eq!(parse_jump("x:notaport"), None);
    }

    #[test]
    fn strict_values() {
        let get = |v: &str| {
            let text = format!("Host h\n  StrictHostKeyChecking {v}\n");
            SshConfig::from_text(&text, settings())
                .unwrap()
                .resolve("h")
                .map(|h| (h.strict_host_key_checking, h.warnings))
        };
        assert_eq!(get("no").unwrap().0, StrictHostKeyChecking::No);
        assert_eq!(get("off").unwrap().0, StrictHostKeyChecking::No);
        let (ask, warnings) = get("ask").unwrap();
        assert_eq!(ask, StrictHostKeyChecking::Yes);
        assert_eq!(warnings.len(), 1);
        let err = get("maybe").unwrap_err().to_string();
        assert_eq!(
            err,
            "h: bad StrictHostKeyChecking value \"maybe\": expected yes, accept-new, no or ask"
        );
    }

    #[test]
    fn unhonoured_options_are_reported() {
        let text = "\
Host h
    ForwardAgent yes
    ProxyCommand nc %h %p
    PasswordAuthentication no
    LocalForward 8080 localhost:80
    Ciphers aes128-ctr
    Frobnicate yes
    IgnoreUnknown Quux
    Quux 1
    IdentityAgent none
    UserKnownHostsFile none
    IdentityFile ~/.ssh/id_%Z
    IdentityFile ${EVENTOR_TEST_SURELY_UNSET}/k
    CertificateFile ~/c
";
        let h = resolve(text, "h");
        let w = h.warnings.join("\n");
        for needle in [
            "ForwardAgent yes",
            "proxycommand nc %h %p",
            "localforward 8080 localhost:80",
            "Ciphers",
            "unknown option Frobnicate",
            "token %Z",
            "IdentityFile: ${EVENTOR_TEST_SURELY_UNSET} is not set, kept as is",
            "CertificateFile",
        ] {
            assert!(w.contains(needle), "{needle} missing from:\n{w}");
        }
        assert!(!w.contains("password"), "{w}");
        assert!(!w.contains("Quux"), "{w}");
        assert_eq!(h.identity_agent, None);
        assert!(h.user_known_hosts_files.is_empty());
    }

    #[test]
    fn first_value_wins_within_a_block() {
        let text = "Port 1\nHost a\n  Port 2\n  port=3\n  IdentityFile x\n  IdentityFile y\nHost b\n  Port 4\n";
        let h = resolve(text, "a");
        assert_eq!(h.port, 1);
        let files = [PathBuf::from("x"), PathBuf::from("y")];
        assert_eq!(h.identity_files, files);
        assert!(h.warnings.is_empty(), "{:?}", h.warnings);
    }

    #[test]
    fn match_blocks_apply_only_when_they_match() {
        let text = "\
Host mx
    HostName %h.example.com
Match host 192.168.*
    User bob
    Port 2200
Match originalhost build-* !localuser nobody
    User builder
Match host *.example.com exec \"test %h = mx.example.com\"
    Port 2201
Host 10.0.0.5
    HostKeyAlias Via-Final
Match final
    ConnectTimeout 7
";
        let mx = resolve(text, "mx");
        assert_eq!((mx.user.as_str(), mx.port), ("ev", 2201));
        assert_eq!(mx.connect_timeout, Some(Duration::from_secs(7)));
        let build = resolve(text, "build-1");
        assert_eq!((build.user.as_str(), build.port), ("builder", 22));
        let lan = resolve(
            "Host lan\n  HostName 192.168.1.2\n".to_string().as_str(),
            "lan",
        );
        assert_eq!(lan.user, "ev");
        let lan = resolve(&format!("Host lan\n  HostName 192.168.1.2\n{text}"), "lan");
        assert_eq!((lan.user.as_str(), lan.port), ("bob", 2200));
        // In the final pass Host lines match the host name, not the alias.
        let via = resolve(&format!("Host v\n  HostName 10.0.0.5\n{text}"), "v");
        assert_eq!(via.host_key_alias.as_deref(), Some("via-final"));
    }

    #[test]
    fn bad_match_lines_are_errors() {
        for (text, reason) in [
            ("Match\n", "no criteria"),
            ("Match host\n", "`host` needs an argument"),
            (
                "Match all host x\n",
                "`all` cannot be combined with other criteria",
            ),
            ("Match frob x\n", "unsupported criterion `frob`"),
        ] {
            let err = SshConfig::from_text(text, settings()).unwrap().resolve("h");
            let err = err.unwrap_err().to_string();
            assert_eq!(
                err,
                format!("ssh config <text>:1: bad Match line: {reason}")
            );
        }
    }

    #[test]
    fn missing_default_config_is_empty_but_named_one_is_an_error() {
        let mut s = settings();
        s.home = PathBuf::from("/nonexistent-home");
        assert!(SshConfig::load(s.clone()).is_ok());
        s.config_file = Some(PathBuf::from("/nonexistent-home/cfg"));
        let err = SshConfig::load(s).unwrap_err();
        assert_eq!(err.to_string(), "reading ssh config /nonexistent-home/cfg");
    }
}
