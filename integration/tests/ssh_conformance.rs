//! Our ssh_config resolution (`eventor_ssh::SshConfig::resolve`) side by side with
//! OpenSSH's own (`ssh -G -F FILE ALIAS`, which does no network I/O) over a corpus of
//! configurations: Host and Match forms, Include, tokens, `~`, accumulating and
//! first-wins options. Each compared field must be equal, or our resolution must carry
//! a warning naming the option it does not honour. Needs only the `ssh` client.
//!
//! ssh expands `~` and `%d` with the passwd entry's home, never `$HOME`, so both sides
//! use that home; the files an Include finds relative to `~/.ssh` go to a uniquely
//! named folder there, removed afterwards.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use eventor_ssh::{ClientSettings, HostConfig, SshConfig, StrictHostKeyChecking};

/// One configuration: its text, the files it includes, and the aliases resolved.
/// In texts, `{dir}` is a scratch folder, `{rel}` the folder under `~/.ssh`, `{me}` the
/// local user. Include files named `~/…` go under that `~/.ssh` folder.
struct Case {
    name: &'static str,
    config: &'static str,
    files: &'static [(&'static str, &'static str)],
    aliases: &'static [&'static str],
}

const fn case(name: &'static str, config: &'static str, aliases: &'static [&'static str]) -> Case {
    Case {
        name,
        config,
        files: &[],
        aliases,
    }
}

