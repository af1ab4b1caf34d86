//! Which ssh_config lines apply to one host, decided as OpenSSH's readconf.c decides:
//! lines in file order, `Host` and `Match` lines switching the following lines on or
//! off, the first value of an option winning (IdentityFile and a few others
//! accumulate), and a second, "final" pass over the whole file when a `Match final`
//! asks for one or CanonicalizeHostname is on. The result is the applicable lines as
//! written, for ssh2-config to interpret their values.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use super::config_file::{wildcard, Item, Line};
use super::error::SshError;
use super::settings::ClientSettings;
use super::tokens::TokenValues;

/// Options that accumulate instead of the first value winning.
const REPEATABLE: [&str; 6] = [
    "identityfile",
    "certificatefile",
    "localforward",
    "remoteforward",
    "dynamicforward",
    "sendenv",
];

/// The lines that apply to a host, in order, and what could not be done as OpenSSH would.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
}

/// Evaluates `items` for `alias` (the name as typed).
pub(crate) fn applicable(
    items: &[Item],
    alias: &str,
    settings: &ClientSettings,
) -> Result<Applied, SshError> {
    let mut eval = Eval::new(alias, settings);
    eval.pass(items, &mut true, false)?;
    if eval.want_final || eval.canonicalize {
        eval.start_final_pass();
        eval.pass(items, &mut true, false)?;
    }
    if eval.canonicalize {
        eval.applied.warnings.push(
            "CanonicalizeHostname: host names are not canonicalized here (no DNS search); \
             `Match canonical` was evaluated on the name as given"
                .to_string(),
        );
    }
    Ok(eval.applied)
}

/// One resolution in progress: the first values so far of the options Match reads.
struct Eval<'a> {
    alias: &'a str,
    settings: &'a ClientSettings,
    final_pass: bool,
    want_final: bool,
    canonicalize: bool,
    /// What `Host` lines match against: the alias, then in the final pass the host name.
    host_pattern_target: String,
    host_name: Option<String>,
    user: Option<String>,
    port: Option<String>,
    host_key_alias: Option<String>,
    seen: HashSet<String>,
    applied: Applied,
}

