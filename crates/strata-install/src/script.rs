//! Scripts: console and GUI entry points become launcher scripts, and `.data/scripts` files
//! whose first line names a Python (`#!python`, the wheel spec's placeholder, or a system
//! one: `#!/usr/bin/python3`, `#!/usr/bin/env python`) get the venv interpreter instead. pip
//! and uv rewrite only the placeholder; a system Python's path means nothing in an image,
//! whose `/usr/bin/python` (if any) lacks the venv's packages.

/// One `name = module:attr` line of `[console_scripts]` or `[gui_scripts]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    pub name: String,
    pub module: String,
    /// Dotted attribute path inside the module, e.g. `cli.main`.
    pub attr: String,
}

/// What is wrong with a line of `[console_scripts]` or `[gui_scripts]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryPointError {
    #[error("{line:?} is not `name = module:attr`")]
    NoEquals { line: String },
    /// The name becomes a file in `bin/`: no path separators, no `..`, no whitespace.
    #[error("script name {name:?} is not a plain file name")]
    BadName { name: String },
    #[error("{value:?} is not `module:attr`")]
    NoColon { value: String },
    /// Module and attribute go into the launcher's source: dotted identifiers only.
    #[error("{value:?} is not `module:attr` of dotted identifiers")]
    NotIdentifiers { value: String },
}

/// A line of `entry_points.txt` that could not be understood: its 1-based line and why.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct EntryPointSyntax {
    pub line: usize,
    #[source]
    pub error: EntryPointError,
}

/// The console and GUI scripts of an `entry_points.txt` (on Linux both get the same launcher).
pub fn parse_entry_points(text: &str) -> Result<Vec<EntryPoint>, EntryPointSyntax> {
    let mut out = Vec::new();
    let mut in_scripts = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_scripts = matches!(section.trim(), "console_scripts" | "gui_scripts");
            continue;
        }
        if !in_scripts {
            continue;
        }
        let entry = parse_line(line).map_err(|error| EntryPointSyntax { line: i + 1, error })?;
        out.push(entry);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<EntryPoint, EntryPointError> {
    let (name, value) = line
        .split_once('=')
        .ok_or_else(|| EntryPointError::NoEquals {
            line: line.to_string(),
        })?;
    let name = name.trim();
    if !valid_script_name(name) {
        return Err(EntryPointError::BadName {
            name: name.to_string(),
        });
    }
    // Extras (`[extra]`) only matter to the resolver.
    let value = value.split('[').next().unwrap_or_default().trim();
    let (module, attr) = value
        .split_once(':')
        .ok_or_else(|| EntryPointError::NoColon {
            value: value.to_string(),
        })?;
    let (module, attr) = (module.trim(), attr.trim());
    // Both go into Python source: only dotted identifiers, never code.
    if !dotted_identifier(module) || !dotted_identifier(attr) {
        return Err(EntryPointError::NotIdentifiers {
            value: value.to_string(),
        });
    }
    Ok(EntryPoint {
        name: name.to_string(),
        module: module.to_string(),
        attr: attr.to_string(),
    })
}

fn valid_script_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn dotted_identifier(s: &str) -> bool {
    s.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    })
}

/// The launcher pip and uv write on Unix, with the venv interpreter.
pub fn launcher(entry: &EntryPoint, interpreter: &str) -> Vec<u8> {
    let import_name = entry.attr.split('.').next().unwrap_or(&entry.attr);
    format!(
        "#!{interpreter}\n\
         # -*- coding: utf-8 -*-\n\
         import sys\n\
         from {module} import {import_name}\n\
         if __name__ == \"__main__\":\n\
         \x20   if sys.argv[0].endswith(\"-script.pyw\"):\n\
         \x20       sys.argv[0] = sys.argv[0][:-11]\n\
         \x20   elif sys.argv[0].endswith(\".exe\"):\n\
         \x20       sys.argv[0] = sys.argv[0][:-4]\n\
         \x20   sys.exit({attr}())\n",
        module = entry.module,
        attr = entry.attr,
    )
    .into_bytes()
}

/// How a `.data/scripts` file's first line is replaced: drop `skip` bytes, write `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShebangRewrite {
    pub skip: u64,
    pub prefix: Vec<u8>,
}

/// How many leading bytes [`shebang_rewrite`] needs to see.
pub const SHEBANG_PEEK: usize = 4096;

/// Decides from the first bytes of a script (`head`, at most [`SHEBANG_PEEK`]; `size` is the
/// whole script) whether its first line is rewritten: a `#!` line naming a Python
/// ([`names_python`]). `Err` if such a line is longer than the peek.
pub fn shebang_rewrite(
    head: &[u8],
    size: u64,
    interpreter: &str,
) -> Result<Option<ShebangRewrite>, &'static str> {
    if !head.starts_with(b"#!") {
        return Ok(None);
    }
    let (line, skip) = match head.iter().position(|&b| b == b'\n') {
        Some(i) => (&head[..i], i as u64 + 1),
        None if head.len() as u64 == size => (head, size),
        // Too long to judge whole: refused only if what is seen names a Python.
        None if names_python(head) => return Err("#!python line is longer than 4096 bytes"),
        None => return Ok(None),
    };
    if !names_python(line) {
        return Ok(None);
    }
    Ok(Some(ShebangRewrite {
        skip,
        prefix: format!("#!{interpreter}\n").into_bytes(),
    }))
}