const CORPUS: &[Case] = &[
    case("host basic", "Host web\n  HostName web.example.com\n  User alice\n  Port 2222\n", &["web", "other"]),
    case("host wildcards", "Host web-? db*\n  User w\nHost *.lan\n  Port 23\n", &["web-1", "web-12", "db9", "x.lan"]),
    case("host negation", "Host *.corp !bastion.corp\n  User corp\nHost *\n  User anyone\n", &["a.corp", "bastion.corp"]),
    case("first match wins", "Host a\n  Port 1\nHost a b\n  Port 2\n  User ab\nHost *\n  Port 3\n  User star\n", &["a", "b", "c"]),
    case("port and user from Host * after a specific block", "Host specific\n  HostName 10.1.1.1\nHost *\n  Port 2200\n  User deploy\n", &["specific", "other"]),
    case("equals syntax", "Host=eq\n  HostName=eq.example\n  Port = 2022\n  User= bob\n", &["eq"]),
    case("quoted values", "Host \"quoted\"\n  HostName \"q.example\"\n  User \"q\"\n  IdentityFile \"{dir}/my key\"\n", &["quoted"]),
    case("case-insensitive keywords", "HOST ci\n  hostname CI.Example.COM\n  USER Up\n  pOrT 2200\n  IDENTITYFILE ~/.ssh/ci\n", &["ci"]),
    case("HostName %h", "Host *.short\n  HostName %h.example.com\n", &["a.short"]),
    case("alias case", "Host MixedCase\n  Port 2\nHost mixedcase\n  Port 3\n", &["MixedCase", "mixedcase"]),
    case("addresses", "Host ip\n  HostName 10.0.0.1\nHost v6\n  HostName fe80::1\n", &["ip", "v6"]),
    case("first value wins within a block", "Host a\n  Port 1\n  Port 2\n  User one\n  User two\n", &["a"]),
    case("options before any Host", "User globaluser\nPort 2020\nHost g\n  User guser\n  Port 2021\n", &["g"]),
    case("comments", "# comment\n\nHost c # trailing\n  User cu\n", &["c"]),
    case("Match host after Host (the issue)", "Host mx\n  HostName mx.example.com\nMatch host 192.168.*\n  User bob\n  Port 2200\nHost lan\n  HostName 192.168.1.9\nMatch host 192.168.*\n  User carol\n", &["mx", "lan"]),
    case("Match originalhost", "Match originalhost build-*\n  User builder\nHost *\n  User other\n", &["build-1", "web"]),
    case("Match originalhost case", "Match originalhost BUILD-*\n  Port 2001\n", &["build-1", "Build-2"]),
    case("Match user", "Host u1\n  User admin\nMatch user admin\n  Port 2201\nMatch user !admin\n  Port 2202\n", &["u1", "u2"]),
    case("Match localuser", "Match localuser {me}\n  Port 2300\nMatch localuser nobody\n  User nobody\n", &["x"]),
    case("Match all", "Host a\n  User a\nMatch all\n  Port 2400\n  User all\n", &["a", "b"]),
    case("Match !host", "Match !host *.internal\n  User outside\n", &["x.internal", "x.external"]),
    case("Match with several criteria", "Match host *.example.com user bob\n  Port 2500\nHost *.example.com\n  User bob\nMatch host *.example.com user bob\n  Port 2501\n", &["a.example.com", "b"]),
    case("Match host after Host *", "Match host *.a\n  User ma\nHost x.a\n  User hx\n", &["x.a", "y.b"]),
    case("Match exec", "Host web\n  HostName web.example.com\nMatch exec \"test %h = web.example.com\"\n  Port 2600\nMatch exec \"exit 1\"\n  User never\nMatch exec true\n  User always\n", &["web", "other"]),
    case("Match exec tokens", "Host t\n  HostName t.example\n  User tu\n  Port 2700\n  HostKeyAlias tka\nMatch exec \"test %n = t\" exec \"test %h = t.example\" exec \"test %p = 2700\" exec \"test %r = tu\" exec \"test %u = {me}\" exec \"test %d = $HOME_DIR\" exec \"test %k = tka\" exec \"test %i = $(id -u)\" exec \"test %% = %%\"\n  ConnectTimeout 11\nMatch exec \"test %l = $(cat /proc/sys/kernel/hostname) && test %L = $(cut -d. -f1 /proc/sys/kernel/hostname)\"\n  ConnectTimeout 12\n", &["t"]),
    case("Match exec %C", "Host c\n  HostName c.example\n  User cu\nMatch exec \"test %C = $(printf %%s %l%h%p%r | sha1sum | cut -c1-40)\"\n  Port 2701\n", &["c"]),
    case("Match !exec", "Match !exec false\n  Port 2800\nMatch host nomatch exec \"exit 0\"\n  User skipped\n", &["x"]),
    case("Match final", "Host f\n  HostName 10.0.0.5\nMatch final\n  Port 2022\nHost 10.0.0.5\n  User viafinal\n  HostName other\n", &["f", "g"]),
    case("Match final sees the lowercased name", "Host up\n  HostName UP.Example\nMatch final host up.example\n  User lower\n", &["up"]),
    case("Match canonical", "Match canonical\n  User canon\nMatch final\n  Port 2900\n", &["x"]),
    case("Match canonical without a final pass", "Match canonical\n  User canon\n", &["x"]),
    case("CanonicalizeHostname", "CanonicalizeHostname yes\nMatch canonical\n  User canon\n", &["nodots"]),
    Case {
        name: "Match in an Include does not leak",
        config: "Host a\n  Include {dir}/leak.conf\n  Port 3000\n",
        files: &[("leak.conf", "Match host nothing\n  User x\n")],
        aliases: &["a", "b"],
    },
    Case {
        name: "Include absolute with a glob",
        config: "Include {dir}/inc/*.conf\nHost *\n  User star\n",
        files: &[("inc/10-a.conf", "Host a\n  User from10\n"), ("inc/20-b.conf", "Host a b\n  Port 3100\n"), ("inc/.hidden.conf", "Host *\n  Port 1\n")],
        aliases: &["a", "b", "c"],
    },
    Case {
        name: "Include relative to ~/.ssh",
        config: "Include {rel}/rel.conf\n",
        files: &[("~/rel.conf", "Host r\n  Port 3200\n")],
        aliases: &["r", "s"],
    },
    Case {
        name: "Include ~/ with a glob",
        config: "Include ~/.ssh/{rel}/t*.conf\n",
        files: &[("~/tilde.conf", "Host t\n  User tilde\n"), ("~/tz.conf", "Host t\n  User second\n  Port 3201\n")],
        aliases: &["t"],
    },
    Case {
        name: "Include under an inactive Host",
        config: "Host nomatch\n  Include {dir}/inactive.conf\nHost *\n  User star\n",
        files: &[("inactive.conf", "Host *\n  User leaked\n")],
        aliases: &["x"],
    },
    Case {
        name: "Include nested",
        config: "Include {dir}/outer.conf\n",
        files: &[("outer.conf", "Include {dir}/inner.conf\nHost o\n  Port 3300\n"), ("inner.conf", "Host o\n  User inner\n")],
        aliases: &["o"],
    },
    case("tokens in IdentityFile", "Host tok\n  HostName tok.example\n  User tu\n  Port 2022\n  IdentityFile ~/.ssh/id_%h_%p_%r_%n\n  IdentityFile %d/keys/%u_%l_%L_%i_%%\n  IdentityFile /k/%C_%k\n", &["tok"]),
    case("tokens in UserKnownHostsFile", "Host tk\n  HostName tk.example\n  HostKeyAlias TKA\n  UserKnownHostsFile ~/kh_%h_%p_%r_%n_%u_%d_%l_%L_%i_%k_%% /kh/%C\n", &["tk"]),
    case("IdentityFile and CertificateFile accumulate", "Host acc\n  IdentityFile ~/.ssh/one\n  IdentityFile ~/.ssh/two\n  CertificateFile ~/.ssh/one-cert.pub\n  CertificateFile ~/.ssh/two-cert.pub\nHost *\n  IdentityFile ~/.ssh/three\n", &["acc", "other"]),
    case("IdentityAgent", "Host n\n  IdentityAgent none\nHost s\n  IdentityAgent SSH_AUTH_SOCK\nHost p\n  IdentityAgent ~/agent-%r.sock\n", &["n", "s", "p", "q"]),
    case("UserKnownHostsFile none and several", "Host n\n  UserKnownHostsFile none\nHost m\n  UserKnownHostsFile ~/a {dir}/b /c\nHost m\n  UserKnownHostsFile /ignored\n", &["n", "m"]),
    case("StrictHostKeyChecking values", "Host y\n  StrictHostKeyChecking yes\nHost n\n  StrictHostKeyChecking no\nHost an\n  StrictHostKeyChecking accept-new\nHost ask\n  StrictHostKeyChecking ask\nHost off\n  StrictHostKeyChecking off\n", &["y", "n", "an", "ask", "off", "unset"]),
    case("HostKeyAlias", "Host hka\n  HostName 10.9.9.9\n  HostKeyAlias Cluster-Node\n", &["hka", "none"]),
    case("ProxyJump chains and none", "Host pj\n  ProxyJump bob@j1:2200,j2,[fe80::1]:22,carol@[2001:db8::2]\nHost pn\n  ProxyJump none\nHost *\n  ProxyJump default\n", &["pj", "pn", "other"]),
    case("ProxyJump ssh:// form", "Host pu\n  ProxyJump ssh://dave@jump.example:2222\n", &["pu"]),
    case("ConnectTimeout", "Host t5\n  ConnectTimeout 5\nHost t0\n  ConnectTimeout 0\nHost *\n  ConnectTimeout 9\n", &["t5", "t0", "other"]),
    case("${VAR} in IdentityFile", "Host env\n  IdentityFile ${HOME}/.ssh/env_key\n", &["env"]),
    case("bad token and bad Match are refused by both", "Host a\n  UserKnownHostsFile /kh/%Z\nMatch host\n  User x\n", &["a"]),
    case("~ paths", "Host tl\n  IdentityFile ~/.ssh/tl\n  UserKnownHostsFile ~/.ssh/kh ~/kh2\n", &["tl"]),
];

