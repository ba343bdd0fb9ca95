//! TraceQL golden files (`tests/traceql/*.tql`), in the spirit of sqllogictest:
//!
//! ```text
//! # comment
//! dataset basic            # tests/traceql/data/basic.traces
//!
//! query
//! { status = error }
//! ----
//! t1: A
//! t3: B C
//!
//! error
//! { span:childCount > 1 }
//! ----
//! not supported
//! ```
//!
//! Metrics goldens (`tests/traceql/metrics/`) add `range <start> <end> <step>` (offsets from
//! the dataset's first trace, e.g. `range 0s 40s 10s`, or `range 0s 40s instant`), and
//! expect one line per series: `{labels}: <offset>=<value> ...`.
//!
//! A `query` lists every matching trace (by name, sorted) with its spansets; spans of a spanset
//! are space-separated and sorted, then the spanset's attributes if it has any (`by()`
//! groups, aggregates: `{by(kind)="client", count()=2}`); spansets are separated by ` | ` and
//! sorted. No lines means
//! no trace matches. An `error` case expects the query to fail with a message containing the
//! text after `----`.

/// One case of a golden file.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Line of the case's keyword, for messages.
    pub line: usize,
    /// The query.
    pub query: String,
    /// What is expected.
    pub expect: Expect,
    /// The `range` directive in effect (metrics goldens): `<start> <end> <step>` offsets from
    /// the dataset's base time, or `<start> <end> instant`.
    pub range: Option<String>,
}

/// The expected outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// These result lines, in order.
    Rows(Vec<String>),
    /// An error whose message contains this text.
    Error(String),
}

/// A parsed golden file.
#[derive(Debug, Clone, Default)]
pub struct GoldenFile {
    /// The dataset name.
    pub dataset: String,
    /// The cases in order.
    pub cases: Vec<Case>,
}

/// Parses a golden file.
pub fn parse(text: &str) -> Result<GoldenFile, String> {
    let mut out = GoldenFile::default();
    let mut range: Option<String> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        if let Some(name) = line.strip_prefix("dataset ") {
            out.dataset = name.trim().to_string();
            i += 1;
            continue;
        }
        if let Some(r) = line.strip_prefix("range ") {
            range = Some(r.trim().to_string());
            i += 1;
            continue;
        }
        let is_error = match line {
            "query" => false,
            "error" => true,
            other => {
                return Err(format!(
                    "line {}: expected query, error or dataset, got {other:?}",
                    i + 1
                ));
            }
        };
        let start = i + 1;
        i += 1;
        let mut query = Vec::new();
        while i < lines.len() && lines[i].trim() != "----" {
            query.push(lines[i]);
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("line {start}: case without ----"));
        }
        i += 1;
        let mut expect = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expect.push(lines[i].trim().to_string());
            i += 1;
        }
        out.cases.push(Case {
            line: start,
            query: query.join("\n"),
            expect: if is_error {
                Expect::Error(expect.join(" "))
            } else {
                Expect::Rows(expect)
            },
            range: range.clone(),
        });
    }
    if out.dataset.is_empty() {
        return Err("no dataset line".into());
    }
    Ok(out)
}

/// Formats one trace's spansets as a result line: `t1: A B | C`, each spanset followed by its
/// attributes when it has any (`t1: A B C D {count()=4}`, as [`labels_text`] writes them).
pub fn result_line(
    trace: &str,
    spansets: Vec<(
        Vec<String>,
        Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    )>,
) -> String {
    let mut sets: Vec<String> = spansets
        .into_iter()
        .map(|(mut spans, attrs)| {
            spans.sort();
            match attrs.is_empty() {
                true => spans.join(" "),
                false => format!("{} {}", spans.join(" "), labels_text(&attrs)),
            }
        })
        .collect();
    sets.sort();
    format!("{trace}: {}", sets.join(" | "))
}

/// A metrics series' labels as Grafana names a series: `{k="v", n=1}`, keys sorted, strings
/// quoted.
pub fn labels_text(labels: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref())))
        .collect();
    parts.sort();
    format!("{{{}}}", parts.join(", "))
}

