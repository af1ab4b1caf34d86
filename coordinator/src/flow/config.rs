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

use crate::api::config::{
    ConsoleLevel, DatabaseConfig, DatabaseEntry, DbType, EventorConfig, LoggingConfig,
    UnusableDatabase,
};
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
/// Both this project's keys and the original's (`dialect`, `username`, `drivername`,
/// `query`).
const DATABASE_KEYS: &[&str] = &[
    "dbtype",
    "dialect",
    "drivername",
    "query",
    "file",
    "host",
    "port",
    "user",
    "username",
    "password",
    "database",
    "schema",
];
/// The original's keys of a `DATABASES` entry that it passed on to its database layer
/// (SQLAlchemy's driver and its options); the stores' drivers are built in here.
const DRIVER_KEYS: &[&str] = &["drivername", "query"];
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
    let reader = Reader {
        env,
        locate: &|p| convert(p).to_string(),
    };
    let (mut config, warnings) = reader.read_root(&root, section).map_err(convert)?;
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
/// A keyword argument's name, or none: null, empty, or `None` as the original's sample
/// writes it.
fn read_argument_name(at: &At<'_>) -> Result<Option<String>, Problem> {
    if at.node.is_null() {
        return Ok(None);
    }
    let name = at.string()?;
    Ok((!name.is_empty() && name != "None").then_some(name))
}

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

/// What reading a section needs besides its nodes: the variables, and how a problem held
/// back in a `DATABASES` entry is told (located in the file) when a run selects the entry.
struct Reader<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    locate: &'e dyn Fn(Problem) -> String,
}