/// The fields compared, as `ssh -G` names them.
const FIELDS: [&str; 10] = [
    "hostname",
    "port",
    "user",
    "identityfile",
    "proxyjump",
    "userknownhostsfile",
    "stricthostkeychecking",
    "connecttimeout",
    "hostkeyalias",
    "identityagent",
];

/// The local facts both sides see: passwd name and home, host name, uid.
struct Local {
    user: String,
    home: PathBuf,
    host: String,
    uid: u32,
    agent: Option<PathBuf>,
}

impl Local {
    fn get() -> Local {
        let uid = std::fs::metadata("/proc/self").unwrap().uid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let entry = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[2] == uid.to_string())
            .expect("our uid has a passwd entry");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        Local {
            user: entry[0].to_string(),
            home: PathBuf::from(entry[5]),
            host: host.trim().to_string(),
            uid,
            agent: std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        }
    }

    fn settings(&self, config: &Path) -> ClientSettings {
        ClientSettings {
            config_file: Some(config.to_path_buf()),
            home: self.home.clone(),
            local_user: self.user.clone(),
            agent_socket: self.agent.clone(),
            default_connect_timeout: None,
            max_startups: eventor_ssh::MAX_STARTUPS,
        }
    }
}

/// A uniquely named folder under the real `~/.ssh`, removed (with `~/.ssh` if we made it).
struct SshDirFolder {
    path: PathBuf,
    made_ssh_dir: Option<PathBuf>,
}

