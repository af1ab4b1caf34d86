//! Event expressions: the boolean formulas over event names that make an
//! expression event fire.
//!
//! An expression event fires in a sequence once its expression is true over
//! the events already fired in that same sequence. The text form is small:
//!
//! ```text
//! or    := and ( ('|' | "or") and )*
//! and   := unary ( ('&' | "and") unary )*
//! unary := ('!' | "not") unary | '(' or ')' | NAME
//! NAME  := [A-Za-z_] [A-Za-z0-9_.:-]*
//! ```
//!
//! `&` binds tighter than `|`, and `!` tighter than both, as in most
//! languages, so `a | b & !c` means `a | (b & (!c))`. The words `and`, `or`
//! and `not` are operators in any letter case, which means no event can be
//! called that. Whitespace is free between tokens.
//!
//! Unlike the original (where OR only looked at its first operand and NOT
//! never worked), an event that never fired is simply false, and every
//! operator means what it says.
//!
//! Every event leaf remembers the 1-based column where its name starts, so
//! that a flow file can point at an unknown name inside the expression text.
//! Columns are diagnostics only: equality ignores them, and expressions built
//! with the constructors carry column 0.

use std::fmt;
use std::str::FromStr;

/// How deeply parentheses and `!` may nest; bounds the recursion of the
/// parser (and of everything that walks the tree) on hostile input.
const MAX_DEPTH: usize = 128;

/// A boolean formula over event names.
#[derive(Debug, Clone)]
pub enum Expr {
    /// True once the event has fired. `column` is where the name started in
    /// the parsed text (1-based), or 0 for an expression built in code.
    Event { name: String, column: usize },
    /// True when every operand is true (an empty `And` is true).
    And(Vec<Expr>),
    /// True when any operand is true (an empty `Or` is false).
    Or(Vec<Expr>),
    /// True when the operand is false.
    Not(Box<Expr>),
}

/// A parse error, or an unknown name found by [`Expr::check_names`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ExprError {
    /// 1-based column (in characters) in the expression text.
    pub column: usize,
    /// What is wrong, in lowercase.
    pub message: String,
}

impl Expr {
    /// An event leaf.
    pub fn event(name: impl Into<String>) -> Expr {
        Expr::Event {
            name: name.into(),
            column: 0,
        }
    }

    /// Conjunction. Nested `And`s are flattened and a single operand stands
    /// for itself, so the result has one canonical text form.
    pub fn and(operands: impl IntoIterator<Item = Expr>) -> Expr {
        let flat = flatten(operands, and_operands);
        collapse(flat, Expr::And)
    }

    /// Disjunction, flattened and collapsed like [`Expr::and`].
    pub fn or(operands: impl IntoIterator<Item = Expr>) -> Expr {
        let flat = flatten(operands, or_operands);
        collapse(flat, Expr::Or)
    }

    /// Negation.
    #[allow(clippy::should_implement_trait)] // `!expr` would hide the allocation
    pub fn not(operand: Expr) -> Expr {
        Expr::Not(Box::new(operand))
    }

    /// Parses the text form described in the module documentation.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let tokens = tokenize(text)?;
        Parser { tokens, pos: 0 }.parse_all()
    }

    /// Every event name referred to, in order of first appearance.
    pub fn events(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit_events(&mut |name, _| {
            if !out.contains(&name) {
                out.push(name);
            }
        });
        out
    }

    /// Evaluates the expression; `fired` says whether an event has fired.
    pub fn eval(&self, fired: &impl Fn(&str) -> bool) -> bool {
        match self {
            Expr::Event { name, .. } => fired(name),
            Expr::And(ops) => ops.iter().all(|e| e.eval(fired)),
            Expr::Or(ops) => ops.iter().any(|e| e.eval(fired)),
            Expr::Not(e) => !e.eval(fired),
        }
    }

    /// Fails on the first event name (in text order) that `known` rejects,
    /// with the column where that name starts.
    pub fn check_names(&self, known: &impl Fn(&str) -> bool) -> Result<(), ExprError> {
        let mut first_unknown = None;
        self.visit_events(&mut |name, column| {
            if first_unknown.is_none() && !known(name) {
                first_unknown = Some(ExprError {
                    column,
                    message: format!("unknown event `{name}`"),
                });
            }
        });
        first_unknown.map_or(Ok(()), Err)
    }

    fn visit_events<'a>(&'a self, f: &mut impl FnMut(&'a str, usize)) {
        match self {
            Expr::Event { name, column } => f(name, *column),
            Expr::And(ops) | Expr::Or(ops) => ops.iter().for_each(|e| e.visit_events(f)),
            Expr::Not(e) => e.visit_events(f),
        }
    }
}

/// Whether `name` can be written as an event name in an expression.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char) && keyword(name).is_none()
}

