//! Parsing TraceQL text into a pest parse tree, with rustc-style errors.

use pest::Parser;
use pest::iterators::Pairs;

use crate::ast::Span;
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
    Error::parse(source, Span::new(start, end), message)
}

/// Parses `query` into its parse tree.
pub fn parse_tree(query: &str) -> Result<Pairs<'_, Rule>, Error> {
    let pairs = TraceQlParser::parse(Rule::root, query).map_err(|e| from_pest(query, e))?;
    check(query, pairs.clone())?;
    Ok(pairs)
}

fn custom(source: &str, span: pest::Span<'_>, message: &str) -> Error {
    Error::parse(source, Span::new(span.start(), span.end()), message)
}

/// What the grammar cannot say: scalar filters need an aggregate, metrics arithmetic needs a
/// metrics query.
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
    for p in pairs.flatten() {
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
