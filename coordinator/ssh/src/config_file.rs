//! ssh_config read the way OpenSSH reads it, before anything is interpreted: each line
//! split into a lowercase keyword and its arguments (`=` syntax, quotes, trailing
//! comments), `Host` and `Match` lines kept as conditions in file order, and `Include`d
//! files read in place (`~`, paths relative to `~/.ssh`, `*`/`?` globs in sorted order).
//! Which lines apply to a host is decided later, per host, by `config_match`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::SshError;

/// OpenSSH's READCONF_MAX_DEPTH: deeper means an Include loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where a line came from, for messages (`file:line`).
#[derive(Debug, Clone)]
pub(crate) struct Location {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One meaningful line: keyword (lowercased) and arguments (quotes removed).
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub at: Location,
    pub keyword: String,
    pub args: Vec<String>,
    /// The line as written (trimmed), handed to ssh2-config to interpret its value.
    pub text: String,
}

/// A line in file order; an `Include` carries the files it read, each in order.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Host(Line),
    Match(Line),
    Setting(Line),
    Include(Vec<Vec<Item>>),
}

/// Reads the items of ssh_config `text`; `home` anchors `~` and relative Includes.
pub(crate) fn parse(text: &str, file: &Path, home: &Path) -> Result<Vec<Item>, SshError> {
    parse_depth(text, file, home, 0)
}

fn parse_depth(text: &str, file: &Path, home: &Path, depth: usize) -> Result<Vec<Item>, SshError> {
    let mut items = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let at = Location {
            file: file.to_path_buf(),
            line: index + 1,
        };
        let Some(line) = split_line(raw, at) else {
            continue;
        };
        items.push(match line.keyword.as_str() {
            "host" => Item::Host(line),
            "match" => Item::Match(line),
            "include" => Item::Include(read_includes(&line.args, home, depth)?),
            _ => Item::Setting(line),
        });
    }
    Ok(items)
}

/// Every file each Include argument names, read in glob order.
fn read_includes(args: &[String], home: &Path, depth: usize) -> Result<Vec<Vec<Item>>, SshError> {
    let mut files = Vec::new();
    for arg in args {
        for path in glob(&include_path(arg, home)) {
            if depth + 1 >= MAX_INCLUDE_DEPTH {
                let max = MAX_INCLUDE_DEPTH;
                return Err(SshError::IncludeDepth { path, max });
            }
            let text = match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(source) => return Err(SshError::ConfigRead { path, source }),
            };
            files.push(parse_depth(&text, &path, home, depth + 1)?);
        }
    }
    Ok(files)
}

/// `~/x` is under home; a relative path is under `~/.ssh` (a user config's rule).
fn include_path(arg: &str, home: &Path) -> PathBuf {
    match arg.strip_prefix('~') {
        Some("") => home.to_path_buf(),
        Some(rest) if rest.starts_with('/') => home.join(rest.trim_start_matches('/')),
        _ if Path::new(arg).is_absolute() => PathBuf::from(arg),
        _ => home.join(".ssh").join(arg),
    }
}

/// glob(3) for `*` and `?`: existing paths only, sorted; `*` skips dot files.
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    for part in pattern.components().skip(1) {
        let part = part.as_os_str().to_string_lossy();
        if !part.contains(['*', '?']) {
            found.iter_mut().for_each(|p| p.push(part.as_ref()));
            continue;
        }
        found = found.iter().flat_map(|dir| matching(dir, &part)).collect();
    }
    found.retain(|p| p.exists());
    found.sort();
    found
}

fn matching(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let names = entries.filter_map(|e| e.ok()?.file_name().into_string().ok());
    names
        .filter(|n| !n.starts_with('.') || pattern.starts_with('.'))
        .filter(|n| wildcard(pattern, n))
        .map(|n| dir.join(n))
        .collect()
}

/// `*` and `?` over bytes, case-sensitive (as OpenSSH's match_pattern).
pub(crate) fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // One backtrack point, so a hostile pattern cannot blow up.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    (pi, ni) = (sp + 1, sn + 1);
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

/// Keyword and arguments of one line; `None` for blank and comment lines.
fn split_line(raw: &str, at: Location) -> Option<Line> {
    let text = raw.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    let end = text.find(|c: char| c.is_whitespace() || c == '=');
    let (keyword, rest) = text.split_at(end.unwrap_or(text.len()));
    // OpenSSH allows `Keyword=value` and `Keyword = value`: one `=` separates.
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let keyword = keyword.to_ascii_lowercase();
    let args = match keyword.as_str() {
        "match" => strdelim_args(rest),
        _ => split_args(rest),
    };
    Some(Line {
        at,
        keyword,
        args,
        text: text.to_string(),
    })
}

/// How ssh splits a Match line (strdelim, not argv_split): whitespace or `=` end a
/// word; a `"` opens a quote that runs to the next `"`, with no escapes at all.
fn strdelim_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let Some(at) = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '=') else {
            args.push(rest.to_string());
            break;
        };
        let mut word = rest[..at].to_string();
        rest = &rest[at..];
        if let Some(quoted) = rest.strip_prefix('"') {
            // ssh gives up on the line at an unclosed quote; an empty word ends it here too.
            let Some(end) = quoted.find('"') else { break };
            word.push_str(&quoted[..end]);
            rest = &quoted[end + 1..];
        } else {
            rest = &rest[1..];
        }
        args.push(word);
        rest = rest.trim_start();
    }
    args
}

/// OpenSSH's argv_split: whitespace-separated, `"…"`/`'…'` quoting, `\` escaping a
/// quote, backslash or space, and an argument starting with `#` ending the line.
pub(crate) fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return args,
            Some(_) => args.push(one_arg(&mut chars)),
        }
    }
}

fn one_arg(chars: &mut std::iter::Peekable<std::str::Chars>) -> String {
    let mut arg = String::new();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) if matches!(chars.peek(), Some('\'' | '"' | '\\' | ' ')) => {
                arg.extend(chars.next());
            }
            (c, None) if c.is_whitespace() => break,
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (c, _) => arg.push(c),
        }
    }
    arg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_as_openssh_does() {
        assert_eq!(split_args(r#"a "b c" 'd e'f # g"#), ["a", "b c", "d ef"]);
        assert_eq!(split_args(r"x\ y z#w"), ["x y", "z#w"]);
        let exec = r#"host=a exec "test x = y" all"#;
        assert_eq!(
            strdelim_args(exec),
            ["host", "a", "exec", "test x = y", "all"]
        );
        let at = Location {
            file: "f".into(),
            line: 1,
        };
        let line = split_line("  Port = 22 ", at).unwrap();
        assert_eq!(
            (line.keyword.as_str(), line.args),
            ("port", vec!["22".into()])
        );
    }

    #[test]
    fn includes_are_read_in_place_in_glob_order() {
        let home = std::env::temp_dir().join(format!("eventor-ssh-inc-{}", std::process::id()));
        let dir = home.join(".ssh/conf.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.conf"), "Port 2\n").unwrap();
        std::fs::write(dir.join("a.conf"), "Port 1\n").unwrap();
        std::fs::write(dir.join(".hidden.conf"), "Port 3\n").unwrap();
        let items = parse("Include conf.d/*.conf\n", Path::new("t"), &home).unwrap();
        std::fs::remove_dir_all(&home).unwrap();
        let Item::Include(files) = &items[0] else {
            panic!("{items:?}")
        };
        let ports: Vec<_> = files
            .iter()
            .map(|f| match &f[0] {
                Item::Setting(l) => l.args[0].clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ports, ["1", "2"]);
    }
}
