//! The EVENTOR configuration file: global engine settings, the stores
//! (`DATABASES`) and logging, read from the `EVENTOR:` section of a YAML
//! file that may hold other programs' sections too.
//!
//! String values may refer to environment variables as `$VAR` or `${VAR}`
//! (`$$` is a literal `$`); an undefined variable is an error, because a
//! password or host silently replaced by nothing fails much later and much
//! less clearly. Errors read `FILE:LINE:COL: FIELD: message`, like the flow
//! file's.

use std::path::{Path, PathBuf};

use eventor_agent::MaxConcurrent;

use crate::api::config::{ConsoleLevel, DatabaseConfig, DbType, EventorConfig, LoggingConfig};
use crate::yaml::{self, At, FieldPath, Node, Problem, Value};

/// The section read by default; `--config-tag` or `EVENTOR_CONFIG_TAG` choose another, as
/// the original's `config_tag` did.
pub const DEFAULT_SECTION: &str = "EVENTOR";
/// Keys of the original's section that mean nothing here, each with the reason given in the
/// warning when a file sets it.
const IGNORED_KEYS: &[(&str, &str)] = &[
    ("debug", "use --log-level debug (or RUST_LOG)"),
    (
        "task_construct",
        "steps run as processes (commands) or closures, chosen per step",
    ),
    (
        "sleep_between_loops",
        "nothing polls: a trigger starts the next task at once",
    ),
    (
        "sequence_arg_name",
        "closures read the sequence from their TaskContext",
    ),
    ("remote_method", "remote steps always go over SSH"),
    (
        "pass_logger_to_task",
        "closures log with `tracing`; commands' output is logged",
    ),
    ("ssh_host", "hosts come from the hosts file (--hosts)"),
    (
        "ssh_port",
        "ports come from ~/.ssh/config or the hosts file",
    ),
    ("workdir", "set a step's `cwd`, or run from that directory"),
];
const EVENTOR_KEYS: &[&str] = &[
    "max_concurrent",
    "stop_on_exception",
    "envvar_prefix",
    "shared_db",
    "ssh_config",
    "DATABASES",
    "default_db",
    "LOGGING",
    "day_to_keep_db",
    "logdir",
    "debug",
    "task_construct",
    "sleep_between_loops",
    "sequence_arg_name",
    "remote_method",
    "pass_logger_to_task",
    "ssh_host",
    "ssh_port",
    "workdir",
];
/// Both this project's keys and the original's (`dialect`, `username`, `drivername`).
const DATABASE_KEYS: &[&str] = &[
    "dbtype",
    "dialect",
    "drivername",
    "file",
    "host",
    "port",
    "user",
    "username",
    "password",
    "database",
    "schema",
];
/// Keys that only mean something for a server database.
const SERVER_KEYS: &[&str] = &["host", "port", "user", "username", "password", "schema"];
/// Python's logging settings the original read; loaded, with a warning, but not honoured.
const PYTHON_LOGGING_KEYS: &[&str] = &[
    "level_formats",
    "consolidate",
    "file_prefix",
    "file_suffix",
    "file_mode",
    "maxBytes",
    "backupCount",
    "encoding",
    "delay",
    "when",
    "interval",
    "utc",
    "atTime",
];
const LOGGING_KEYS: &[&str] = &["level", "logging_level", "logdir", "console"];

pub use crate::yaml::FileError as ConfigError;

/// Reads the `EVENTOR` section of a YAML file, expanding `$VAR`s from the
/// process environment.
pub fn load_config(path: &Path, section: &str) -> Result<EventorConfig, ConfigError> {
    let text = yaml::read_file(path, "config")?;
    parse_config(&text, path, section)
}

/// [`load_config`] on text; `path` names it in errors.
pub fn parse_config(text: &str, path: &Path, section: &str) -> Result<EventorConfig, ConfigError> {
    parse_config_with_env(text, path, section, &|name| std::env::var(name).ok())
}

