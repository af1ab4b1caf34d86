//! Where a store lives: `--store` text parsed into a [`StoreLocation`], and shown again
//! without its password.
//!
//! Accepted forms:
//! - `postgres://[user[:password]@][host][:port][/database][?schema=NAME&sslmode=MODE]`
//!   (also `postgresql://`). The userinfo ends at the *last* `@`, found before anything else
//!   is split, so a password may hold `/`, `?`, `:` and `@` as they are (`%`-escapes work
//!   too); an `@` in the database or a parameter must then be written `%40`. Defaults: host `localhost`, port 5432, user `postgres`, database
//!   the user's name, schema [`DEFAULT_SCHEMA`]. A host that starts with `/` (written
//!   `%2F…`) is a Unix socket directory (no TLS there, as in libpq). TLS: `sslmode`
//!   (`disable`, `allow`, `prefer`, `require`, `verify-ca`, `verify-full`), `sslrootcert`,
//!   `sslcert`, `sslkey` (file paths), resolved as libpq does in [`crate::tls`].
//! - `sqlite:PATH` (also `sqlite://PATH`), or a bare path: an SQLite file.
//!
//! The password is kept private to the crate. [`Display`](fmt::Display) and
//! [`Debug`](fmt::Debug) show it as `****`, and no [`LocationError`] ever quotes it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::tls::{SslMode, TlsMaterial};

/// The schema a Postgres store uses when its URL names none. Not `public`: eventor's tables
/// then stay out of the way of whatever else lives in the database, and `DROP SCHEMA eventor
/// CASCADE` removes exactly them.
pub const DEFAULT_SCHEMA: &str = "eventor";

const DEFAULT_PORT: u16 = 5432;
const DEFAULT_HOST: &str = "localhost";
const DEFAULT_USER: &str = "postgres";
/// Postgres truncates longer identifiers; refusing them keeps the schema name exact.
const MAX_IDENTIFIER_BYTES: usize = 63;
const MASK: &str = "****";

/// Where a store lives. Parsed from `--store` by the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite database file (created if missing).
    Sqlite(PathBuf),
    /// A schema in a Postgres database (created, with its tables, if missing).
    Postgres(PgLocation),
}

/// A Postgres store: server, credentials and the schema holding eventor's tables.
#[derive(Clone, PartialEq, Eq)]
pub struct PgLocation {
    /// A host name or address, or a Unix socket directory (starting with `/`).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub schema: String,
    /// `dead_after=…`: how long the server keeps a session of ours it hears nothing from
    /// (see [`DEFAULT_DEAD_AFTER`]); `None`: the default.
    pub dead_after: Option<Duration>,
    /// The URL's `sslmode`; `None`: `PGSSLMODE`, else `prefer` ([`crate::tls`]).
    pub sslmode: Option<SslMode>,
    /// The URL's `sslrootcert`, `sslcert` and `sslkey`: files on this machine.
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    /// TLS already resolved elsewhere (an agent's, sent by its prime); wins over the above.
    tls: Option<Box<TlsMaterial>>,
    /// Only the URL's password; `PGPASSWORD` and `~/.pgpass` are consulted when connecting.
    password: Option<String>,
}

/// How long the server keeps a session of ours that went silent (its machine died, or the
/// network between them did) before it ends it and frees its locks. Without it a dead
/// coordinator's run lock stays held for the system's keepalive time, two hours, and every
/// `recover` of that run is refused meanwhile. A live but cut-off coordinator loses its
/// sessions too, and takes its lock again when it is back (if nobody else took the run).
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(30);