impl Reader<'_> {
    fn read_root(&self, root: &Node, name: &str) -> Result<(EventorConfig, Warnings), Problem> {
        // Other programs' sections are none of our business: only look for ours.
        let sections = At::root(root).entries("section")?;
        let Some(section) = sections.into_iter().find(|e| e.name == name) else {
            return Ok((EventorConfig::default(), Vec::new()));
        };
        let mut expanded = section.value.node.clone();
        expand_section(&mut expanded, &section.value.field, self.env)?;
        let at = At::new(&expanded, section.value.field);
        let mut warnings = Vec::new();
        let config = self.read_eventor(&at, &mut warnings)?;
        Ok((config, warnings))
    }

    fn read_eventor(&self, at: &At<'_>, warnings: &mut Warnings) -> Result<EventorConfig, Problem> {
        let f = at.mapping(EVENTOR_KEYS)?;
        let mut config = EventorConfig::default();
        for (key, why) in IGNORED_KEYS {
            if let Some(at) = f.get(key) {
                warnings.push(at.problem(format!("has no effect here: {why}")));
            }
        }
        // Kept for the Python package (the warnings above stand for everything else).
        if let Some(at) = f.get("task_construct") {
            config.task_construct = Some(at.string()?);
        }
        if let Some(at) = f.get("sequence_arg_name") {
            config.sequence_arg_name = read_argument_name(at)?;
        }
        if let Some(at) = f.get("pass_logger_to_task") {
            config.pass_logger_to_task = at.boolean()?;
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
            config.databases = self.read_databases(at, warnings)?;
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

    /// Each entry read on its own: one this project cannot use (another driver's options, an
    /// in-memory database, a variable set only where that entry is used) keeps its problem
    /// for the run that selects it, so that it stops no other run.
    fn read_databases(
        &self,
        at: &At<'_>,
        warnings: &mut Warnings,
    ) -> Result<Vec<(String, DatabaseEntry)>, Problem> {
        let mut out = Vec::new();
        for entry in at.entries("database")? {
            let mut node = entry.value.node.clone();
            let read = expand_tree(&mut node, &entry.value.field, self.env)
                .and_then(|()| read_database(&At::new(&node, entry.value.field.clone()), warnings))
                .map_err(|p| UnusableDatabase((self.locate)(p)));
            out.push((entry.name, read));
        }
        Ok(out)
    }
}

/// Expands variables in every string value of a section but its `DATABASES` entries, which
/// [`Reader::read_databases`] expands each on its own.
fn expand_section(
    node: &mut Node,
    field: &FieldPath,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Problem> {
    let Value::Map(pairs) = &mut node.value else {
        return expand_tree(node, field, env);
    };
    for (key, value) in pairs.iter_mut() {
        let name = key.scalar_text().unwrap_or_default();
        if name != "DATABASES" {
            expand_tree(value, &field.key(&name), env)?;
        }
    }
    Ok(())
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

fn read_database(at: &At<'_>, warnings: &mut Warnings) -> Result<DatabaseConfig, Problem> {
    let f = at.mapping(DATABASE_KEYS)?;
    for key in DRIVER_KEYS {
        if let Some(at) = f.get(key) {
            let why = "the stores' drivers are built in; driver options are not passed on";
            warnings.push(at.problem(format!("has no effect here: {why}")));
        }
    }
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
    if dbtype == DbType::Sqlite && file.is_none() {
        // The original's SQLite without a file is in memory, seen by one process only.
        return Err(at.problem(
            "an SQLite entry needs `file` (or `database`): an in-memory database cannot be a \
             store, which the tasks, agents and `status` read from other processes",
        ));
    }
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

fn read_default_db(at: &At<'_>, databases: &[(String, DatabaseEntry)]) -> Result<String, Problem> {
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
        assert_eq!(config.task_construct.as_deref(), Some("process"));
        assert_eq!(config.sequence_arg_name, None);
        assert!(!config.pass_logger_to_task);
        assert_eq!(config.logging.level, ConsoleLevel::Debug);
        assert_eq!(
            config.logging.logdir,
            Some(PathBuf::from("/var/log/eventor"))
        );
        let (name, sqlite) = &config.databases[0];
        let sqlite = sqlite.as_ref().unwrap();
        assert_eq!((name.as_str(), sqlite.dbtype), ("sqfile1", DbType::Sqlite));
        assert_eq!(sqlite.file.as_deref(), Some("/tmp/runly.db"));
        let pg = config.database_named("pgdb1").unwrap().unwrap();
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
            "EVENTOR.DATABASES.pgdb1.drivername",
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
    fn the_python_packages_settings_are_kept() {
        let text = "EVENTOR: {task_construct: invoke, sequence_arg_name: seq, pass_logger_to_task: true}\n";
        let config = parse_config(text, Path::new("c.yaml"), DEFAULT_SECTION).unwrap();
        assert_eq!(config.task_construct.as_deref(), Some("invoke"));
        assert_eq!(config.sequence_arg_name.as_deref(), Some("seq"));
        assert!(config.pass_logger_to_task);
        let none = "EVENTOR: {sequence_arg_name: }\n";
        let config = parse_config(none, Path::new("c.yaml"), DEFAULT_SECTION).unwrap();
        assert_eq!(config.sequence_arg_name, None);
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
        assert_eq!(config.databases[0].0, "local");
        let local = config.database_named("local").unwrap().unwrap();
        assert_eq!(local.dbtype, DbType::Sqlite);
        assert_eq!(local.file.as_deref(), Some("/data/runs.db"));
        let pg = config.database().unwrap().unwrap();
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
            "EVENTOR:\n  DATABASES:\n    a: {dbtype: sqlite, file: a.db}\n    a: {dbtype: \
             sqlite}\n",
            "eventor.yaml:4:5: EVENTOR.DATABASES.a: duplicate database `a` (first defined at \
             line 3)",
        ),
        (
            "EVENTOR:\n  DATABASES: {a: {dbtype: mysql}}\n  default_db: b\n",
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

    /// Entries that cannot be used, each with why, told when a run selects it (by name as
    /// here, or as `default_db`); the file loads meanwhile.
    const UNUSABLE_ENTRIES: &[(&str, &str)] = &[
        (
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: postgresql, hostname: h}\n",
            "eventor.yaml:3:29: EVENTOR.DATABASES.x.hostname: unknown key; did you mean `host`?",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: postgresql, password: $PGPASS}\n",
            "eventor.yaml:3:39: EVENTOR.DATABASES.x.password: undefined environment variable \
             `PGPASS`",
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
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: sqlite, file: a.db, host: h}\n",
            "eventor.yaml:3:43: EVENTOR.DATABASES.x.host: not used by sqlite databases",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {dbtype: postgresql, port: 70000}\n",
            "eventor.yaml:3:35: EVENTOR.DATABASES.x.port: must be a port between 1 and 65535, \
             found 70000",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: {dialect: sqlite, query: {cache: shared}}\n",
            "eventor.yaml:3:8: EVENTOR.DATABASES.x: an SQLite entry needs `file` (or \
             `database`): an in-memory database cannot be a store, which the tasks, agents and \
             `status` read from other processes",
        ),
        (
            "EVENTOR:\n  DATABASES:\n    x: [sqlite]\n",
            "eventor.yaml:3:8: EVENTOR.DATABASES.x: expected a mapping, found a list",
        ),
    ];

    #[test]
    fn an_unusable_entry_loads_and_says_why_with_file_line_and_field_once_selected() {
        let mismatches: Vec<String> = UNUSABLE_ENTRIES
            .iter()
            .filter_map(|(text, want)| {
                let config = parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
                let got = config.database_named("x").expect(text).expect_err(text);
                let selected = parse(&format!("{text}  default_db: x\n")).unwrap();
                assert_eq!(selected.database(), Some(Err(got)), "{text:?}");
                (got.0 != *want).then(|| format!("{text:?}\n  got: {got}\n want: {want}"))
            })
            .collect();
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    /// The original's example config keeps an in-memory SQLite entry with driver options
    /// beside the file the run uses.
    const RUNLY: &str = r#"
EVENTOR:
    max_concurrent: -1
    DATABASES:
        default: {dialect: sqlite, database: runly.db}
        memory:
            dialect: sqlite
            query: {cache: shared}
        pg: {dialect: postgresql, drivername: psycopg2, host: db.example}
        secret: {dialect: postgresql, password: $UNSET_HERE}
    default_db: default
"#;

    #[test]
    fn the_originals_driver_options_warn_and_an_unused_entry_stops_nothing() {
        let config = parse(RUNLY).unwrap();
        let store = config.database().unwrap().unwrap();
        assert_eq!(store.file.as_deref(), Some("runly.db"));
        let warned: Vec<&str> = config
            .warnings
            .iter()
            .map(|w| w.split(": ").nth(1).unwrap())
            .collect();
        assert_eq!(
            warned,
            [
                "EVENTOR.DATABASES.memory.query",
                "EVENTOR.DATABASES.pg.drivername"
            ],
            "{:?}",
            config.warnings
        );
        assert!(
            config.warnings[0].starts_with(
                "eventor.yaml:8:20: EVENTOR.DATABASES.memory.query: has no effect here"
            ),
            "{:?}",
            config.warnings
        );
        assert!(config.database_named("memory").unwrap().is_err());
        assert!(config.database_named("pg").unwrap().is_ok());
        let secret = config.database_named("secret").unwrap().unwrap_err();
        assert!(
            secret.0.contains("DATABASES.secret.password: undefined"),
            "{secret}"
        );
    }

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
