//! A supervisor per command, so that nothing a command starts outlives its runner: a small
//! process (this very program, re-executed) between the runner and the command. It makes
//! itself the child subreaper of the command's tree (whatever leaves the command's process
//! group, `setsid` included, stays its descendant), and it notices the runner's death through
//! a lifeline pipe (end of file once the runner is gone, however it died and whichever of its
//! threads started the command). When the runner dies, when it is told to stop, or when the
//! command exits leaving something behind, it sends SIGTERM to the group and to every
//! descendant, waits the grace period, then SIGKILL; it exits only once no descendant is
//! left, with the command's own status (its code, or death by the same signal).
//!
//! A program runs its commands under supervisors once it called [`supervise_commands`] first
//! in `main` (`eventor-coord`, `eventor-agent`, and programs through `eventor::agent_mode`),
//! or named a supervisor program with [`supervise_commands_with`]; any other program runs
//! them directly, as the group's leader with a parent-death signal (see `command.rs`).
//!
//! The supervisor program is the small dedicated `eventor-supervise` (no runtime, about
//! 600 KB of code) when one that speaks this version's arguments lies next to the running
//! executable, else the program itself: starting a large program again (its mapping, its
//! tens of thousands of relocations) costs a command about 1.2 ms, the small one 0.5 ms.

mod tree;

use tree::Reach;

use std::ffi::OsString;
use std::io::{PipeReader, PipeWriter};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};

/// How a supervisor is told from a program's ordinary runs: its `argv[0]`, then this
/// version of the arguments that follow (the grace period in milliseconds, the command).
/// `ARG0` is also the dedicated supervisor's file name.
const ARG0: &str = "eventor-supervise";
const ARGS_VERSION: &str = "1";

/// The one argument that asks a supervisor program which version of the arguments it
/// speaks (it prints `ARGS_VERSION` and exits).
const PROBE: &str = "--args-version";

/// The signal that tells a supervisor to skip the grace and kill everything at once.
pub(crate) const KILL_NOW: Signal = Signal::SIGUSR1;

/// While killing, how often the tree is looked at again for what was forked meanwhile.
const RESCAN: Duration = Duration::from_millis(50);

/// The exit status of a supervisor that could not start its command (a shell's "not found").
const CANNOT_START: i32 = 127;

/// This program's supervisor, once set: the program to run (picked at the first command
/// when not given) and the read end of the lifeline (the write end is held here, never
/// written, until the process ends).
struct Supervisor {
    program: OnceLock<PathBuf>,
    lifeline: PipeReader,
    _held: PipeWriter,
}

static SUPERVISOR: OnceLock<Supervisor> = OnceLock::new();

/// Call first in `main` of a program that runs commands, before it parses its arguments or
/// starts any thread. In a process started as a command's supervisor it supervises that
/// command and exits with its status; otherwise it returns, and this program's commands run
/// under supervisors: the dedicated `eventor-supervise` next to this program's executable
/// if it speaks this version's arguments, else this program re-executed (through
/// `/proc/self/exe`).
pub fn supervise_commands() {
    let mut args = std::env::args_os();
    if args.next().is_some_and(|arg0| arg0 == ARG0) {
        let rest: Vec<OsString> = args.collect();
        std::process::exit(run_as_supervisor(&rest));
    }
    set_supervisor(OnceLock::new());
}

/// Runs this program's commands under supervisors started from `program`: an
/// `eventor-supervise` or `eventor-agent` binary, or any program that calls
/// [`supervise_commands`] first. For a program that cannot call that first itself. The
/// first setting stays.
pub fn supervise_commands_with(program: PathBuf) {
    set_supervisor(OnceLock::from(program));
}

fn set_supervisor(program: OnceLock<PathBuf>) {
    match std::io::pipe() {
        Ok((lifeline, held)) => {
            let _ = SUPERVISOR.set(Supervisor {
                program,
                lifeline,
                _held: held,
            });
        }
        Err(e) => eprintln!("eventor: commands run without supervisors: no pipe: {e}"),
    }
}

/// The whole of the dedicated supervisor program, `eventor-supervise`: supervises the
/// command its arguments (after the program's name) name, or answers the probe for its version of the arguments;
/// returns the exit status to end with, or does not return (dying by the command's signal).
pub fn dedicated_main(args: Vec<OsString>) -> i32 {
    if let [probe] = args.as_slice() {
        if probe == PROBE {
            println!("{ARGS_VERSION}");
            return 0;
        }
    }
    run_as_supervisor(&args)
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

/// The process to start for `command` when this program has a supervisor: the supervisor
/// with the command in its arguments and the lifeline as its stdin. The caller adds the
/// environment, the directory, the output pipes and the process group, which the command
/// inherits.
pub(crate) fn supervised(
    command: &str,
    grace: Duration,
) -> Option<std::io::Result<std::process::Command>> {
    let supervisor = SUPERVISOR.get()?;
    let program = supervisor.program.get_or_init(pick_program);
    Some(supervisor.lifeline.try_clone().map(|lifeline| {
        let mut cmd = std::process::Command::new(program);
        cmd.arg0(ARG0)
            .arg(ARGS_VERSION)
            .arg(grace.as_millis().to_string())
            .arg(command)
            .stdin(Stdio::from(lifeline));
        cmd
    }))
}

/// The supervisor's whole life: returns the exit status to end with, or does not return
/// (dying by the signal that killed the command).
fn run_as_supervisor(args: &[OsString]) -> i32 {
    let (grace, command) = match parse_args(args) {
        Some(parsed) => parsed,
        None => {
            eprintln!("eventor: {ARG0}: unexpected arguments {args:?}");
            return CANNOT_START;
        }
    };
    let watch = match Watch::start(&command, grace) {
        Ok(watch) => watch,
        Err(e) => {
            eprintln!("eventor: cannot start `{command}`: {e}");
            return CANNOT_START;
        }
    };
    match watch.run() {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => die_by(signal),
        _ => CANNOT_START,
    }
}

fn parse_args(args: &[OsString]) -> Option<(Duration, String)> {
    match args {
        [version, grace, command] if version == ARGS_VERSION => {
            let millis: u64 = grace.to_str()?.parse().ok()?;
            Some((Duration::from_millis(millis), command.to_str()?.to_string()))
        }
        _ => None,
    }
}

/// Ends this process by `signal`, as the command ended, without a core file of its own.
fn die_by(signal: Signal) -> i32 {
    use nix::sys::resource::{setrlimit, Resource};
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: restoring the default disposition installs no handler.
    let _ = unsafe { sigaction(signal, &default) };
    let _ = kill(getpid(), signal);
    let mut only = SigSet::empty();
    only.add(signal);
    let _ = only.thread_unblock();
    // Only a signal whose default is not to end a process gets here.
    128 + signal as i32
}

/// The signals a supervisor takes through its signalfd: its children's ends, a stop (the
/// group's SIGTERM, or SIGINT, SIGHUP) and the order to kill at once.
fn watched_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        KILL_NOW,
    ] {
        set.add(signal);
    }
    set
}

