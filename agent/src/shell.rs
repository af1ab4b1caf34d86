//! How a command line is started: as its own words when it needs no shell (no quotes,
//! globs, redirections or variables), else through `/bin/sh -c`. Shared by the command
//! runner and the supervisor, which both start commands. The runner remembers where a
//! command's program was found on the PATH, as a shell's `hash` does ([`remembered`]), so
//! each start execs it at once instead of trying every PATH directory in turn.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Programs found on a PATH: (PATH, name) → where.
type Found = HashMap<(OsString, String), PathBuf>;

/// `command` with its program's word replaced by where the PATH has it (remembered from
/// the first lookup), when the command needs no shell and names a program by a bare name;
/// else `command` as it is (the shell, or the exec's own search, then decides). `path` is
/// the command's PATH (its own variable, else this process's); a PATH with a relative
/// directory is not remembered, since it depends on the directory a command runs in.
pub(crate) fn remembered(command: &str, path: Option<OsString>) -> std::borrow::Cow<'_, str> {
    let Some(argv) = simple_argv(command) else {
        return command.into();
    };
    let name = argv[0];
    let path = path
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    if name.contains('/') || std::env::split_paths(&path).any(|dir| !dir.is_absolute()) {
        return command.into();
    }
    static FOUND: OnceLock<Mutex<Found>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    let key = (path, name.to_string());
    let known = found.lock().ok().and_then(|f| f.get(&key).cloned());
    let program = match known {
        Some(program) => program,
        None => {
            // Every directory of this PATH is absolute: the one it is looked in from is moot.
            let Some(program) = search(&key.0, OsStr::new(name), Path::new("/")) else {
                return command.into();
            };
            if let Ok(mut f) = found.lock() {
                f.insert(key, program.clone());
            }
            program
        }
    };
    let Some(program) = program.to_str().filter(|p| simple_argv(p).is_some()) else {
        return command.into();
    };
    let rest = &command.trim_start()[name.len()..];
    format!("{program}{rest}").into()
}

/// The first executable file called `name` in the directories of `path`, as an exec in
/// `cwd` finds it: a relative directory is looked in from there (and answered relative).
pub(crate) fn search(path: &OsStr, name: &OsStr, cwd: &Path) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(&cwd.join(candidate)))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `command` through `start`: directly when it needs no shell, else (or when its
/// first word is no program, such as the builtin `exit`) through `/bin/sh -c`.
pub(crate) fn start_either<T>(
    command: &str,
    mut start: impl FnMut(std::process::Command) -> std::io::Result<T>,
) -> std::io::Result<T> {
    if let Some(argv) = simple_argv(command) {
        let mut direct = std::process::Command::new(argv[0]);
        direct.args(&argv[1..]);
        match start(direct) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            started => return started,
        }
    }
    let mut shell = std::process::Command::new("/bin/sh");
    shell.arg("-c").arg(command);
    start(shell)
}

/// Splits a command that needs no shell (no quotes, globs, redirections, variables) into
/// words, so it runs without the cost of starting `/bin/sh` first.
pub(crate) fn simple_argv(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./,:+@%".contains(c);
    let words: Vec<&str> = command.split_ascii_whitespace().collect();
    let simple = !words.is_empty()
        && words.iter().all(|w| w.chars().all(plain))
        && command.chars().all(|c| plain(c) || c == ' ');
    simple.then_some(words)
}

#[cfg(test)]
mod tests {
    use super::{remembered, simple_argv};

    #[test]
    fn a_bare_program_is_found_once_on_the_path_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("tool");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        let want = format!("{} a b", program.display());
        assert_eq!(remembered("tool a b", Some(path.clone())), want);
        // Remembered: found where it was, even once gone (as a shell's hash).
        std::fs::remove_file(&program).unwrap();
        assert_eq!(remembered("tool a b", Some(path.clone())), want);
        // Not a bare name, needs a shell, not found, or a relative PATH: as it is.
        for same in ["/bin/tool x", "tool $X", "nosuch-program-here"] {
            assert_eq!(remembered(same, Some(path.clone())), same);
        }
        assert_eq!(remembered("tool", Some(".:/bin".into())), "tool");
    }

    #[test]
    fn only_plain_words_skip_the_shell() {
        assert_eq!(simple_argv("true"), Some(vec!["true"]));
        assert_eq!(
            simple_argv("/bin/echo a-b c"),
            Some(vec!["/bin/echo", "a-b", "c"])
        );
        for needs_shell in [
            "echo $HOME",
            "a > b",
            "a | b",
            "X=1 cmd",
            "echo 'x y'",
            "a; b",
            "",
        ] {
            assert_eq!(simple_argv(needs_shell), None, "{needs_shell}");
        }
    }
}
