//! The keeper's side: one small process per runner that starts the runner's commands as
//! its own children and keeps them from outliving what they should.
//!
//! It is the child subreaper, so whatever a command starts stays in its tree even once
//! orphaned, `setsid` included; a command's own variable (`EVENTOR_COMMAND`, inherited by
//! what it starts) tells whose such an orphan is. A command's *members* are its process
//! group, its descendants, and the orphans carrying its number with their descendants.
//!
//! - When a command exits, its members still running are stopped (SIGTERM, its grace,
//!   SIGKILL) and its end is sent only once none is left.
//! - A stop or kill from the runner goes to the command's members.
//! - When the runner is gone (end of file on the pair, however it died) or the keeper is
//!   told to stop (SIGTERM, SIGINT, SIGHUP), every descendant gets SIGTERM, then SIGKILL
//!   after the longest grace; the keeper exits once it has no child left.
//!
//! An orphan that dropped its environment has no number: it is stopped with everything
//! else when the runner goes, not when its command ends.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::spawn::{Prepared, Spawner, CAUGHT};
use super::tree;
use super::wire::{self, FromKeeper, Received, StartCommand, ToKeeper};

/// The variable naming a command's number in its environment and its descendants'.
pub(crate) const COMMAND_VAR: &str = "EVENTOR_COMMAND";

/// While killing, how often the members are looked for again (what was forked meanwhile).
const RESCAN: Duration = Duration::from_millis(50);

/// The grace when the runner goes with no command running (for orphans without a number).
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// One command the keeper started.
struct Kept {
    id: u64,
    grace: Duration,
    /// Its wait status, once reaped.
    ended: Option<i32>,
    /// When SIGKILL follows the SIGTERM already sent, once stopping.
    kill_at: Option<Instant>,
    /// The roots of its members that got SIGTERM already.
    stopped: Vec<i32>,
}

struct Keeper {
    socket: Option<OwnedFd>,
    /// The read end of the self-pipe the signal handler writes each signal's number to.
    signals: std::io::PipeReader,
    /// By pid (which leads the command's group).
    kept: HashMap<i32, Kept>,
    /// Orphans seen, by pid: the command number in their environment, if any.
    orphans: HashMap<i32, Option<u64>>,
    /// When everything gets SIGKILL, once the runner is gone.
    kill_all_at: Option<Instant>,
    buf: Vec<u8>,
    /// News encoded for the runner, oldest first, not sent yet (its queue was full).
    outbox: VecDeque<Vec<u8>>,
    spawner: Spawner,
}

/// The keeper's whole life, on the pair end `socket`: returns the exit status.
pub(super) fn keep(socket: OwnedFd) -> i32 {
    match Keeper::new(socket) {
        Ok(mut keeper) => keeper.run(),
        Err(e) => {
            eprintln!("eventor: the command keeper cannot start: {e}");
            1
        }
    }
}

impl Keeper {
    fn new(socket: OwnedFd) -> std::io::Result<Keeper> {
        let signals = catch_signals()?;
        nix::sys::prctl::set_child_subreaper(true)?;
        Ok(Keeper {
            socket: Some(socket),
            signals,
            kept: HashMap::new(),
            orphans: HashMap::new(),
            kill_all_at: None,
            buf: vec![0; wire::MAX_MESSAGE],
            outbox: VecDeque::new(),
            spawner: Spawner::new()?,
        })
    }

    fn run(&mut self) -> i32 {
        loop {
            let children_left = self.reap();
            if self.socket.is_none() && !children_left {
                return 0;
            }
            self.settle();
            if self.kill_all_at.is_some_and(|at| Instant::now() >= at) {
                tree::signal_descendants(Signal::SIGKILL);
            }
            self.wait_for_news();
        }
    }

