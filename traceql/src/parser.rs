//! Parsing TraceQL text into a pest parse tree, with rustc-style errors.

use pest::Parser;
use pest::iterators::Pairs;

use crate::ast::{Intrinsic, Span};
use crate::error::Error;

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

/// How a grammar rule reads in "expected ..." messages.
fn describe(rule: &Rule) -> String {
    let sym = match rule {
        Rule::EOI => return "end of query".into(),
        Rule::op_and => "&&",
        Rule::op_or => "||",
        Rule::op_ge => ">=",
        Rule::op_le => "<=",
        Rule::op_ne => "!=",
        Rule::op_re => "=~",
        Rule::op_nre | Rule::op_not_sibling => "!~",
        Rule::op_eq => "=",
        Rule::op_gt | Rule::op_child => ">",
        Rule::op_lt | Rule::op_parent => "<",
        Rule::op_add => "+",
        Rule::op_sub | Rule::op_neg => "-",
        Rule::op_mul => "*",
        Rule::op_div => "/",
        Rule::op_mod => "%",
        Rule::op_pow => "^",
        Rule::op_not => "!",
        Rule::op_descendant => ">>",
        Rule::op_ancestor => "<<",
        Rule::op_sibling => "~",
        Rule::op_not_child => "!>",
        Rule::op_not_parent => "!<",
        Rule::op_not_descendant => "!>>",
        Rule::op_not_ancestor => "!<<",
        Rule::op_union_child => "&>",
        Rule::op_union_parent => "&<",
        Rule::op_union_descendant => "&>>",
        Rule::op_union_ancestor => "&<<",
        Rule::op_union_sibling => "&~",
        Rule::spanset_filter => return "a spanset filter `{ ... }`".into(),
        Rule::field_expr => return "an expression".into(),
        Rule::attribute | Rule::attr_scope => {
            return "an attribute (`.name`, `span.name`...)".into();
        }
        Rule::attr_name => return "an attribute name".into(),
        Rule::intrinsic => return "an intrinsic (`duration`, `name`...)".into(),
        Rule::aggregate | Rule::agg_count | Rule::agg_fn => {
            return "an aggregate (`count()`, `avg(...)`...)".into();
        }
        Rule::hints => return "`with(...)`".into(),
        Rule::integer => return "an integer".into(),
        Rule::float => return "a float".into(),
        Rule::duration => return "a duration".into(),
        Rule::string | Rule::raw_string => return "a string".into(),
        Rule::keyword => return "a keyword (true, nil, ok, server...)".into(),
        Rule::named_int => return "minInt or maxInt".into(),
        other => return format!("{other:?}").replace('_', " "),
    };
    format!("`{sym}`")
}

fn from_pest(source: &str, e: pest::error::Error<Rule>) -> Error {
    let (start, end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p + 1),
        pest::error::InputLocation::Span(s) => s,
    };
    let found = source[start.min(source.len())..]
        .chars()
        .next()
        .map_or("end of query".to_string(), |c| format!("`{c}`"));
    let message = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<String> = positives.iter().map(describe).collect();
            names.sort();
            names.dedup();
            let list = match names.len() {
                1 => names[0].clone(),
                n if n > 8 => format!("{}, ... ({} choices)", names[..8].join(", "), n),
                _ => {
                    let last = names.pop().unwrap_or_default();
                    format!("{} or {last}", names.join(", "))
                }
            };
            format!("unexpected {found}, expected {list}")
        }
        _ => format!("unexpected {found}"),
    };
    if let Some(hint) = unknown_word(&source[start.min(source.len())..]) {
        let len = hint.0;
        return Error::parse(source, Span::new(start, start + len), hint.1);
    }
    Error::parse(source, Span::new(start, end), message)
}

/// A clearer message when the parser stopped at a word it does not know: a misspelt scoped
/// intrinsic (`trace:status`) or an attribute without its scope (`attribute`).
fn unknown_word(rest: &str) -> Option<(usize, String)> {
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let word = &rest[..len];
    if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if Intrinsic::from_name(word).is_some()
        || crate::build::keyword(word).is_some()
        || matches!(word, "minInt" | "maxInt")
    {
        return None;
    }
    if let Some((scope, _)) = word.split_once(':') {
        let prefix = format!("{scope}:");
        let mut scoped: Vec<&str> = Intrinsic::SPELLINGS
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| s.starts_with(&prefix))
            .collect();
        scoped.sort_unstable();
        return Some((
            len,
            if scoped.is_empty() {
                format!("unknown scope in `{word}`")
            } else {
                format!(
                    "unknown intrinsic `{word}`; {scope}: has {}",
                    scoped.join(", ")
                )
            },
        ));
    }
    let lower = [
        "by", "count", "avg", "min", "max", "sum", "select", "coalesce", "with",
    ];
    if lower.contains(&word) || word.ends_with("_over_time") || word == "rate" {
        return None;
    }
    Some((
        len,
        format!(
            "unknown identifier `{word}`: attributes are written `.{word}`, `span.{word}` or \
             `resource.{word}`"
        ),
    ))
}

