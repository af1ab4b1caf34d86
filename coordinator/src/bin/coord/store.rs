//! Which store a command uses, found one way by every command: `--store`, else the flow
//! file's `store:`, else the hosts file's (`--hosts`), else the config's `default_db`, else
//! the flow's SQLite file here. A command that reads a run never creates its store.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use eventor::cluster::{load_hosts, HostsFile};
use eventor::flow::FlowFile;
use eventor::report::{open_store, ReportError};
use eventor::EventorConfig;
use eventor_store::{Store, StoreLocation};

use super::{bad, Failure};

/// `--store` and `--hosts`, as every command on a flow's runs takes them.
#[derive(Args)]
pub struct StoreArgs {
    /// The store: postgres://user@host:port/db?schema=NAME, sqlite:PATH, a file path, or the
    /// name of a DATABASES entry of --config. Default: the flow file's `store:`, the hosts
    /// file's `store:`, the config's default_db, else <flow name>.run.db here.
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// A hosts file (as `run --hosts`), whose `store:` is the store when neither --store nor
    /// the flow file names one.
    #[arg(long, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
}

impl StoreArgs {
    /// The hosts file of `--hosts`, loaded and checked as `run` loads it.
    pub fn hosts_file(&self) -> Result<Option<HostsFile>, Failure> {
        self.hosts
            .as_deref()
            .map(load_hosts)
            .transpose()
            .map_err(bad)
    }

    /// The store of a command on `flow`, and the hosts file it was looked for in.
    pub fn for_flow(
        &self,
        flow: &FlowFile,
        config: &EventorConfig,
    ) -> Result<(Chosen, Option<HostsFile>), Failure> {
        let hosts = self.hosts_file()?;
        let sources = StoreSources {
            flag: self.store.as_deref(),
            flow: Some(flow),
            hosts: hosts.as_ref(),
        };
        let chosen = sources.for_flow(config, &flow.name)?;
        Ok((chosen, hosts))
    }
}

/// Where a command may find its store, the most specific first.
pub struct StoreSources<'a> {
    pub flag: Option<&'a str>,
    pub flow: Option<&'a FlowFile>,
    pub hosts: Option<&'a HostsFile>,
}

/// A store's text and where it was written, for an error about it.
struct Named<'a> {
    text: &'a str,
    from: String,
}

impl StoreSources<'_> {
    /// The store the first source names (a `DATABASES` name of the config, a URL or a
    /// path), else the config's `default_db`; `None` when nothing names one.
    pub fn named(&self, config: &EventorConfig) -> anyhow::Result<Option<StoreLocation>> {
        choose_store(self.first(), config)
    }

    fn first(&self) -> Option<Named<'_>> {
        let flag = self.flag.map(|text| Named {
            text,
            from: "--store".into(),
        });
        flag.or_else(|| {
            let flow = self.flow?;
            let text = flow.store.as_deref()?;
            Some(Named {
                text,
                from: format!("`store:` of {}", flow.path.display()),
            })
        })
        .or_else(|| {
            let hosts = self.hosts?;
            let text = hosts.store.as_deref()?;
            Some(Named {
                text,
                from: format!("`store:` of {}", hosts.path.display()),
            })
        })
    }

    /// Where [`StoreSources::named`] looked, for a command that found no store.
    pub fn looked(&self) -> String {
        let mut places = vec!["--store".to_string()];
        if let Some(flow) = self.flow {
            places.push(format!("`store:` of {}", flow.path.display()));
        }
        places.push(match self.hosts {
            Some(hosts) => format!("`store:` of {}", hosts.path.display()),
            None => "--hosts".into(),
        });
        places.push("the config's default_db".into());
        format!("no store named (looked at {})", places.join(", "))
    }

    /// The store a command on the flow `flow` reads or writes: the one named, else
    /// `<flow>.run.db` here; `looked` is set when it is that default.
    pub fn for_flow(&self, config: &EventorConfig, flow: &str) -> Result<Chosen, Failure> {
        Ok(match self.named(config).map_err(bad)? {
            Some(location) => Chosen {
                location,
                looked: None,
            },
            None => Chosen {
                location: StoreLocation::Sqlite(PathBuf::from(format!("{flow}.run.db"))),
                looked: Some(self.looked()),
            },
        })
    }
}

/// A command's store, and where it looked when it fell back to the flow's default file.
pub struct Chosen {
    pub location: StoreLocation,
    /// Set when nothing named a store and `location` is the flow's default SQLite file.
    pub looked: Option<String>,
}

impl Chosen {
    /// The store as it is, never created: one that is not there is bad input (exit 2)
    /// saying where the command looked.
    pub async fn open_existing(&self) -> Result<Store, Failure> {
        open_store(&self.location)
            .await
            .map_err(|e| self.failure(e))
    }

    /// A report's error as the binary classes it, with where the store was looked for
    /// when there is none.
    pub fn failure(&self, e: ReportError) -> Failure {
        let missing = matches!(e, ReportError::NoStore { .. });
        let input = e.is_input_error();
        let error = anyhow::Error::new(e);
        let error = match (&self.looked, missing) {
            (Some(looked), true) => error.context(looked.clone()),
            _ => error,
        };
        if input {
            Failure::BadInput(error)
        } else {
            Failure::Run(error)
        }
    }
}

/// The named store as a `DATABASES` name of the config, a URL or a path; without one, the
/// config's `default_db`; without that, `None`.
fn choose_store(
    named: Option<Named<'_>>,
    config: &EventorConfig,
) -> anyhow::Result<Option<StoreLocation>> {
    let selected = match named {
        Some(named) => match config.database_named(named.text) {
            Some(entry) => entry,
            None => {
                let location = StoreLocation::parse(named.text);
                let from = named.from;
                return location
                    .map(Some)
                    .with_context(|| format!("{from} {}", masked(named.text)));
            }
        },
        None => match config.database() {
            Some(entry) => entry,
            None => return Ok(None),
        },
    };
    // An entry is checked only here, once a command selects it: one that cannot be used
    // says why, where the file set it.
    let entry = selected.map_err(|unusable| anyhow::Error::new(unusable.clone()))?;
    let location = entry
        .location()
        .map_err(|e| anyhow::anyhow!("DATABASES entry: {e}"))?;
    Ok(Some(location))
}

/// The text of a store URL with any password replaced, for error messages.
fn masked(text: &str) -> String {
    match StoreLocation::parse(text) {
        Ok(location) => location.to_string(),
        Err(_) => text.split('@').next_back().unwrap_or(text).to_string(),
    }
}
