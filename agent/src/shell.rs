//! How a command line is started: as its own words when it needs no shell (no quotes,
//! globs, redirections or variables), else through `/bin/sh -c`. Shared by the command
//! runner and the supervisor, which both start commands.

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
fn simple_argv(command: &str) -> Option<Vec<&str>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./,:+@%".contains(c);
    let words: Vec<&str> = command.split_ascii_whitespace().collect();
    let simple = !words.is_empty()
        && words.iter().all(|w| w.chars().all(plain))
        && command.chars().all(|c| plain(c) || c == ' ');
    simple.then_some(words)
}

#[cfg(test)]
mod tests {
    use super::simple_argv;

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
