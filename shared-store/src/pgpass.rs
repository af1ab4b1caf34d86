//! Finding a Postgres password the way libpq does: the location's own, then `PGPASSWORD`,
//! then the password file (`PGPASSFILE`, else `~/.pgpass`).
//!
//! The file holds `host:port:database:user:password` lines; `*` in the first four fields
//! matches anything, `\:` and `\\` escape, `#` starts a comment line, and the first matching
//! line wins. A Unix-socket location is looked up as host `localhost`. Like libpq, a file that
//! its group or others may read is ignored (with a warning). Nothing here logs a password.

use std::path::{Path, PathBuf};

use crate::location::PgLocation;

/// The password to connect to `location` with, if any source has one.
/// The password a connection to `location` would use: the location's own, else
/// `PGPASSWORD`, else the password file. For handing on to an agent over a private channel
/// only (the prime's SSH channel); never log it or put it on a command line.
pub fn resolve(location: &PgLocation) -> Option<String> {
    let from_env = std::env::var("PGPASSWORD").ok();
    resolve_from(location, from_env, password_file().as_deref())
}

/// [`resolve`] with its sources handed in, so tests need not touch the environment.
fn resolve_from(
    location: &PgLocation,
    pgpassword: Option<String>,
    file: Option<&Path>,
) -> Option<String> {
    if let Some(password) = location.url_password() {
        return Some(password.to_owned());
    }
    if let Some(password) = pgpassword.filter(|p| !p.is_empty()) {
        return Some(password);
    }
    let text = read_private(file?)?;
    lookup(&text, location)
}

/// `PGPASSFILE`, else `$HOME/.pgpass`.
fn password_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("PGPASSFILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(file));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".pgpass"))
}

/// The file's text, unless it is missing, unreadable or readable by group or others.
fn read_private(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if !is_private(&meta) {
        tracing::warn!(
            file = %path.display(),
            "password file has group or world access and is ignored; permissions should be u=rw (0600) or less"
        );
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// Whether `path` is a file only its owner may read or write (libpq's rule for the password
/// file and for a private key).
pub(crate) fn is_private_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && is_private(&meta))
}

#[cfg(unix)]
fn is_private(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 == 0
}

#[cfg(not(unix))]
fn is_private(_meta: &std::fs::Metadata) -> bool {
    true
}

/// The password of the first line matching `location`.
fn lookup(text: &str, location: &PgLocation) -> Option<String> {
    let host = if location.host.starts_with('/') {
        "localhost"
    } else {
        location.host.as_str()
    };
    let port = location.port.to_string();
    let wanted = [host, port.as_str(), &location.database, &location.user];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(split_fields)
        .find(|(keys, _)| keys.iter().zip(wanted).all(|(k, w)| k == "*" || k == w))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty())
}

/// The four key fields and the password of one line, escapes removed; `None` for a line
/// with fewer than five fields.
fn split_fields(line: &str) -> Option<([String; 4], String)> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            // The password is everything after the fourth separator, colons included.
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    let password = fields.pop().filter(|_| fields.len() == 4)?;
    let keys: [String; 4] = fields.try_into().ok()?;
    Some((keys, password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::StoreLocation;

    fn location(text: &str) -> PgLocation {
        match StoreLocation::parse(text).unwrap() {
            StoreLocation::Postgres(pg) => pg,
            other => panic!("{other:?}"),
        }
    }

    const FILE: &str = "\
# comment:*:*:*:nope
db.example:5432:runs:alice:first
db.example:*:*:alice:second
*:6543:*:*:any\\:port\\\\x
short:line
localhost:5432:sock:bob:socket
";

    #[test]
    fn first_matching_line_wins() {
        let found = |url| lookup(FILE, &location(url));
        assert_eq!(
            found("postgres://alice@db.example/runs").as_deref(),
            Some("first")
        );
        assert_eq!(
            found("postgres://alice@db.example/other").as_deref(),
            Some("second")
        );
        assert_eq!(
            found("postgres://zed@elsewhere:6543/x").as_deref(),
            Some("any:port\\x")
        );
        assert_eq!(found("postgres://zed@elsewhere/x"), None);
        assert_eq!(
            found("postgres://bob@%2Ftmp%2Fsock/sock").as_deref(),
            Some("socket"),
            "a socket directory is looked up as localhost"
        );
    }

    #[test]
    fn escaped_colons_in_key_fields() {
        let text = "fe80\\:\\:1:5432:*:*:v6\n";
        let found = lookup(text, &location("postgres://u@[fe80::1]/d"));
        assert_eq!(found.as_deref(), Some("v6"));
        assert_eq!(split_fields("a:b:c"), None);
        let (keys, password) = split_fields("a:b:c:d:e:f").unwrap();
        assert_eq!((keys[3].as_str(), password.as_str()), ("d", "e:f"));
    }

    #[test]
    fn url_then_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:from-file\n").unwrap();
        set_mode(&file, 0o600);
        let with_url = location("postgres://u:from-url@h/d");
        let without = location("postgres://u@h/d");
        let env = || Some("from-env".to_owned());

        let got = resolve_from(&with_url, env(), Some(&file));
        assert_eq!(got.as_deref(), Some("from-url"));
        let got = resolve_from(&without, env(), Some(&file));
        assert_eq!(got.as_deref(), Some("from-env"));
        let got = resolve_from(&without, Some(String::new()), Some(&file));
        assert_eq!(
            got.as_deref(),
            Some("from-file"),
            "an empty PGPASSWORD is unset"
        );
        assert_eq!(resolve_from(&without, None, None), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        set_mode(&file, 0o644);
        assert_eq!(
            resolve_from(&location("postgres://u@h/d"), None, Some(&file)),
            None
        );
        set_mode(&file, 0o400);
        let got = resolve_from(&location("postgres://u@h/d"), None, Some(&file));
        assert_eq!(got.as_deref(), Some("secret"));
    }

    fn set_mode(path: &Path, mode: u32) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let _ = (path, mode);
    }
}