/// Whether a `#!` line runs Python: its program (or the one `/usr/bin/env` runs) is `python`,
/// `pythonw`, `python3`, `python3.11`... by itself or at the end of an absolute path.
pub fn names_python(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"#!") else {
        return false;
    };
    let text = String::from_utf8_lossy(rest);
    let mut words = text.split_ascii_whitespace();
    let Some(mut program) = words.next() else {
        return false;
    };
    if program.starts_with('/') && program.rsplit('/').next() == Some("env") {
        match words.find(|w| !w.starts_with('-')) {
            Some(next) => program = next,
            None => return false,
        }
    }
    let placeholder = !program.contains('/');
    let base = program.rsplit('/').next().unwrap_or_default();
    if !placeholder && !program.starts_with('/') {
        return false;
    }
    let Some(version) = base.strip_prefix("python") else {
        return false;
    };
    let version = version.strip_suffix('w').unwrap_or(version);
    version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_console_and_gui_scripts_only() {
        let text = "[console_scripts]\nfoo = foo.cli:main\nbar=foo:app.run [extra]\n\
                    [gui_scripts]\nfoo-gui = foo.gui:main\n\n[foo.plugins]\nx = y:z\n";
        let eps = parse_entry_points(text).unwrap();
        let names: Vec<_> = eps.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["foo", "bar", "foo-gui"]);
        assert_eq!(eps[1].module, "foo");
        assert_eq!(eps[1].attr, "app.run");
    }

    #[test]
    fn rejects_unsafe_entry_points() {
        for line in [
            "../x = a:b",
            "x/y = a:b",
            "x = a",
            "x = a:b; import os",
            "x = os:system('rm')",
            "x = a.:b",
        ] {
            let text = format!("[console_scripts]\n{line}\n");
            assert_eq!(parse_entry_points(&text).unwrap_err().line, 2, "{line}");
        }
    }

    #[test]
    fn says_what_is_wrong_with_an_entry_point() {
        let text = |s: &str| s.to_string();
        let cases = [
            (
                "x a:b",
                EntryPointError::NoEquals {
                    line: text("x a:b"),
                },
            ),
            (
                "../x = a:b",
                EntryPointError::BadName { name: text("../x") },
            ),
            ("= a:b", EntryPointError::BadName { name: text("") }),
            ("x = a", EntryPointError::NoColon { value: text("a") }),
            (
                "x = os:system('rm')",
                EntryPointError::NotIdentifiers {
                    value: text("os:system('rm')"),
                },
            ),
        ];
        for (line, want) in cases {
            let input = format!("[gui_scripts]\n{line}\n");
            assert_eq!(
                parse_entry_points(&input).unwrap_err().error,
                want,
                "{line}"
            );
        }
    }

    #[test]
    fn launcher_imports_the_first_attr_and_calls_the_dotted_one() {
        let ep = EntryPoint {
            name: "bar".into(),
            module: "foo".into(),
            attr: "app.run".into(),
        };
        let text = String::from_utf8(launcher(&ep, "/opt/venv/bin/python")).unwrap();
        assert!(text.starts_with("#!/opt/venv/bin/python\n"));
        assert!(text.contains("\nfrom foo import app\n"));
        assert!(text.contains("    sys.exit(app.run())\n"));
    }

    #[test]
    fn rewrites_lines_that_run_python() {
        let interp = "/opt/venv/bin/python";
        for line in [
            "#!python",
            "#!pythonw",
            "#!/usr/bin/python",
            "#!/usr/bin/python3",
            "#!/usr/local/bin/python3.11 -u",
            "#!/usr/bin/env python",
            "#!/usr/bin/env -S python3 -u",
        ] {
            let script = format!("{line}\nprint(1)\n");
            let rw = shebang_rewrite(script.as_bytes(), script.len() as u64, interp).unwrap();
            assert_eq!(rw.map(|r| r.skip), Some(line.len() as u64 + 1), "{line}");
        }
        for line in [
            "#!/bin/sh",
            "#!/usr/bin/env bash",
            "#!/usr/bin/pythonista",
            "#!pythonx",
            "#!bin/python",
            "# python",
        ] {
            let script = format!("{line}\n");
            let rw = shebang_rewrite(script.as_bytes(), script.len() as u64, interp).unwrap();
            assert_eq!(rw, None, "{line}");
        }
    }

    #[test]
    fn rewrites_only_python_placeholders() {
        let interp = "/opt/venv/bin/python";
        let rw = shebang_rewrite(b"#!pythonw -u\r\nprint(1)\n", 23, interp).unwrap();
        assert_eq!(rw.unwrap().skip, 14);
        assert_eq!(shebang_rewrite(b"#!/bin/sh\n", 10, interp).unwrap(), None);
        let whole = shebang_rewrite(b"#!python", 8, interp).unwrap().unwrap();
        assert_eq!(whole.skip, 8);
        assert!(shebang_rewrite(b"#!python", 9000, interp).is_err());
    }
}
