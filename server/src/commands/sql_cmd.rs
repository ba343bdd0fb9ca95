//! `allegro sql`: SQL over the span tables on the data directory, no server needed. With a
//! query it runs it; without one it reads statements from stdin, as an interactive shell when
//! stdin is a terminal (`;` ends a statement, `\d` lists the tables, `\d NAME` a table's
//! columns, `\q` quits; each answer says how long it took; line editing and history come from
//! [`super::sql_shell`]).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Instant;

use allegro_engine::query::QueryEngine;

use super::open_catalog;
use super::sql_shell::{Input, Read};
use crate::api::sql::{SqlFormat, encode};
use crate::config::Config;
use crate::tenant::SINGLE_TENANT;

/// Options of `allegro sql`.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlArgs {
    /// One read-only query, e.g. `SELECT service_name, count(*) FROM spans GROUP BY 1`;
    /// without it, statements are read from stdin (a shell on a terminal).
    pub query: Option<String>,
    /// Tenant whose tables are queried (`a|b` queries several together).
    #[arg(long, default_value = SINGLE_TENANT)]
    pub tenant: String,
    /// `table` for people; `json`, `csv` or `arrow` (an IPC stream) for programs.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv", "arrow"])]
    pub format: String,
    /// Most rows printed.
    #[arg(long, default_value_t = 10_000)]
    pub max_rows: usize,
}

fn format_of(a: &SqlArgs) -> SqlFormat {
    match a.format.as_str() {
        "json" => SqlFormat::Json,
        "csv" => SqlFormat::Csv,
        "arrow" => SqlFormat::Arrow,
        _ => SqlFormat::Table,
    }
}

/// The query a shell command stands for.
fn meta(cmd: &str) -> Option<String> {
    let rest = cmd.strip_prefix("\\d")?.trim();
    Some(if rest.is_empty() {
        "SELECT table_name FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY 1"
            .into()
    } else {
        format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
             WHERE table_name = '{}' ORDER BY ordinal_position",
            rest.replace('\'', "''")
        )
    })
}

/// Runs one statement; false when it failed (the error is printed).
async fn run_one(
    engine: &QueryEngine,
    a: &SqlArgs,
    sql: &str,
    timing: bool,
) -> Result<bool, String> {
    let tenants: Vec<String> = a.tenant.split('|').map(str::to_string).collect();
    let started = Instant::now();
    let answer = match engine.sql(&tenants, sql, a.max_rows).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(false);
        }
    };
    let bytes = encode(&answer, format_of(a)).map_err(|e| e.message)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes).map_err(|e| e.to_string())?;
    if timing {
        writeln!(out, "({:.3} s)", started.elapsed().as_secs_f64()).map_err(|e| e.to_string())?;
    }
    Ok(true)
}

/// `allegro sql`.
pub async fn run(cfg: Config, a: SqlArgs) -> Result<ExitCode, String> {
    let engine = QueryEngine::new(open_catalog(&cfg)?, None).map_err(|e| e.to_string())?;
    let engine = super::on_cluster(&cfg, engine)?;
    if let Some(q) = &a.query {
        let ok = run_one(&engine, &a, q, false).await?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        });
    }
    let shell = std::io::stdin().is_terminal();
    if shell {
        eprintln!("allegro sql: tables spans, traces, events, links; \\d lists them, \\q quits");
    }
    let mut input = Input::open(shell);
    let mut failed = false;
    let mut pending = String::new();
    loop {
        let prompt = match (shell, pending.is_empty()) {
            (false, _) => "",
            (true, true) => "allegro> ",
            (true, false) => "     ..> ",
        };
        let line = match input.read(prompt)? {
            Read::Line(line) => line,
            Read::Cancel => {
                pending.clear();
                continue;
            }
            Read::End => break,
        };
        let t = line.trim();
        if pending.is_empty() && (t == "\\q" || t == "exit" || t == "quit") {
            break;
        }
        if pending.is_empty() && t.starts_with('\\') {
            input.remember(t);
            match meta(t) {
                Some(q) => failed |= !run_one(&engine, &a, &q, shell).await?,
                None => eprintln!("unknown command {t}: \\d, \\d NAME or \\q"),
            }
            continue;
        }
        pending.push_str(&line);
        pending.push('\n');
        if t.ends_with(';') {
            let sql = pending.trim().trim_end_matches(';').to_string();
            input.remember(pending.trim());
            pending.clear();
            if !sql.is_empty() {
                failed |= !run_one(&engine, &a, &sql, shell).await?;
            }
        }
    }
    if !pending.trim().is_empty() {
        failed |= !run_one(&engine, &a, pending.trim(), shell).await?;
    }
    Ok(if failed && !shell {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
