//! TraceQL front end: a pest grammar of TraceQL as Tempo 2.9/3.x accepts it, a typed AST with
//! Tempo's precedence, Tempo's validation rules (with its distinct "not yet supported" kind),
//! a canonical printer that round-trips, and the rewrites planning relies on. Errors show line,
//! column, the source line and a caret. Deliberately free of DataFusion so it builds in seconds.
//!
//! ```
//! let q = allegro_traceql::parse("{ span.http.status_code >= 500 && .a = 1 || .a = 2 }")?;
//! allegro_traceql::validate("…", &q)?;
//! assert_eq!(q.to_string(), "{ ((span.http.status_code >= 500) && (.a = 1)) || (.a = 2) }");
//! # Ok::<(), allegro_traceql::Error>(())
//! ```

#![warn(missing_docs)]

pub mod ast;
mod build;
mod error;
pub mod fuzzing;
mod lexical;
mod parser;
mod print;
pub mod rewrite;
mod validate;

pub use ast::Query;
pub use error::{Error, ErrorKind};
pub use lexical::go_duration;
pub use parser::{Rule, parse_tree};
pub use rewrite::{RewriteOptions, rewrite};
pub use validate::{
    MAX_COMPARE_TOP_N, MAX_GROUP_BYS, MAX_PIPELINE_STAGES, MAX_REGEX_BYTES, MAX_SELECT_FIELDS,
    Type, type_name,
};

/// Parses `src` into its AST (syntax only; see [`validate`]).
pub fn parse(src: &str) -> Result<Query, Error> {
    let pairs = parse_tree(src)?;
    build::Builder::new(src).query(pairs)
}

/// Checks a parsed query with Tempo's rules; `src` is the text it was parsed from (for the
/// error's position).
pub fn validate(src: &str, q: &Query) -> Result<(), Error> {
    validate::validate(src, q)
}

/// Parse, validate, then rewrite as the query's hints allow: what a planner starts from.
pub fn compile(src: &str) -> Result<Query, Error> {
    let q = parse(src)?;
    validate(src, &q)?;
    let opts = RewriteOptions::from_hints(&q);
    Ok(rewrite(&q, opts))
}