/// Why `--store` text is not a store location. Never contains the URL's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("store location is empty")]
    Empty,
    #[error("sqlite: needs a path")]
    EmptyPath,
    #[error("unsupported store scheme {0}:// (use postgres://, sqlite:PATH or a file path)")]
    Scheme(String),
    #[error("invalid postgres url: {0}")]
    Url(String),
    #[error("unknown postgres url parameter {0:?} (known: schema, sslmode, sslrootcert, sslcert, sslkey, dead_after)")]
    UnknownParameter(String),
    #[error("invalid dead_after={0:?}: a duration from 2s to 1h, such as 30s or 2m")]
    DeadAfter(String),
    #[error(
        "invalid sslmode={0:?} (one of disable, allow, prefer, require, verify-ca, verify-full)"
    )]
    SslMode(String),
    #[error("{0}= needs a file path")]
    EmptyFile(&'static str),
    #[error("invalid schema name {0:?}: it must be 1 to 63 bytes without NUL")]
    Schema(String),
}

impl StoreLocation {
    /// Parses `--store` text: a `postgres://` URL, `sqlite:PATH`, or a bare path.
    pub fn parse(text: &str) -> Result<StoreLocation, LocationError> {
        if text.is_empty() {
            return Err(LocationError::Empty);
        }
        if let Some(rest) = strip_scheme(text, &["postgres", "postgresql"]) {
            return PgLocation::parse_url_tail(rest).map(StoreLocation::Postgres);
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(LocationError::EmptyPath);
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(LocationError::Scheme(scheme.to_owned()));
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(text)))
    }
}

impl FromStr for StoreLocation {
    type Err = LocationError;
    fn from_str(text: &str) -> Result<Self, LocationError> {
        StoreLocation::parse(text)
    }
}

/// `sqlite:PATH` or the Postgres URL with its password masked.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreLocation::Postgres(pg) => pg.fmt(f),
        }
    }
}

/// The tail of `scheme://…` when `text` starts with one of `schemes` (case-insensitively).
fn strip_scheme<'t>(text: &'t str, schemes: &[&str]) -> Option<&'t str> {
    let (scheme, rest) = text.split_once("://")?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then_some(rest)
}

impl PgLocation {
    /// A location with the default schema and no password (for configs that list parts).
    pub fn new(host: &str, port: u16, user: &str, database: &str) -> PgLocation {
        PgLocation {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            database: database.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            dead_after: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            tls: None,
            password: None,
        }
    }

    /// The same location with its TLS already resolved (it wins over the URL's files,
    /// `PGSSL*` and `~/.postgresql`): how an agent uses what its prime sent.
    pub fn with_tls(mut self, tls: TlsMaterial) -> PgLocation {
        self.tls = Some(Box::new(tls));
        self
    }