impl SshDirFolder {
    fn new(home: &Path) -> SshDirFolder {
        let ssh_dir = home.join(".ssh");
        let made_ssh_dir = (!ssh_dir.exists()).then(|| ssh_dir.clone());
        let path = ssh_dir.join(format!("eventor-conformance-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        SshDirFolder { path, made_ssh_dir }
    }
}

impl Drop for SshDirFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
        if let Some(dir) = &self.made_ssh_dir {
            let _ = std::fs::remove_dir(dir); // only when empty
        }
    }
}

/// What one side says about one field, normalized to a comparable string.
type Fields = BTreeMap<&'static str, String>;

#[test]
fn resolution_matches_openssh() {
    if Command::new("ssh").arg("-V").output().is_err() {
        let msg = "ssh_conformance: no `ssh` client (apt-get install -y openssh-client)";
        assert!(
            std::env::var("EVENTOR_REQUIRE_TESTBED").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("{msg}: skipped");
        return;
    }
    let local = Local::get();
    let scratch = tempfile::tempdir().unwrap();
    let sshdir = SshDirFolder::new(&local.home);
    let (mut compared, mut resolutions) = (0, 0);
    let mut unexplained = Vec::new();
    let mut explained = Vec::new();
    for (index, case) in CORPUS.iter().enumerate() {
        let dir = scratch.path().join(index.to_string());
        let config = write_case(case, &dir, &sshdir.path, &local);
        for alias in case.aliases {
            let ours = SshConfig::load(local.settings(&config)).and_then(|c| c.resolve(alias));
            resolutions += 1;
            let (theirs, ours) = match (openssh(&config, alias, &local), ours) {
                (Ok(theirs), Ok(ours)) => (theirs, ours),
                (Err(_), Err(_)) => continue, // both refuse the configuration
                (theirs, ours) => panic!("{} / {alias}: ssh {theirs:?}, ours {ours:?}", case.name),
            };
            let mine = our_fields(&ours);
            for field in FIELDS {
                compared += 1;
                let (expected, got) = (&theirs[field], &mine[field]);
                if got == expected {
                    continue;
                }
                let diff = format!(
                    "{} / {alias}: {field}: ssh {expected:?}, ours {got:?}",
                    case.name
                );
                match ours
                    .warnings
                    .iter()
                    .find(|w| w.to_lowercase().contains(field))
                {
                    Some(w) => explained.push(format!("{diff} (warning: {w})")),
                    None => unexplained.push(diff),
                }
            }
        }
    }
    eprintln!(
        "ssh_conformance: {} configurations, {resolutions} resolutions, {compared} fields compared",
        CORPUS.len()
    );
    for d in &explained {
        eprintln!("  differs, with a warning: {d}");
    }
    assert!(CORPUS.len() >= 40);
    assert!(
        unexplained.is_empty(),
        "differences without a warning:\n{}",
        unexplained.join("\n")
    );
}

/// Writes the case's config and included files; returns the config's path.
fn write_case(case: &Case, dir: &Path, sshdir: &Path, local: &Local) -> PathBuf {
    let rel = sshdir.file_name().unwrap().to_string_lossy().into_owned();
    let fill = |text: &str| {
        text.replace("{dir}", &dir.to_string_lossy())
            .replace("{rel}", &rel)
            .replace("{me}", &local.user)
            .replace("$HOME_DIR", &local.home.to_string_lossy())
    };
    for (name, text) in case.files {
        let path = match name.strip_prefix("~/") {
            Some(rest) => sshdir.join(rest),
            None => dir.join(name),
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, fill(text)).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("config");
    std::fs::write(&config, fill(case.config)).unwrap();
    config
}

/// `ssh -G -F config alias`, reduced to the compared fields; `Err` when ssh refuses.
fn openssh(config: &Path, alias: &str, local: &Local) -> Result<Fields, String> {
    let text = ssh_g(config, alias)?;
    let mut raw: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        raw.entry(key).or_default().push(value);
    }
    Ok(normalize(&raw, alias, local))
}

fn ssh_g(config: &Path, alias: &str) -> Result<String, String> {
    let out = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(alias)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// ssh's printed values in the form [`our_fields`] gives ours.
fn normalize(raw: &BTreeMap<&str, Vec<&str>>, alias: &str, local: &Local) -> Fields {
    let one = |key: &str| raw.get(key).map(|v| v[0].to_string());
    let mut fields = Fields::new();
    let host = one("hostname").unwrap();
    let (port, user) = (one("port").unwrap(), one("user").unwrap());
    let key_alias = one("hostkeyalias");
    let tokens = Tokens {
        alias,
        host: &host,
        port: &port,
        user: &user,
        key_alias: key_alias.as_deref().unwrap_or(&host),
        local,
    };
    // ssh -G prints identity files as written; ssh expands them only when it loads them.
    let identities: Vec<String> = raw["identityfile"]
        .iter()
        .map(|f| tokens.expand(f))
        .collect();
    fields.insert("identityfile", identities.join("\n"));
    let kh = one("userknownhostsfile").unwrap();
    fields.insert(
        "userknownhostsfile",
        if kh == "none" {
            String::new()
        } else {
            kh.split(' ').collect::<Vec<_>>().join("\n")
        },
    );
    fields.insert(
        "proxyjump",
        one("proxyjump").map(|p| jumps_of(&p)).unwrap_or_default(),
    );
    let strict = one("stricthostkeychecking").unwrap();
    fields.insert("stricthostkeychecking", strict_meaning(&strict).to_string());
    let timeout = one("connecttimeout").filter(|t| t != "none" && t != "0");
    fields.insert("connecttimeout", timeout.unwrap_or_default());
    fields.insert("hostkeyalias", key_alias.clone().unwrap_or_default());
    let agent = agent_meaning(one("identityagent").as_deref(), local);
    fields.insert("identityagent", agent.unwrap_or_default());
    fields.insert("hostname", host);
    fields.insert("port", port);
    fields.insert("user", user);
    fields
}

fn strict_meaning(printed: &str) -> &'static str {
    match printed {
        // Without a terminal `ask` can only refuse, which is what `yes` does.
        "true" | "ask" => "yes",
        "false" => "no",
        "accept-new" => "accept-new",
        other => panic!("stricthostkeychecking {other}"),
    }
}

/// The socket ssh would use: unset and `SSH_AUTH_SOCK` both mean the variable.
fn agent_meaning(printed: Option<&str>, local: &Local) -> Option<String> {
    match printed {
        None | Some("SSH_AUTH_SOCK") => local
            .agent
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
        Some("none") => None,
        Some(path) => Some(path.to_string()),
    }
}

/// `[user@]host[:port]` hops as `user@host:port` lines (ssh -G prints them as written).
fn jumps_of(spec: &str) -> String {
    let hop = |h: &str| {
        let h = h.strip_prefix("ssh://").unwrap_or(h);
        let (user, rest) = h.rsplit_once('@').map_or(("", h), |(u, r)| (u, r));
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').unwrap();
                (host, after.strip_prefix(':').unwrap_or(""))
            }
            None => rest.split_once(':').unwrap_or((rest, "")),
        };
        format!("{user}@{host}:{port}")
    };
    spec.split(',').map(hop).collect::<Vec<_>>().join("\n")
}

