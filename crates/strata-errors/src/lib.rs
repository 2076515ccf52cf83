//! One way to show an error with its causes on one line, for logs, job records and the
//! CLI. Libraries often repeat their cause's text in their own message: each text is said
//! once.

use std::error::Error;

/// The messages of `error` and all its causes, joined with ": ", skipping a cause whose text
/// the line already holds.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The distinct messages of `error` and its causes, outermost first (for a multi-line report).
pub fn causes(error: &dyn Error) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn Error> = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading spec.txt")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("pushing: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn causes_are_joined_once_each() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(chain(&Outer(io)), "reading spec.txt: no such file");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(chain(&Repeats(io)), "pushing: no such file");
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(causes(&Outer(io)), vec!["reading spec.txt", "no such file"]);
    }
}
