//! The line structure of a requirements file, as pip reads it: continuation lines joined,
//! comments removed, requirement and per-requirement options told apart.

/// One logical line: its content without comment, trimmed and non-empty, and the 1-based
/// number of the physical line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub number: usize,
    pub content: String,
}

/// Joins `\`-continued lines (with nothing in between, as pip does), strips comments and
/// drops blank lines. A comment line ends a continuation and is never continued itself.
pub fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, physical) in text.lines().enumerate() {
        let number = index + 1;
        let is_comment = physical.trim_start().starts_with('#');
        match physical.strip_suffix('\\') {
            Some(head) if !is_comment => {
                let (_, joined) = pending.get_or_insert_with(|| (number, String::new()));
                joined.push_str(head);
            }
            _ => {
                let (start, mut joined) = pending.take().unwrap_or((number, String::new()));
                if is_comment {
                    // Keeps the `#` after whitespace, so it still reads as a comment.
                    joined.push(' ');
                }
                joined.push_str(physical);
                push_line(&mut out, start, &joined);
            }
        }
    }
    if let Some((start, joined)) = pending {
        push_line(&mut out, start, &joined);
    }
    out
}

fn push_line(out: &mut Vec<LogicalLine>, number: usize, raw: &str) {
    let content = strip_comment(raw).trim();
    if !content.is_empty() {
        out.push(LogicalLine {
            number,
            content: content.to_string(),
        });
    }
}

/// Removes a `#` comment that starts the line or follows whitespace (so URL fragments stay).
pub fn strip_comment(line: &str) -> &str {
    let mut previous_is_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && previous_is_space {
            return &line[..i];
        }
        previous_is_space = c.is_whitespace();
    }
    line
}

/// Splits `spec --hash=... --hash=...` at the first whitespace-preceded token starting with
/// `-`, outside quotes (a marker string may contain ` -`).
pub fn split_requirement_options(content: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut previous_is_space = false;
    for (i, c) in content.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '-' && previous_is_space => {
                return (content[..i].trim_end(), content[i..].trim());
            }
            None => {}
        }
        previous_is_space = quote.is_none() && c.is_whitespace();
    }
    (content.trim(), "")
}

/// Option text that cannot be split into words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellSplitError {
    /// A `'` or `"` with no closing match; `text` is the whole option text.
    #[error("unterminated quote {quote} in {text:?}")]
    UnterminatedQuote { quote: char, text: String },
}

/// Splits option text into words like a POSIX shell: whitespace separates, `'...'` and `"..."`
/// quote (pip uses `shlex.split` here), `\` escapes outside single quotes.
pub fn shell_split(text: &str) -> Result<Vec<String>, ShellSplitError> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' | '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => current.extend(chars.next()),
                        Some(other) => current.push(other),
                        None => {
                            return Err(ShellSplitError::UnterminatedQuote {
                                quote: c,
                                text: text.to_string(),
                            })
                        }
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_continuations_and_strips_comments() {
        let text =
            "\u{feff}# header \\\nfoo>=1.0,\\\n  <2 # trailing\n\n  bar \\\n--hash=sha256:x\n\
                    baz @ https://h/b.whl#sha256=abc\nlast\\";
        let lines = logical_lines(text);
        let got: Vec<(usize, &str)> = lines
            .iter()
            .map(|l| (l.number, l.content.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "foo>=1.0,  <2"),
                (5, "bar --hash=sha256:x"),
                (7, "baz @ https://h/b.whl#sha256=abc"),
                (8, "last"),
            ]
        );
    }

    #[test]
    fn comment_line_ends_continuation() {
        let lines = logical_lines("foo\\\n# note\nbar\r\n");
        let got: Vec<(usize, &str)> = lines
            .iter()
            .map(|l| (l.number, l.content.as_str()))
            .collect();
        assert_eq!(got, vec![(1, "foo"), (3, "bar")]);
    }

    #[test]
    fn splits_options_outside_quotes() {
        assert_eq!(
            split_requirement_options("foo>=1 ; os_name == 'a -b' --hash=sha256:x"),
            ("foo>=1 ; os_name == 'a -b'", "--hash=sha256:x")
        );
        assert_eq!(split_requirement_options("foo-bar>=1"), ("foo-bar>=1", ""));
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split("-r 'my reqs.txt' --x=\"a b\" c\\ d").unwrap(),
            vec!["-r", "my reqs.txt", "--x=a b", "c d"]
        );
        assert_eq!(
            shell_split("-r 'open"),
            Err(ShellSplitError::UnterminatedQuote {
                quote: '\'',
                text: "-r 'open".to_string()
            })
        );
        assert_eq!(
            shell_split("--x=\"a\\\""),
            Err(ShellSplitError::UnterminatedQuote {
                quote: '"',
                text: "--x=\"a\\\"".to_string()
            })
        );
    }
}
