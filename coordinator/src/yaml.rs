//! A YAML document as a tree of located nodes, and typed readers over it
//! that report problems with a field path. Shared by the flow file, the
//! config loader and the cluster hosts file.
//!
//! The tree comes from serde-saphyr's `Spanned<T>`, which records where
//! each node is. Plain scalars that YAML resolved to a number or boolean
//! keep their source text too, so `sequence: 007` or `FLAG: yes` read back
//! as the user wrote them wherever a string is expected.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{MessageFormatter, Spanned};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where in a file something is; displays as `FILE:LINE:COL`, `FILE:LINE`
/// when the column is unknown, or `FILE` when the line is too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based, in characters.
    pub column: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

impl Position {
    pub(crate) fn new(file: &Path, line: usize, column: usize) -> Position {
        Position {
            file: file.to_path_buf(),
            line,
            column: (column > 0).then_some(column),
        }
    }
}

/// Why a YAML file (a flow, a config, a hosts file) could not be loaded: every variant
/// but `Read` says where, and `Invalid` names the field.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: cannot read the {what} file", path.display())]
    Read {
        path: PathBuf,
        /// Which kind of file: `flow`, `config`, `hosts`.
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{at}: yaml: {message}")]
    Syntax { at: Position, message: String },
    /// Valid YAML that is not a valid file of its kind.
    #[error("{at}: {field}: {message}")]
    Invalid {
        at: Position,
        field: String,
        message: String,
    },
}

impl FileError {
    pub(crate) fn from_problem(file: &Path, p: Problem) -> FileError {
        let at = Position::new(file, p.line, p.column);
        match p.field {
            None => FileError::Syntax {
                at,
                message: p.message,
            },
            Some(field) => FileError::Invalid {
                at,
                field,
                message: p.message,
            },
        }
    }

    /// Where the error is, unless the file could not be read.
    pub fn position(&self) -> Option<&Position> {
        match self {
            FileError::Read { .. } => None,
            FileError::Syntax { at, .. } | FileError::Invalid { at, .. } => Some(at),
        }
    }

    /// The offending field's path, for an invalid (but well-formed) file.
    pub fn field(&self) -> Option<&str> {
        match self {
            FileError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Reads a whole file of kind `what` (for the error message).
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        what,
        source,
    })
}

/// How deeply collections may nest. Flow and config files need about
/// six levels; each level costs tens of kilobytes of stack in a debug
/// build, so the parser's default of 64 could overflow a 2 MiB thread.
const MAX_DEPTH: usize = 24;

/// A value and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// Source text of a plain scalar resolved to a non-string.
    raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(crate) fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// The text of a scalar as written (or as resolved, for a string).
    pub(crate) fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(self.raw.clone().unwrap_or_else(|| b.to_string())),
            Value::Int(i) => Some(self.raw.clone().unwrap_or_else(|| i.to_string())),
            Value::Float(x) => Some(self.raw.clone().unwrap_or_else(|| x.to_string())),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    /// How the node reads in "expected X, found Y".
    fn describe(&self) -> String {
        match &self.value {
            Value::Null => "nothing".into(),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
            _ => {
                let text = self.scalar_text().unwrap_or_default();
                let short: String = text.chars().take(40).collect();
                let more = if short.len() < text.len() { "…" } else { "" };
                format!("`{}{more}`", short.escape_debug())
            }
        }
    }
}

/// Something wrong at a position; `field` is `None` for a YAML syntax
/// error, which has no field to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

/// Parses one YAML document. An empty document is a `Null` node.
pub(crate) fn parse_document(text: &str) -> Result<Node, Problem> {
    let mut options = serde_saphyr::options! {};
    // Duplicates are reported by the readers, which know the field path
    // and what kind of name (event, step, key) was repeated.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::AsString;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    options.budget = Some(budget);
    let spanned: Spanned<Raw> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| syntax_problem(&e))?;
    Ok(located(spanned, text))
}

