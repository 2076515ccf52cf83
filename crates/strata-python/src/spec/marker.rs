//! PEP 508 environment markers, parsed into a tree and printed canonically.
//!
//! Canonical form: double-quoted strings (single quotes only when the value holds a `"`),
//! single spaces around operators, legacy variable names (`os.name`, `sys.platform`, ...)
//! replaced by their PEP 508 names, `extra` values normalised (PEP 685), operands of `and`/`or`
//! flattened, sorted and deduplicated (both are commutative, associative and idempotent),
//! parentheses only where an `or` sits inside an `and`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::pep508::normalise_extra;
use super::specifier::{clause_matches, parse_clause, SpecifierError};
use super::version::Version;

/// PEP 508 variables, plus newer ones that tools already write.
const VARIABLES: [&str; 14] = [
    "python_version",
    "python_full_version",
    "os_name",
    "sys_platform",
    "platform_release",
    "platform_system",
    "platform_version",
    "platform_machine",
    "platform_python_implementation",
    "implementation_name",
    "implementation_version",
    "extra",
    "extras",
    "dependency_groups",
];

/// Old spellings still accepted by pip, mapped to their PEP 508 names.
const ALIASES: [(&str, &str); 6] = [
    ("os.name", "os_name"),
    ("sys.platform", "sys_platform"),
    ("platform.version", "platform_version"),
    ("platform.machine", "platform_machine"),
    (
        "platform.python_implementation",
        "platform_python_implementation",
    ),
    ("python_implementation", "platform_python_implementation"),
];

const OPERATORS: [&str; 8] = ["===", "==", "!=", "<=", ">=", "~=", "<", ">"];

/// Why a marker expression is invalid. `found` is the token where something else was
/// expected, `None` at the end of the marker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// A quote with no closing quote; `text` is the marker from the opening quote on.
    #[error("unterminated string {text:?} in marker")]
    UnterminatedString { text: String },
    /// A character that starts no token (`=`, `&`, ...).
    #[error("unexpected {found:?} in marker")]
    UnexpectedChar { found: char },
    /// A token after a complete expression.
    #[error("unexpected {found} in marker")]
    UnexpectedToken { found: MarkerToken },
    #[error("expected \")\", found {found}")]
    ExpectedClose { found: MarkerToken },
    #[error("unclosed \"(\" in marker")]
    Unclosed,
    /// No operand where one must be; `after` is the operator before it, `None` at the start
    /// of an expression.
    #[error(
        "expected a marker variable or a quoted string {}{}",
        place(after.as_deref()),
        found_text(found.as_ref())
    )]
    ExpectedValue {
        after: Option<String>,
        found: Option<MarkerToken>,
    },
    /// `python_version >= "3.x"`, `python_version ~= "3"`: a version variable compared with
    /// something that is no PEP 440 version (for that operator). pip and uv would compare it
    /// as a string or call it false; either way it is almost surely a typo.
    #[error("{variable} {op} {value:?}: {reason}")]
    BadVersion {
        variable: &'static str,
        op: String,
        value: String,
        reason: SpecifierError,
    },
    /// `extra == "a b"`: no extra can have that name.
    #[error("invalid extra name {value:?} in marker")]
    BadExtra { value: String },
    #[error("unknown marker variable {name:?}")]
    UnknownVariable { name: String },
    #[error("expected \"in\" after \"not\" in marker")]
    ExpectedIn,
    /// An operand not followed by a comparison; `lhs` is the operand, as written canonically.
    #[error("expected a comparison operator after {lhs}{}", found_text(found.as_ref()))]
    ExpectedOperator {
        lhs: String,
        found: Option<MarkerToken>,
    },
}

fn place(after: Option<&str>) -> String {
    match after {
        Some(op) => format!("after {op:?}"),
        None => "at the start of a marker expression".to_string(),
    }
}

fn found_text(found: Option<&MarkerToken>) -> String {
    found.map(|t| format!(", found {t}")).unwrap_or_default()
}

/// Marker variables whose values are PEP 440 versions.
const VERSION_VARIABLES: [&str; 3] = [
    "python_version",
    "python_full_version",
    "implementation_version",
];

/// Parses a marker expression a user wrote and returns its canonical text. Stricter than
/// [`evaluate_marker`], which reads metadata of installed packages: a version variable must be
/// compared with a version, and `extra` with an extra name.
pub fn canonical_marker(text: &str) -> Result<String, MarkerError> {
    let tree = parse(text)?;
    tree.check()?;
    Ok(tree.render())
}

