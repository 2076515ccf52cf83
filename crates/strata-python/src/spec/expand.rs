//! `${VAR}` in requirements files, as pip expands it: only the braced form, only names of
//! upper-case letters, digits and `_` (pip's pattern `\$\{([A-Z0-9_]+)\}`), after lines are
//! joined and comments removed. This keeps a token out of the file:
//! `--index-url https://ci-bot:${INDEX_TOKEN}@host/simple`.
//!
//! Unlike pip, an unset variable is an error rather than left as written: a literal
//! `${INDEX_TOKEN}` sent as a password fails later and far from its cause.

/// A logical line after expansion, with what was substituted so errors can hide it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// (name, value) of every substitution, in order of appearance.
    pub values: Vec<(String, String)>,
}

impl Expanded {
    /// `text` (an error message about the expanded line) with every substituted value
    /// replaced by its `${NAME}` again, longest value first so that a value containing
    /// another is hidden whole.
    pub fn hide(&self, text: &str) -> String {
        let mut values: Vec<&(String, String)> =
            self.values.iter().filter(|(_, v)| !v.is_empty()).collect();
        values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for (name, value) in values {
            out = out.replace(value.as_str(), &format!("${{{name}}}"));
        }
        out
    }
}

/// Substitutes every `${NAME}` in `line` with `lookup(NAME)`; the first unset one is the error.
pub fn expand(line: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Expanded, String> {
    let mut text = String::with_capacity(line.len());
    let mut values = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let closed = name_len > 0 && after[name_len..].starts_with('}');
        if !closed {
            // Not pip's pattern (`${lower}`, `${}`, unclosed): kept as written.
            text.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        }
        let name = &after[..name_len];
        let value = lookup(name).ok_or_else(|| name.to_string())?;
        text.push_str(&rest[..start]);
        text.push_str(&value);
        values.push((name.to_string(), value));
        rest = &after[name_len + 1..];
    }
    text.push_str(rest);
    Ok(Expanded { text, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t".into()),
            "USER_1" => Some("bot".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_pips_pattern_only() {
        let e = expand("-i https://${USER_1}:${TOKEN}@h/simple", env).unwrap();
        assert_eq!(e.text, "-i https://bot:s3cr3t@h/simple");
        assert_eq!(
            e.values,
            vec![
                ("USER_1".to_string(), "bot".to_string()),
                ("TOKEN".to_string(), "s3cr3t".to_string())
            ]
        );
        for kept in ["$TOKEN", "${token}", "${}", "${TOKEN", "$${X-Y}"] {
            assert_eq!(expand(kept, env).unwrap().text, kept);
        }
        assert_eq!(expand("a${EMPTY}b", env).unwrap().text, "ab");
    }

    #[test]
    fn an_unset_variable_is_named() {
        assert_eq!(expand("x ${TOKEN} ${NOPE}", env), Err("NOPE".to_string()));
    }

    #[test]
    fn hides_the_values_again() {
        let e = expand("https://${USER_1}:${TOKEN}@h", env).unwrap();
        assert_eq!(
            e.hide("invalid URL \"https://bot:s3cr3t@h\""),
            "invalid URL \"https://${USER_1}:${TOKEN}@h\""
        );
    }
}