/// Parses `query` into its parse tree.
pub fn parse_tree(query: &str) -> Result<Pairs<'_, Rule>, Error> {
    let unbalanced = check_nesting(query)?;
    // A bracket left open or closed by the wrong one is the real problem wherever the
    // grammar happened to stop (`by (resource.service.name` stops at `resource`).
    let pairs = TraceQlParser::parse(Rule::root, query).map_err(|e| match &unbalanced {
        Some((span, message)) => Error::parse(query, *span, message.clone()),
        None => from_pest(query, e),
    })?;
    check(query, pairs.clone())?;
    Ok(pairs)
}

/// Deepest bracket nesting accepted. The parser and every pass over the tree recurse, and a
/// server thread's stack is small: limits keep hostile input an error, never a crash.
pub const MAX_NESTING: usize = 64;
/// Most operators in one query (a 512-term `||` chain has 1023). Every pass recurses once per
/// operator at worst; with this bound a query needs under 4 MiB of stack in a debug build.
pub const MAX_OPERATORS: usize = 1024;

/// `line:column` of byte `at` (1-based, columns in characters).
fn position(src: &str, at: usize) -> String {
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = src[..at].matches('\n').count() + 1;
    format!("{line}:{}", src[line_start..at].chars().count() + 1)
}

/// Refuses bracket nesting deeper than [`MAX_NESTING`], skipping strings and comments; returns
/// the first unbalanced bracket, if any, with what is wrong with it.
fn check_nesting(src: &str) -> Result<Option<(Span, String)>, Error> {
    let bytes = src.as_bytes();
    let mut open: Vec<(u8, usize)> = Vec::new();
    let mut problem: Option<(Span, String)> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'`' => {
                let close = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != close {
                    i += if bytes[i] == b'\\' && close == b'"' {
                        2
                    } else {
                        1
                    };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'(' | b'{' | b'[' => {
                open.push((bytes[i], i));
                if open.len() > MAX_NESTING {
                    return Err(Error::parse(
                        src,
                        Span::new(i, i + 1),
                        format!("brackets nested more than {MAX_NESTING} deep"),
                    ));
                }
            }
            b')' | b'}' | b']' => {
                let want = match bytes[i] {
                    b')' => b'(',
                    b'}' => b'{',
                    _ => b'[',
                };
                let closer = bytes[i] as char;
                match open.pop() {
                    Some((o, _)) if o == want => {}
                    Some((o, at)) => {
                        problem.get_or_insert((
                            Span::new(i, i + 1),
                            format!(
                                "`{closer}` does not close the `{}` opened at {}",
                                o as char,
                                position(src, at)
                            ),
                        ));
                    }
                    None => {
                        problem.get_or_insert((
                            Span::new(i, i + 1),
                            format!("`{closer}` closes nothing"),
                        ));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if problem.is_none()
        && let Some((o, at)) = open.last()
    {
        let close = match o {
            b'(' => ')',
            b'{' => '}',
            _ => ']',
        };
        problem = Some((
            Span::new(*at, at + 1),
            format!("unclosed `{}`: no `{close}` closes it", *o as char),
        ));
    }
    Ok(problem)
}

fn custom(source: &str, span: pest::Span<'_>, message: &str) -> Error {
    Error::parse(source, Span::new(span.start(), span.end()), message)
}

/// What the grammar cannot say: scalar filters need an aggregate, metrics arithmetic needs a
/// metrics query, and a query holds at most [`MAX_OPERATORS`] operators.
fn check(source: &str, pairs: Pairs<'_, Rule>) -> Result<(), Error> {
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
                source,
                top.as_span(),
                "expected a metrics query, e.g. {} | rate()",
            ));
        }
    }
    let mut operators = 0;
    for p in pairs.flatten() {
        operators += crate::build::is_operator(p.as_rule()) as usize;
        if p.as_rule() == Rule::scalar_filter
            && !p
                .clone()
                .into_inner()
                .flatten()
                .any(|c| c.as_rule() == Rule::aggregate)
        {
            return Err(custom(
                source,
                p.as_span(),
                "a scalar filter compares an aggregate such as count() or avg(duration)",
            ));
        }
    }
    if operators > MAX_OPERATORS {
        return Err(Error::parse(
            source,
            Span::new(0, source.len()),
            format!("query too long: {operators} operators, at most {MAX_OPERATORS}"),
        ));
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
        assert!(e.message.contains("unexpected `=`"), "{e}");
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