/// The values of the PEP 508 marker variables in one Python environment (what
/// `packaging.markers.default_environment()` gives).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerEnvironment {
    pub implementation_name: String,
    pub implementation_version: String,
    pub os_name: String,
    pub platform_machine: String,
    pub platform_python_implementation: String,
    pub platform_release: String,
    pub platform_system: String,
    pub platform_version: String,
    pub python_full_version: String,
    pub python_version: String,
    pub sys_platform: String,
}

impl MarkerEnvironment {
    fn value(&self, variable: &str) -> &str {
        match variable {
            "implementation_name" => &self.implementation_name,
            "implementation_version" => &self.implementation_version,
            "os_name" => &self.os_name,
            "platform_machine" => &self.platform_machine,
            "platform_python_implementation" => &self.platform_python_implementation,
            "platform_release" => &self.platform_release,
            "platform_system" => &self.platform_system,
            "platform_version" => &self.platform_version,
            "python_full_version" => &self.python_full_version,
            "python_version" => &self.python_version,
            "sys_platform" => &self.sys_platform,
            // `extra`, `extras` and `dependency_groups` outside the comparisons that
            // `Comparison::evaluate` answers: no value.
            _ => "",
        }
    }
}

/// Whether a marker holds in `env` with the `extras` of the requirement asked for (PEP 508:
/// `extra == "x"` holds when `x` is one of them).
pub fn evaluate_marker(
    text: &str,
    env: &MarkerEnvironment,
    extras: &[String],
) -> Result<bool, MarkerError> {
    let extras: Vec<String> = extras.iter().map(|e| normalise_extra(e)).collect();
    Ok(parse(text)?.evaluate(env, &extras))
}

fn parse(text: &str) -> Result<Node, MarkerError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, pos: 0 };
    let tree = parser.or_expr()?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(MarkerError::UnexpectedToken {
            found: token.clone(),
        });
    }
    Ok(tree)
}

/// One token of a marker; `Display` describes it for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerToken {
    Open,
    Close,
    Str(String),
    Word(String),
    Op(&'static str),
}

impl fmt::Display for MarkerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerToken::Open => f.write_str("\"(\""),
            MarkerToken::Close => f.write_str("\")\""),
            MarkerToken::Str(s) => write!(f, "string {}", quote(s)),
            MarkerToken::Word(w) => write!(f, "{w:?}"),
            MarkerToken::Op(op) => write!(f, "{op:?}"),
        }
    }
}

/// The parser's short name for it.
use MarkerToken as Token;

fn tokenize(text: &str) -> Result<Vec<Token>, MarkerError> {
    let mut tokens = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else {
            return Ok(tokens);
        };
        let (token, len) = match c {
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '"' | '\'' => {
                let end = rest[1..]
                    .find(c)
                    .ok_or_else(|| MarkerError::UnterminatedString {
                        text: rest.to_string(),
                    })?;
                (Token::Str(rest[1..1 + end].to_string()), end + 2)
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                    .unwrap_or(rest.len());
                (Token::Word(rest[..len].to_string()), len)
            }
            _ => {
                let op = OPERATORS
                    .iter()
                    .copied()
                    .find(|op| rest.starts_with(op))
                    .ok_or(MarkerError::UnexpectedChar { found: c })?;
                (Token::Op(op), op.len())
            }
        };
        tokens.push(token);
        rest = &rest[len..];
    }
}

/// A marker tree. `And`/`Or` hold at least two operands, already flattened and sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Leaf(Comparison),
    And(Vec<Node>),
    Or(Vec<Node>),
}