/// Splices operands of the same kind into the list, so `(a & b) & c` and
/// `a & b & c` are one and the same expression.
fn flatten(
    operands: impl IntoIterator<Item = Expr>,
    same_kind: fn(Expr) -> Result<Vec<Expr>, Expr>,
) -> Vec<Expr> {
    let mut out = Vec::new();
    for e in operands {
        match same_kind(e) {
            Ok(inner) => out.extend(inner),
            Err(other) => out.push(other),
        }
    }
    out
}

fn and_operands(e: Expr) -> Result<Vec<Expr>, Expr> {
    match e {
        Expr::And(ops) => Ok(ops),
        other => Err(other),
    }
}

fn or_operands(e: Expr) -> Result<Vec<Expr>, Expr> {
    match e {
        Expr::Or(ops) => Ok(ops),
        other => Err(other),
    }
}

fn collapse(mut ops: Vec<Expr>, build: fn(Vec<Expr>) -> Expr) -> Expr {
    if ops.len() == 1 {
        ops.remove(0)
    } else {
        build(ops)
    }
}

/// Structural equality; the columns of event leaves are ignored because two
/// spellings of the same formula should compare equal.
impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        match (self, other) {
            (Expr::Event { name: a, .. }, Expr::Event { name: b, .. }) => a == b,
            (Expr::And(a), Expr::And(b)) | (Expr::Or(a), Expr::Or(b)) => a == b,
            (Expr::Not(a), Expr::Not(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Expr {}

impl From<&str> for Expr {
    fn from(name: &str) -> Expr {
        Expr::event(name)
    }
}

impl FromStr for Expr {
    type Err = ExprError;

    fn from_str(text: &str) -> Result<Expr, ExprError> {
        Expr::parse(text)
    }
}

/// The canonical text form: ` & `, ` | `, `!`, and parentheses only where
/// precedence needs them. It parses back to an equal expression for every
/// expression built by [`Expr::parse`] or the constructors, as long as its
/// names are valid (see [`is_valid_name`]). An empty `And`/`Or` has no text
/// form and prints as `()`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Event { name, .. } => f.write_str(name),
            Expr::And(ops) => {
                write_operands(f, ops, " & ", |e| matches!(e, Expr::And(_) | Expr::Or(_)))
            }
            Expr::Or(ops) => write_operands(f, ops, " | ", |e| matches!(e, Expr::Or(_))),
            Expr::Not(e) => {
                f.write_str("!")?;
                write_operand(f, e, matches!(**e, Expr::And(_) | Expr::Or(_)))
            }
        }
    }
}

fn write_operands(
    f: &mut fmt::Formatter<'_>,
    ops: &[Expr],
    separator: &str,
    needs_parens: fn(&Expr) -> bool,
) -> fmt::Result {
    if ops.is_empty() {
        return f.write_str("()");
    }
    for (i, e) in ops.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write_operand(f, e, needs_parens(e))?;
    }
    Ok(())
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

/// One token, with its 1-based column and its spelling (so that an error
/// quotes `or` back as `or`, not as `|`).
struct Lexeme {
    token: Token,
    column: usize,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    And,
    Or,
    Not,
    Open,
    Close,
    End,
}

impl Lexeme {
    /// How the token reads in an error message.
    fn describe(&self) -> String {
        match self.token {
            Token::Name(_) => format!("`{}`", self.text),
            Token::End => "the end of the expression".into(),
            _ => format!("'{}'", self.text),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

fn keyword(word: &str) -> Option<Token> {
    match word.to_ascii_lowercase().as_str() {
        "and" => Some(Token::And),
        "or" => Some(Token::Or),
        "not" => Some(Token::Not),
        _ => None,
    }
}

/// Splits the text into tokens, each with its 1-based character column; the
/// list always ends with `End` one column past the last character.
fn tokenize(text: &str) -> Result<Vec<Lexeme>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexemes = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, column) = (chars[i], i + 1);
        let len = match c {
            '&' | '|' | '!' | '(' | ')' => 1,
            c if is_name_start(c) => chars[i..].iter().take_while(|c| is_name_char(**c)).count(),
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            other => return Err(bad_character(other, column)),
        };
        let text: String = chars[i..i + len].iter().collect();
        let token = token_for(&text);
        lexemes.push(Lexeme {
            token,
            column,
            text,
        });
        i += len;
    }
    lexemes.push(Lexeme {
        token: Token::End,
        column: chars.len() + 1,
        text: String::new(),
    });
    Ok(lexemes)
}

fn token_for(text: &str) -> Token {
    match text {
        "&" => Token::And,
        "|" => Token::Or,
        "!" => Token::Not,
        "(" => Token::Open,
        ")" => Token::Close,
        word => keyword(word).unwrap_or_else(|| Token::Name(word.to_string())),
    }
}