/// A supervisor's state: its command, the command's end once reaped, and how far a stop got.
struct Watch {
    signals: SignalFd,
    /// Gone (None) once the runner is: the read end of the lifeline.
    lifeline: Option<OwnedFd>,
    command: Pid,
    ended: Option<WaitStatus>,
    grace: Duration,
    /// When SIGKILL follows the SIGTERM already sent, once stopping.
    kill_at: Option<Instant>,
}

impl Watch {
    /// Becomes the subreaper, takes its signals, and starts the command in this process's
    /// group with a null stdin and this process's output.
    fn start(command: &str, grace: Duration) -> std::io::Result<Watch> {
        let signals_set = watched_signals();
        signals_set.thread_block()?;
        let signals =
            SignalFd::with_flags(&signals_set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        nix::sys::prctl::set_child_subreaper(true)?;
        // SAFETY: fd 0 is the lifeline the runner gave this process, owned by nothing else.
        let lifeline = unsafe { OwnedFd::from_raw_fd(0) };
        let child = crate::shell::start_either(command, |mut cmd| {
            cmd.stdin(Stdio::null());
            // The command gets none of this process's blocked signals, and a supervisor
            // killed with SIGKILL takes its command along (not what that started).
            // SAFETY: sigprocmask and prctl are async-signal-safe and touch no memory of
            // the parent; they run in the child between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    SigSet::empty().thread_set_mask()?;
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                    Ok(())
                });
            }
            cmd.spawn()
        })?;
        Ok(Watch {
            signals,
            lifeline: Some(lifeline),
            command: Pid::from_raw(child.id() as i32),
            ended: None,
            grace,
            kill_at: None,
        })
    }

    /// Supervises until no descendant is left; returns the command's end.
    fn run(mut self) -> WaitStatus {
        loop {
            if !self.reap() {
                // Every descendant is gone, the command included (it was a child).
                return self.ended.unwrap_or(WaitStatus::StillAlive);
            }
            if self.ended.is_some() {
                // What the command left running goes with it.
                self.stop(Reach::All);
            }
            let killing = self.kill_at.is_some_and(|at| Instant::now() >= at);
            if killing {
                tree::signal_descendants(Signal::SIGKILL, Reach::All);
            }
            self.wait_for_news(killing);
        }
    }

    /// Reaps every child that ended, noting the command's end; false once there is no
    /// child left (a subreaper's children are, in the end, all its descendants).
    fn reap(&mut self) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(status) => {
                    if status.pid() == Some(self.command) {
                        self.ended = Some(status);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => return false,
                Err(_) => return true,
            }
        }
    }

    /// SIGTERM to the group and every descendant (or, when the group had a stop signal
    /// already, to those that left it), once; SIGKILL follows after the grace.
    fn stop(&mut self, reach: Reach) {
        if self.kill_at.is_some() {
            return;
        }
        self.kill_at = Some(Instant::now() + self.grace);
        if reach == Reach::All {
            // This process has SIGTERM blocked: it only reads its own back as a stop.
            let _ = killpg(getpid(), Signal::SIGTERM);
        }
        tree::signal_descendants(Signal::SIGTERM, reach);
    }

    /// Waits for a signal, the lifeline's end, or the next deadline, and acts on them.
    fn wait_for_news(&mut self, killing: bool) {
        let timeout = match self.kill_at {
            _ if killing => Some(RESCAN),
            Some(at) => Some(at.saturating_duration_since(Instant::now())),
            None => None,
        };
        let timeout = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        if let Some(lifeline) = &self.lifeline {
            fds.push(PollFd::new(lifeline.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, timeout);
        let runner_gone = fds
            .get(1)
            .and_then(PollFd::revents)
            .is_some_and(|r| !r.is_empty());
        drop(fds);
        if runner_gone {
            self.lifeline = None;
            self.stop(Reach::All);
        }
        while let Ok(Some(info)) = self.signals.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGCHLD) => {}
                Ok(signal) if signal == KILL_NOW => {
                    self.stop(Reach::All);
                    self.kill_at = Some(Instant::now());
                }
                // A stop is SIGTERM (SIGINT, SIGHUP) to the whole group, this process
                // included; the group's members have it already.
                _ => self.stop(Reach::LeftTheGroup),
            }
        }
    }
}
