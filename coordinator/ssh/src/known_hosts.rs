//! known_hosts files: parsing (plain, `[host]:port`, comma lists, wildcards, hashed
//! `|1|salt|hash` names, `@revoked`), looking a host key up, and learning a new one.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use data_encoding::BASE64_MIME;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey, PublicKeyBase64};
use sha1::Sha1;

/// The name a host is filed under: `host` on port 22, `[host]:port` otherwise
/// (what OpenSSH writes and looks up).
pub fn host_key_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Every usable line of one or more known_hosts files, with what could not be used.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Lines skipped, as `FILE:LINE: reason`.
    pub warnings: Vec<String>,
}

/// One known_hosts line.
#[derive(Debug, Clone)]
struct Entry {
    location: Location,
    revoked: bool,
    names: Vec<NamePattern>,
    /// The decoded key blob, compared byte for byte with the presented key.
    blob: Vec<u8>,
    /// The key type as written on the line, for messages when the blob won't parse.
    key_type: String,
}

/// Where a line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone)]
enum NamePattern {
    Plain { pattern: String, negated: bool },
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// What the files say about a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds exactly this key.
    Match(Location),
    /// The key is listed as `@revoked` for this host.
    Revoked(Location),
    /// The host is known, but with another key (possibly of another algorithm).
    Changed {
        location: Location,
        recorded: String,
    },
    /// No line names this host.
    Unknown,
}