impl<'a> Eval<'a> {
    fn new(alias: &'a str, settings: &'a ClientSettings) -> Eval<'a> {
        Eval {
            alias,
            settings,
            final_pass: false,
            want_final: false,
            canonicalize: false,
            host_pattern_target: alias.to_string(),
            host_name: None,
            user: None,
            port: None,
            host_key_alias: None,
            seen: HashSet::new(),
            applied: Applied::default(),
        }
    }

    /// As ssh.c between its passes: the host name becomes final (expanded, lowercased),
    /// so HostName lines of the final pass no longer change it.
    fn start_final_pass(&mut self) {
        let name = final_host_name(self.host_name.as_deref(), self.alias);
        if self.seen.insert("hostname".to_string()) {
            self.applied.lines.push(format!("HostName {name}"));
        }
        self.host_name = Some(name.clone());
        self.host_pattern_target = name;
        self.final_pass = true;
    }

    /// `active` is the enclosing Host/Match state; `never` is an Include under an
    /// inactive block, whose own Host/Match lines can never switch anything on.
    fn pass(&mut self, items: &[Item], active: &mut bool, never: bool) -> Result<(), SshError> {
        for item in items {
            match item {
                Item::Host(line) => *active = !never && self.host_line(&line.args),
                Item::Match(line) => *active = self.match_line(line)? && !never,
                Item::Setting(line) if *active => self.apply(line),
                Item::Setting(_) => {}
                Item::Include(files) => {
                    // A Match inside an included file does not leak out of it.
                    let outer = *active;
                    for file in files {
                        self.pass(file, active, never || !outer)?;
                        *active = outer;
                    }
                }
            }
        }
        Ok(())
    }

    /// `Host` patterns: case-sensitive, any `!pattern` that matches vetoes the line.
    fn host_line(&self, patterns: &[String]) -> bool {
        let mut hit = false;
        for pattern in patterns {
            let (negated, pattern) = negation(pattern);
            if wildcard(pattern, &self.host_pattern_target) {
                if negated {
                    return false;
                }
                hit = true;
            }
        }
        hit
    }

    fn apply(&mut self, line: &Line) {
        let key = line.keyword.as_str();
        if !REPEATABLE.contains(&key) && !self.seen.insert(key.to_string()) {
            return;
        }
        let first = line.args.first().cloned();
        match key {
            "hostname" => self.host_name = first,
            "user" => self.user = first,
            "port" => self.port = first,
            "hostkeyalias" => self.host_key_alias = first,
            "canonicalizehostname" => {
                self.canonicalize = first.is_some_and(|v| !v.eq_ignore_ascii_case("no"));
            }
            _ => {}
        }
        self.applied.lines.push(line.text.clone());
    }

    /// All criteria of a `Match` line must hold (OpenSSH's match_cfg_line).
    fn match_line(&mut self, line: &Line) -> Result<bool, SshError> {
        let bad = |reason: &str| SshError::ConfigMatch {
            at: line.at.to_string(),
            reason: reason.to_string(),
        };
        let mut args = line.args.iter();
        let (mut result, mut criteria) = (true, 0);
        while let Some(raw) = args.next() {
            let (negated, criterion) = negation(raw);
            let criterion = criterion.to_ascii_lowercase();
            if criterion == "all" {
                if criteria > 0 || args.next().is_some() {
                    return Err(bad("`all` cannot be combined with other criteria"));
                }
                return Ok(result && !negated);
            }
            criteria += 1;
            let holds = match criterion.as_str() {
                "final" | "canonical" => {
                    self.want_final |= criterion == "final";
                    self.final_pass
                }
                _ => {
                    let Some(arg) = args.next() else {
                        return Err(bad(&format!("`{criterion}` needs an argument")));
                    };
                    if criterion == "exec" && !result {
                        continue; // OpenSSH skips a command once the line has failed
                    }
                    self.criterion(&criterion, arg, line)?
                }
            };
            result &= holds != negated;
        }
        if criteria == 0 {
            return Err(bad("no criteria"));
        }
        Ok(result)
    }

    fn criterion(&self, criterion: &str, arg: &str, line: &Line) -> Result<bool, SshError> {
        let local_user = self.settings.local_user.as_str();
        Ok(match criterion {
            "host" => pattern_list(&self.match_host().to_ascii_lowercase(), arg, true),
            "originalhost" => pattern_list(&self.alias.to_ascii_lowercase(), arg, true),
            "user" => pattern_list(self.user.as_deref().unwrap_or(local_user), arg, false),
            "localuser" => pattern_list(local_user, arg, false),
            "exec" => self.exec(arg, line)?,
            other => {
                return Err(SshError::ConfigMatch {
                    at: line.at.to_string(),
                    reason: format!("unsupported criterion `{other}`"),
                })
            }
        })
    }

    /// The target host name as resolved so far: HostName (its `%h` expanded) or the alias.
    fn match_host(&self) -> String {
        match &self.host_name {
            Some(name) if !self.final_pass => expand_h(name, self.alias),
            Some(name) => name.clone(),
            None => self.alias.to_string(),
        }
    }

    /// `Match exec`: the command, tokens expanded, run by the user's shell as ssh runs
    /// it (`$SHELL -c`, stdin and stdout on /dev/null); it holds when it exits 0.
    fn exec(&self, arg: &str, line: &Line) -> Result<bool, SshError> {
        let command = self
            .exec_tokens()
            .expand(arg)
            .map_err(|token| SshError::ConfigMatch {
                at: line.at.to_string(),
                reason: format!("Match exec: unknown token %{token}"),
            })?;
        let failed = |source| SshError::MatchExec {
            at: line.at.to_string(),
            command: command.clone(),
            source,
        };
        let shell = std::env::var("SHELL").ok().filter(|s| !s.is_empty());
        let status = Command::new(shell.as_deref().unwrap_or("/bin/sh"))
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(failed)?;
        match status.code() {
            Some(code) => Ok(code == 0),
            None => Err(failed(std::io::Error::other("killed by a signal"))),
        }
    }

    fn exec_tokens(&self) -> TokenValues {
        let host = self.match_host();
        TokenValues {
            alias: self.alias.to_string(),
            port: self.port.clone().unwrap_or_else(|| "22".to_string()),
            user: self
                .user
                .clone()
                .unwrap_or(self.settings.local_user.clone()),
            local_user: self.settings.local_user.clone(),
            home: self.settings.home.to_string_lossy().into_owned(),
            key_alias: self.host_key_alias.clone().unwrap_or(host.clone()),
            host,
        }
    }
}

fn negation(pattern: &str) -> (bool, &str) {
    match pattern.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, pattern),
    }
}

/// OpenSSH's match_pattern_list: comma-separated, a matching `!pattern` vetoes.
fn pattern_list(subject: &str, list: &str, lowercase: bool) -> bool {
    let mut hit = false;
    for pattern in list.split(',') {
        let (negated, pattern) = negation(pattern);
        let pattern = match lowercase {
            true => pattern.to_ascii_lowercase(),
            false => pattern.to_string(),
        };
        if wildcard(&pattern, subject) {
            if negated {
                return false;
            }
            hit = true;
        }
    }
    hit
}

/// HostName's own expansion: only `%h` (the alias) and `%%`.
pub(crate) fn expand_h(name: &str, alias: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('%', Some('h')) => out.push_str(alias),
            ('%', Some('%')) => out.push('%'),
            _ => {
                out.push(c);
                continue;
            }
        }
        chars.next();
    }
    out
}

/// The host name ssh connects to: HostName expanded, lowercased unless an address.
pub(crate) fn final_host_name(host_name: Option<&str>, alias: &str) -> String {
    let name = host_name.map_or(alias.to_string(), |h| expand_h(h, alias));
    match name.parse::<std::net::IpAddr>() {
        Ok(_) => name,
        Err(_) => name.to_ascii_lowercase(),
    }
}
