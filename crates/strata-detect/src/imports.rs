//! The imports of one Python source file, found with Ruff's parser.
//!
//! Counted: `import a.b`, `from x import y` (absolute only: relative imports are the
//! project's own), anywhere in the file (inside functions, classes, branches), and
//! `importlib.import_module("lit")` / `__import__("lit")` with a literal name. An import in the
//! body of a `try:` whose handlers catch `ImportError` (or `ModuleNotFoundError`, `Exception`,
//! `BaseException`, or everything), or under `if TYPE_CHECKING:`, is optional: the program runs
//! without it.

use ruff_python_ast::visitor::{walk_body, walk_expr, walk_stmt, Visitor};
use ruff_python_ast::{ExceptHandler, Expr, ExprCall, Stmt, StmtIf, StmtTry};
use ruff_text_size::{Ranged, TextSize};

/// One import statement (or dynamic import call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The dotted module as written (`sklearn.linear_model`, or `x` of `from x import y`).
    pub module: String,
    /// For `from x import a, b`: `a` and `b`, which may be submodules of `x`.
    pub names: Vec<String>,
    /// 1-based.
    pub line: u32,
    /// The statement, shortened to what matters (`import sklearn`, `from x import y`).
    pub statement: String,
    pub optional: bool,
}

impl Import {
    /// The most specific dotted paths this import may load, most specific first, ending with
    /// the module itself: `from google.cloud import storage` may be `google.cloud.storage`.
    pub fn candidates(&self) -> impl Iterator<Item = String> + '_ {
        self.names
            .iter()
            .filter(|n| *n != "*")
            .map(|n| format!("{}.{n}", self.module))
            .chain(std::iter::once(self.module.clone()))
    }

    /// The first component of the module.
    pub fn top(&self) -> &str {
        self.module.split('.').next().unwrap_or(&self.module)
    }
}

/// Where and why a file does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// The imports of `source`, in the order they appear.
pub fn imports_of(source: &str) -> Result<Vec<Import>, SyntaxError> {
    let lines = LineIndex::new(source);
    let parsed = ruff_python_parser::parse_module(source).map_err(|error| {
        let (line, column) = lines.position(error.location.start());
        SyntaxError {
            line,
            column,
            message: error.error.to_string(),
        }
    })?;
    let mut collector = Collector {
        lines: &lines,
        optional_depth: 0,
        out: Vec::new(),
    };
    walk_body(&mut collector, parsed.suite());
    Ok(collector.out)
}

/// Byte offsets of line starts, for line and column numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(source: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            source
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line and column (in bytes) of `offset`.
    fn position(&self, offset: TextSize) -> (u32, u32) {
        let offset = offset.to_usize();
        let index = self.starts.partition_point(|&start| start <= offset) - 1;
        let column = offset - self.starts[index] + 1;
        (
            u32::try_from(index + 1).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        )
    }
}

struct Collector<'i> {
    lines: &'i LineIndex,
    /// How many optional contexts (`try:` bodies catching ImportError, `if TYPE_CHECKING:`)
    /// enclose the current statement.
    optional_depth: u32,
    out: Vec<Import>,
}

impl Collector<'_> {
    fn push(&mut self, module: &str, names: Vec<String>, at: TextSize, statement: String) {
        if module.is_empty() {
            return;
        }
        self.out.push(Import {
            module: module.to_string(),
            names,
            line: self.lines.position(at).0,
            statement,
            optional: self.optional_depth > 0,
        });
    }

    fn optional_body(&mut self, body: &[Stmt]) {
        self.optional_depth += 1;
        walk_body(self, body);
        self.optional_depth -= 1;
    }

    fn visit_try(&mut self, stmt: &StmtTry) {
        if stmt.handlers.iter().any(catches_import_error) {
            self.optional_body(&stmt.body);
        } else {
            walk_body(self, &stmt.body);
        }
        for handler in &stmt.handlers {
            self.visit_except_handler(handler);
        }
        walk_body(self, &stmt.orelse);
        walk_body(self, &stmt.finalbody);
    }

    /// `if TYPE_CHECKING:`: its body is optional, its other branches are not.
    fn visit_type_checking(&mut self, stmt: &StmtIf) {
        self.optional_body(&stmt.body);
        for clause in &stmt.elif_else_clauses {
            if let Some(test) = &clause.test {
                self.visit_expr(test);
            }
            walk_body(self, &clause.body);
        }
    }
}

impl<'a> Visitor<'a> for Collector<'_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::Import(import) => {
                for alias in &import.names {
                    let name = alias.name.as_str();
                    self.push(
                        name,
                        Vec::new(),
                        import.range().start(),
                        format!("import {name}"),
                    );
                }
            }
            Stmt::ImportFrom(from) => {
                // Relative imports (`from . import x`) are the project's own code.
                if from.level > 0 {
                    return;
                }
                let Some(module) = &from.module else { return };
                let names: Vec<String> = from
                    .names
                    .iter()
                    .map(|a| a.name.as_str().to_string())
                    .collect();
                let statement = format!("from {} import {}", module.as_str(), names.join(", "));
                self.push(module.as_str(), names, from.range().start(), statement);
            }
            Stmt::Try(stmt) => self.visit_try(stmt),
            Stmt::If(stmt) if is_type_checking(&stmt.test) => self.visit_type_checking(stmt),
            _ => walk_stmt(self, stmt),
        }
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Call(call) = expr {
            if let Some((module, statement)) = dynamic_import(call) {
                self.push(&module, Vec::new(), call.range().start(), statement);
            }
        }
        walk_expr(self, expr);
    }
}