    /// Reaps every child that ended, noting commands' ends; false once no child is left.
    fn reap(&mut self) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    self.orphans.remove(&pid.as_raw());
                    if let Some(kept) = self.kept.get_mut(&pid.as_raw()) {
                        kept.ended = Some(raw_status(status));
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Ends the commands that exited and have no member left; stops or kills the members
    /// of those that have.
    fn settle(&mut self) {
        let now = Instant::now();
        let ended: Vec<i32> = self
            .kept
            .iter()
            .filter(|(_, k)| k.ended.is_some() || k.kill_at.is_some())
            .map(|(pid, _)| *pid)
            .collect();
        if ended.is_empty() {
            return;
        }
        self.look_at_orphans();
        for pid in ended {
            let members = self.has_members(pid);
            let Some(kept) = self.kept.get_mut(&pid) else {
                continue;
            };
            match (kept.ended, members) {
                (Some(status), false) => {
                    let id = kept.id;
                    self.kept.remove(&pid);
                    self.tell(&FromKeeper::Ended { id, status });
                }
                (Some(_), true) if kept.kill_at.is_none() => self.stop(pid),
                _ if kept.kill_at.is_some_and(|at| now >= at) => {
                    self.signal_members(pid, Signal::SIGKILL)
                }
                _ => self.stop_new_orphans(pid),
            }
        }
    }

    /// Notes the command number of each orphan not seen before.
    fn look_at_orphans(&mut self) {
        for pid in tree::own_children() {
            if !self.kept.contains_key(&pid) {
                self.orphans
                    .entry(pid)
                    .or_insert_with(|| tree::number_in_environment(pid, COMMAND_VAR));
            }
        }
    }

    /// Whether anything of the command at `pid` still runs, besides the command itself.
    fn has_members(&self, pid: i32) -> bool {
        let Some(id) = self.kept.get(&pid).map(|k| k.id) else {
            return false;
        };
        let group_alive = killpg(Pid::from_raw(pid), None).is_ok();
        group_alive || self.orphans.values().any(|n| *n == Some(id))
    }

    /// The roots of a command's members out of its group: itself and its orphans.
    fn roots(&self, pid: i32) -> Vec<i32> {
        let id = self.kept.get(&pid).map(|k| k.id);
        let orphans = self
            .orphans
            .iter()
            .filter(|(_, n)| id.is_some() && **n == id)
            .map(|(orphan, _)| *orphan);
        std::iter::once(pid).chain(orphans).collect()
    }

    /// The tree is read before any signal goes: a member that dies first would hand its
    /// children to the keeper before they were found under it.
    fn signal_members(&self, pid: i32, signal: Signal) {
        tree::signal_trees(&self.roots(pid), signal);
        let _ = killpg(Pid::from_raw(pid), signal);
    }

    /// SIGTERM to the orphans of a stopping command that turned up since its stop (their
    /// parent died of it) and their trees.
    fn stop_new_orphans(&mut self, pid: i32) {
        let roots = self.roots(pid);
        let Some(kept) = self.kept.get_mut(&pid) else {
            return;
        };
        let new: Vec<i32> = roots
            .into_iter()
            .filter(|root| *root != pid && !kept.stopped.contains(root))
            .collect();
        if !new.is_empty() {
            kept.stopped.extend(&new);
            tree::signal_trees(&new, Signal::SIGTERM);
        }
    }

    /// SIGTERM to the command's members, once; SIGKILL follows after its grace.
    fn stop(&mut self, pid: i32) {
        self.look_at_orphans();
        let Some(kept) = self.kept.get_mut(&pid) else {
            return;
        };
        if kept.kill_at.is_some() {
            return;
        }
        kept.kill_at = Some(Instant::now() + kept.grace);
        self.signal_members(pid, Signal::SIGTERM);
        let roots = self.roots(pid);
        if let Some(kept) = self.kept.get_mut(&pid) {
            kept.stopped.extend(roots);
        }
    }

    fn kill_now(&mut self, pid: i32) {
        self.stop(pid);
        if let Some(kept) = self.kept.get_mut(&pid) {
            kept.kill_at = Some(Instant::now());
        }
        self.signal_members(pid, Signal::SIGKILL);
    }

    /// The runner is gone or the keeper was told to stop: everything goes.
    fn stop_all(&mut self) {
        self.socket = None;
        if self.kill_all_at.is_some() {
            return;
        }
        let grace = self.kept.values().map(|k| k.grace).max();
        self.kill_all_at = Some(Instant::now() + grace.unwrap_or(DEFAULT_GRACE));
        for pid in self.kept.keys() {
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        tree::signal_descendants(Signal::SIGTERM);
    }

    /// Queues `message` for the runner and sends what its queue has room for. The keeper
    /// never waits on its runner: a runner whose threads all wait to hand it starts would
    /// otherwise never read the news the keeper waits to hand it. News is never dropped
    /// while the runner lives; a runner gone shows as the pair's end next time round.
    fn tell(&mut self, message: &FromKeeper) {
        if self.socket.is_none() {
            return;
        }
        match wire::encode(message) {
            Ok(bytes) => self.outbox.push_back(bytes),
            Err(e) => eprintln!("eventor: the command keeper dropped news it cannot encode: {e}"),
        }
        self.send_news();
    }

    /// Sends queued news until the runner's queue is full.
    fn send_news(&mut self) {
        let Some(socket) = &self.socket else {
            return self.outbox.clear();
        };
        while let Some(bytes) = self.outbox.front() {
            match wire::send_now(socket.as_fd(), bytes) {
                Ok(true) => {
                    self.outbox.pop_front();
                }
                Ok(false) => return,
                // The runner is gone: its end shows next time round.
                Err(e) if runner_gone(&e) => return self.outbox.clear(),
                // Anything else costs this piece of news only, as a failed send always did.
                Err(_) => {
                    self.outbox.pop_front();
                }
            }
        }
    }

    /// Waits for a request, a signal, the runner's end or the next deadline, and acts.
    fn wait_for_news(&mut self) {
        let timeout = self.next_deadline().map_or(PollTimeout::NONE, |at| {
            let wait = at.saturating_duration_since(Instant::now());
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)
        });
        let socket_ready = {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            if let Some(socket) = &self.socket {
                let room = match self.outbox.is_empty() {
                    true => PollFlags::empty(),
                    false => PollFlags::POLLOUT,
                };
                fds.push(PollFd::new(socket.as_fd(), PollFlags::POLLIN | room));
            }
            let _ = poll(&mut fds, timeout);
            fds.get(1)
                .and_then(PollFd::revents)
                .unwrap_or(PollFlags::empty())
        };
        if socket_ready.contains(PollFlags::POLLOUT) {
            self.send_news();
        }
        if socket_ready.intersects(!PollFlags::POLLOUT) {
            self.read_requests();
        }
        let mut caught = [0u8; 64];
        while let Ok(n @ 1..) = std::io::Read::read(&mut self.signals, &mut caught) {
            if caught[..n]
                .iter()
                .any(|s| i32::from(*s) != Signal::SIGCHLD as i32)
            {
                self.stop_all();
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let killing = self.kill_all_at.is_some_and(|at| Instant::now() >= at)
            || self
                .kept
                .values()
                .any(|k| k.kill_at.is_some_and(|at| Instant::now() >= at));
        if killing {
            return Some(Instant::now() + RESCAN);
        }
        let stops = self.kept.values().filter_map(|k| k.kill_at);
        stops.chain(self.kill_all_at).min()
    }

    fn read_requests(&mut self) {
        loop {
            let Some(socket) = &self.socket else { return };
            match wire::receive::<ToKeeper>(socket.as_fd(), &mut self.buf) {
                Ok(Received::Message(request, fds)) => self.act(request, fds),
                Ok(Received::Nothing) => return,
                Ok(Received::End) | Err(_) => return self.stop_all(),
            }
        }
    }

    fn act(&mut self, request: ToKeeper, fds: Vec<OwnedFd>) {
        match request {
            ToKeeper::Start(start) => self.start(*start, fds),
            ToKeeper::Stop { id } => {
                if let Some(pid) = self.pid_of(id) {
                    self.stop(pid);
                }
            }
            ToKeeper::KillNow { id } => {
                if let Some(pid) = self.pid_of(id) {
                    self.kill_now(pid);
                }
            }
        }
    }

    fn pid_of(&self, id: u64) -> Option<i32> {
        self.kept
            .iter()
            .find(|(_, k)| k.id == id)
            .map(|(pid, _)| *pid)
    }

    fn start(&mut self, start: StartCommand, fds: Vec<OwnedFd>) {
        let id = start.id;
        match spawn(&mut self.spawner, &start, &fds) {
            Ok(pid) => {
                self.kept.insert(
                    pid,
                    Kept {
                        id,
                        grace: Duration::from_millis(start.grace_ms),
                        ended: None,
                        kill_at: None,
                        stopped: Vec::new(),
                    },
                );
                self.tell(&FromKeeper::Started { id, pid });
            }
            Err(e) => {
                let error = e.to_string();
                self.tell(&FromKeeper::CannotStart { id, error });
            }
        }
    }
}

/// Starts a command as a child in a group of its own, with the start's environment,
/// directory and output pipes, its number in its environment, and no blocked signal:
/// directly when it needs no shell and its program is found, else through `/bin/sh -c`.
/// The child shares the keeper's memory until its exec (see `spawn.rs`): about 0.1 ms a
/// command less than a fork. (A keeper killed with SIGKILL thus leaves its commands to its
/// runner, which kills their groups when it finds the keeper gone.)
fn spawn(spawner: &mut Spawner, start: &StartCommand, fds: &[OwnedFd]) -> std::io::Result<i32> {
    let [out, err] = fds else {
        return Err(std::io::Error::other(
            "a start came without its two output pipes",
        ));
    };
    let id = start.id.to_string();
    let run = |spawner: &mut Spawner, argv: &[&OsStr]| {
        let prepared = Prepared::new(argv, &start.env, (COMMAND_VAR, &id), start.cwd(), out, err)?;
        spawner.spawn(&prepared)
    };
    if let Some(words) = crate::shell::simple_argv(&start.command) {
        let argv: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
        match run(spawner, &argv) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            started => return started,
        }
    }
    let shell = [
        OsStr::new("/bin/sh"),
        OsStr::new("-c"),
        OsStr::new(&start.command),
    ];
    run(spawner, &shell)
}

/// Whether a send failed because the runner's end is closed.
fn runner_gone(error: &std::io::Error) -> bool {
    let gone = [Errno::EPIPE, Errno::ECONNRESET].map(|e| e as i32);
    error
        .raw_os_error()
        .is_some_and(|code| gone.contains(&code))
}

/// A wait status as the C `wait` gives it, for the runner to read back.
fn raw_status(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, signal, core) => signal as i32 | if core { 0x80 } else { 0 },
        // Stopped or continued: not an end; reported as killed by SIGKILL would lie, so
        // as exit 127, which `reap` never records (it only sees ends without WUNTRACED).
        _ => 127 << 8,
    }
}

