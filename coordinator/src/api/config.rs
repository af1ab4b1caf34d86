//! The run's global settings as the `EVENTOR` section of a config file gives them (read by
//! [`crate::flow::config`]): engine limits, the stores (`DATABASES`) and logging.

use std::fmt;
use std::path::PathBuf;

use eventor_agent::MaxConcurrent;

/// Global settings. [`EventorConfig::default`] is what an absent file or
/// section means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventorConfig {
    /// Most tasks running at once (the file's number below 1 means no limit).
    pub max_concurrent: MaxConcurrent,
    /// Whether a failed task without a failure trigger stops the flow.
    pub stop_on_exception: bool,
    /// Prefix of the variables each task gets (`{prefix}STEP_NAME`, …).
    pub envvar_prefix: String,
    /// The original's "several programs share one database": always true here (runs are
    /// kept apart by run id); kept so a file that sets it says what it meant.
    pub shared_db: bool,
    /// Runs whose newest recovery started longer ago than this many days are pruned from
    /// the store when a run starts (`day_to_keep_db`); `None`: keep everything.
    pub days_to_keep: Option<u32>,
    /// What the file set that has no effect here, one line each (`FILE:LINE:COL: FIELD:
    /// why`), for the caller to show.
    pub warnings: Vec<String>,
    /// The ssh client config, as written (`~` is not expanded here).
    pub ssh_config: PathBuf,
    /// Named stores, in file order; an entry that cannot be used says why only when a run
    /// selects it (the original's files keep entries for other programs and drivers).
    pub databases: Vec<(String, DatabaseEntry)>,
    /// Which `databases` entry to use; `None` means the default SQLite file.
    pub default_db: Option<String>,
    pub logging: LoggingConfig,
    /// The original's `task_construct` as the file gave it: how the Python package runs a
    /// Python step (`process`, `thread`, `invoke`); the engine itself does not read it.
    pub task_construct: Option<String>,
    /// The original's `sequence_arg_name`: the keyword argument a Python step's function
    /// gets its task's sequence in (`None` in the file: none). For the Python package.
    pub sequence_arg_name: Option<String>,
    /// The original's `pass_logger_to_task`: a Python step's function gets its task's
    /// logger as `logger`. For the Python package.
    pub pass_logger_to_task: bool,
}

impl Default for EventorConfig {
    fn default() -> Self {
        EventorConfig {
            max_concurrent: MaxConcurrent::UNLIMITED,
            stop_on_exception: true,
            envvar_prefix: "EVENTOR_".into(),
            shared_db: false,
            days_to_keep: None,
            warnings: Vec::new(),
            ssh_config: PathBuf::from("~/.ssh/config"),
            databases: Vec::new(),
            default_db: None,
            logging: LoggingConfig::default(),
            task_construct: None,
            sequence_arg_name: None,
            pass_logger_to_task: false,
        }
    }
}

impl EventorConfig {
    /// The store named by `default_db`, if any: usable, or why not.
    pub fn database(&self) -> Option<Result<&DatabaseConfig, &UnusableDatabase>> {
        self.database_named(self.default_db.as_deref()?)
    }

    /// The `DATABASES` entry called `name`, if any: usable, or why not.
    pub fn database_named(&self, name: &str) -> Option<Result<&DatabaseConfig, &UnusableDatabase>> {
        let (_, entry) = self.databases.iter().find(|(n, _)| n == name)?;
        Some(entry.as_ref())
    }
}

/// One `DATABASES` entry as the file gave it: a store, or why it cannot be one.
pub type DatabaseEntry = Result<DatabaseConfig, UnusableDatabase>;

/// Why a `DATABASES` entry cannot be used, as `FILE:LINE:COL: FIELD: message`; told when a
/// run selects the entry, not when the file loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnusableDatabase(pub String);

/// One `DATABASES` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub dbtype: DbType,
    /// SQLite only: the database file.
    pub file: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Database name on the server.
    pub database: Option<String>,
    pub schema: Option<String>,
}

impl DatabaseConfig {
    /// Where this entry's store is. A Postgres entry defaults to localhost:5432, user and
    /// database `postgres`; an SQLite entry needs `file`.
    pub fn location(&self) -> Result<eventor_store::StoreLocation, String> {
        use eventor_store::{PgLocation, StoreLocation};
        match self.dbtype {
            DbType::Sqlite => match &self.file {
                Some(file) => Ok(StoreLocation::Sqlite(PathBuf::from(file))),
                None => Err("an sqlite entry needs `file`".to_string()),
            },
            DbType::Postgresql => {
                let host = self.host.as_deref().unwrap_or("localhost");
                let user = self.user.as_deref().unwrap_or("postgres");
                let database = self.database.as_deref().unwrap_or("postgres");
                let mut pg = PgLocation::new(host, self.port.unwrap_or(5432), user, database);
                if let Some(schema) = &self.schema {
                    pg.schema = schema.clone();
                }
                if let Some(password) = &self.password {
                    pg = pg.with_password(password);
                }
                Ok(StoreLocation::Postgres(pg))
            }
        }
    }
}

/// Hides the password, since configs end up in logs.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("dbtype", &self.dbtype)
            .field("file", &self.file)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("database", &self.database)
            .field("schema", &self.schema)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbType {
    Sqlite,
    Postgresql,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    pub level: ConsoleLevel,
    /// Where log files go; `None` lets the engine choose.
    pub logdir: Option<PathBuf>,
    /// Whether to log to the console as well.
    pub console: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: ConsoleLevel::Info,
            logdir: None,
            console: true,
        }
    }
}

/// The console log's threshold (`LOGGING.level`), by Python's level names (`warn` and
/// `trace` are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConsoleLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}
