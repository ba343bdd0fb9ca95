//! TraceQL front end: a pest grammar of TraceQL as Tempo 2.9/3.x accepts it, with errors that
//! show line, column and a caret. Deliberately free of DataFusion so it builds in seconds.
//!
//! Status: the grammar (this module) recognises the language; the typed AST, validation,
//! canonical printer and rewrites are the rest of the TraceQL front-end issue.

#![warn(missing_docs)]

mod parser;

pub use parser::{ParseError, Rule, parse_tree};