impl KnownHosts {
    /// Reads and parses each file; a missing file counts as empty.
    /// A file that exists but cannot be read is an error naming it.
    pub fn load(files: &[PathBuf]) -> Result<KnownHosts, (PathBuf, std::io::Error)> {
        let mut known = KnownHosts::default();
        for file in files {
            match std::fs::read(file) {
                Ok(bytes) => known.add_text(file, &String::from_utf8_lossy(&bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err((file.clone(), e)),
            }
        }
        Ok(known)
    }

    /// Parses one file's text; lines that cannot be used become warnings.
    pub fn add_text(&mut self, file: &Path, text: &str) {
        let file: Arc<Path> = Arc::from(file);
        for (index, line) in text.lines().enumerate() {
            let location = Location {
                file: file.clone(),
                line: index + 1,
            };
            match parse_line(line, location.clone()) {
                Ok(Some(entry)) => self.entries.push(entry),
                Ok(None) => {}
                Err(reason) => self.warnings.push(format!("{location}: {reason}")),
            }
        }
    }

    /// Looks `key` up for `name` (from [`host_key_name`] or a HostKeyAlias).
    pub fn verdict(&self, name: &str, key: &PublicKey) -> Verdict {
        let name = name.to_ascii_lowercase();
        let blob = key.public_key_bytes();
        let for_host: Vec<&Entry> = self.entries.iter().filter(|e| e.matches(&name)).collect();
        if let Some(e) = for_host.iter().find(|e| e.revoked && e.blob == blob) {
            return Verdict::Revoked(e.location.clone());
        }
        let plain = || for_host.iter().filter(|e| !e.revoked);
        if let Some(e) = plain().find(|e| e.blob == blob) {
            return Verdict::Match(e.location.clone());
        }
        // Prefer reporting a line of the same algorithm: that is the key that "changed".
        let algorithm = key.algorithm();
        let changed = plain()
            .find(|e| e.algorithm().as_ref() == Some(&algorithm))
            .or_else(|| plain().next());
        match changed {
            Some(e) => Verdict::Changed {
                location: e.location.clone(),
                recorded: e.describe(),
            },
            None => Verdict::Unknown,
        }
    }

    /// The algorithms of the keys on file for `name`, in file order, without repeats:
    /// offered first in the handshake so a server with several host keys shows a known one.
    pub fn algorithms_for(&self, name: &str) -> Vec<Algorithm> {
        let name = name.to_ascii_lowercase();
        let mut out: Vec<Algorithm> = Vec::new();
        let known = self
            .entries
            .iter()
            .filter(|e| !e.revoked && e.matches(&name));
        for algorithm in known.filter_map(Entry::algorithm) {
            if !out.contains(&algorithm) {
                out.push(algorithm);
            }
        }
        out
    }

    /// How many usable lines were read.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no usable line was read.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Entry {
    fn matches(&self, name: &str) -> bool {
        let mut positive = false;
        for pattern in &self.names {
            match pattern {
                NamePattern::Plain { pattern, negated } if wildcard_match(pattern, name) => {
                    // A matching negated pattern rules the line out, as in OpenSSH.
                    if *negated {
                        return false;
                    }
                    positive = true;
                }
                NamePattern::Plain { .. } => {}
                NamePattern::Hashed { salt, hash } => positive |= hashed_match(salt, hash, name),
            }
        }
        positive
    }

    fn algorithm(&self) -> Option<Algorithm> {
        PublicKey::from_bytes(&self.blob)
            .ok()
            .map(|k| k.algorithm())
    }

    /// `ssh-ed25519 SHA256:…`, or the written type alone when the blob won't parse.
    fn describe(&self) -> String {
        match PublicKey::from_bytes(&self.blob) {
            Ok(key) => describe_key(&key),
            Err(_) => format!("{} (unreadable key)", self.key_type),
        }
    }
}

/// `ssh-ed25519 SHA256:…`: how keys are named in messages (as OpenSSH prints them).
pub fn describe_key(key: &PublicKey) -> String {
    format!(
        "{} {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

/// One line: `Ok(None)` for blanks and comments, `Err` for a line that cannot be used.
fn parse_line(line: &str, location: Location) -> Result<Option<Entry>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_ascii_whitespace();
    let mut first = fields.next().unwrap_or_default();
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            "cert-authority" => return Err("@cert-authority lines are not supported".into()),
            other => return Err(format!("unknown marker @{other}")),
        }
        first = fields.next().ok_or("no host names after the marker")?;
    }
    let key_type = fields.next().ok_or("no key type")?;
    let key_b64 = fields.next().ok_or("no key")?;
    let blob = BASE64_MIME
        .decode(key_b64.as_bytes())
        .map_err(|e| format!("key is not base64: {e}"))?;
    Ok(Some(Entry {
        location,
        revoked,
        names: parse_names(first)?,
        blob,
        key_type: key_type.to_string(),
    }))
}

fn parse_names(field: &str) -> Result<Vec<NamePattern>, String> {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return parse_hashed(hashed).map(|p| vec![p]);
    }
    if field.starts_with('|') {
        return Err("unknown hashed host name format".into());
    }
    Ok(field
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.strip_prefix('!') {
            Some(rest) => NamePattern::Plain {
                pattern: rest.to_ascii_lowercase(),
                negated: true,
            },
            None => NamePattern::Plain {
                pattern: p.to_ascii_lowercase(),
                negated: false,
            },
        })
        .collect())
}

/// `salt|hash` after the `|1|` prefix, both base64.
fn parse_hashed(rest: &str) -> Result<NamePattern, String> {
    let (salt, hash) = rest
        .split_once('|')
        .ok_or("hashed host name without a hash")?;
    let decode = |s: &str| BASE64_MIME.decode(s.as_bytes());
    match (decode(salt), decode(hash)) {
        (Ok(salt), Ok(hash)) => Ok(NamePattern::Hashed { salt, hash }),
        _ => Err("hashed host name is not base64".into()),
    }
}

/// OpenSSH's hashed names: HMAC-SHA1 of the name, keyed with the salt.
fn hashed_match(salt: &[u8], hash: &[u8], name: &str) -> bool {
    match Hmac::<Sha1>::new_from_slice(salt) {
        Ok(mac) => mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok(),
        Err(_) => false,
    }
}