    /// The TLS given with [`with_tls`](Self::with_tls), if any.
    pub(crate) fn given_tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_deref()
    }

    /// The location as an agent is told it: no password, no paths of this machine's files,
    /// and `mode` (the one resolved here) as its `sslmode`, so that an agent too old to be
    /// handed the TLS material refuses a mode that needs TLS rather than going without.
    pub fn for_agents(&self, mode: SslMode) -> PgLocation {
        PgLocation {
            password: None,
            sslmode: Some(mode),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            tls: None,
            ..self.clone()
        }
    }

    /// How long the server keeps a silent session of ours ([`DEFAULT_DEAD_AFTER`] unless
    /// the URL says).
    pub fn dead_after(&self) -> Duration {
        self.dead_after.unwrap_or(DEFAULT_DEAD_AFTER)
    }

    /// The same location with an explicit password (it wins over `PGPASSWORD` and `.pgpass`).
    pub fn with_password(mut self, password: &str) -> PgLocation {
        self.password = Some(password.to_owned());
        self
    }

    /// Whether the location itself carries a password (shown masked, never readable).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The password given with the location, for the connector only.
    pub(crate) fn url_password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The same location without its password (shown and sent as a plain URL).
    pub fn without_password(&self) -> PgLocation {
        PgLocation {
            password: None,
            ..self.clone()
        }
    }

    /// Parses what follows `postgres://`.
    fn parse_url_tail(tail: &str) -> Result<PgLocation, LocationError> {
        if tail.contains('#') {
            return Err(url_error("fragments (#…) are not allowed"));
        }
        // The userinfo first: a password may hold `/`, `?` or `:` (and `@`), so nothing
        // is split before the last `@` is found.
        let (userinfo, rest) = match tail.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, tail),
        };
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hostport, path) = main.split_once('/').unwrap_or((main, ""));
        let (user, password) = parse_userinfo(userinfo)?;
        let (host, port) = parse_hostport(hostport)?;
        let database = match decode(path, "database")? {
            name if name.is_empty() => user.clone(),
            name => name,
        };
        let mut location = PgLocation {
            host,
            port,
            user,
            database,
            password,
            ..PgLocation::new("", 0, "", "")
        };
        location.apply_query(query)?;
        Ok(location)
    }

    /// Applies `schema=…&sslmode=…`; anything else is refused rather than silently ignored.
    fn apply_query(&mut self, query: &str) -> Result<(), LocationError> {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key, "parameter name")?;
            let value = decode(value, "parameter value")?;
            match key.as_str() {
                "schema" => self.schema = valid_schema(value)?,
                "sslmode" => {
                    self.sslmode =
                        Some(SslMode::parse(&value).ok_or(LocationError::SslMode(value))?)
                }
                "sslrootcert" => self.sslrootcert = Some(file_path(value, "sslrootcert")?),
                "sslcert" => self.sslcert = Some(file_path(value, "sslcert")?),
                "sslkey" => self.sslkey = Some(file_path(value, "sslkey")?),
                "dead_after" => self.dead_after = Some(valid_dead_after(value)?),
                _ => return Err(LocationError::UnknownParameter(key)),
            }
        }
        Ok(())
    }

    /// How the location reads in logs: the URL, any password shown as `****`.
    fn write_url(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "postgres://{}", encode(&self.user))?;
        if self.password.is_some() {
            write!(f, ":{MASK}")?;
        }
        if self.host.contains(':') {
            // An IPv6 address: brackets keep its colons apart from the port's.
            write!(f, "@[{}]", self.host)?;
        } else {
            write!(f, "@{}", encode(&self.host))?;
        }
        write!(
            f,
            ":{}/{}?schema={}",
            self.port,
            encode(&self.database),
            encode(&self.schema)
        )?;
        if let Some(d) = self.dead_after {
            // Whole milliseconds, no spaces: the URL can be pasted into a shell as shown.
            write!(f, "&dead_after={}ms", d.as_millis())?;
        }
        if let Some(mode) = self.sslmode {
            write!(f, "&sslmode={mode}")?;
        }
        let files = [
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
        ];
        for (name, path) in files {
            if let Some(path) = path {
                write!(f, "&{name}={}", encode(&path.to_string_lossy()))?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_url(f)
    }
}

impl fmt::Debug for PgLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLocation")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("schema", &self.schema)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("tls", &self.tls)
            .field("password", &self.password.as_ref().map(|_| MASK))
            .finish()
    }
}

fn url_error(reason: &str) -> LocationError {
    LocationError::Url(reason.to_owned())
}

/// `user[:password]`; the password's own errors never quote it.
fn parse_userinfo(userinfo: Option<&str>) -> Result<(String, Option<String>), LocationError> {
    let Some(userinfo) = userinfo else {
        return Ok((DEFAULT_USER.to_owned(), None));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let user = match decode(user, "user name")? {
        name if name.is_empty() => DEFAULT_USER.to_owned(),
        name => name,
    };
    let password = password.map(|p| decode(p, "password")).transpose()?;
    Ok((user, password))
}

/// `host[:port]`, `[v6addr][:port]` or nothing (the defaults).
fn parse_hostport(hostport: &str) -> Result<(String, u16), LocationError> {
    if hostport.contains(',') {
        return Err(url_error("several hosts are not supported"));
    }
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| url_error("unclosed [ in host"))?;
        let port = match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| url_error("junk after ]"))?,
            ),
        };
        (host.to_owned(), port)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (decode(host, "host")?, Some(port)),
            None => (decode(hostport, "host")?, None),
        }
    };
    let host = if host.is_empty() {
        DEFAULT_HOST.to_owned()
    } else {
        host
    };
    Ok((host, parse_port(port)?))
}

