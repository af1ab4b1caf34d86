//! How the keeper starts a command: a child that shares the keeper's memory until its exec
//! (`clone` with `CLONE_VM | CLONE_VFORK`, what `posix_spawn` does inside) and makes a
//! fixed, short list of system calls before it.
//!
//! glibc's `posix_spawn` cannot know which signals its caller catches, so its child asks
//! for and resets every one of the 64 signal dispositions: 121 `rt_sigaction` calls a
//! command, more than half of all the system calls of a `true` step, made while the keeper
//! waits for the child's exec. The keeper knows the signals it catches ([`CAUGHT`]), so its
//! child resets those and SIGPIPE (ignored by Rust programs, not by what they start) to
//! their defaults and nothing else; a signal the keeper was started with ignored stays
//! ignored in its commands, as with any exec.
//!
//! The child runs on a stack of its own and allocates nothing: everything it needs is
//! prepared before the clone ([`Prepared`]). All signals are blocked in the keeper around
//! the clone, so none of the keeper's handlers runs in the child before it reset them; the
//! child unblocks everything just before its exec, the mask a command starts with.

use std::ffi::{c_char, c_int, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

/// The signals the keeper catches (its children's ends and a stop).
pub(super) const CAUGHT: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Set back to their defaults in each command's child: the caught ones, and SIGPIPE (which
/// Rust ignores in the keeper).
const RESET: [Signal; 5] = [CAUGHT[0], CAUGHT[1], CAUGHT[2], CAUGHT[3], Signal::SIGPIPE];

/// Where a bare program name is looked for when the environment has no `PATH`, as the C
/// library's `execvp` does.
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The child's stack: it makes a handful of system calls and execs.
const STACK_SIZE: usize = 64 * 1024;

/// Starts commands as the keeper's children; holds the child's stack between starts.
pub(super) struct Spawner {
    stack: Vec<u8>,
    stdin: OwnedFd,
}

/// What one start needs: the program, its words and environment as C arrays, the directory
/// and the output pipes. Built before the clone, read by the child.
pub(super) struct Prepared {
    program: CString,
    /// Owns the words `argv` points to.
    _words: Vec<CString>,
    argv: Vec<*const c_char>,
    /// Owns the entries `envp` points to: `NAME=VALUE`, each ended by a NUL.
    _env: Vec<u8>,
    envp: Vec<*const c_char>,
    cwd: Option<CString>,
    out: RawFd,
    err: RawFd,
    /// Copies of the output pipes made above the standard descriptors, when one was not.
    _lifted: Vec<OwnedFd>,
}

/// What the child reads (through the memory it shares with the keeper) and where it leaves
/// the error of a step that failed.
struct ChildArgs<'a> {
    prepared: &'a Prepared,
    stdin: RawFd,
    /// 0, or the errno of the step that failed; written by the child before it exits.
    errno: c_int,
}

impl Prepared {
    /// `argv` run as its own program (found on the `PATH` of `env`, else on [`DEFAULT_PATH`],
    /// when it is a bare name; else not found), with `env` (a block of `NAME=VALUE` entries, each ended by a NUL;
    /// entries that are not one are left out) and `extra` over it, in `cwd` (empty: the
    /// keeper's), its output to `out` and `err`.
    pub(super) fn new(
        argv: &[&OsStr],
        env: &[u8],
        extra: (&str, &str),
        cwd: &Path,
        out: &OwnedFd,
        err: &OwnedFd,
    ) -> io::Result<Prepared> {
        let name = argv.first().ok_or_else(|| invalid("an empty command"))?;
        let env = environment(env, extra);
        let program = match name.as_bytes().contains(&b'/') {
            true => c_string(name.as_bytes())?,
            false => {
                let path = path_of(&env).unwrap_or(OsStr::new(DEFAULT_PATH));
                let found = crate::shell::search(path, name, cwd).ok_or_else(not_found)?;
                c_string(found.as_os_str().as_bytes())?
            }
        };
        let words = argv
            .iter()
            .map(|w| c_string(w.as_bytes()))
            .collect::<io::Result<Vec<_>>>()?;
        let argv = pointers(words.iter().map(|w| w.as_ptr()));
        let envp = pointers(
            env.split_inclusive(|b| *b == 0)
                .map(|entry| entry.as_ptr().cast()),
        );
        let cwd = cwd.as_os_str().as_bytes();
        let cwd = (!cwd.is_empty()).then(|| c_string(cwd)).transpose()?;
        let mut lifted = Vec::new();
        let out = lift(out, &mut lifted)?;
        let err = lift(err, &mut lifted)?;
        Ok(Prepared {
            program,
            _words: words,
            argv,
            _env: env,
            envp,
            cwd,
            out,
            err,
            _lifted: lifted,
        })
    }
}

