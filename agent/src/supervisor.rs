//! Commands under a keeper, so that nothing a command starts outlives what it should: one
//! small process per runner (this very program re-executed, or the dedicated
//! `eventor-supervise`), started at the first command, that starts every command as its
//! own child and is the child subreaper of their trees (whatever leaves a command's process
//! group, `setsid` included, stays its descendant). It notices the runner's death through
//! the socket pair they talk over (end of file once the runner is gone, however it died and
//! whichever of its threads started the command). When the runner dies, when it asks for a
//! stop, or when a command exits leaving something behind, the keeper sends SIGTERM to the
//! command's group and what it started, waits the grace period, then SIGKILL; a command's
//! end reaches the runner only once nothing of it is left, with the command's own status.
//! See `supervisor/keeper.rs` for the keeper's side and `supervisor/wire.rs` for the
//! messages.
//!
//! One keeper for all of a runner's commands, not one supervisor per command: a command
//! then costs one fork of a small process and its own exec, as under a shell, where a
//! supervisor per command cost a second exec (0.3 to 0.8 ms a command).
//!
//! A program runs its commands under a keeper once it called [`supervise_commands`] first
//! in `main` (`eventor-coord`, `eventor-agent`, and programs through `eventor::agent_mode`),
//! or named a supervisor program with [`supervise_commands_with`]; any other program runs
//! them directly, as the group's leader with a parent-death signal (see `command.rs`).
//!
//! The keeper's program is the small dedicated `eventor-supervise` when one that speaks
//! this version's arguments lies next to the running executable (or is its companion),
//! else the program itself.

mod keeper;
mod spawn;
mod tree;
mod wire;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::PipeReader;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::oneshot;

use wire::{FromKeeper, Received, StartCommand, ToKeeper};

/// How a supervisor program is told from a program's ordinary runs: its `argv[0]`, then
/// this version of the arguments (only the version: the keeper takes its orders over stdin,
/// the socket pair). `ARG0` is also the dedicated supervisor's file name.
const ARG0: &str = "eventor-supervise";
const ARGS_VERSION: &str = "3";

/// The one argument that asks a supervisor program which version of the arguments it
/// speaks (it prints `ARGS_VERSION` and exits).
const PROBE: &str = "--args-version";

/// This program's supervisor program, once set (picked at the first command when not given).
struct Supervisor {
    program: OnceLock<PathBuf>,
}

static SUPERVISOR: OnceLock<Supervisor> = OnceLock::new();

/// Call first in `main` of a program that runs commands, before it parses its arguments or
/// starts any thread. In a process started as a keeper it keeps its runner's commands and
/// exits; otherwise it returns, and this program's commands run under a keeper: the
/// dedicated `eventor-supervise` next to this program's executable if it speaks this
/// version's arguments, else this program re-executed (through `/proc/self/exe`).
pub fn supervise_commands() {
    let mut args = std::env::args_os();
    if args.next().is_some_and(|arg0| arg0 == ARG0) {
        let rest: Vec<OsString> = args.collect();
        std::process::exit(run_as_supervisor(&rest));
    }
    let _ = SUPERVISOR.set(Supervisor {
        program: OnceLock::new(),
    });
}

/// Runs this program's commands under a keeper started from `program`: an
/// `eventor-supervise` or `eventor-agent` binary, or any program that calls
/// [`supervise_commands`] first. For a program that cannot call that first itself. The
/// first setting stays.
pub fn supervise_commands_with(program: PathBuf) {
    let _ = SUPERVISOR.set(Supervisor {
        program: OnceLock::from(program),
    });
}

/// The whole of the dedicated supervisor program, `eventor-supervise`: keeps the commands
/// of the runner that started it, or answers the probe for its version of the arguments;
/// returns the exit status to end with.
pub fn dedicated_main(args: Vec<OsString>) -> i32 {
    if let [probe] = args.as_slice() {
        if probe == PROBE {
            println!("{ARGS_VERSION}");
            return 0;
        }
    }
    run_as_supervisor(&args)
}

/// The keeper's whole life, its orders coming over stdin (the socket pair).
fn run_as_supervisor(args: &[OsString]) -> i32 {
    if !matches!(args, [version] if version == ARGS_VERSION) {
        eprintln!("eventor: {ARG0}: unexpected arguments {args:?}");
        return 127;
    }
    // SAFETY: fd 0 is the socket pair's end the runner gave this process, owned by nothing
    // else here.
    keeper::keep(unsafe { OwnedFd::from_raw_fd(0) })
}