fn parse_port(port: Option<&str>) -> Result<u16, LocationError> {
    match port {
        None | Some("") => Ok(DEFAULT_PORT),
        // The text is not quoted: a malformed URL may have put a password there.
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| url_error("the port is not a number in 1..65535")),
    }
}

fn valid_schema(name: String) -> Result<String, LocationError> {
    if name.is_empty() || name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(LocationError::Schema(name));
    }
    Ok(name)
}

fn valid_dead_after(text: String) -> Result<Duration, LocationError> {
    match humantime::parse_duration(&text) {
        Ok(d) if (Duration::from_secs(2)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err(LocationError::DeadAfter(text)),
    }
}

fn file_path(text: String, name: &'static str) -> Result<PathBuf, LocationError> {
    match text.is_empty() {
        true => Err(LocationError::EmptyFile(name)),
        false => Ok(PathBuf::from(text)),
    }
}

/// Percent-decodes one URL part; `what` names the part in the error (never its text).
fn decode(text: &str, what: &str) -> Result<String, LocationError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| LocationError::Url(format!("bad %-escape in the {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| LocationError::Url(format!("the {what} is not UTF-8")))
}

/// Percent-encodes what would not read back as the same URL part.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(text: &str) -> PgLocation {
        match StoreLocation::parse(text) {
            Ok(StoreLocation::Postgres(pg)) => pg,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn full_postgres_url() {
        let loc = pg("postgres://alice:s3cret@db.example:6543/runs?schema=ev_1");
        assert_eq!(
            (loc.host.as_str(), loc.port, loc.user.as_str()),
            ("db.example", 6543, "alice")
        );
        assert_eq!(
            (loc.database.as_str(), loc.schema.as_str()),
            ("runs", "ev_1")
        );
        assert_eq!(loc.url_password(), Some("s3cret"));
        assert!(loc.has_password());
    }

    #[test]
    fn defaults_and_postgresql_scheme() {
        let loc = pg("postgresql://");
        assert_eq!(
            loc,
            PgLocation::new("localhost", 5432, "postgres", "postgres")
        );
        assert_eq!(loc.schema, DEFAULT_SCHEMA);
        let loc = pg("POSTGRES://bob@h");
        assert_eq!((loc.user.as_str(), loc.database.as_str()), ("bob", "bob"));
        assert_eq!(loc.url_password(), None);
    }

    #[test]
    fn percent_escapes_ipv6_and_sockets() {
        let loc = pg("postgres://u%40x:p%3Aw%2F@[::1]:5433/d%20b?schema=my%20schema");
        assert_eq!((loc.user.as_str(), loc.host.as_str()), ("u@x", "::1"));
        assert_eq!(loc.url_password(), Some("p:w/"));
        assert_eq!(
            (loc.database.as_str(), loc.schema.as_str()),
            ("d b", "my schema")
        );
        let loc = pg("postgres://u@%2Fvar%2Frun%2Fpostgresql/db");
        assert_eq!(loc.host, "/var/run/postgresql");
    }

    #[test]
    fn display_masks_and_reads_back() {
        let text = "postgres://u%40x:hunter2@[::1]:5433/d%20b?schema=s%2F1";
        let loc = pg(text);
        let shown = loc.to_string();
        assert_eq!(shown, "postgres://u%40x:****@[::1]:5433/d%20b?schema=s%2F1");
        let again = pg(&shown);
        assert_eq!(again.clone().with_password("hunter2"), loc);
        let plain = pg("postgres://u@h/d").to_string();
        assert_eq!(plain, "postgres://u@h:5432/d?schema=eventor");
        assert_eq!(
            StoreLocation::Postgres(loc).to_string(),
            shown,
            "StoreLocation shows the same"
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let loc = StoreLocation::parse("postgres://u:hunter2@h/d").unwrap();
        let debug = format!("{loc:?} {loc:#?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("****"), "{debug}");
    }

    #[test]
    fn errors_never_quote_the_password() {
        let bad = [
            "postgres://u:hun%ZZter2@h/d",
            "postgres://u:hunter2@h:99999/d",
            "postgres://u:hunter2@h/d?sslmode=bogus",
            "postgres://u:hunter2@h/d?password=hunter2",
            "postgres://u:hunter2@h1,h2/d",
            "postgres://u:hunter2@h/d#frag",
            "postgres://u:hunter2@[::1/d",
            "postgres://u:%FF%FEhunter2@h/d",
        ];
        for text in bad {
            let err = StoreLocation::parse(text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{text}: {shown}");
        }
    }

    #[test]
    fn the_userinfo_is_found_first() {
        let loc = pg("postgres://evpw:s3cr/t?x@y:z@db.example:6543/runs?schema=s1");
        assert_eq!(loc.user, "evpw");
        assert_eq!(loc.url_password(), Some("s3cr/t?x@y:z"));
        assert_eq!((loc.host.as_str(), loc.port), ("db.example", 6543));
        assert_eq!((loc.database.as_str(), loc.schema.as_str()), ("runs", "s1"));
        let loc = pg("postgres://u:p/w@h");
        assert_eq!((loc.host.as_str(), loc.database.as_str()), ("h", "u"));
        assert_eq!(loc.url_password(), Some("p/w"));
        let loc = pg("postgres://h/d?schema=a%40b");
        assert_eq!(
            (loc.user.as_str(), loc.schema.as_str()),
            ("postgres", "a@b")
        );
    }

    #[test]
    fn a_password_with_url_characters_reads_back_without_it() {
        let loc = pg("postgres://evpw:a/b?c@d:e@h:1/db");
        let plain = StoreLocation::Postgres(loc.without_password()).to_string();
        assert_eq!(plain, "postgres://evpw@h:1/db?schema=eventor");
        assert_eq!(pg(&plain).with_password("a/b?c@d:e"), loc);
        assert_eq!(crate::resolve_password(&loc).as_deref(), Some("a/b?c@d:e"));
    }

    #[test]
    fn errors_never_quote_userinfo_text() {
        let bad = [
            "postgres://evpw:s3cr/et@h:x/d",
            "postgres://evpw:s3cr?et@h:99999/d",
            "postgres://evpw:s3cr",
            "postgres://evpw:s3cr/x",
            "postgres://evpw:s3cr%G1@h/d",
        ];
        for text in bad {
            let err = StoreLocation::parse(text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cr"), "{text}: {shown}");
        }
    }

    #[test]
    fn refusals() {
        let err = |t: &str| StoreLocation::parse(t).unwrap_err();
        assert_eq!(err(""), LocationError::Empty);
        assert_eq!(err("sqlite:"), LocationError::EmptyPath);
        assert_eq!(err("mysql://h/d"), LocationError::Scheme("mysql".into()));
        assert_eq!(
            err("postgres://h/d?sslmode=sometimes"),
            LocationError::SslMode("sometimes".into())
        );
        assert_eq!(
            err("postgres://h/d?sslrootcert="),
            LocationError::EmptyFile("sslrootcert")
        );
        assert_eq!(
            err("postgres://h/d?x=1"),
            LocationError::UnknownParameter("x".into())
        );
        assert!(matches!(err("postgres://h:0/d"), LocationError::Url(_)));
        assert!(matches!(
            err("postgres://h/d?schema="),
            LocationError::Schema(_)
        ));
        let long = format!("postgres://h/d?schema={}", "s".repeat(64));
        assert!(matches!(err(&long), LocationError::Schema(_)));
        assert!(StoreLocation::parse("postgres://h/d?sslmode=disable&schema=x").is_ok());
        for bad in ["1s", "2h", "soon", ""] {
            assert_eq!(
                err(&format!("postgres://h/d?dead_after={bad}")),
                LocationError::DeadAfter(bad.into())
            );
        }
    }

    /// `dead_after` is read, has a default, and travels in the URL (agents are told the
    /// store as text, so they end up with the same setting).
    #[test]
    fn dead_after_is_read_and_shown() {
        let pg = |t: &str| match StoreLocation::parse(t).unwrap() {
            StoreLocation::Postgres(pg) => pg,
            other => panic!("{other:?}"),
        };
        assert_eq!(pg("postgres://h/d").dead_after(), DEFAULT_DEAD_AFTER);
        assert_eq!(
            pg("postgres://u@h/d").to_string(),
            "postgres://u@h:5432/d?schema=eventor"
        );
        let set = pg("postgres://u@h/d?dead_after=2m&schema=s");
        assert_eq!(set.dead_after(), Duration::from_secs(120));
        assert_eq!(
            set.to_string(),
            "postgres://u@h:5432/d?schema=s&dead_after=120000ms"
        );
        assert_eq!(pg(&set.to_string()), set);
    }

    #[test]
    fn sslmode_and_certificate_files_are_read_and_shown() {
        let loc = pg(
            "postgres://u:pw@db.example/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
                      &sslcert=/home/u/c.crt&sslkey=/home/u/c.key",
        );
        assert_eq!(loc.sslmode, Some(SslMode::VerifyFull));
        assert_eq!(
            loc.sslrootcert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(
            loc.sslcert.as_deref(),
            Some(std::path::Path::new("/home/u/c.crt"))
        );
        assert_eq!(
            loc.sslkey.as_deref(),
            Some(std::path::Path::new("/home/u/c.key"))
        );
        let shown = loc.to_string();
        assert_eq!(
            shown,
            "postgres://u:****@db.example:5432/d?schema=eventor&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&sslcert=%2Fhome%2Fu%2Fc.crt&sslkey=%2Fhome%2Fu%2Fc.key"
        );
        assert_eq!(pg(&shown).with_password("pw"), loc, "reads back as it was");
        for mode in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let loc = pg(&format!("postgres://h/d?sslmode={mode}"));
            assert_eq!(loc.sslmode.map(SslMode::as_str), Some(mode));
        }
        assert_eq!(
            pg("postgres://h/d").sslmode,
            None,
            "unset: PGSSLMODE, else prefer"
        );
    }

    /// An agent is told the mode resolved on the prime, and none of the prime's file paths
    /// (the files' contents travel in the session setup).
    #[test]
    fn agents_get_the_mode_without_paths_or_password() {
        let loc = pg("postgres://u:pw@h/d?sslrootcert=/ca.pem&sslkey=/k&sslcert=/c");
        let sent = loc.for_agents(SslMode::VerifyCa).to_string();
        assert_eq!(
            sent,
            "postgres://u@h:5432/d?schema=eventor&sslmode=verify-ca"
        );
    }

    #[test]
    fn sqlite_forms() {
        let sqlite = |t: &str| StoreLocation::parse(t).unwrap();
        assert_eq!(sqlite("runs.db"), StoreLocation::Sqlite("runs.db".into()));
        assert_eq!(
            sqlite("sqlite:a/b.db"),
            StoreLocation::Sqlite("a/b.db".into())
        );
        assert_eq!(
            sqlite("sqlite:///abs.db"),
            StoreLocation::Sqlite("/abs.db".into())
        );
        assert_eq!(
            "x.db".parse::<StoreLocation>().unwrap().to_string(),
            "sqlite:x.db"
        );
    }
}
