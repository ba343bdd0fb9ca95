//! `allegro traceql check`: the TraceQL front end on the command line.

use std::io::Read;
use std::process::ExitCode;

use allegro_traceql::{ErrorKind, RewriteOptions};

/// Options of `allegro traceql`.
#[derive(Debug, clap::Args)]
pub struct TraceqlArgs {
    /// What to do with the query.
    #[command(subcommand)]
    pub action: TraceqlAction,
}

/// `allegro traceql` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TraceqlAction {
    /// Parse and validate a query; print its canonical form (exit 0) or the error (exit 2 on a
    /// syntax error, 3 on a validation error, 4 when the query is not supported).
    Check {
        /// The query; `-` reads it from standard input.
        query: String,
        /// `text` for people, `json` for scripts and editors.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Also print the query after the planner's rewrites (text format only).
        #[arg(long)]
        rewritten: bool,
    },
}

/// Runs `allegro traceql ...`; needs neither config nor data.
pub fn run(args: TraceqlArgs) -> ExitCode {
    match args.action {
        TraceqlAction::Check {
            query,
            format,
            rewritten,
        } => check(&query, format == "json", rewritten),
    }
}

fn check(query: &str, json: bool, rewritten: bool) -> ExitCode {
    let query = if query == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("error: cannot read the query from stdin: {e}");
            return ExitCode::from(1);
        }
        s
    } else {
        query.to_string()
    };
    let result = allegro_traceql::parse(&query)
        .and_then(|ast| allegro_traceql::validate(&query, &ast).map(|()| ast));
    match result {
        Ok(ast) => {
            let canonical = ast.to_string();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "canonical": canonical})
                );
            } else {
                println!("{canonical}");
                if rewritten {
                    let opts = RewriteOptions::from_hints(&ast);
                    println!("{}", allegro_traceql::rewrite(&ast, opts));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": false,
                        "kind": e.kind.as_str(),
                        "message": e.message,
                        "line": e.line,
                        "column": e.column,
                    })
                );
            } else {
                eprintln!("{e}");
            }
            ExitCode::from(match e.kind {
                ErrorKind::Parse => 2,
                ErrorKind::Validate => 3,
                ErrorKind::Unsupported => 4,
            })
        }
    }
}