/// The test's own `%` expansion for ssh's unexpanded identity files, from ssh's values.
struct Tokens<'a> {
    alias: &'a str,
    host: &'a str,
    port: &'a str,
    user: &'a str,
    key_alias: &'a str,
    local: &'a Local,
}

impl Tokens<'_> {
    fn expand(&self, raw: &str) -> String {
        let home = self.local.home.to_string_lossy();
        let raw = match raw.strip_prefix("~/") {
            Some(rest) => format!("{home}/{rest}"),
            None => raw.to_string(),
        };
        // ssh substitutes `${VAR}` from its environment (the test's).
        let raw = match raw.split_once("${") {
            Some((before, rest)) => {
                let (var, after) = rest.split_once('}').unwrap();
                format!("{before}{}{after}", std::env::var(var).unwrap_or_default())
            }
            None => raw,
        };
        let mut out = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let short = self.local.host.split('.').next().unwrap();
            match chars.next() {
                Some('%') => out.push('%'),
                Some('h') => out.push_str(self.host),
                Some('p') => out.push_str(self.port),
                Some('r') => out.push_str(self.user),
                Some('n') => out.push_str(self.alias),
                Some('d') => out.push_str(&home),
                Some('u') => out.push_str(&self.local.user),
                Some('l') => out.push_str(&self.local.host),
                Some('L') => out.push_str(short),
                Some('i') => out.push_str(&self.local.uid.to_string()),
                Some('k') => out.push_str(self.key_alias),
                Some('C') => out.push_str(&self.connection_hash()),
                other => panic!("token %{other:?} in {raw}"),
            }
        }
        out
    }

    /// `%C`, computed by sha1sum(1) rather than by the code under test.
    fn connection_hash(&self) -> String {
        let input = format!("{}{}{}{}", self.local.host, self.host, self.port, self.user);
        let out = Command::new("sh")
            .arg("-c")
            .arg("printf %s \"$1\" | sha1sum")
            .arg("sh")
            .arg(input)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)[..40].to_string()
    }
}