/// The write end of the keeper's self-pipe: its signal handler's only way out.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Writes the signal's number to the self-pipe (a full pipe drops it: a wake is pending).
extern "C" fn note_signal(signal: std::ffi::c_int) {
    let saved = Errno::last_raw();
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe and the buffer is this frame's byte.
    unsafe {
        nix::libc::write(
            SIGNAL_PIPE.load(Ordering::Relaxed),
            (&byte as *const u8).cast(),
            1,
        )
    };
    Errno::set_raw(saved);
}

/// Catches the keeper's signals (its children's ends and a stop) through a handler that
/// writes to a self-pipe, rather than blocking them for a signalfd: a command spawned
/// without a fork inherits the keeper's signal mask, while caught signals go back to their
/// defaults at its exec.
fn catch_signals() -> std::io::Result<std::io::PipeReader> {
    let (read, write) = std::io::pipe()?;
    for end in [read.as_fd(), write.as_fd()] {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = OFlag::from_bits_truncate(fcntl(end, FcntlArg::F_GETFL)?);
        fcntl(end, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    SIGNAL_PIPE.store(
        std::os::fd::IntoRawFd::into_raw_fd(write),
        Ordering::Relaxed,
    );
    let action = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    for signal in CAUGHT {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe { sigaction(signal, &action) }?;
    }
    // A keeper started by a Rust program inherits nothing blocked that matters, but one
    // started with signals blocked would pass them on to every command.
    SigSet::empty().thread_set_mask()?;
    Ok(read)
}
