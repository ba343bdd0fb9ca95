//! Errors of the TraceQL front end, rendered like rustc's: what, where, the line and a caret.

use std::fmt;

use crate::ast::Span;

/// Which stage refused the query. The CLI maps these to exit codes 2, 3 and 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not TraceQL: a syntax error.
    Parse,
    /// TraceQL, but meaningless: a type error, a bad regex, an out-of-range argument.
    Validate,
    /// Valid TraceQL that Tempo (and so Allegro) does not execute.
    Unsupported,
}

impl ErrorKind {
    /// `parse`, `validate` or `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::Validate => "validate",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

/// A refused query, with its position in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Which stage refused it.
    pub kind: ErrorKind,
    /// What was wrong, in one line, without the position.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Byte range of the offending text.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
    /// The full report: headline, position, source line and caret.
    pub rendered: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rendered)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An error of `kind` about `span` of `source`.
    pub fn new(kind: ErrorKind, source: &str, span: Span, message: impl Into<String>) -> Self {
        let message = message.into();
        let start = floor_char_boundary(source, span.start.min(source.len()));
        let end = floor_char_boundary(source, span.end.clamp(start, source.len()));
        let (line, column, line_text, line_start) = locate(source, start);
        let headline = match kind {
            ErrorKind::Parse => "syntax error",
            ErrorKind::Validate => "invalid query",
            ErrorKind::Unsupported => "unsupported",
        };
        // Underline the span on its first line (at least one caret), showing a window of a
        // long line around the position.
        let line_end = line_start + line_text.len();
        let chars: Vec<char> = line_text.chars().collect();
        let at = source[line_start..start].chars().count();
        let len = source[start..end.min(line_end).max(start)]
            .chars()
            .count()
            .max(1);
        let (from, to) = if chars.len() <= MAX_SHOWN {
            (0, chars.len())
        } else {
            let from = at.saturating_sub(MAX_SHOWN / 2);
            (from, (from + MAX_SHOWN).min(chars.len()))
        };
        let mut text: String = chars[from..to].iter().collect();
        let mut offset = at - from;
        if from > 0 {
            text.insert_str(0, "...");
            offset += 3;
        }
        if to < chars.len() {
            text.push_str("...");
        }
        let len = len.min(to.saturating_sub(at)).max(1);
        let gutter = line.to_string().len();
        let pad = " ".repeat(gutter);
        let rendered = format!(
            "{headline}: {message}\n{pad}--> {line}:{column}\n{pad} |\n{line} | {text}\n{pad} | {spaces}{carets}",
            text = text.replace('\t', " "),
            spaces = " ".repeat(offset),
            carets = "^".repeat(len),
        );
        Self {
            kind,
            message,
            line,
            column,
            start,
            end,
            rendered,
        }
    }

    /// A parse error.
    pub fn parse(source: &str, span: Span, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Parse, source, span, message)
    }

    /// A validation error.
    pub fn validate(source: &str, span: Span, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Validate, source, span, message)
    }

    /// An unsupported-feature error; the message ends in "not yet supported", as Tempo's does.
    pub fn unsupported(source: &str, span: Span, feature: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            source,
            span,
            format!("{feature} not yet supported"),
        )
    }
}

/// Longest stretch of a source line shown under an error.
const MAX_SHOWN: usize = 100;

/// Line (1-based), column (1-based, characters), the line's text and its start offset.
fn locate(source: &str, at: usize) -> (usize, usize, &str, usize) {
    let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    let line = source[..at].matches('\n').count() + 1;
    let column = source[line_start..at].chars().count() + 1;
    let text = source[line_start..line_end].trim_end_matches('\r');
    (line, column, text, line_start)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_line_and_caret() {
        let src = "{ .a = 1 &&\n  .b == 2 }";
        let e = Error::parse(src, Span::new(17, 19), "expected a value");
        assert_eq!((e.line, e.column), (2, 6));
        assert_eq!(
            e.rendered,
            "syntax error: expected a value\n --> 2:6\n  |\n2 |   .b == 2 }\n  |      ^^"
        );
    }

    #[test]
    fn long_lines_show_a_window_around_the_position() {
        let src = format!("{{ {} && .b == 2 }}", ".a = 1 && ".repeat(100));
        let at = src.find("==").unwrap();
        let e = Error::parse(&src, Span::new(at, at + 2), "unexpected `=`");
        let shown = e.rendered.lines().nth(3).unwrap();
        let carets = e.rendered.lines().nth(4).unwrap();
        assert!(shown.starts_with(&format!("{} | ...", e.line)), "{shown}");
        assert!(shown.len() < 120, "{shown}");
        let col = carets.find('^').unwrap();
        assert_eq!(&shown[col..col + 2], "==", "{}", e.rendered);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let src = "{ .\"µ\" = 1µ }";
        let at = src.find("1µ").unwrap();
        let e = Error::parse(src, Span::new(at, at + 1), "x");
        assert_eq!(e.column, 10);
        assert!(e.rendered.ends_with("|          ^"), "{}", e.rendered);
    }
}