fn syntax_problem(err: &serde_saphyr::Error) -> Problem {
    let location = err.location();
    let message = match err {
        serde_saphyr::Error::Budget {
            breach: BudgetBreach::Depth { .. },
            ..
        } => format!("nested more than {MAX_DEPTH} levels deep").into(),
        _ => serde_saphyr::DefaultMessageFormatter.format_message(err),
    };
    Problem {
        line: location.map_or(0, |l| l.line() as usize),
        column: location.map_or(0, |l| l.column() as usize),
        field: None,
        // The text may quote the input; keep control characters out of
        // a one-line message.
        message: message
            .chars()
            .flat_map(char::escape_default_if_control)
            .collect(),
    }
}

trait EscapeControl {
    fn escape_default_if_control(self) -> Vec<char>;
}

impl EscapeControl for char {
    fn escape_default_if_control(self) -> Vec<char> {
        if self.is_control() {
            self.escape_default().collect()
        } else {
            vec![self]
        }
    }
}

/// What serde-saphyr hands us: values with locations, not yet joined to
/// their source text.
enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

fn located(spanned: Spanned<Raw>, text: &str) -> Node {
    // For an alias, `defined` is the anchored scalar: its text is the
    // value's spelling, while `referenced` is where the user used it.
    let span = spanned.defined.span();
    let source = span
        .byte_offset()
        .zip(span.byte_len())
        .and_then(|(at, len)| text.get(at as usize..at.saturating_add(len) as usize));
    let raw = source.map(str::to_string);
    let value = match spanned.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(x) => Value::Float(x),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(items) => Value::Seq(items.into_iter().map(|n| located(n, text)).collect()),
        Raw::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (located(k, text), located(v, text)))
                .collect(),
        ),
    };
    let keeps_raw = matches!(value, Value::Bool(_) | Value::Int(_) | Value::Float(_));
    Node {
        value,
        line: spanned.referenced.line() as usize,
        column: spanned.referenced.column() as usize,
        raw: raw.filter(|_| keeps_raw),
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v).map(Raw::Int).or(Ok(Raw::Float(v as f64)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Raw::Map(entries))
    }
}

/// A dotted path to a field, such as `steps.s1.triggers.success[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    pub(crate) fn key(&self, key: &str) -> FieldPath {
        // Keys may hold anything a quoted YAML string can; an error
        // message must stay on one line.
        let key: String = key
            .chars()
            .flat_map(char::escape_default_if_control)
            .collect();
        if self.0.is_empty() {
            FieldPath(key)
        } else {
            FieldPath(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, index: usize) -> FieldPath {
        FieldPath(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("top level")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// A node together with the path that led to it: everything needed to
/// read it as a type, or to report a problem with it.
#[derive(Debug, Clone)]
pub(crate) struct At<'a> {
    pub(crate) node: &'a Node,
    pub(crate) field: FieldPath,
}

/// One `name: value` entry of a mapping; `key` points at the name.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'a> {
    pub(crate) name: String,
    pub(crate) key: At<'a>,
    pub(crate) value: At<'a>,
}

/// The entries of a mapping with a fixed set of keys.
#[derive(Debug)]
pub(crate) struct Fields<'a> {
    entries: Vec<Entry<'a>>,
}

impl<'a> Fields<'a> {
    /// The value under `key`; an explicit null counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&At<'a>> {
        let entry = self.entries.iter().find(|e| e.name == key)?;
        (!entry.value.node.is_null()).then_some(&entry.value)
    }

    /// The value under `key`, or a problem reported at `parent`.
    pub(crate) fn required(&self, key: &str, parent: &At<'_>) -> Result<&At<'a>, Problem> {
        self.get(key)
            .ok_or_else(|| parent.problem(format!("missing `{key}`")))
    }
}