/// [`parse_config`] with variables looked up by `env` instead of in the
/// process environment.
pub fn parse_config_with_env(
    text: &str,
    path: &Path,
    section: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EventorConfig, ConfigError> {
    let convert = |p| ConfigError::from_problem(path, p);
    let root = yaml::parse_document(text).map_err(convert)?;
    let (mut config, warnings) = read_root(&root, section, env).map_err(convert)?;
    config.warnings = warnings
        .into_iter()
        .map(|p| convert(p).to_string())
        .collect();
    Ok(config)
}

/// Expands `$VAR`, `${VAR}` and `$$` in `text`. A `$` followed by anything
/// else is kept as it is. The error is a lowercase message.
pub fn expand_vars(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
                continue;
            }
            Some('{') => braced_name(after)?,
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let len = after.find(|c: char| !is_var_char(c)).unwrap_or(after.len());
                (&after[..len], len)
            }
            _ => {
                out.push('$');
                rest = after;
                continue;
            }
        };
        let value = env(name).ok_or_else(|| format!("undefined environment variable `{name}`"))?;
        out.push_str(&value);
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The name inside `{NAME}` at the start of `text`, and how many bytes the
/// braces and name take.
fn braced_name(text: &str) -> Result<(&str, usize), String> {
    let close = text.find('}').ok_or("unclosed `${`")?;
    let name = &text[1..close];
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(is_var_char);
    if !valid {
        return Err(format!(
            "invalid variable name `{}` in `${{…}}`",
            name.escape_debug()
        ));
    }
    Ok((name, close + 1))
}

/// A `max_concurrent` value: a limit, or below 1 for none. Shared with the flow
/// file's `config:` section.
pub(crate) fn read_max_concurrent(at: &At<'_>) -> Result<MaxConcurrent, Problem> {
    // Below 1 means no limit, as in the original (whose sample says `-1`).
    Ok(MaxConcurrent::from_config(at.integer()?))
}

/// An `envvar_prefix` value. Shared with the flow file's `config:` section.
pub(crate) fn read_prefix(at: &At<'_>) -> Result<String, Problem> {
    let prefix = at.string()?;
    check_envvar_prefix(&prefix).map_err(|m| at.problem(m))?;
    Ok(prefix)
}

/// The variables an `envvar_prefix` starts must be settable and usable from
/// a shell.
fn check_envvar_prefix(prefix: &str) -> Result<(), String> {
    let valid =
        !prefix.starts_with(|c: char| c.is_ascii_digit()) && prefix.chars().all(is_var_char);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid prefix `{}`: use letters, digits and `_`, not starting with a digit",
            prefix.escape_debug()
        ))
    }
}

/// Warnings about keys that load but do nothing, located like errors.
type Warnings = Vec<Problem>;