impl Node {
    fn render(&self) -> String {
        match self {
            Node::Leaf(comparison) => comparison.render(),
            Node::And(operands) => operands
                .iter()
                .map(|n| match n {
                    Node::Or(_) => format!("({})", n.render()),
                    _ => n.render(),
                })
                .collect::<Vec<_>>()
                .join(" and "),
            Node::Or(operands) => operands
                .iter()
                .map(Node::render)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }

    /// The checks of [`canonical_marker`] on every comparison.
    fn check(&self) -> Result<(), MarkerError> {
        match self {
            Node::Leaf(comparison) => comparison.check(),
            Node::And(operands) | Node::Or(operands) => operands.iter().try_for_each(Node::check),
        }
    }

    fn evaluate(&self, env: &MarkerEnvironment, extras: &[String]) -> bool {
        match self {
            Node::Leaf(comparison) => comparison.evaluate(env, extras),
            Node::And(operands) => operands.iter().all(|n| n.evaluate(env, extras)),
            Node::Or(operands) => operands.iter().any(|n| n.evaluate(env, extras)),
        }
    }

    /// Builds an `and` (`is_and`) or `or` node: nested nodes of the same kind are flattened,
    /// operands sorted by their canonical text and deduplicated.
    fn combine(is_and: bool, operands: Vec<Node>) -> Node {
        let mut flat = Vec::new();
        for operand in operands {
            match (is_and, operand) {
                (true, Node::And(inner)) | (false, Node::Or(inner)) => flat.extend(inner),
                (_, other) => flat.push(other),
            }
        }
        let mut keyed: Vec<(String, Node)> = flat.into_iter().map(|n| (n.render(), n)).collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.dedup_by(|a, b| a.0 == b.0);
        let mut nodes: Vec<Node> = keyed.into_iter().map(|(_, n)| n).collect();
        if nodes.len() == 1 {
            return nodes.remove(0);
        }
        if is_and {
            Node::And(nodes)
        } else {
            Node::Or(nodes)
        }
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Word(w)) if w == word)
    }

    fn or_expr(&mut self) -> Result<Node, MarkerError> {
        let mut operands = vec![self.and_expr(None)?];
        while self.peek_word("or") {
            self.pos += 1;
            operands.push(self.and_expr(Some("or"))?);
        }
        Ok(Node::combine(false, operands))
    }

    /// `after` is the `or` before it, if any, for the message when nothing follows.
    fn and_expr(&mut self, after: Option<&str>) -> Result<Node, MarkerError> {
        let mut operands = vec![self.atom(after)?];
        while self.peek_word("and") {
            self.pos += 1;
            operands.push(self.atom(Some("and"))?);
        }
        Ok(Node::combine(true, operands))
    }

    fn atom(&mut self, after: Option<&str>) -> Result<Node, MarkerError> {
        if self.tokens.get(self.pos) == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.or_expr()?;
            return match self.next() {
                Some(Token::Close) => Ok(inner),
                Some(other) => Err(MarkerError::ExpectedClose { found: other }),
                None => Err(MarkerError::Unclosed),
            };
        }
        let lhs = self.value(after)?;
        let op = self.operator(&lhs)?;
        let rhs = self.value(Some(&op))?;
        Ok(Node::Leaf(comparison(lhs, op, rhs)))
    }

    /// An operand; `after` is the operator before it, if any.
    fn value(&mut self, after: Option<&str>) -> Result<Value, MarkerError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Value::Str(s)),
            Some(Token::Word(w)) => variable(&w).map(Value::Var),
            found => Err(MarkerError::ExpectedValue {
                after: after.map(str::to_string),
                found,
            }),
        }
    }

    fn operator(&mut self, lhs: &Value) -> Result<String, MarkerError> {
        match self.next() {
            Some(Token::Op(op)) => Ok(op.to_string()),
            Some(Token::Word(w)) if w == "in" => Ok("in".to_string()),
            Some(Token::Word(w)) if w == "not" => match self.next() {
                Some(Token::Word(w)) if w == "in" => Ok("not in".to_string()),
                _ => Err(MarkerError::ExpectedIn),
            },
            found => Err(MarkerError::ExpectedOperator {
                lhs: lhs.render(),
                found,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Var(&'static str),
    Str(String),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Var(name) => name.to_string(),
            Value::Str(s) => quote(s),
        }
    }

    fn resolve<'a>(&'a self, env: &'a MarkerEnvironment) -> &'a str {
        match self {
            Value::Var(name) => env.value(name),
            Value::Str(s) => s,
        }
    }
}

/// One comparison of a marker, its strings already canonical (`extra` values normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparison {
    lhs: Value,
    op: String,
    rhs: Value,
}

impl Comparison {
    fn render(&self) -> String {
        format!("{} {} {}", self.lhs.render(), self.op, self.rhs.render())
    }

    /// A version variable compared (not `in`) with a string takes a valid specifier clause;
    /// `extra` compared with a string takes an extra name.
    fn check(&self) -> Result<(), MarkerError> {
        let op = self.op.as_str();
        let (variable, value) = match (&self.lhs, &self.rhs) {
            (Value::Var(variable), Value::Str(value)) => (*variable, value),
            (Value::Str(value), Value::Var(variable)) => (*variable, value),
            _ => return Ok(()),
        };
        if variable == "extra" && crate::name::PackageName::new(value).is_err() {
            return Err(MarkerError::BadExtra {
                value: value.clone(),
            });
        }
        if !VERSION_VARIABLES.contains(&variable) || matches!(op, "in" | "not in" | "===") {
            return Ok(());
        }
        parse_clause(&format!("{op}{value}"))
            .map(|_| ())
            .map_err(|reason| MarkerError::BadVersion {
                variable,
                op: op.to_string(),
                value: value.clone(),
                reason,
            })
    }

    fn evaluate(&self, env: &MarkerEnvironment, extras: &[String]) -> bool {
        let op = self.op.as_str();
        match (&self.lhs, &self.rhs) {
            (Value::Var("extra"), Value::Str(s)) | (Value::Str(s), Value::Var("extra"))
                if matches!(op, "==" | "!=") =>
            {
                extras.contains(s) == (op == "==")
            }
            (Value::Str(s), Value::Var("extras")) if matches!(op, "in" | "not in") => {
                extras.contains(&normalise_extra(s)) == (op == "in")
            }
            (lhs, rhs) => compare(lhs.resolve(env), op, rhs.resolve(env)),
        }
    }
}

/// PEP 508: versions compare as PEP 440 versions when both sides are versions, other
/// values as strings; an ordering of strings that are not versions is false.
fn compare(lhs: &str, op: &str, rhs: &str) -> bool {
    match op {
        "in" => return rhs.contains(lhs),
        "not in" => return !rhs.contains(lhs),
        _ => {}
    }
    if let Ok(version) = Version::parse(lhs) {
        let clause = format!("{op}{rhs}");
        if parse_clause(&clause).is_ok() {
            return clause_matches(&clause, &version);
        }
    }
    match op {
        "==" | "===" => lhs == rhs,
        "!=" => lhs != rhs,
        _ => false,
    }
}

fn variable(word: &str) -> Result<&'static str, MarkerError> {
    if let Some(known) = VARIABLES.iter().copied().find(|v| *v == word) {
        return Ok(known);
    }
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == word)
        .map(|(_, name)| *name)
        .ok_or_else(|| MarkerError::UnknownVariable {
            name: word.to_string(),
        })
}