impl<'a> At<'a> {
    pub(crate) fn new(node: &'a Node, field: FieldPath) -> At<'a> {
        At { node, field }
    }

    pub(crate) fn root(node: &'a Node) -> At<'a> {
        At::new(node, FieldPath::default())
    }

    /// A problem at this node. Control characters in the message (from
    /// a quoted name, say) are escaped to keep it on one line.
    pub(crate) fn problem(&self, message: impl Into<String>) -> Problem {
        let message: String = message.into();
        Problem {
            line: self.node.line,
            column: self.node.column,
            field: Some(self.field.to_string()),
            message: message
                .chars()
                .flat_map(char::escape_default_if_control)
                .collect(),
        }
    }

    fn expected(&self, what: &str) -> Problem {
        self.problem(format!("expected {what}, found {}", self.node.describe()))
    }

    /// A string; numbers and booleans give their text as written.
    pub(crate) fn string(&self) -> Result<String, Problem> {
        self.node
            .scalar_text()
            .ok_or_else(|| self.expected("a string"))
    }

    /// A `store:` value as `--store` takes it (a URL, a path, or a `DATABASES` name of the
    /// config): not empty, and a URL whose scheme is a store's.
    pub(crate) fn store(&self) -> Result<String, Problem> {
        let store = self.string()?;
        if store.trim().is_empty() {
            return Err(self.problem("must not be empty"));
        }
        if let Err(e) = eventor_store::StoreLocation::parse(&store) {
            return Err(self.problem(e.to_string()));
        }
        Ok(store)
    }

    /// A boolean; strings such as `"true"` or `"no"` count too, so that
    /// an expanded `$VAR` can be one.
    pub(crate) fn boolean(&self) -> Result<bool, Problem> {
        let word = match &self.node.value {
            Value::Bool(b) => return Ok(*b),
            Value::Str(s) => s.trim().to_ascii_lowercase(),
            _ => String::new(),
        };
        match word.as_str() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err(self.expected("true or false")),
        }
    }

    /// A whole number; a string holding one counts too.
    pub(crate) fn integer(&self) -> Result<i64, Problem> {
        let wide = match &self.node.value {
            Value::Int(i) => Some(*i),
            Value::Str(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        let wide = wide.ok_or_else(|| self.expected("a whole number"))?;
        i64::try_from(wide).map_err(|_| self.problem(format!("{wide} is out of range")))
    }

    /// A positive count that fits in 32 bits (capacities, amounts).
    pub(crate) fn count(&self) -> Result<u32, Problem> {
        let n = self.integer()?;
        u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| self.problem(format!("must be between 1 and {}, found {n}", u32::MAX)))
    }

    /// A duration: a humantime string (`500ms`, `1h 30m`) or a bare
    /// number of seconds.
    pub(crate) fn duration(&self) -> Result<Duration, Problem> {
        let seconds = match &self.node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            Value::Str(s) => s.trim().parse::<f64>().ok(),
            _ => return Err(self.expected("a duration")),
        };
        if let Some(seconds) = seconds {
            return self.seconds(seconds);
        }
        let text = self.string()?;
        humantime::parse_duration(text.trim())
            .map_err(|e| self.problem(format!("invalid duration `{}`: {e}", text.escape_debug())))
    }

    fn seconds(&self, seconds: f64) -> Result<Duration, Problem> {
        if seconds < 0.0 {
            return Err(self.problem(format!("must not be negative, found {seconds}")));
        }
        Duration::try_from_secs_f64(seconds)
            .map_err(|_| self.problem(format!("invalid duration: {seconds} seconds")))
    }

    /// A mapping whose keys must all be in `allowed`.
    pub(crate) fn mapping(&self, allowed: &[&str]) -> Result<Fields<'a>, Problem> {
        let entries = self.entries("key")?;
        if let Some(entry) = entries.iter().find(|e| !allowed.contains(&e.name.as_str())) {
            return Err(entry.key.problem(unknown_key(&entry.name, allowed)));
        }
        Ok(Fields { entries })
    }