/// Our resolution in the same normalized form as [`openssh`].
fn our_fields(h: &HostConfig) -> Fields {
    let paths = |p: &[PathBuf]| {
        let lines: Vec<String> = p.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        lines.join("\n")
    };
    let hop = |j: &eventor_ssh::JumpHost| {
        let port = j.port.map(|p| p.to_string()).unwrap_or_default();
        format!("{}@{}:{port}", j.user.as_deref().unwrap_or(""), j.host)
    };
    let jumps: Vec<String> = h.proxy_jump.iter().map(hop).collect();
    let strict = match h.strict_host_key_checking {
        StrictHostKeyChecking::Yes => "yes",
        StrictHostKeyChecking::No => "no",
        StrictHostKeyChecking::AcceptNew => "accept-new",
    };
    let secs = |d: Duration| d.as_secs().to_string();
    Fields::from([
        ("hostname", h.host_name.clone()),
        ("port", h.port.to_string()),
        ("user", h.user.clone()),
        ("identityfile", paths(&h.identity_files)),
        ("proxyjump", jumps.join("\n")),
        ("userknownhostsfile", paths(&h.user_known_hosts_files)),
        ("stricthostkeychecking", strict.to_string()),
        (
            "connecttimeout",
            h.connect_timeout.map(secs).unwrap_or_default(),
        ),
        ("hostkeyalias", h.host_key_alias.clone().unwrap_or_default()),
        (
            "identityagent",
            h.identity_agent
                .as_ref()
                .map(|p| paths(std::slice::from_ref(p)))
                .unwrap_or_default(),
        ),
    ])
}
