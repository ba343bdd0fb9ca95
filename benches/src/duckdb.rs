//! The DuckDB side of the query suites: a long-lived `duckdb/server.py` answering one SQL
//! query per line over the dataset's Parquet files, so the two engines alternate query by
//! query on the same machine.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// A running DuckDB over one dataset.
pub struct DuckDb {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DuckDb {
    /// Starts DuckDB over the blocks under `dir` and waits until it is ready.
    pub fn start(dir: &Path) -> Result<Self, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb/server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--data")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e} (pip install duckdb)", script.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut d = Self {
            child,
            stdin,
            stdout,
        };
        d.read()?;
        Ok(d)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("duckdb: {e}"))?;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("duckdb said {line:?}: {e}"))?;
        if let Some(e) = v.get("error") {
            return Err(format!("duckdb: {e} in {}", v["sql"]));
        }
        Ok(v)
    }

    /// Runs `sql`: its wall time and rows (bytes as hex, numbers as numbers, the rest as text).
    pub fn query(&mut self, sql: &str) -> Result<(Duration, Vec<Vec<Value>>), String> {
        writeln!(self.stdin, "{}", json!({ "sql": sql })).map_err(|e| e.to_string())?;
        let v = self.read()?;
        let ms = v["ms"].as_f64().unwrap_or(f64::NAN);
        let rows = v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect();
        Ok((Duration::from_secs_f64(ms / 1e3), rows))
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
