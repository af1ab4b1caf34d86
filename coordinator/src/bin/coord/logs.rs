//! `eventor-coord logs`: a run's central log, filtered by host or step, or followed to the
//! run's end (a coordinator that went away without ending the log is noticed through the
//! store).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use eventor::flow::{load_flow, FlowFile};

use super::store_choice::{self, StoreArgs};
use super::{bad, init_logging, logdir_of, ConfigArgs, Failure};

#[derive(Args)]
pub struct LogsArgs {
    /// The flow file of the run (its name picks the log directory).
    flow: PathBuf,
    /// The run whose log to print (default: the newest log of the flow).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    /// Keep printing lines as they are written, until the run ends.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines of this host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Only lines of this step (`s1`) or task (`s1[3]`).
    #[arg(long, value_name = "STEP")]
    step: Option<String>,
    /// The log directory (default: LOGGING.logdir of --config, else ./logs).
    #[arg(long, value_name = "DIR")]
    logdir: Option<PathBuf>,
    /// The run's store (with --follow, to notice a coordinator that went away without
    /// ending the log; a store that is not there is never created) and its hosts.
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn logs(args: LogsArgs, level: Option<&str>) -> Result<ExitCode, Failure> {
    use eventor::log::{log_path, print_log, print_log_until, LogFilter};
    let flow = load_flow(&args.flow).map_err(bad)?;
    let config = args.config.load()?;
    init_logging(level, &config.logging);
    let logdir = logdir_of(args.logdir, &config);
    let (chosen, hosts) = args.store.for_flow(&flow, &config)?;
    let path = match &args.run_id {
        // Without --follow (which waits for a log that is not there yet), no log is no run.
        Some(run_id) if !args.follow && !log_path(&logdir, &flow.name, run_id).exists() => {
            return Err(bad(anyhow::anyhow!(
                "no log of run {run_id} of flow {} in {}",
                flow.name,
                logdir.display()
            )));
        }
        Some(run_id) => log_path(&logdir, &flow.name, run_id),
        None => newest_log(&log_path(&logdir, &flow.name, "x")).ok_or_else(|| {
            bad(anyhow::anyhow!(
                "no log of flow {} in {}",
                flow.name,
                logdir.display()
            ))
        })?,
    };
    let filter = LogFilter {
        host: args.host,
        step: args.step,
    };
    check_log_filter(&filter, &flow, hosts.as_ref(), &path)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Failure::Run(e.into()))?;
    if !args.follow {
        let printed = runtime.block_on(print_log(&path, &filter, false, std::io::stdout().lock()));
        return match printed {
            Err(e) if !reader_gone(&e) => Err(Failure::Run(e.into())),
            _ => Ok(ExitCode::SUCCESS),
        };
    }
    let gone = tokio_util::sync::CancellationToken::new();
    let watch = watch_coordinator(chosen, flow.name.clone(), args.run_id, path.clone());
    runtime.spawn(watch.run(gone.clone()));
    let out = std::io::stdout().lock();
    let printed = runtime.block_on(print_log_until(&path, &filter, Some(gone.clone()), out));
    let summary = match printed {
        Err(e) if reader_gone(&e) => return Ok(ExitCode::SUCCESS),
        printed => printed.map_err(|e| Failure::Run(e.into()))?,
    };
    if summary.outcome.is_none() && gone.is_cancelled() {
        eprintln!("eventor-coord: the run's coordinator is gone without ending its log");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether printing the log failed only because its reader went away (`logs | head`): the
/// command then ends quietly with exit 0, having printed what was wanted.
fn reader_gone(e: &eventor::log::CentralLogError) -> bool {
    matches!(e, eventor::log::CentralLogError::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A `--step` or `--host` that names nothing of the flow, its hosts or its log is refused
/// (exit 2) with the names it could be, rather than printing nothing.
fn check_log_filter(
    filter: &eventor::log::LogFilter,
    flow: &FlowFile,
    hosts: Option<&eventor::cluster::HostsFile>,
    log: &std::path::Path,
) -> Result<(), Failure> {
    let step = filter
        .step
        .as_deref()
        .map(|s| s.split('[').next().unwrap_or(s));
    let mut names = eventor::log::LogNames::default();
    names
        .steps
        .extend(flow.steps.iter().map(|s| s.name.clone()));
    let pinned = flow
        .steps
        .iter()
        .flat_map(|s| s.host.iter().chain(&s.hosts));
    names.hosts.extend(pinned.cloned());
    names.hosts.extend(hosts.iter().flat_map(|h| h.names()));
    // The prime writes its own lines as `prime` (an older log's other names are read below).
    names.hosts.insert(eventor::log::PRIME.to_string());
    let known = |names: &eventor::log::LogNames| {
        step.is_none_or(|s| names.steps.contains(s))
            && filter.host.as_ref().is_none_or(|h| names.hosts.contains(h))
    };
    if known(&names) {
        return Ok(());
    }
    // Only now read the log through: a run on another prime, an older flow's steps.
    let seen = eventor::log::log_names(log).map_err(|e| Failure::Run(e.into()))?;
    names.steps.extend(seen.steps);
    names.hosts.extend(seen.hosts);
    if let Some(step) = step.filter(|s| !names.steps.contains(*s)) {
        return Err(bad(unknown_name("--step", "step", step, &names.steps)));
    }
    match filter.host.as_deref() {
        Some(host) if !names.hosts.contains(host) => {
            Err(bad(unknown_name("--host", "host", host, &names.hosts)))
        }
        _ => Ok(()),
    }
}

/// "--step nosuch: no step `nosuch`; did you mean `s1`? (known: s1, s2)", at most 20 names.
fn unknown_name(
    flag: &str,
    noun: &str,
    name: &str,
    known: &std::collections::BTreeSet<String>,
) -> anyhow::Error {
    const SHOWN: usize = 20;
    let near = eventor::did_you_mean(name, known.iter().map(String::as_str));
    let mut list: Vec<&str> = known.iter().take(SHOWN).map(String::as_str).collect();
    if known.len() > SHOWN {
        list.push("…");
    }
    anyhow::anyhow!(
        "{flag} {name}: the run has no {noun} `{name}`{near} (known: {})",
        list.join(", ")
    )
}

/// Who a follower watches: the run's coordinator, through the run's lock in its store.
fn watch_coordinator(
    store: store_choice::Chosen,
    flow: String,
    run_id: Option<String>,
    log: PathBuf,
) -> CoordinatorWatch {
    CoordinatorWatch {
        store,
        flow,
        run_id,
        log,
    }
}

struct CoordinatorWatch {
    store: store_choice::Chosen,
    flow: String,
    run_id: Option<String>,
    log: PathBuf,
}

impl CoordinatorWatch {
    /// Cancels `gone` once the log exists (its coordinator took the run's lock before
    /// writing it) and the lock is free again: the coordinator died without an end marker.
    /// A store that is not there yet is looked for again, never created: without one the
    /// follower goes on until the end marker.
    async fn run(self, gone: tokio_util::sync::CancellationToken) {
        let mut opened = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !self.log.exists() {
                continue;
            }
            if opened.is_none() {
                opened = self.store.open_existing().await.ok();
            }
            let Some(store) = &opened else {
                continue;
            };
            let Some(run_id) = self.run_id(store).await else {
                continue;
            };
            // Asked, not taken: a probe that took the lock could refuse a recovery starting.
            if let Ok(false) = store.run_held(&run_id).await {
                gone.cancel();
                return;
            }
        }
    }

    async fn run_id(&self, store: &eventor_store::Store) -> Option<String> {
        if let Some(id) = &self.run_id {
            return Some(id.clone());
        }
        let latest = store.latest_run(&self.flow).await.ok()??;
        Some(latest.key.run_id.to_string())
    }
}

/// The most recently written `.log` file in the directory of `sample`.
fn newest_log(sample: &std::path::Path) -> Option<PathBuf> {
    let dir = sample.parent()?;
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}