/// Whether a handler catches a failed import.
fn catches_import_error(handler: &ExceptHandler) -> bool {
    let ExceptHandler::ExceptHandler(handler) = handler;
    match handler.type_.as_deref() {
        None => true,
        Some(Expr::Tuple(tuple)) => tuple.elts.iter().any(names_import_error),
        Some(other) => names_import_error(other),
    }
}

fn names_import_error(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Name(name) => name.id.as_str(),
        Expr::Attribute(attr) => attr.attr.as_str(),
        _ => return false,
    };
    matches!(
        name,
        "ImportError" | "ModuleNotFoundError" | "Exception" | "BaseException"
    )
}

/// `TYPE_CHECKING` or `typing.TYPE_CHECKING`: true only for type checkers, never at run time.
fn is_type_checking(test: &Expr) -> bool {
    match test {
        Expr::Name(name) => name.id.as_str() == "TYPE_CHECKING",
        Expr::Attribute(attr) => attr.attr.as_str() == "TYPE_CHECKING",
        _ => false,
    }
}

/// `importlib.import_module("lit")`, `import_module("lit")` or `__import__("lit")`: the
/// module and the call as written. Relative names (`".x"`) are the project's own.
fn dynamic_import(call: &ExprCall) -> Option<(String, String)> {
    let function = match call.func.as_ref() {
        Expr::Name(name) if matches!(name.id.as_str(), "__import__" | "import_module") => {
            name.id.as_str().to_string()
        }
        Expr::Attribute(attr) if attr.attr.as_str() == "import_module" => match &*attr.value {
            Expr::Name(base) if base.id.as_str() == "importlib" => {
                "importlib.import_module".to_string()
            }
            _ => return None,
        },
        _ => return None,
    };
    let Some(Expr::StringLiteral(literal)) = call.arguments.args.first() else {
        return None;
    };
    let module = literal.value.to_str();
    if module.is_empty() || module.starts_with('.') {
        return None;
    }
    let statement = format!("{function}({module:?})");
    Some((module.to_string(), statement))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(source: &str) -> Vec<(String, u32, bool)> {
        imports_of(source)
            .unwrap()
            .into_iter()
            .map(|i| (i.module, i.line, i.optional))
            .collect()
    }

    fn owned(items: &[(&str, u32, bool)]) -> Vec<(String, u32, bool)> {
        items
            .iter()
            .map(|(m, l, o)| (m.to_string(), *l, *o))
            .collect()
    }

    #[test]
    fn finds_every_kind_of_import() {
        let source = r#"import os, sklearn.linear_model as lm
from yaml import safe_load
from . import sibling
from .pkg import thing

def train():
    import torch
    class Inner:
        from PIL import Image

try:
    import ujson as json
except ImportError:
    import json

try:
    import must_have
finally:
    pass

if TYPE_CHECKING:
    import mypy_only

mod = importlib.import_module("plugins.csv")
other = __import__("cv2")
skip = importlib.import_module(".relative", __package__)
dynamic = importlib.import_module(name)
f"{x["key"]}"
"#;
        assert_eq!(
            found(source),
            owned(&[
                ("os", 1, false),
                ("sklearn.linear_model", 1, false),
                ("yaml", 2, false),
                ("torch", 7, false),
                ("PIL", 9, false),
                ("ujson", 12, true),
                ("json", 14, false),
                ("must_have", 17, false),
                ("mypy_only", 22, true),
                ("plugins.csv", 24, false),
                ("cv2", 25, false),
            ])
        );
    }

    #[test]
    fn from_imports_may_name_submodules() {
        let imports = imports_of("from google.cloud import storage, bigquery\n").unwrap();
        let candidates: Vec<String> = imports[0].candidates().collect();
        assert_eq!(
            candidates,
            [
                "google.cloud.storage",
                "google.cloud.bigquery",
                "google.cloud"
            ]
        );
        assert_eq!(
            imports[0].statement,
            "from google.cloud import storage, bigquery"
        );
        assert_eq!(imports[0].top(), "google");
    }

    #[test]
    fn handlers_that_make_an_import_optional() {
        for handler in [
            "except ImportError:",
            "except ModuleNotFoundError as e:",
            "except (ValueError, ImportError):",
            "except Exception:",
            "except:",
            "except builtins.ImportError:",
        ] {
            let source = format!("try:\n    import x\n{handler}\n    pass\n");
            assert_eq!(found(&source), owned(&[("x", 2, true)]), "{handler}");
        }
        let source = "try:\n    import x\nexcept ValueError:\n    pass\n";
        assert_eq!(found(source), owned(&[("x", 2, false)]));
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = imports_of("import os\n\ndef broken(:\n    pass\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 12), "{err:?}");
        assert!(!err.message.is_empty());
    }
}
