//! PEP 508 environment markers, parsed into a tree and printed canonically.
//!
//! Canonical form: double-quoted strings (single quotes only when the value holds a `"`),
//! single spaces around operators, legacy variable names (`os.name`, `sys.platform`, ...)
//! replaced by their PEP 508 names, `extra` values normalised (PEP 685), operands of `and`/`or`
//! flattened, sorted and deduplicated (both are commutative, associative and idempotent),
//! parentheses only where an `or` sits inside an `and`.

use super::pep508::normalise_extra;

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

/// Parses a marker expression and returns its canonical text.
pub fn canonical_marker(text: &str) -> Result<String, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, pos: 0 };
    let tree = parser.or_expr()?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(format!("unexpected {} in marker", token.describe()));
    }
    Ok(tree.render())
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Str(String),
    Word(String),
    Op(&'static str),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Open => "\"(\"".to_string(),
            Token::Close => "\")\"".to_string(),
            Token::Str(s) => format!("string {}", quote(s)),
            Token::Word(w) => format!("{w:?}"),
            Token::Op(op) => format!("{op:?}"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
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
                    .ok_or_else(|| format!("unterminated string {rest:?} in marker"))?;
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
                    .ok_or_else(|| format!("unexpected {c:?} in marker"))?;
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
    Leaf(String),
    And(Vec<Node>),
    Or(Vec<Node>),
}

impl Node {
    fn render(&self) -> String {
        match self {
            Node::Leaf(text) => text.clone(),
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

    fn or_expr(&mut self) -> Result<Node, String> {
        let mut operands = vec![self.and_expr()?];
        while self.peek_word("or") {
            self.pos += 1;
            operands.push(self.and_expr()?);
        }
        Ok(Node::combine(false, operands))
    }

    fn and_expr(&mut self) -> Result<Node, String> {
        let mut operands = vec![self.atom()?];
        while self.peek_word("and") {
            self.pos += 1;
            operands.push(self.atom()?);
        }
        Ok(Node::combine(true, operands))
    }

    fn atom(&mut self) -> Result<Node, String> {
        if self.tokens.get(self.pos) == Some(&Token::Open) {
            self.pos += 1;
            let inner = self.or_expr()?;
            return match self.next() {
                Some(Token::Close) => Ok(inner),
                Some(other) => Err(format!("expected \")\", found {}", other.describe())),
                None => Err("unclosed \"(\" in marker".to_string()),
            };
        }
        let lhs = self.value("at the start of a marker expression")?;
        let op = self.operator(&lhs)?;
        let rhs = self.value(&format!("after {op:?}"))?;
        Ok(Node::Leaf(comparison(lhs, op, rhs)))
    }

    fn value(&mut self, context: &str) -> Result<Value, String> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Value::Str(s)),
            Some(Token::Word(w)) => variable(&w).map(Value::Var),
            Some(other) => Err(format!(
                "expected a marker variable or a quoted string {context}, found {}",
                other.describe()
            )),
            None => Err(format!(
                "expected a marker variable or a quoted string {context}"
            )),
        }
    }

    fn operator(&mut self, lhs: &Value) -> Result<String, String> {
        match self.next() {
            Some(Token::Op(op)) => Ok(op.to_string()),
            Some(Token::Word(w)) if w == "in" => Ok("in".to_string()),
            Some(Token::Word(w)) if w == "not" => match self.next() {
                Some(Token::Word(w)) if w == "in" => Ok("not in".to_string()),
                _ => Err("expected \"in\" after \"not\" in marker".to_string()),
            },
            Some(other) => Err(format!(
                "expected a comparison operator after {}, found {}",
                lhs.render(),
                other.describe()
            )),
            None => Err(format!(
                "expected a comparison operator after {}",
                lhs.render()
            )),
        }
    }
}

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
}

fn variable(word: &str) -> Result<&'static str, String> {
    if let Some(known) = VARIABLES.iter().copied().find(|v| *v == word) {
        return Ok(known);
    }
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == word)
        .map(|(_, name)| *name)
        .ok_or_else(|| format!("unknown marker variable {word:?}"))
}

/// Renders one comparison; an `extra` compared to a string gets the string normalised.
fn comparison(lhs: Value, op: String, rhs: Value) -> String {
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
    format!("{} {op} {}", lhs.render(), rhs.render())
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
            let err = canonical_marker(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }
}