    /// The entries of a mapping of names (`noun` names them in the
    /// duplicate message). Null is an empty mapping.
    pub(crate) fn entries(&self, noun: &str) -> Result<Vec<Entry<'a>>, Problem> {
        let pairs = match &self.node.value {
            Value::Null => return Ok(Vec::new()),
            Value::Map(pairs) => pairs,
            _ => return Err(self.expected("a mapping")),
        };
        let mut first_lines: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let entry = self.entry(key, value)?;
            if let Some(line) = first_lines.get(&entry.name) {
                let message = format!(
                    "duplicate {noun} `{}` (first defined at line {line})",
                    entry.name
                );
                return Err(entry.key.problem(message));
            }
            first_lines.insert(entry.name.clone(), key.line);
            out.push(entry);
        }
        Ok(out)
    }

    fn entry(&self, key: &'a Node, value: &'a Node) -> Result<Entry<'a>, Problem> {
        let Some(name) = key.scalar_text() else {
            let at = At {
                node: key,
                field: self.field.clone(),
            };
            return Err(at.expected("a name as key"));
        };
        let field = self.field.key(&name);
        Ok(Entry {
            key: At {
                node: key,
                field: field.clone(),
            },
            value: At { node: value, field },
            name,
        })
    }

    /// The items of a list. Null is an empty list.
    pub(crate) fn items(&self) -> Result<Vec<At<'a>>, Problem> {
        let items = match &self.node.value {
            Value::Null => return Ok(Vec::new()),
            Value::Seq(items) => items,
            _ => return Err(self.expected("a list")),
        };
        let at = |(i, node)| At {
            node,
            field: self.field.index(i),
        };
        Ok(items.iter().enumerate().map(at).collect())
    }

    /// A list of names, or a single name standing for a list of one.
    pub(crate) fn names(&self) -> Result<Vec<(String, At<'a>)>, Problem> {
        if let Some(name) = self.node.scalar_text() {
            return Ok(vec![(name, self.clone())]);
        }
        let items = self.items()?;
        items.into_iter().map(|at| Ok((at.string()?, at))).collect()
    }
}

impl At<'_> {
    /// `env_from_prime:`: a list of environment variable names (letters, digits and `_`,
    /// not a digit first), each once.
    pub(crate) fn var_names(&self) -> Result<Vec<String>, Problem> {
        let mut out: Vec<String> = Vec::new();
        for (name, at) in self.names()? {
            let mut chars = name.chars();
            let first = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if !first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
                let why = format!("invalid environment variable name `{name}`: use letters, digits and `_`, not a digit first");
                return Err(at.problem(why));
            }
            if out.contains(&name) {
                return Err(at.problem(format!("`{name}` is named twice")));
            }
            out.push(name);
        }
        Ok(out)
    }
}

/// "unknown key", with the nearest allowed key when one is close enough
/// to be a typo (or a longer spelling, like `hostname` for `host`), and
/// the whole list otherwise.
fn unknown_key(key: &str, allowed: &[&str]) -> String {
    match nearest(key, allowed.iter().copied()) {
        Some(a) => format!("unknown key; did you mean `{a}`?"),
        None => format!("unknown key; expected one of: {}", allowed.join(", ")),
    }
}

/// The known name `name` is most likely a typo of (at most two edits away, and fewer
/// than its length, or a longer or shorter spelling of it), if any: `y` is no typo of
/// `x`. Shared by every "did you mean": keys, events, steps and hosts.
pub(crate) fn nearest<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let lower = name.to_ascii_lowercase();
    let distance = |a: &str| {
        let extends = a.len() >= 3 && (lower.starts_with(a) || a.starts_with(&lower));
        if extends {
            1
        } else {
            edit_distance(&lower, a)
        }
    };
    known
        .into_iter()
        .map(|a| (distance(a), a))
        .min()
        .filter(|(d, _)| *d <= 2 && *d < name.chars().count())
        .map(|(_, a)| a)
}

/// `"; did you mean `x`?"` when [`nearest`] finds a name, else nothing: the tail of an
/// "unknown NAME" message.
pub fn did_you_mean<'k>(name: &str, known: impl IntoIterator<Item = &'k str>) -> String {
    nearest(name, known).map_or_else(String::new, |a| format!("; did you mean `{a}`?"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let replace = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = replace.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}