/// `|1|salt|hash` for `name` with a fresh random salt (HashKnownHosts yes).
pub fn hash_name(name: &str) -> std::io::Result<String> {
    let mut salt = [0u8; 20];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut salt)?;
    let mac = Hmac::<Sha1>::new_from_slice(&salt)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .chain_update(name.as_bytes())
        .finalize()
        .into_bytes();
    Ok(format!(
        "|1|{}|{}",
        data_encoding::BASE64.encode(&salt),
        data_encoding::BASE64.encode(&mac)
    ))
}

/// `*` and `?` globbing over bytes (names are ASCII-lowercased by the caller); the same
/// matcher ssh_config's patterns use.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    super::config_file::wildcard(pattern, name)
}

/// Appends `name key` to `file` (creating it and its folder), starting a new line if
/// the file does not end with one. One `write` call, so concurrent learners don't interleave.
pub fn append(file: &Path, name: &str, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        // As ssh does: a folder it creates (`~/.ssh`) is the user's alone.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let needs_newline = match std::fs::read(file) {
        Ok(bytes) => bytes.last().is_some_and(|&b| b != b'\n'),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let line = format!(
        "{}{} {} {}\n",
        if needs_newline { "\n" } else { "" },
        name,
        key.algorithm().as_str(),
        key.public_key_base64()
    );
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?
        .write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_created_for_a_learned_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join(".ssh/known_hosts");
        let key = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDPtvMuEZ3zHZSlG3m3JuVy3lqf5TwlnbQqIuRUmNG1d",
        )
        .unwrap();
        append(&file, "node1", &key).unwrap();
        let mode = std::fs::metadata(home.path().join(".ssh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    // Public keys generated with ssh-keygen.
    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIDAJEnAeksfRWZYTVCPufXh9slRa01xk0Hvs8QfCuhYr";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIAHHHkgp/IMRweDTrB5Qfu459YRaQJNoaadQB6NHw1r/";
    const EC: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFJLBXQWoSxRb3I8WblIM71oXPdFuqwSp6cfAUWmzlfIrLP9sTGMl8kkgQq+66mACCv9XpxyuWsduXtfLIH/LJY=";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).expect("test key")
    }

    fn parse(text: &str) -> KnownHosts {
        let mut k = KnownHosts::default();
        k.add_text(Path::new("/kh"), text);
        k
    }

    fn line_of(v: Verdict) -> usize {
        match v {
            Verdict::Match(l) | Verdict::Revoked(l) => l.line,
            Verdict::Changed { location, .. } => location.line,
            Verdict::Unknown => 0,
        }
    }

    #[test]
    fn names_and_ports() {
        assert_eq!(host_key_name("Node1", 22), "node1");
        assert_eq!(host_key_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn plain_comma_list_and_port_forms() {
        let k = parse(&format!(
            "# comment\n\nalpha,beta ssh-ed25519 {ED_A}\n[gamma]:2222 ssh-ed25519 {ED_A} c\n"
        ));
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        assert_eq!(line_of(k.verdict("beta", &key(ED_A))), 3);
        assert_eq!(line_of(k.verdict("[gamma]:2222", &key(ED_A))), 4);
        // The port form does not cover port 22 and vice versa.
        assert_eq!(k.verdict("gamma", &key(ED_A)), Verdict::Unknown);
        assert_eq!(k.verdict("[alpha]:2222", &key(ED_A)), Verdict::Unknown);
    }

    #[test]
    fn changed_key_names_the_line() {
        let k = parse(&format!(
            "other ssh-ed25519 {ED_A}\nalpha ssh-ed25519 {ED_A}\n"
        ));
        match k.verdict("alpha", &key(ED_B)) {
            Verdict::Changed { location, recorded } => {
                assert_eq!(location.to_string(), "/kh:2");
                assert!(recorded.starts_with("ssh-ed25519 SHA256:"), "{recorded}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_match_anywhere_wins_over_a_changed_line() {
        let k = parse(&format!(
            "alpha ssh-ed25519 {ED_B}\nalpha ssh-ed25519 {ED_A}\n"
        ));
        assert_eq!(line_of(k.verdict("alpha", &key(ED_A))), 2);
    }

    #[test]
    fn wildcards_and_negation() {
        let k = parse(&format!("*.lab,!bad.lab ssh-ed25519 {ED_A}\n"));
        assert!(matches!(k.verdict("n1.lab", &key(ED_A)), Verdict::Match(_)));
        assert_eq!(k.verdict("bad.lab", &key(ED_A)), Verdict::Unknown);
        assert!(wildcard_match("n?de*", "node12"));
        assert!(!wildcard_match("n?de", "nodes"));
        assert!(wildcard_match(
            "*a*a*a*a*b",
            &"a".repeat(40).replace("aa", "ab")
        ));
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        // `ssh-keygen -H` of "node1,10.1.2.3 …" and "[node1]:2222 …".
        let k = parse(&format!(
            "|1|+5F26fkwQ5E6GXry1VCsddlROIg=|uTs+zdSQDgvHSEU8MfSgDDNAL0s= ecdsa-sha2-nistp256 {EC}\n\
             |1|tf4h9VvePGXnZlu4sYrBpoWpXk0=|4hFcFIiph9xHrHMO/47KvLR4lpg= ecdsa-sha2-nistp256 {EC}\n\
             |1|glAoM+56LkkrNPE4BORGmYjFD8o=|IG5VHNK8a2mSH28W4tnifJCz3AI= ecdsa-sha2-nistp256 {EC}\n"
        ));
        assert!(k.warnings.is_empty(), "{:?}", k.warnings);
        assert_eq!(line_of(k.verdict("node1", &key(EC))), 1);
        assert_eq!(line_of(k.verdict("10.1.2.3", &key(EC))), 2);
        assert_eq!(line_of(k.verdict("[node1]:2222", &key(EC))), 3);
        assert_eq!(k.verdict("node2", &key(EC)), Verdict::Unknown);
        assert_eq!(k.algorithms_for("node1"), vec![key(EC).algorithm()]);
    }

    #[test]
    fn hash_name_round_trips() {
        let fresh = hash_name("[h]:2222").unwrap();
        let k = parse(&format!("{fresh} ssh-ed25519 {ED_A}\n"));
        assert!(matches!(
            k.verdict("[h]:2222", &key(ED_A)),
            Verdict::Match(_)
        ));
    }

    #[test]
    fn other_algorithm_for_a_known_host_is_a_change() {
        let k = parse(&format!("node1 ecdsa-sha2-nistp256 {EC}\n"));
        match k.verdict("node1", &key(ED_A)) {
            Verdict::Changed { location, recorded } => {
                assert_eq!(location.line, 1);
                assert!(
                    recorded.starts_with("ecdsa-sha2-nistp256 SHA256:"),
                    "{recorded}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn revoked_and_markers() {
        let k = parse(&format!(
            "@revoked * ssh-ed25519 {ED_B}\n@cert-authority *.lab ssh-ed25519 {ED_A}\n@bogus x ssh-ed25519 {ED_A}\nalpha ssh-ed25519 {ED_B}\n"
        ));
        assert_eq!(k.warnings.len(), 2, "{:?}", k.warnings);
        assert!(k.warnings[0].starts_with("/kh:2: @cert-authority"));
        assert!(matches!(
            k.verdict("alpha", &key(ED_B)),
            Verdict::Revoked(_)
        ));
        assert!(matches!(
            k.verdict("alpha", &key(ED_A)),
            Verdict::Changed { .. }
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let k = parse("a\n|1|x ssh-ed25519 AAAA\n|1|!!|!! k AAAA\nh ssh-ed25519 !!!\nh t\n|2|a|b t AAAA\n\u{fffd}\u{0} x y\n");
        assert!(k.is_empty());
        assert_eq!(k.warnings.len(), 7, "{:?}", k.warnings);
        assert_eq!(k.verdict("h", &key(ED_A)), Verdict::Unknown);
    }
}