/// The supervisor program for a program that did not name one: its companion (the file
/// named as the executable plus [`COMPANION_SUFFIX`], which a prime installs beside a host's
/// agent), else the dedicated one next to its executable, else the program itself.
fn pick_program() -> PathBuf {
    let Ok(exe) = std::env::current_exe() else {
        return PathBuf::from("/proc/self/exe");
    };
    let mut companion = exe.clone().into_os_string();
    companion.push(COMPANION_SUFFIX);
    speaks_our_args(PathBuf::from(companion))
        .or_else(|| dedicated_supervisor(exe.parent()?))
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// What a program's own supervisor file adds to its path: the prime installs
/// `eventor-supervise` at `AGENT.supervise` beside each host's agent `AGENT`, one per agent
/// version, so agents of different versions on one host never replace each other's.
pub const COMPANION_SUFFIX: &str = ".supervise";

/// The dedicated supervisor in `dir`, if there is one that speaks this version's arguments
/// (one left from another version would fail every command).
pub fn dedicated_supervisor(dir: &std::path::Path) -> Option<PathBuf> {
    speaks_our_args(dir.join(ARG0))
}

/// `program`, if it is a supervisor program that speaks this version's arguments.
fn speaks_our_args(program: PathBuf) -> Option<PathBuf> {
    let answer = std::process::Command::new(&program)
        .arg(PROBE)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let expected = format!("{ARGS_VERSION}\n");
    let speaks = answer.status.success() && answer.stdout == expected.as_bytes();
    speaks.then_some(program)
}

/// A command started by the keeper: its pid (which leads its group), its output, and its
/// wait status once it and everything it left running are gone.
pub(crate) struct Kept {
    pub pid: i32,
    /// Taken once, by whoever reads the output.
    pub stdout: Option<PipeReader>,
    pub stderr: Option<PipeReader>,
    /// Closed without a status if the keeper died.
    pub ended: oneshot::Receiver<i32>,
    id: u64,
    link: Arc<KeeperLink>,
}

impl Kept {
    /// SIGTERM to the command's group and what it started; SIGKILL after the grace.
    pub fn stop(&self) {
        self.link.order(&ToKeeper::Stop { id: self.id });
    }

    /// SIGKILL to all of it at once.
    pub fn kill_now(&self) {
        self.link.order(&ToKeeper::KillNow { id: self.id });
    }
}

/// Starts `command` through this program's keeper (starting the keeper first when there is
/// none yet, or it died), when this program has a supervisor; `env` is added to this
/// process's environment, `cwd` replaces its directory.
pub(crate) async fn start_kept(
    command: &str,
    env: &[(String, String)],
    cwd: Option<&std::path::Path>,
    grace: Duration,
) -> Option<std::io::Result<Kept>> {
    let supervisor = SUPERVISOR.get()?;
    Some(
        async {
            let link = KeeperLink::current(supervisor)?;
            link.start(command, env, cwd, grace).await
        }
        .await,
    )
}

/// What the runner waits to hear of one command.
struct Waiting {
    started: Option<oneshot::Sender<std::io::Result<i32>>>,
    ended: Option<oneshot::Sender<i32>>,
    /// Once started: the pid that leads its group.
    pid: Option<i32>,
}

/// The runner's end of its keeper: the socket, the commands waiting on news, and who reads
/// the news. A thread reads it whenever no runtime does: a runner may run one tokio runtime
/// after another, and the keeper's end must be noticed between them too. While a runtime
/// runs commands, a task of that runtime reads it instead and the thread waits: a piece of
/// news then wakes the task that waits for it directly, not a thread that wakes a worker
/// that runs it (two wake-ups less a command, which at a command a millisecond counted).
struct KeeperLink {
    socket: OwnedFd,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_id: AtomicU64,
    gone: AtomicBool,
    /// The process that started it: a forked child starts a keeper of its own.
    owner: u32,
    /// Whether a runtime's task reads the news now; the thread waits on `reader_left`
    /// meanwhile.
    runtime_reads: Mutex<bool>,
    reader_left: Condvar,
    /// Held while news is taken and delivered.
    reading: Mutex<()>,
}

static KEEPER: Mutex<Option<Arc<KeeperLink>>> = Mutex::new(None);

impl KeeperLink {
    /// This process's keeper, started when there is none yet or it is gone.
    fn current(supervisor: &Supervisor) -> std::io::Result<Arc<KeeperLink>> {
        let mut keeper = KEEPER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = keeper.as_ref() {
            if !link.gone.load(Ordering::SeqCst) && link.owner == std::process::id() {
                return Ok(link.clone());
            }
        }
        let program = supervisor.program.get_or_init(pick_program);
        let link = KeeperLink::start_keeper(program)?;
        *keeper = Some(link.clone());
        Ok(link)
    }

    fn start_keeper(program: &PathBuf) -> std::io::Result<Arc<KeeperLink>> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // Its own group, so that a terminal's Ctrl-C reaches the runner only, which then
        // stops its commands as it sees fit.
        let mut keeper = std::process::Command::new(program)
            .arg0(ARG0)
            .arg(ARGS_VERSION)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let reader = ours.try_clone()?;
        let link = Arc::new(KeeperLink {
            socket: ours,
            waiting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            gone: AtomicBool::new(false),
            owner: std::process::id(),
            runtime_reads: Mutex::new(false),
            reader_left: Condvar::new(),
            reading: Mutex::new(()),
        });
        let news = link.clone();
        std::thread::Builder::new()
            .name("eventor-keeper".into())
            .spawn(move || {
                news.read_news(reader);
                let _ = keeper.wait();
            })?;
        Ok(link)
    }

    /// Has a task of the current runtime read the news, unless one (of any runtime) does
    /// already or this is no multi-threaded runtime. (If it cannot, the thread goes on
    /// reading.) Only a multi-threaded runtime runs its tasks by itself: a single-threaded
    /// one left alive but idle would leave every other runtime's commands without news.
    fn read_in_runtime(self: &Arc<Self>) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != RuntimeFlavor::MultiThread {
            return;
        }
        {
            let mut reads = self.lock_reads();
            if *reads {
                return;
            }
            *reads = true;
        }
        // From here the reader's drop hands the news back to the thread, whatever happens
        // (a runtime shutting down drops the task unpolled).
        let reader = RuntimeReader { link: self.clone() };
        let Ok(socket) = self.socket.try_clone() else {
            return;
        };
        // SAFETY: the descriptor is the `OwnedFd` the `AsyncFd` owns: open, and the same
        // one, for as long as the `AsyncFd` lives. Readable only: a write-ready event at
        // each order the keeper takes would wake the runtime for nothing.
        let readable = tokio::io::Interest::READABLE;
        if let Ok(socket) =
            unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, readable) }
        {
            runtime.spawn(async move { reader.read(socket).await });
        }
    }

    fn lock_reads(&self) -> std::sync::MutexGuard<'_, bool> {
        self.runtime_reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn start(
        self: Arc<Self>,
        command: &str,
        env: &[(String, String)],
        cwd: Option<&std::path::Path>,
        grace: Duration,
    ) -> std::io::Result<Kept> {
        let (stdout, out_end) = std::io::pipe()?;
        let (stderr, err_end) = std::io::pipe()?;
        let cwd = match cwd {
            Some(cwd) => cwd.to_path_buf(),
            None => std::env::current_dir()?,
        };
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let start = StartCommand {
            id,
            command: command.to_string(),
            env: environment(env),
            cwd: cwd.into_os_string().into_encoded_bytes(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        self.read_in_runtime();
        let (started_tx, started) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel();
        self.lock_waiting().insert(
            id,
            Waiting {
                started: Some(started_tx),
                ended: Some(ended_tx),
                pid: None,
            },
        );
        let fds = [out_end.as_raw_fd(), err_end.as_raw_fd()];
        if let Err(e) = wire::send(self.socket.as_fd(), &ToKeeper::Start(Box::new(start)), &fds) {
            self.lock_waiting().remove(&id);
            return Err(e);
        }
        // The keeper has its own copies now: the pipes end when the command's tree closes them.
        drop((out_end, err_end));
        let pid = started.await.map_err(|_| keeper_gone())??;
        Ok(Kept {
            pid,
            stdout: Some(stdout),
            stderr: Some(stderr),
            ended,
            id,
            link: self,
        })
    }

    fn order(&self, order: &ToKeeper) {
        // A keeper gone has taken its commands along (they die with it).
        let _ = wire::send(self.socket.as_fd(), order, &[]);
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands each piece of news to the command waiting for it, until the keeper is gone;
    /// then the groups of the commands it still kept are killed (a keeper that died without
    /// stopping them, killed with SIGKILL, left them running) and every command still
    /// waiting learns it (its channels close).
    fn read_news(&self, socket: OwnedFd) {
        let mut buf = vec![0; wire::MAX_MESSAGE];
        loop {
            self.wait_while_runtime_reads();
            if self.gone.load(Ordering::SeqCst) {
                // The runtime's reader found the keeper gone: this copy of the pair must
                // close too, for the keeper to see its end.
                break;
            }
            let mut ready = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut ready, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
                Ok(_) if *self.lock_reads() => continue,
                Ok(_) => {}
            }
            if !self.take_news(socket.as_fd(), &mut buf) {
                break;
            }
        }
        self.lost();
    }

    /// Delivers every piece of news waiting on `socket` (another reader may have taken it
    /// first); false once the keeper is gone. One reader at a time takes and delivers, so
    /// news is delivered in the keeper's order even while the thread hands over to a
    /// runtime's task (a command's end never overtakes its start).
    fn take_news(&self, socket: BorrowedFd<'_>, buf: &mut [u8]) -> bool {
        let _one_reader = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match wire::receive::<FromKeeper>(socket, buf) {
                Ok(Received::Message(news, _)) => self.deliver(news),
                Ok(Received::Nothing) => return true,
                Ok(Received::End) | Err(_) => return false,
            }
        }
    }

    fn wait_while_runtime_reads(&self) {
        let reads = self.lock_reads();
        let _unused = self
            .reader_left
            .wait_while(reads, |reads| *reads)
            .unwrap_or_else(|p| p.into_inner());
    }

    /// The keeper is gone: what it kept is killed, whoever waits learns it.
    fn lost(&self) {
        self.gone.store(true, Ordering::SeqCst);
        for (_, waiting) in self.lock_waiting().drain() {
            if let Some(pid) = waiting.pid {
                let group = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    fn deliver(&self, news: FromKeeper) {
        let mut waiting = self.lock_waiting();
        match news {
            FromKeeper::Started { id, pid } => {
                if let Some(waiting) = waiting.get_mut(&id) {
                    waiting.pid = Some(pid);
                    if let Some(started) = waiting.started.take() {
                        let _ = started.send(Ok(pid));
                    }
                }
            }
            FromKeeper::CannotStart { id, error } => {
                if let Some(started) = waiting.remove(&id).and_then(|w| w.started) {
                    let _ = started.send(Err(std::io::Error::other(error)));
                }
            }
            FromKeeper::Ended { id, status } => {
                if let Some(ended) = waiting.remove(&id).and_then(|w| w.ended) {
                    let _ = ended.send(status);
                }
            }
        }
    }
}

/// This process's environment with `env` over it, as a start carries it: of a name given
/// more than once, the last value wins.
fn environment(env: &[(String, String)]) -> Vec<u8> {
    let own: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let given = |name: &OsStr| env.iter().any(|(n, _)| OsStr::new(n) == name);
    let kept = own.iter().filter(|(name, _)| !given(name));
    let last = env
        .iter()
        .enumerate()
        .filter(|(i, (name, _))| !env[i + 1..].iter().any(|(later, _)| later == name))
        .map(|(_, (name, value))| (OsStr::new(name), OsStr::new(value)));
    wire::env_block(
        kept.map(|(name, value)| (name.as_os_str(), value.as_os_str()))
            .chain(last),
    )
}

/// A runtime's task reading the keeper's news; when it ends (the keeper gone, or its
/// runtime shut down and the task dropped), the thread reads again.
struct RuntimeReader {
    link: Arc<KeeperLink>,
}

impl RuntimeReader {
    async fn read(&self, socket: tokio::io::unix::AsyncFd<OwnedFd>) {
        let mut buf = vec![0; wire::MAX_MESSAGE];
        loop {
            let Ok(mut ready) = socket.readable().await else {
                return;
            };
            ready.clear_ready();
            if !self.link.take_news(socket.get_ref().as_fd(), &mut buf) {
                return self.link.lost();
            }
        }
    }
}

impl Drop for RuntimeReader {
    fn drop(&mut self) {
        *self.link.lock_reads() = false;
        self.link.reader_left.notify_all();
    }
}

fn keeper_gone() -> std::io::Error {
    std::io::Error::other("the command keeper is gone")
}