impl Spawner {
    pub(super) fn new() -> io::Result<Spawner> {
        let stdin = std::fs::File::open("/dev/null")?.into();
        Ok(Spawner {
            stack: vec![0; STACK_SIZE],
            stdin,
        })
    }

    /// Starts `prepared` as a child in a process group of its own; answers its pid once it
    /// has exec'd, or the error of the step that failed (the child then reaped).
    pub(super) fn spawn(&mut self, prepared: &Prepared) -> io::Result<i32> {
        let mut args = ChildArgs {
            prepared,
            stdin: self.stdin.as_raw_fd(),
            errno: 0,
        };
        let blocked = block_all()?;
        let child = {
            let args: *mut ChildArgs = &mut args;
            let callback = Box::new(move || {
                // SAFETY: the keeper is suspended until this child execs or exits
                // (CLONE_VFORK), so `args` is alive and nobody else touches it.
                unsafe { child(&mut *args) }
            });
            // SAFETY: the callback makes only async-signal-safe system calls on memory
            // prepared before the clone, on a stack of its own, and ends in exec or _exit;
            // with CLONE_VFORK the keeper waits for that before it touches anything again.
            unsafe {
                nix::sched::clone(
                    callback,
                    &mut self.stack,
                    CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
                    Some(libc::SIGCHLD),
                )
            }
        };
        restore(&blocked);
        let pid = child.map_err(io::Error::from)?;
        match args.errno {
            0 => Ok(pid.as_raw()),
            errno => {
                let _ = nix::sys::wait::waitpid(pid, None);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

/// The child: defaults for the caught signals, a process group of its own, its standard
/// streams, its directory, no blocked signal, then the exec. On a failure it leaves the
/// errno for the keeper and exits.
///
/// # Safety
/// Called only in the child of [`Spawner::spawn`]'s clone.
unsafe fn child(args: &mut ChildArgs) -> isize {
    let p = args.prepared;
    let mut default: libc::sigaction = std::mem::zeroed();
    default.sa_sigaction = libc::SIG_DFL;
    for signal in RESET {
        libc::sigaction(signal as c_int, &default, std::ptr::null_mut());
    }
    let ok = libc::setpgid(0, 0) == 0
        && place(args.stdin, 0)
        && place(p.out, 1)
        && place(p.err, 2)
        && p.cwd
            .as_ref()
            .is_none_or(|cwd| libc::chdir(cwd.as_ptr()) == 0);
    if ok {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(p.program.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    }
    args.errno = *libc::__errno_location();
    libc::_exit(127)
}

/// `fd`, or a copy of it above the standard descriptors (kept in `lifted`) when it is one
/// of them, so that placing one stream cannot close the descriptor of another.
fn lift(fd: &OwnedFd, lifted: &mut Vec<OwnedFd>) -> io::Result<RawFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd.as_raw_fd());
    }
    let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC answered a new descriptor that nothing else owns.
    let copy = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
    let raw = copy.as_raw_fd();
    lifted.push(copy);
    Ok(raw)
}

/// Makes `fd` the child's descriptor `to`, open across the exec.
unsafe fn place(fd: RawFd, to: RawFd) -> bool {
    match fd == to {
        // dup2 onto itself would keep its close-on-exec flag.
        true => libc::fcntl(fd, libc::F_SETFD, 0) == 0,
        false => libc::dup2(fd, to) == to,
    }
}

/// Blocks every signal in the keeper; answers the mask to restore.
fn block_all() -> io::Result<libc::sigset_t> {
    // SAFETY: plain sigset manipulation on values owned here.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        match libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) {
            0 => Ok(old),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

fn restore(mask: &libc::sigset_t) {
    // SAFETY: `mask` is the one block_all saved.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// The environment block with `extra` over it: well-formed entries only, each ended by a
/// NUL, one named as `extra` replaced.
fn environment(block: &[u8], (name, value): (&str, &str)) -> Vec<u8> {
    let mut env = Vec::with_capacity(block.len() + name.len() + value.len() + 2);
    for entry in block.split(|b| *b == 0) {
        let at = entry.iter().position(|b| *b == b'=');
        if at.is_some_and(|at| at > 0 && &entry[..at] != name.as_bytes()) {
            env.extend_from_slice(entry);
            env.push(0);
        }
    }
    env.extend_from_slice(format!("{name}={value}\0").as_bytes());
    env
}

/// The `PATH` of an environment block, if it has one.
fn path_of(env: &[u8]) -> Option<&OsStr> {
    env.split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(b"PATH="))
        .map(OsStr::from_bytes)
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// A NULL-ended array of pointers, as exec takes them.
fn pointers<'a>(of: impl Iterator<Item = *const c_char> + 'a) -> Vec<*const c_char> {
    of.chain(std::iter::once(std::ptr::null())).collect()
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| invalid("a NUL inside a command's word or directory"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}