/// One comparison; an `extra` compared to a string gets the string normalised.
fn comparison(lhs: Value, op: String, rhs: Value) -> Comparison {
    let normalise = |this: Value, other: &Value| match (this, other) {
        (Value::Str(s), Value::Var("extra")) => Value::Str(normalise_extra(&s)),
        (this, _) => this,
    };
    let lhs_is_extra = matches!(lhs, Value::Var("extra"));
    let rhs = normalise(rhs, &lhs);
    let lhs = if lhs_is_extra {
        lhs
    } else {
        normalise(lhs, &rhs)
    };
    Comparison { lhs, op, rhs }
}

fn quote(s: &str) -> String {
    if s.contains('"') {
        format!("'{s}'")
    } else {
        format!("\"{s}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linux_311() -> MarkerEnvironment {
        MarkerEnvironment {
            implementation_name: "cpython".into(),
            implementation_version: "3.11.7".into(),
            os_name: "posix".into(),
            platform_machine: "x86_64".into(),
            platform_python_implementation: "CPython".into(),
            platform_release: "6.1.0-18-amd64".into(),
            platform_system: "Linux".into(),
            platform_version: "#1 SMP PREEMPT_DYNAMIC Debian".into(),
            python_full_version: "3.11.7".into(),
            python_version: "3.11".into(),
            sys_platform: "linux".into(),
        }
    }

    #[test]
    fn evaluates_markers() {
        let env = linux_311();
        let cases: [(&str, &[&str], bool); 17] = [
            ("python_version >= '3.8'", &[], true),
            ("python_version < '3.10'", &[], false),
            ("python_version > '3.9'", &[], true),
            ("python_full_version == '3.11.*'", &[], true),
            (
                "sys_platform == 'linux' and platform_machine == 'x86_64'",
                &[],
                true,
            ),
            ("sys_platform == 'win32' or os_name == 'nt'", &[], false),
            (
                "(sys_platform == 'win32' or os_name == 'posix') and python_version >= '3'",
                &[],
                true,
            ),
            ("'linux' in sys_platform", &[], true),
            ("'arm' not in platform_machine", &[], true),
            ("extra == 'plot'", &[], false),
            ("extra == 'plot'", &["plot"], true),
            ("extra == 'Plot_Extra'", &["plot-extra"], true),
            ("extra != 'plot'", &["other"], true),
            (
                "python_version >= '3.8' and extra == 'test'",
                &["test"],
                true,
            ),
            ("platform_release == '6.1.0-18-amd64'", &[], true),
            // Not versions: strings, and an ordering of strings is false.
            ("platform_version > 'a'", &[], false),
            ("implementation_name == 'pypy'", &[], false),
        ];
        for (marker, extras, want) in cases {
            let extras: Vec<String> = extras.iter().map(|e| e.to_string()).collect();
            assert_eq!(
                evaluate_marker(marker, &env, &extras),
                Ok(want),
                "{marker} {extras:?}"
            );
        }
        assert!(evaluate_marker("nope == '1'", &env, &[]).is_err());
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("python_version>='3.8'", "python_version >= \"3.8\""),
            (
                "sys_platform == 'linux' and python_version >= \"3.8\"",
                "python_version >= \"3.8\" and sys_platform == \"linux\"",
            ),
            ("(os_name == 'nt')", "os_name == \"nt\""),
            ("platform_release == 'a\"b'", "platform_release == 'a\"b'"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_marker(input).as_deref(), Ok(want), "{input}");
        }
        let nested = "(sys_platform == 'linux' or os.name == 'nt') and python_version < '3.12'";
        assert_eq!(
            canonical_marker(nested).unwrap(),
            "(os_name == \"nt\" or sys_platform == \"linux\") and python_version < \"3.12\""
        );
        let or_of_and = "python_version < '3' or (os_name == 'nt' and extra == 'Foo_Bar')";
        assert_eq!(
            canonical_marker(or_of_and).unwrap(),
            "extra == \"foo-bar\" and os_name == \"nt\" or python_version < \"3\""
        );
        assert_eq!(
            canonical_marker("'linux' not  in sys_platform and (os_name=='a' and os_name=='a')")
                .unwrap(),
            "\"linux\" not in sys_platform and os_name == \"a\""
        );
    }

    #[test]
    fn rejects_bad_markers() {
        let cases = [
            (
                "python_version >=",
                "expected a marker variable or a quoted string after \">=\"",
            ),
            (
                "python_versio == '3'",
                "unknown marker variable \"python_versio\"",
            ),
            ("python_version == '3", "unterminated string"),
            ("(python_version == '3'", "unclosed \"(\""),
            ("python_version == '3')", "unexpected \")\""),
            ("and", "unknown marker variable \"and\""),
            ("os_name 'nt'", "expected a comparison operator"),
            ("os_name not 'nt'", "expected \"in\" after \"not\""),
            ("os_name == 'a' or", "expected a marker variable"),
            ("os_name = 'a'", "unexpected '='"),
        ];
        for (input, want) in cases {
            let err = canonical_marker(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn says_what_is_wrong_with_a_marker() {
        let word = |w: &str| Some(Token::Word(w.to_string()));
        let cases = [
            (
                "os_name == 'nt",
                MarkerError::UnterminatedString {
                    text: "'nt".to_string(),
                },
            ),
            ("os_name = 'a'", MarkerError::UnexpectedChar { found: '=' }),
            (
                "os_name == 'a' 'b'",
                MarkerError::UnexpectedToken {
                    found: Token::Str("b".to_string()),
                },
            ),
            (
                "(os_name == 'a' extra",
                MarkerError::ExpectedClose {
                    found: Token::Word("extra".to_string()),
                },
            ),
            ("(os_name == 'a'", MarkerError::Unclosed),
            (
                ") == 'a'",
                MarkerError::ExpectedValue {
                    after: None,
                    found: Some(Token::Close),
                },
            ),
            (
                "os_name not in",
                MarkerError::ExpectedValue {
                    after: Some("not in".to_string()),
                    found: None,
                },
            ),
            (
                "os_nam == 'a'",
                MarkerError::UnknownVariable {
                    name: "os_nam".to_string(),
                },
            ),
            ("os_name not == 'a'", MarkerError::ExpectedIn),
            (
                "'a' or",
                MarkerError::ExpectedOperator {
                    lhs: "\"a\"".to_string(),
                    found: word("or"),
                },
            ),
            (
                "extra",
                MarkerError::ExpectedOperator {
                    lhs: "extra".to_string(),
                    found: None,
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_marker(input), Err(want), "{input:?}");
        }
    }
}
