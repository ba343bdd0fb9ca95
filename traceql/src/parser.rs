//! Parsing TraceQL text into a pest parse tree, with rustc-style errors.

use pest::Parser;
use pest::iterators::Pairs;

mod grammar {
    #![allow(missing_docs)]
    //! The pest parser generated from `traceql.pest`; `Rule` names the grammar's rules.

    /// The generated parser.
    #[derive(pest_derive::Parser)]
    #[grammar = "traceql.pest"]
    pub struct TraceQlParser;
}

pub use grammar::Rule;
use grammar::TraceQlParser;

/// A parse error: where, what was expected, and the source line with a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rendered}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What was wrong, in one line.
    pub message: String,
    /// The full message with the source line and a caret under the position.
    pub rendered: String,
}

fn describe(rule: &Rule) -> String {
    let name = format!("{rule:?}");
    match name.as_str() {
        "EOI" => "end of query".into(),
        n if n.starts_with("op_") => format!("operator ({})", &n[3..]),
        n => n.replace('_', " "),
    }
}

impl From<pest::error::Error<Rule>> for ParseError {
    fn from(e: pest::error::Error<Rule>) -> Self {
        let (line, column) = match e.line_col {
            pest::error::LineColLocation::Pos(p) => p,
            pest::error::LineColLocation::Span(p, _) => p,
        };
        let e = e.renamed_rules(describe);
        let message = match &e.variant {
            pest::error::ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
                let mut names: Vec<String> = positives.iter().map(describe).collect();
                names.dedup();
                format!(
                    "syntax error at line {line}, column {column}: expected {}",
                    names.join(", ")
                )
            }
            _ => format!("syntax error at line {line}, column {column}"),
        };
        Self {
            line,
            column,
            rendered: format!("{message}\n{e}"),
            message,
        }
    }
}

/// Parses `query` into its parse tree.
pub fn parse_tree(query: &str) -> Result<Pairs<'_, Rule>, ParseError> {
    let pairs = TraceQlParser::parse(Rule::root, query).map_err(ParseError::from)?;
    check(pairs.clone())?;
    Ok(pairs)
}

fn custom(span: pest::Span<'_>, message: &str) -> ParseError {
    let e = pest::error::Error::new_from_span(
        pest::error::ErrorVariant::<Rule>::CustomError {
            message: message.to_string(),
        },
        span,
    );
    let (line, column) = span.start_pos().line_col();
    let message = format!("syntax error at line {line}, column {column}: {message}");
    ParseError {
        line,
        column,
        rendered: format!("{message}\n{e}"),
        message,
    }
}

/// What the grammar cannot say: scalar filters need an aggregate, metrics arithmetic needs a
/// metrics query, integers must fit in 64 bits.
fn check(pairs: Pairs<'_, Rule>) -> Result<(), ParseError> {
    // Only the outermost arithmetic must contain a metrics query: `(1 + 2) + ({} | rate())`.
    for top in pairs.clone().flat_map(|root| root.into_inner()) {
        if top.as_rule() == Rule::metrics_math
            && !top
                .clone()
                .into_inner()
                .flatten()
                .any(|c| c.as_rule() == Rule::metrics_query)
        {
            return Err(custom(
                top.as_span(),
                "expected a metrics query, e.g. {} | rate()",
            ));
        }
    }
    for p in pairs.flatten() {
        match p.as_rule() {
            Rule::scalar_filter
                if !p
                    .clone()
                    .into_inner()
                    .flatten()
                    .any(|c| c.as_rule() == Rule::aggregate) =>
            {
                return Err(custom(
                    p.as_span(),
                    "a scalar filter compares an aggregate such as count() or avg(duration)",
                ));
            }
            Rule::integer if p.as_str().parse::<i64>().is_err() => {
                return Err(custom(p.as_span(), "integer does not fit in 64 bits"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_line_column_and_a_caret() {
        let e = parse_tree("{ .a = 1 &&\n  .b == 2 }").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7), "{e}");
        assert!(e.rendered.contains("2 |   .b == 2 }"), "{e}");
        assert!(e.rendered.contains('^'), "{e}");
    }

    #[test]
    fn attribute_names_follow_tempos_lexer() {
        for q in [
            "{ .foo+bar = 1 }",
            "{ span.foo.bar }",
            "{ .\"foo bar\" = \"v\" }",
            "{ parent.span.a > 3 }",
            "{ .a.\"b \\\" c\".d }",
        ] {
            assert!(parse_tree(q).is_ok(), "{q}: {:?}", parse_tree(q).err());
        }
        for q in ["{ . }", "{ span. }", "{ . foo = 1 }", "{ attribute = 4 }"] {
            assert!(parse_tree(q).is_err(), "{q}");
        }
    }
}