fn read_root(
    root: &Node,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(EventorConfig, Warnings), Problem> {
    // Other programs' sections are none of our business: only look for ours.
    let sections = At::root(root).entries("section")?;
    let Some(section) = sections.into_iter().find(|e| e.name == name) else {
        return Ok((EventorConfig::default(), Vec::new()));
    };
    let mut expanded = section.value.node.clone();
    expand_tree(&mut expanded, &section.value.field, env)?;
    let at = At::new(&expanded, section.value.field);
    let mut warnings = Vec::new();
    let config = read_eventor(&at, &mut warnings)?;
    Ok((config, warnings))
}

/// Expands variables in every string value (keys stay as written).
fn expand_tree(
    node: &mut Node,
    field: &FieldPath,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Problem> {
    let problem = At::new(node, field.clone()).problem("");
    match &mut node.value {
        Value::Str(s) => {
            *s = expand_vars(s, env).map_err(|message| Problem { message, ..problem })?;
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &field.index(i), env)?;
            }
        }
        Value::Map(pairs) => {
            for (key, value) in pairs.iter_mut() {
                let name = key.scalar_text().unwrap_or_default();
                expand_tree(value, &field.key(&name), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn read_eventor(at: &At<'_>, warnings: &mut Warnings) -> Result<EventorConfig, Problem> {
    let f = at.mapping(EVENTOR_KEYS)?;
    let mut config = EventorConfig::default();
    for (key, why) in IGNORED_KEYS {
        if let Some(at) = f.get(key) {
            warnings.push(at.problem(format!("has no effect here: {why}")));
        }
    }
    if let Some(at) = f.get("day_to_keep_db") {
        config.days_to_keep = Some(read_days(at)?);
    }
    if let Some(at) = f.get("max_concurrent") {
        config.max_concurrent = read_max_concurrent(at)?;
    }
    if let Some(at) = f.get("stop_on_exception") {
        config.stop_on_exception = at.boolean()?;
    }
    if let Some(at) = f.get("envvar_prefix") {
        config.envvar_prefix = read_prefix(at)?;
    }
    if let Some(at) = f.get("shared_db") {
        config.shared_db = at.boolean()?;
        if !config.shared_db {
            let why = "runs always share the store, kept apart by run id";
            warnings.push(at.problem(format!("`false` has no effect here: {why}")));
        }
    }
    if let Some(at) = f.get("ssh_config") {
        config.ssh_config = PathBuf::from(non_empty(at)?);
    }
    if let Some(at) = f.get("DATABASES") {
        config.databases = read_databases(at)?;
    }
    if let Some(at) = f.get("default_db") {
        config.default_db = Some(read_default_db(at, &config.databases)?);
    }
    if let Some(at) = f.get("LOGGING") {
        config.logging = read_logging(at, warnings)?;
    }
    if let Some(at) = f.get("logdir") {
        // The section's own `logdir` (the original's); LOGGING's wins when both are set.
        let dir = PathBuf::from(non_empty(at)?);
        config.logging.logdir.get_or_insert(dir);
    }
    Ok(config)
}

fn read_days(at: &At<'_>) -> Result<u32, Problem> {
    let n = at.integer()?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| at.problem(format!("must be a number of days, at least 1, found {n}")))
}

fn non_empty(at: &At<'_>) -> Result<String, Problem> {
    let text = at.string()?;
    if text.trim().is_empty() {
        return Err(at.problem("must not be empty"));
    }
    Ok(text)
}

fn read_databases(at: &At<'_>) -> Result<Vec<(String, DatabaseConfig)>, Problem> {
    let mut out = Vec::new();
    for entry in at.entries("database")? {
        let db = read_database(&entry.value)?;
        out.push((entry.name, db));
    }
    Ok(out)
}

fn read_database(at: &At<'_>) -> Result<DatabaseConfig, Problem> {
    let f = at.mapping(DATABASE_KEYS)?;
    let kind = one_of(&f, at, ["dbtype", "dialect"])?;
    let dbtype = read_dbtype(kind)?;
    check_keys_fit(&f, dbtype)?;
    let string = |key| f.get(key).map(At::string).transpose();
    let user = match (f.get("user"), f.get("username")) {
        (Some(_), Some(at)) => return Err(at.problem("`user` and `username` are both set")),
        (user, username) => user.or(username).map(At::string).transpose()?,
    };
    // The original names an SQLite file `database`; ours says `file`.
    let (file, database) = match dbtype {
        DbType::Sqlite => (string("file")?.or(string("database")?), None),
        DbType::Postgresql => (None, string("database")?),
    };
    Ok(DatabaseConfig {
        dbtype,
        file,
        host: string("host")?,
        port: f.get("port").map(read_port).transpose()?,
        user,
        password: string("password")?,
        database,
        schema: string("schema")?,
    })
}

/// The one of `keys` that is set (they mean the same); neither or both is an error.
fn one_of<'f, 'a>(
    f: &'f yaml::Fields<'a>,
    at: &At<'_>,
    keys: [&str; 2],
) -> Result<&'f At<'a>, Problem> {
    match (f.get(keys[0]), f.get(keys[1])) {
        (Some(a), None) | (None, Some(a)) => Ok(a),
        (Some(_), Some(b)) => {
            Err(b.problem(format!("`{}` and `{}` are both set", keys[0], keys[1])))
        }
        (None, None) => Err(at.problem(format!("missing `{}` (or `{}`)", keys[0], keys[1]))),
    }
}

fn read_dbtype(at: &At<'_>) -> Result<DbType, Problem> {
    match at.string()?.to_ascii_lowercase().as_str() {
        "sqlite" => Ok(DbType::Sqlite),
        "postgresql" | "postgres" => Ok(DbType::Postgresql),
        other => Err(at.problem(format!(
            "unknown database type `{}`; expected `sqlite` or `postgresql`",
            other.escape_debug()
        ))),
    }
}

/// A key that the database type ignores is almost always a mistake (a
/// server setting on a SQLite entry, or the other way round).
fn check_keys_fit(f: &yaml::Fields<'_>, dbtype: DbType) -> Result<(), Problem> {
    let unused: &[&str] = match dbtype {
        DbType::Sqlite => SERVER_KEYS,
        DbType::Postgresql => &["file"],
    };
    let name = match dbtype {
        DbType::Sqlite => "sqlite",
        DbType::Postgresql => "postgresql",
    };
    match unused.iter().find_map(|key| f.get(key)) {
        Some(at) => Err(at.problem(format!("not used by {name} databases"))),
        None => Ok(()),
    }
}

fn read_port(at: &At<'_>) -> Result<u16, Problem> {
    let n = at.integer()?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| at.problem(format!("must be a port between 1 and 65535, found {n}")))
}

fn read_default_db(at: &At<'_>, databases: &[(String, DatabaseConfig)]) -> Result<String, Problem> {
    let name = at.string()?;
    if databases.iter().any(|(n, _)| *n == name) {
        return Ok(name);
    }
    let known: Vec<&str> = databases.iter().map(|(n, _)| n.as_str()).collect();
    let hint = if known.is_empty() {
        "DATABASES is empty".to_string()
    } else {
        format!("DATABASES has: {}", known.join(", "))
    };
    Err(at.problem(format!(
        "unknown database `{}`; {hint}",
        name.escape_debug()
    )))
}

fn read_logging(at: &At<'_>, warnings: &mut Warnings) -> Result<LoggingConfig, Problem> {
    let keys: Vec<&str> = LOGGING_KEYS
        .iter()
        .chain(PYTHON_LOGGING_KEYS)
        .copied()
        .collect();
    let f = at.mapping(&keys)?;
    let mut logging = LoggingConfig::default();
    for key in PYTHON_LOGGING_KEYS {
        if let Some(at) = f.get(key) {
            let why = "Python logging settings are not honoured; the central log has one format";
            warnings.push(at.problem(format!("has no effect here: {why}")));
        }
    }
    match (f.get("level"), f.get("logging_level")) {
        (Some(_), Some(at)) => return Err(at.problem("`level` and `logging_level` are both set")),
        (Some(at), None) | (None, Some(at)) => logging.level = read_level(at)?,
        (None, None) => {}
    }
    if let Some(at) = f.get("logdir") {
        logging.logdir = Some(PathBuf::from(non_empty(at)?));
    }
    if let Some(at) = f.get("console") {
        logging.console = at.boolean()?;
    }
    Ok(logging)
}

fn read_level(at: &At<'_>) -> Result<ConsoleLevel, Problem> {
    // Python's numbers, as the original's `logging_level: 10` wrote them.
    if let Ok(n) = at.integer() {
        return match n {
            0..=10 => Ok(ConsoleLevel::Debug),
            11..=20 => Ok(ConsoleLevel::Info),
            21..=30 => Ok(ConsoleLevel::Warning),
            31..=40 => Ok(ConsoleLevel::Error),
            41..=50 => Ok(ConsoleLevel::Critical),
            _ => Err(at.problem(format!("unknown level {n}; expected 10, 20, 30, 40 or 50"))),
        };
    }
    let level = at.string()?;
    match level.to_ascii_lowercase().as_str() {
        "trace" => Ok(ConsoleLevel::Trace),
        "debug" => Ok(ConsoleLevel::Debug),
        "info" => Ok(ConsoleLevel::Info),
        "warning" | "warn" => Ok(ConsoleLevel::Warning),
        "error" => Ok(ConsoleLevel::Error),
        "critical" => Ok(ConsoleLevel::Critical),
        _ => Err(at.problem(format!(
            "unknown level `{}`; expected debug, info, warning, error or critical",
            level.escape_debug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration sample of the original's README, as written there.
    const ORIGINAL: &str = r#"
EVENTOR:
    debug: False
    task_construct: process
    envvar_prefix: EVENTOR_
    max_concurrent: -1
    stop_on_exception: True
    sleep_between_loops: 0.25
    sequence_arg_name: None
    day_to_keep_db: 5
    remote_method: ssh
    pass_logger_to_task: False
    shared_db: False
    DATABASES:
        sqfile1: {dialect: sqlite, database: /tmp/runly.db}
        pgdb1: {dialect: postgresql, drivername: psycopg2, username: pgusername, password: pgpassword,
                host: ubuntu-guest-02, port: 5433, database: pyground, schema: play}
    LOGGING:
        logging_level: 10
        logdir: /var/log/eventor
        level_formats: {10: '...', default: '...'}
        consolidate: False
        console: True
        file_prefix: ''
        file_suffix: ''
        file_mode: 'a'
"#;

    #[test]
    fn the_originals_sample_loads_with_a_warning_per_key_without_effect() {
        let config = parse_config(ORIGINAL, Path::new("orig.yaml"), DEFAULT_SECTION).unwrap();
        assert_eq!(config.max_concurrent, MaxConcurrent::UNLIMITED);
        assert_eq!(config.days_to_keep, Some(5));
        assert_eq!(config.logging.level, ConsoleLevel::Debug);
        assert_eq!(
            config.logging.logdir,
            Some(PathBuf::from("/var/log/eventor"))
        );
        let (name, sqlite) = &config.databases[0];
        assert_eq!((name.as_str(), sqlite.dbtype), ("sqfile1", DbType::Sqlite));
        assert_eq!(sqlite.file.as_deref(), Some("/tmp/runly.db"));
        let (_, pg) = &config.databases[1];
        assert_eq!(pg.dbtype, DbType::Postgresql);
        assert_eq!(pg.user.as_deref(), Some("pgusername"));
        assert_eq!(
            (pg.database.as_deref(), pg.port),
            (Some("pyground"), Some(5433))
        );
        let warned: Vec<&str> = config
            .warnings
            .iter()
            .map(|w| w.split(": ").nth(1).unwrap())
            .collect();
        let expected = [
            "EVENTOR.debug",
            "EVENTOR.task_construct",
            "EVENTOR.sleep_between_loops",
            "EVENTOR.sequence_arg_name",
            "EVENTOR.remote_method",
            "EVENTOR.pass_logger_to_task",
            "EVENTOR.shared_db",
            "EVENTOR.LOGGING.level_formats",
            "EVENTOR.LOGGING.consolidate",
            "EVENTOR.LOGGING.file_prefix",
            "EVENTOR.LOGGING.file_suffix",
            "EVENTOR.LOGGING.file_mode",
        ];
        for key in expected {
            assert!(
                warned.contains(&key),
                "no warning for {key}: {:?}",
                config.warnings
            );
        }
        assert_eq!(warned.len(), expected.len(), "{:?}", config.warnings);
        assert!(config.warnings[0].starts_with("orig.yaml:3:12: EVENTOR.debug: has no effect"));
    }

    #[test]
    fn another_section_is_read_with_its_tag_and_zero_means_no_limit() {
        let text = "EVENTOR: {max_concurrent: 3}\nNIGHTLY: {max_concurrent: 0}\n";
        let tagged = parse_config(text, Path::new("c.yaml"), "NIGHTLY").unwrap();
        assert_eq!(tagged.max_concurrent, MaxConcurrent::UNLIMITED);
        let plain = parse_config(text, Path::new("c.yaml"), DEFAULT_SECTION).unwrap();
        assert_eq!(plain.max_concurrent, MaxConcurrent::at_most(3));
    }

    const FULL: &str = r#"
OTHER_APP: {whatever: [1, 2], EVENTOR_LIKE: x}
EVENTOR:
  max_concurrent: 8
  stop_on_exception: false
  envvar_prefix: ETL_
  shared_db: true
  ssh_config: ${CONF_DIR}/ssh_config
  DATABASES:
    local: {dbtype: sqlite, file: $DATA/runs.db}
    pg:
      dbtype: postgresql
      host: db.example
      port: ${PGPORT}
      user: eventor
      password: pa$$word
      database: runs
      schema: etl
  default_db: pg
  LOGGING: {level: WARNING, logdir: /var/log/etl, console: no}
"#;

    fn env(name: &str) -> Option<String> {
        match name {
            "CONF_DIR" => Some("/etc/etl".into()),
            "DATA" => Some("/data".into()),
            "PGPORT" => Some("5433".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<EventorConfig, ConfigError> {
        parse_config_with_env(text, Path::new("eventor.yaml"), DEFAULT_SECTION, &env)
    }

    #[test]
    fn reads_every_key() {
        let config = parse(FULL).unwrap();
        assert_eq!(config.max_concurrent, MaxConcurrent::at_most(8));
        assert!(!config.stop_on_exception);
        assert_eq!(config.envvar_prefix, "ETL_");
        assert!(config.shared_db);
        assert_eq!(config.ssh_config, PathBuf::from("/etc/etl/ssh_config"));
        let local = &config.databases[0];
        assert_eq!(local.0, "local");
        assert_eq!(local.1.dbtype, DbType::Sqlite);
        assert_eq!(local.1.file.as_deref(), Some("/data/runs.db"));
        let pg = config.database().unwrap();
        assert_eq!(pg.dbtype, DbType::Postgresql);
        assert_eq!(pg.host.as_deref(), Some("db.example"));
        assert_eq!(pg.port, Some(5433));
        assert_eq!(pg.user.as_deref(), Some("eventor"));
        assert_eq!(pg.password.as_deref(), Some("pa$word"));
        assert_eq!(pg.database.as_deref(), Some("runs"));
        assert_eq!(pg.schema.as_deref(), Some("etl"));
        assert_eq!(
            config.logging,
            LoggingConfig {
                level: ConsoleLevel::Warning,
                logdir: Some("/var/log/etl".into()),
                console: false,
            }
        );
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let config = parse(FULL).unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("pa$word") && debug.contains("***"),
            "{debug}"
        );
    }

    #[test]
    fn defaults() {
        let d = EventorConfig::default();
        assert_eq!(d.max_concurrent, MaxConcurrent::UNLIMITED);
        assert!(d.stop_on_exception);
        assert_eq!(d.envvar_prefix, "EVENTOR_");
        assert!(!d.shared_db);
        assert_eq!(d.ssh_config, PathBuf::from("~/.ssh/config"));
        assert!(d.databases.is_empty() && d.default_db.is_none() && d.database().is_none());
        assert_eq!(d.logging.level, ConsoleLevel::Info);
        assert!(d.logging.console && d.logging.logdir.is_none());
        for text in [
            "",
            "# nothing\n",
            "OTHER: {a: 1}\n",
            "EVENTOR:\n",
            "EVENTOR: {}\n",
        ] {
            assert_eq!(parse(text).unwrap(), d, "{text:?}");
        }
        let partial = parse("EVENTOR: {max_concurrent: 2}").unwrap();
        assert_eq!(
            (partial.max_concurrent, partial.stop_on_exception),
            (MaxConcurrent::at_most(2), true)
        );
    }

    #[test]
    fn expands_variables() {
        let cases = [
            ("plain", Ok("plain")),
            ("$DATA/x", Ok("/data/x")),
            ("${DATA}x", Ok("/datax")),
            ("a$DATA-b", Ok("a/data-b")),
            ("$$DATA", Ok("$DATA")),
            ("cost: 5$", Ok("cost: 5$")),
            ("$ and $1", Ok("$ and $1")),
            ("[$EMPTY]", Ok("[]")),
            ("$NOPE", Err("undefined environment variable `NOPE`")),
            ("x${NOPE}y", Err("undefined environment variable `NOPE`")),
            ("${DATA", Err("unclosed `${`")),
            ("${}", Err("invalid variable name `` in `${…}`")),
            ("${A B}", Err("invalid variable name `A B` in `${…}`")),
            ("é$DATA", Ok("é/data")),
        ];
        for (text, want) in cases {
            let got = expand_vars(text, &env);
            assert_eq!(
                got.as_deref(),
                want.map_err(String::from).as_deref(),
                "{text}"
            );
        }
    }

    const ERROR_CASES: &[(&str, &str)] = &[
        (
            "EVENTOR:\n  max_concurent: 3\n",
            "eventor.yaml:2:3: EVENTOR.max_concurent: unknown key; did you mean `max_concurrent`?",
        ),
        (
            "EVENTOR:\n  LOGGING: {level: info, colour: true}\n",
            "eventor.yaml:2:26: EVENTOR.LOGGING.colour: unknown key; expected one of: level, \
             logging_level, logdir, console, level_formats, consolidate, file_prefix, \
             file_suffix, file_mode, maxBytes, backupCount, encoding, delay, when, interval, \
             utc, atTime",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    pg: {dbtype: postgresql, hostname: h}\n",
            "eventor.yaml:3:30: EVENTOR.DATABASES.pg.hostname: unknown key; did you mean `host`?",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    pg: {dbtype: postgresql, password: $PGPASS}\n",
            "eventor.yaml:3:40: EVENTOR.DATABASES.pg.password: undefined environment variable \
             `PGPASS`",
        ),
        (
            "EVENTOR:\n  ssh_config: ${HOME_DIR}/.ssh/config\n",
            "eventor.yaml:2:15: EVENTOR.ssh_config: undefined environment variable `HOME_DIR`",
        ),
        (
            "EVENTOR:\n  max_concurrent: many\n",
            "eventor.yaml:2:19: EVENTOR.max_concurrent: expected a whole number, found `many`",
        ),
        (
            "EVENTOR:\n  shared_db: [true]\n",
            "eventor.yaml:2:14: EVENTOR.shared_db: expected true or false, found a list",
        ),
        (
            "EVENTOR:\n  envvar_prefix: 1X_\n",
            "eventor.yaml:2:18: EVENTOR.envvar_prefix: invalid prefix `1X_`: use letters, digits \
             and `_`, not starting with a digit",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: mysql}\n",
            "eventor.yaml:3:17: EVENTOR.DATABASES.x.dbtype: unknown database type `mysql`; \
             expected `sqlite` or `postgresql`",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {file: a.db}\n",
            "eventor.yaml:3:8: EVENTOR.DATABASES.x: missing `dbtype` (or `dialect`)",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: sqlite, host: h}\n",
            "eventor.yaml:3:31: EVENTOR.DATABASES.x.host: not used by sqlite databases",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: postgresql, port: 70000}\n",
            "eventor.yaml:3:35: EVENTOR.DATABASES.x.port: must be a port between 1 and 65535, \
             found 70000",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    a: {dbtype: sqlite}\n    a: {dbtype: sqlite}\n",
            "eventor.yaml:4:5: EVENTOR.DATABASES.a: duplicate database `a` (first defined at \
             line 3)",
        ),
        (
            "EVENTOR:\n  DATABASES: {a: {dbtype: sqlite}}\n  default_db: b\n",
            "eventor.yaml:3:15: EVENTOR.default_db: unknown database `b`; DATABASES has: a",
        ),
        (
            "EVENTOR:\n  default_db: b\n",
            "eventor.yaml:2:15: EVENTOR.default_db: unknown database `b`; DATABASES is empty",
        ),
        (
            "EVENTOR:\n  LOGGING: {level: loud}\n",
            "eventor.yaml:2:20: EVENTOR.LOGGING.level: unknown level `loud`; expected debug, \
             info, warning, error or critical",
        ),
        (
            "EVENTOR: [1]\n",
            "eventor.yaml:1:10: EVENTOR: expected a mapping, found a list",
        ),
        (
            "EVENTOR: {}\nEVENTOR: {}\n",
            "eventor.yaml:2:1: EVENTOR: duplicate section `EVENTOR` (first defined at line 1)",
        ),
        (
            "- a\n",
            "eventor.yaml:1:1: top level: expected a mapping, found a list",
        ),
        (
            "EVENTOR:\n  LOGGING: {level: [\n",
            "eventor.yaml:2:20: yaml: unclosed bracket '['",
        ),
    ];

    #[test]
    fn reports_errors_with_file_line_and_field() {
        let mismatches: Vec<String> = ERROR_CASES
            .iter()
            .filter_map(|(text, want)| {
                let got = parse(text).expect_err(text).to_string();
                (got != *want).then(|| format!("{text:?}\n  got: {got}\n want: {want}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn expanded_strings_become_numbers_and_booleans() {
        let vars = |name: &str| match name {
            "N" => Some("3".to_string()),
            "SHARED" => Some("true".to_string()),
            _ => None,
        };
        let text = "EVENTOR: {max_concurrent: $N, shared_db: \"${SHARED}\"}";
        let config =
            parse_config_with_env(text, Path::new("c.yaml"), DEFAULT_SECTION, &vars).unwrap();
        assert_eq!(
            (config.max_concurrent, config.shared_db),
            (MaxConcurrent::at_most(3), true)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,120}") {
            let _ = parse(&text);
            let _ = expand_vars(&text, &env);
        }

        #[test]
        fn never_panics_on_dollar_soup(text in "[$${}A_ é]{0,30}") {
            let _ = expand_vars(&text, &env);
            let _ = parse(&format!("EVENTOR: {{ssh_config: '{}'}}", text.replace('\'', "")));
        }
    }

    #[test]
    fn load_config_reads_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eventor.yaml");
        std::fs::write(
            &path,
            "EVENTOR:\n  max_concurrent: 2\n  LOGGING: {console: false}\n",
        )
        .unwrap();
        let config = load_config(&path, DEFAULT_SECTION).unwrap();
        assert_eq!(config.max_concurrent, MaxConcurrent::at_most(2));
        assert!(!config.logging.console);

        std::fs::write(&path, "EVENTOR:\n  bogus: 1\n").unwrap();
        let e = load_config(&path, DEFAULT_SECTION).unwrap_err();
        assert_eq!(e.field(), Some("EVENTOR.bogus"));
        assert_eq!(e.position().map(|p| (p.line, p.column)), Some((2, Some(3))));
        assert!(e.to_string().starts_with(&format!(
            "{}:2:3: EVENTOR.bogus: unknown key",
            path.display()
        )));

        let missing = dir.path().join("nope.yaml");
        let e = load_config(&missing, DEFAULT_SECTION)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&format!(
            "{}: cannot read the config file",
            missing.display()
        )));
    }
}