/// A label value as [`labels_text`] spells it: strings quoted, arrays as `["a", "b"]`.
fn value_text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::IntValue(i)) => i.to_string(),
        // `256.0`, not `256`: a double label must not pass for an int one.
        Some(Value::DoubleValue(d)) => format!("{d:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::ArrayValue(a)) => {
            let xs: Vec<String> = a.values.iter().map(|x| value_text(Some(x))).collect();
            format!("[{}]", xs.join(", "))
        }
        other => format!("{other:?}"),
    }
}

impl Expect {
    /// True when `got` is what this expects: the same rows, or an error containing the text.
    pub fn matches(&self, got: &Result<Vec<String>, String>) -> bool {
        match (self, got) {
            (Expect::Rows(want), Ok(rows)) => want == rows,
            (Expect::Error(want), Err(e)) => e.contains(want.as_str()),
            _ => false,
        }
    }
}

/// Every `*.tql` file of `dir`, sorted, parsed, with its dataset (`<data>/<name>.traces`).
pub fn load_dir(
    dir: &std::path::Path,
    data: &std::path::Path,
) -> Vec<(String, GoldenFile, crate::dataset::Dataset)> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no golden files in {}", dir.display());
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let g = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let path = data.join(format!("{}.traces", g.dataset));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let ds =
                crate::dataset::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, g, ds)
        })
        .collect()
}

/// A search answer as a golden file's result lines (see the module docs), sorted; the answer
/// must show every span of every spanset (no `spss` cut).
pub fn search_lines(
    resp: &allegro_engine::tempopb::SearchResponse,
    ds: &crate::dataset::Dataset,
) -> Vec<String> {
    let mut lines: Vec<String> = resp
        .traces
        .iter()
        .map(|t| {
            let name = ds.trace_name(&t.trace_id).expect("unknown trace in result");
            let sets = t
                .span_sets
                .iter()
                .map(|s| {
                    assert_eq!(s.matched as usize, s.spans.len(), "spss must not cut here");
                    let spans = s
                        .spans
                        .iter()
                        .map(|sp| {
                            ds.span_name(name, &sp.span_id)
                                .expect("unknown span")
                                .to_string()
                        })
                        .collect();
                    (spans, s.attributes.clone())
                })
                .collect();
            result_line(name, sets)
        })
        .collect();
    lines.sort();
    lines
}

/// An SQL answer as a golden file prints it, for sqllogictest: each column's kind (`I`, `R`,
/// `T`) and each row's cells (NULL as `NULL`, an empty string as `(empty)`, DataFusion's
/// conventions).
pub fn sql_output(
    schema: &arrow::datatypes::Schema,
    batches: &[arrow::record_batch::RecordBatch],
) -> sqllogictest::DBOutput<sqllogictest::DefaultColumnType> {
    use arrow::datatypes::DataType;
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use sqllogictest::DefaultColumnType;

    let types = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if t.is_integer() => DefaultColumnType::Integer,
            DataType::Float32 | DataType::Float64 => DefaultColumnType::FloatingPoint,
            _ => DefaultColumnType::Text,
        })
        .collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let cols: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for r in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| match c.value(r).to_string() {
                        s if s.is_empty() => "(empty)".to_string(),
                        s => s,
                    })
                    .collect(),
            );
        }
    }
    sqllogictest::DBOutput::Rows { types, rows }
}

/// The SQL golden files (`tests/sql/*.slt`), sorted, each with the dataset its first line
/// names (`# dataset: shop`, from `tests/traceql/data/`).
pub fn sql_golden_files() -> Vec<(std::path::PathBuf, crate::dataset::Dataset)> {
    let dir = crate::workspace_dir().join("tests/sql");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let name = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# dataset: "))
                .unwrap_or_else(|| {
                    panic!("{}: first line must be `# dataset: NAME`", file.display())
                })
                .trim()
                .to_string();
            let path = crate::workspace_dir()
                .join("tests/traceql/data")
                .join(format!("{name}.traces"));
            let ds = crate::dataset::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (file, ds)
        })
        .collect()
}