fn bad_character(c: char, column: usize) -> ExprError {
    let hint = if c.is_ascii_digit() {
        " (event names start with a letter or '_')"
    } else {
        ""
    };
    ExprError {
        column,
        message: format!("unexpected character {c:?}{hint}"),
    }
}

/// Recursive descent over the token list; `depth` counts open parentheses
/// and negations so that hostile input cannot exhaust the stack.
struct Parser {
    tokens: Vec<Lexeme>,
    pos: usize,
}

impl Parser {
    fn parse_all(mut self) -> Result<Expr, ExprError> {
        if self.tokens.len() == 1 {
            return Err(error(1, "the expression is empty".into()));
        }
        let e = self.or(0)?;
        let next = self.peek();
        match next.token {
            Token::End => Ok(e),
            Token::Close => Err(error(next.column, "unmatched ')'".into())),
            _ => Err(error(
                next.column,
                format!(
                    "expected an operator ('&' or '|'), found {}",
                    next.describe()
                ),
            )),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut ops = vec![self.and(depth)?];
        while self.peek().token == Token::Or {
            self.pos += 1;
            ops.push(self.and(depth)?);
        }
        Ok(Expr::or(ops))
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut ops = vec![self.unary(depth)?];
        while self.peek().token == Token::And {
            self.pos += 1;
            ops.push(self.unary(depth)?);
        }
        Ok(Expr::and(ops))
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let next = self.peek();
        let column = next.column;
        let nests = matches!(next.token, Token::Not | Token::Open);
        if nests && depth >= MAX_DEPTH {
            let message = format!("expression nested too deeply (more than {MAX_DEPTH} levels)");
            return Err(error(column, message));
        }
        let found = next.describe();
        self.pos += 1;
        match self.tokens[self.pos - 1].token.clone() {
            Token::Name(name) => Ok(Expr::Event { name, column }),
            Token::Not => Ok(Expr::not(self.unary(depth + 1)?)),
            Token::Open => self.group(column, depth + 1),
            _ => Err(error(
                column,
                format!("expected an event name, found {found}"),
            )),
        }
    }

    /// The inside of a parenthesis opened at column `open`, and its `)`.
    fn group(&mut self, open: usize, depth: usize) -> Result<Expr, ExprError> {
        let e = self.or(depth)?;
        let next = self.peek();
        match next.token {
            Token::Close => {
                self.pos += 1;
                Ok(e)
            }
            Token::End => Err(error(open, "unclosed '('".into())),
            _ => Err(error(
                next.column,
                format!("expected ')' or an operator, found {}", next.describe()),
            )),
        }
    }

    /// The current token; past the end it stays on `End`.
    fn peek(&self) -> &Lexeme {
        let last = self.tokens.len() - 1;
        &self.tokens[self.pos.min(last)]
    }
}

fn error(column: usize, message: String) -> ExprError {
    ExprError { column, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(name: &str) -> Expr {
        Expr::event(name)
    }

    #[test]
    fn parses_precedence_and_keywords() {
        let cases: &[(&str, Expr)] = &[
            ("a", ev("a")),
            ("a & b", Expr::and([ev("a"), ev("b")])),
            ("a|b|c", Expr::or([ev("a"), ev("b"), ev("c")])),
            (
                "a | b & !c",
                Expr::or([ev("a"), Expr::and([ev("b"), Expr::not(ev("c"))])]),
            ),
            (
                "(a | b) & c",
                Expr::and([Expr::or([ev("a"), ev("b")]), ev("c")]),
            ),
            ("(a & b) & c", Expr::and([ev("a"), ev("b"), ev("c")])),
            ("((a))", ev("a")),
            ("!!a", Expr::not(Expr::not(ev("a")))),
            (
                "a AND not b Or c",
                Expr::or([Expr::and([ev("a"), Expr::not(ev("b"))]), ev("c")]),
            ),
            (
                "  s1.done:x-y &\t_z9  ",
                Expr::and([ev("s1.done:x-y"), ev("_z9")]),
            ),
            ("android & order", Expr::and([ev("android"), ev("order")])),
            ("not_yet", ev("not_yet")),
        ];
        for (text, want) in cases {
            assert_eq!(&Expr::parse(text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn reports_parse_errors_with_columns() {
        let cases = [
            ("", "column 1: the expression is empty"),
            ("   ", "column 1: the expression is empty"),
            (
                "s1_done & (s2 | )",
                "column 17: expected an event name, found ')'",
            ),
            ("a & (b", "column 5: unclosed '('"),
            ("((a)", "column 1: unclosed '('"),
            (
                "a &",
                "column 4: expected an event name, found the end of the expression",
            ),
            (
                "a b",
                "column 3: expected an operator ('&' or '|'), found `b`",
            ),
            ("(a b)", "column 4: expected ')' or an operator, found `b`"),
            ("a)", "column 2: unmatched ')'"),
            ("a # b", "column 3: unexpected character '#'"),
            (
                "a & 1b",
                "column 5: unexpected character '1' (event names start with a letter or '_')",
            ),
            ("& a", "column 1: expected an event name, found '&'"),
            ("a and or b", "column 7: expected an event name, found 'or'"),
            (
                "a & NOT",
                "column 8: expected an event name, found the end of the expression",
            ),
            ("é", "column 1: unexpected character 'é'"),
            ("ab & é", "column 6: unexpected character 'é'"),
            ("()", "column 2: expected an event name, found ')'"),
        ];
        for (text, want) in cases {
            let got = Expr::parse(text).unwrap_err().to_string();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
        let err = Expr::parse(&deep).unwrap_err();
        assert_eq!(err.column, MAX_DEPTH + 1);
        assert!(err.message.contains("nested too deeply"));
        let nots = format!("{}a", "!".repeat(100_000));
        assert!(Expr::parse(&nots).is_err());
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(Expr::parse(&ok).unwrap(), ev("a"));
    }

    #[test]
    fn evaluates_over_fired_events() {
        // (expression, fired events, expected)
        let cases = [
            ("a & b", "a", false),
            ("a & b", "a b", true),
            ("a | b", "b", true), // the original only looked at `a`
            ("a | b", "", false),
            ("!a", "", true),
            ("!a", "a", false),
            ("a & !b", "a", true),
            ("(a | b) & (c | d)", "b d", true),
            ("(a | b) & (c | d)", "a b", false),
        ];
        for (text, fired, want) in cases {
            let set: Vec<&str> = fired.split_whitespace().collect();
            let e = Expr::parse(text).unwrap();
            assert_eq!(e.eval(&|n| set.contains(&n)), want, "{text} with {fired:?}");
        }
        assert!(Expr::And(vec![]).eval(&|_| false));
        assert!(!Expr::Or(vec![]).eval(&|_| true));
    }

    #[test]
    fn lists_events_once_in_order() {
        let e = Expr::parse("b & (a | !b) & c | a").unwrap();
        assert_eq!(e.events(), ["b", "a", "c"]);
    }

    #[test]
    fn check_names_points_at_the_first_unknown_name() {
        let e = Expr::parse("s1_done & s9 | s8").unwrap();
        let known = |n: &str| n.starts_with("s1");
        let err = e.check_names(&known).unwrap_err();
        assert_eq!(err.to_string(), "column 11: unknown event `s9`");
        assert!(e.check_names(&|_: &str| true).is_ok());
        let built = Expr::and([ev("x"), ev("y")]);
        assert_eq!(
            built.check_names(&|n: &str| n == "x").unwrap_err().column,
            0
        );
    }

    #[test]
    fn displays_canonical_text() {
        let cases = [
            ("a&b", "a & b"),
            ("a or b and not c", "a | b & !c"),
            ("(a | b) & c", "(a | b) & c"),
            ("!(a & b)", "!(a & b)"),
            ("!(a)", "!a"),
            ("((a | b) | c)", "a | b | c"),
        ];
        for (text, want) in cases {
            assert_eq!(Expr::parse(text).unwrap().to_string(), want);
        }
        assert_eq!(Expr::And(vec![]).to_string(), "()");
    }

    #[test]
    fn constructors_flatten_and_collapse() {
        assert_eq!(Expr::and([ev("a")]), ev("a"));
        assert_eq!(
            Expr::and([Expr::and([ev("a"), ev("b")]), ev("c")]),
            Expr::And(vec![ev("a"), ev("b"), ev("c")])
        );
        assert_eq!(Expr::from("x"), ev("x"));
        assert_eq!(
            "x | y".parse::<Expr>().unwrap(),
            Expr::or([ev("x"), ev("y")])
        );
    }

    #[test]
    fn valid_names() {
        assert!(is_valid_name("s1_done"));
        assert!(is_valid_name("a.b:c-d"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("1a"));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("Or"));
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[A-Za-z_][A-Za-z0-9_.:-]{0,6}"
            .prop_filter("keywords are operators", |s| keyword(s).is_none())
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        let leaf = arb_name().prop_map(Expr::event);
        leaf.prop_recursive(6, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::and),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::or),
                inner.prop_map(Expr::not),
            ]
        })
    }

    proptest! {
        #[test]
        fn display_round_trips(e in arb_expr()) {
            let text = e.to_string();
            prop_assert_eq!(Expr::parse(&text).unwrap(), e, "{}", text);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = Expr::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_operator_soup(text in "[ab&|!() ]{0,40}") {
            if let Ok(e) = Expr::parse(&text) {
                prop_assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
            }
        }
    }
}
