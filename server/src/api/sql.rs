//! SQL answers as the doors send them: JSON, CSV or an Arrow IPC stream (HTTP by `Accept`, the
//! CLI by `--format`), or an aligned table for people.

use allegro_engine::sql::SqlAnswer;
use arrow::json::writer::{JsonArray, WriterBuilder};

use super::error::ApiError;

/// Rows the HTTP door returns at most; a larger answer is cut and says so.
pub const HTTP_MAX_ROWS: usize = 100_000;

/// An answer's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlFormat {
    /// `{"columns": [...], "rows": [{...}], "truncated": false}`.
    Json,
    /// CSV with a header row.
    Csv,
    /// An Arrow IPC stream (`application/vnd.apache.arrow.stream`).
    Arrow,
    /// An aligned text table.
    Table,
}

impl SqlFormat {
    /// The format an HTTP `Accept` header asks for (JSON unless CSV or Arrow is named).
    pub fn from_accept(accept: &str) -> Self {
        let a = accept.to_ascii_lowercase();
        if a.contains("application/vnd.apache.arrow.stream") {
            Self::Arrow
        } else if a.contains("text/csv") {
            Self::Csv
        } else {
            Self::Json
        }
    }

    /// The `Content-Type` of this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Table => "text/plain; charset=utf-8",
        }
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::from(allegro_engine::error::EngineError::Internal(format!(
        "encoding the SQL answer as {what}: {e}"
    )))
}

/// `a` in format `f`.
pub fn encode(a: &SqlAnswer, f: SqlFormat) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    match f {
        SqlFormat::Json => {
            let columns: Vec<serde_json::Value> = a
                .schema
                .fields()
                .iter()
                .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                .collect();
            let mut rows = Vec::new();
            {
                let mut w = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, JsonArray>(&mut rows);
                for b in &a.batches {
                    w.write(b).map_err(|e| internal("JSON", e))?;
                }
                w.finish().map_err(|e| internal("JSON", e))?;
            }
            if rows.is_empty() {
                rows.extend_from_slice(b"[]");
            }
            out.extend_from_slice(b"{\"columns\":");
            out.extend(serde_json::to_vec(&columns).map_err(|e| internal("JSON", e))?);
            out.extend_from_slice(b",\"rows\":");
            out.extend(rows);
            out.extend_from_slice(format!(",\"truncated\":{}}}", a.truncated).as_bytes());
        }
        SqlFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &a.batches {
                w.write(b).map_err(|e| internal("CSV", e))?;
            }
            drop(w);
            if a.batches.is_empty() {
                let names: Vec<&str> = a
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect();
                out.extend_from_slice(names.join(",").as_bytes());
                out.push(b'\n');
            }
        }
        SqlFormat::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &a.schema)
                .map_err(|e| internal("Arrow IPC", e))?;
            for b in &a.batches {
                w.write(b).map_err(|e| internal("Arrow IPC", e))?;
            }
            w.finish().map_err(|e| internal("Arrow IPC", e))?;
        }
        SqlFormat::Table => {
            let rows: usize = a.batches.iter().map(|b| b.num_rows()).sum();
            // No rows still shows the columns.
            let empty = [arrow::array::RecordBatch::new_empty(a.schema.clone())];
            let batches = if rows == 0 {
                &empty[..]
            } else {
                &a.batches[..]
            };
            let t = arrow::util::pretty::pretty_format_batches(batches)
                .map_err(|e| internal("a table", e))?;
            out.extend_from_slice(format!("{t}\n{rows} row(s)").as_bytes());
            if a.truncated {
                out.extend_from_slice(b" (more rows were left out; raise --max-rows)");
            }
            out.push(b'\n');
        }
    }
    Ok(out)
}
