//! A block's span counts per minute: `rollup.parquet`, one row per minute and combination of
//! service, span name, kind, status and root-ness, with the number of spans that have them.
//!
//! Why: Drilldown's panels (`{ } | rate() by (resource.service.name)`, errors by service, root
//! spans by service) count spans. Over raw spans that is a scan of every span in range: over a
//! day of 10M spans, 80–180 ms whether the day is in 287 blocks or 25 merged ones, most of it
//! decoding start times and service names and hashing 10M group keys. The counts here answer the
//! same queries exactly from a few rows per minute (a few hundred thousand a day on the
//! benchmark's data, against ten million spans): the metrics planner reads them instead of the
//! spans when a query only counts, filters and groups on these columns, and its step is whole
//! minutes or at least five (minutes cut by a boundary are counted from spans; see
//! `query/metrics/rollup.rs`).
//!
//! The columns carry the span table's names and types, so the query's filter and `by()` keys
//! translate to the same expressions over either table and give the same answers row for row:
//! a row stands for `span_count` spans with these values. Two columns differ: `start_time_unix_nano`
//! is the end of the span's minute (`(m − 1 min, m]`, closed on the right as metrics intervals
//! are, so a minute lies wholly inside or outside any interval whose bounds are whole minutes),
//! and `nested_set_parent` keeps only the root test (a span's own value when negative, else 0).
//!
//! Written by every block write (flushes and merges alike) on the Parquet encoder's thread,
//! about 40 ns a span; it is an index like the bloom filter: a block without one (written
//! before it existed) or with a damaged one is read span by span.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, StringViewArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, UInt64Type};
use bytes::Bytes;
use foldhash::fast::RandomState;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::meta::RollupInfo;
use crate::error::{EngineError, Result};
use crate::schema::col;

/// The width of a rollup row's time bucket: one minute.
pub const BUCKET_NANOS: u64 = 60_000_000_000;

/// Spans a rollup row stands for (UInt64).
pub const SPAN_COUNT: &str = "span_count";

/// The columns of `rollup.parquet`, named and typed as in the span table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::START_TIME, DataType::UInt64, false),
        Field::new(col::SERVICE_NAME, DataType::Utf8, true),
        Field::new(col::NAME, DataType::Utf8, false),
        Field::new(col::KIND, DataType::Int32, false),
        Field::new(col::STATUS_CODE, DataType::Int32, false),
        Field::new(col::NESTED_SET_PARENT, DataType::Int32, false),
        Field::new(SPAN_COUNT, DataType::UInt64, false),
    ]))
}

/// The end of the minute holding `start` (right-closed: a span at a whole minute ends it).
pub fn bucket_end(start: u64) -> u64 {
    start.div_ceil(BUCKET_NANOS).saturating_mul(BUCKET_NANOS)
}

/// One row's values, strings as indexes into the builder's interned texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    end: u64,
    /// `u32::MAX`: no service name.
    service: u32,
    name: u32,
    kind: i32,
    status: i32,
    parent: i32,
}

/// Most rows a block's rollup holds (about 60 MB while counting). Span names with IDs in them
/// (`GET /user/123`) make nearly every span a row of its own: then the counts save nothing
/// and the block is written without them rather than hold the memory.
pub const MAX_ROWS: usize = 500_000;

/// Counts a block's spans per [`Key`] as its rows are written.
#[derive(Debug, Default)]
pub struct RollupBuilder {
    counts: HashMap<Key, u64, RandomState>,
    texts: Vec<String>,
    ids: HashMap<String, u32, RandomState>,
    /// Past [`MAX_ROWS`]: counting stopped, the block gets no rollup.
    abandoned: bool,
}

/// A string column of span rows as written (plain) or read back (views).
enum Texts<'a> {
    Plain(&'a StringArray),
    Views(&'a StringViewArray),
}

impl Texts<'_> {
    fn of<'a>(batch: &'a RecordBatch, name: &str) -> Result<Texts<'a>> {
        let a = batch
            .column_by_name(name)
            .ok_or_else(|| EngineError::Internal(format!("span rows without {name}")))?;
        if let Some(s) = a.as_string_opt::<i32>() {
            return Ok(Texts::Plain(s));
        }
        a.as_string_view_opt()
            .map(Texts::Views)
            .ok_or_else(|| EngineError::Internal(format!("span column {name} is not text")))
    }

    fn get(&self, i: usize) -> Option<&str> {
        match self {
            Texts::Plain(a) => a.is_valid(i).then(|| a.value(i)),
            Texts::Views(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

fn ints<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    batch
        .column_by_name(name)
        .and_then(|a| a.as_primitive_opt::<T>())
        .ok_or_else(|| EngineError::Internal(format!("span rows without {name} as expected")))
}

impl RollupBuilder {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.texts.len() as u32;
        self.texts.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }

    /// Counts the spans of `batch` (rows in the span table's schema).
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.abandoned {
            return Ok(());
        }
        let starts = ints::<UInt64Type>(batch, col::START_TIME)?;
        let kinds = ints::<Int32Type>(batch, col::KIND)?;
        let statuses = ints::<Int32Type>(batch, col::STATUS_CODE)?;
        let parents = ints::<Int32Type>(batch, col::NESTED_SET_PARENT)?;
        let services = Texts::of(batch, col::SERVICE_NAME)?;
        let names = Texts::of(batch, col::NAME)?;
        // Rows come a trace at a time, so neighbours mostly share a service and name: one
        // lookup per change instead of per row.
        let mut last_service: Option<(Option<&str>, u32)> = None;
        let mut last_name: Option<(&str, u32)> = None;
        for i in 0..batch.num_rows() {
            let service = services.get(i);
            let service = match last_service {
                Some((s, id)) if s == service => id,
                _ => {
                    let id = service.map_or(u32::MAX, |s| self.intern(s));
                    last_service = Some((service, id));
                    id
                }
            };
            let name = names.get(i).unwrap_or_default();
            let name = match last_name {
                Some((n, id)) if n == name => id,
                _ => {
                    let id = self.intern(name);
                    last_name = Some((name, id));
                    id
                }
            };
            let key = Key {
                end: bucket_end(starts.value(i)),
                service,
                name,
                kind: kinds.value(i),
                status: statuses.value(i),
                parent: parents.value(i).min(0),
            };
            *self.counts.entry(key).or_default() += 1;
        }
        if self.counts.len() > MAX_ROWS {
            *self = Self {
                abandoned: true,
                ..Self::default()
            };
        }
        Ok(())
    }

    /// Rows so far.
    pub fn rows(&self) -> usize {
        self.counts.len()
    }

    /// The counts as one batch in [`schema`], ordered by time; `None` when abandoned.
    pub fn finish(self) -> Result<Option<RecordBatch>> {
        if self.abandoned {
            return Ok(None);
        }
        let mut rows: Vec<(Key, u64)> = self.counts.into_iter().collect();
        rows.sort_unstable_by_key(|(k, _)| (k.end, k.service, k.name, k.kind, k.status, k.parent));
        let text = |id: u32| self.texts.get(id as usize).map(String::as_str);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|(k, _)| k.end),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|(k, _)| text(k.service)),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|(k, _)| text(k.name).unwrap_or_default()),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|(k, _)| k.kind),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|(k, _)| k.status),
            )),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|(k, _)| k.parent),
            )),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|(_, n)| *n))),
        ];
        RecordBatch::try_new(schema(), columns)
            .map(Some)
            .map_err(|e| EngineError::Internal(format!("rollup batch: {e}")))
    }
}

/// `batch` as `rollup.parquet` (LZ4; names and services dictionary-encoded by Parquet).
pub fn encode(batch: &RecordBatch) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(out))
}

/// Reads a block's `rollup.parquet` back, checking it against what `meta.json` recorded.
pub fn read(path: &str, bytes: Bytes, info: &RollupInfo) -> Result<RecordBatch> {
    if crc32fast::hash(&bytes) != info.crc32 {
        return Err(EngineError::corrupt(path, "rollup checksum mismatch"));
    }
    let batch = decode(path, bytes)?;
    if batch.num_rows() as u64 != info.rows {
        return Err(EngineError::corrupt(
            path,
            format!(
                "{} rollup rows where meta.json records {}",
                batch.num_rows(),
                info.rows
            ),
        ));
    }
    Ok(batch)
}

/// The spans `batch` (a rollup) counts.
pub fn spans_counted(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name(SPAN_COUNT)
        .and_then(|a| a.as_primitive_opt::<UInt64Type>())
        .map_or(0, |a| a.values().iter().sum())
}

/// Reads `rollup.parquet` back, checking its columns.
pub fn decode(path: &str, bytes: Bytes) -> Result<RecordBatch> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.with_batch_size(1 << 20).build())
        .map_err(|e| EngineError::corrupt(path, e))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| EngineError::corrupt(path, e))?;
    let want = schema();
    if let Some(b) = batches.first()
        && b.schema().fields() != want.fields()
    {
        return Err(EngineError::corrupt(
            path,
            "rollup columns are not as written",
        ));
    }
    arrow::compute::concat_batches(&want, &batches).map_err(|e| EngineError::corrupt(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A span: start, service, name, kind, status, parent.
    type Span<'a> = (u64, Option<&'a str>, &'a str, i32, i32, i32);

    fn rows(spans: &[Span]) -> RecordBatch {
        let s = Arc::new(Schema::new(vec![
            Field::new(col::START_TIME, DataType::UInt64, false),
            Field::new(col::SERVICE_NAME, DataType::Utf8, true),
            Field::new(col::NAME, DataType::Utf8View, false),
            Field::new(col::KIND, DataType::Int32, false),
            Field::new(col::STATUS_CODE, DataType::Int32, false),
            Field::new(col::NESTED_SET_PARENT, DataType::Int32, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(spans.iter().map(|s| s.0))),
            Arc::new(StringArray::from_iter(spans.iter().map(|s| s.1))),
            Arc::new(StringViewArray::from_iter_values(spans.iter().map(|s| s.2))),
            Arc::new(Int32Array::from_iter_values(spans.iter().map(|s| s.3))),
            Arc::new(Int32Array::from_iter_values(spans.iter().map(|s| s.4))),
            Arc::new(Int32Array::from_iter_values(spans.iter().map(|s| s.5))),
        ];
        RecordBatch::try_new(s, columns).unwrap()
    }

    #[test]
    fn minutes_are_closed_on_the_right() {
        assert_eq!(bucket_end(0), 0);
        assert_eq!(bucket_end(1), BUCKET_NANOS);
        assert_eq!(bucket_end(BUCKET_NANOS), BUCKET_NANOS);
        assert_eq!(bucket_end(BUCKET_NANOS + 1), 2 * BUCKET_NANOS);
        // Past the last whole minute a u64 holds: saturates rather than wrapping to 0.
        assert_eq!(bucket_end(u64::MAX), u64::MAX);
    }

    #[test]
    fn counts_spans_per_minute_and_values_and_round_trips() {
        let m = BUCKET_NANOS;
        let mut b = RollupBuilder::default();
        // Two spans of "a/get" in the first minute (one at its very end), a root, an error in
        // the next minute, and a span without a service.
        b.add(&rows(&[
            (1, Some("a"), "get", 2, 0, 5),
            (m, Some("a"), "get", 2, 0, 7),
            (m, Some("a"), "get", 2, 0, -1),
        ]))
        .unwrap();
        b.add(&rows(&[
            (m + 1, Some("a"), "get", 2, 2, 3),
            (m + 2, None, "get", 2, 0, 3),
        ]))
        .unwrap();
        assert_eq!(b.rows(), 4);
        let batch = b.finish().unwrap().unwrap();
        let back = decode("r", encode(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        let ends = back.column(0).as_primitive::<UInt64Type>();
        let services = back.column(1).as_string::<i32>();
        let parents = back.column(5).as_primitive::<Int32Type>();
        let statuses = back.column(4).as_primitive::<Int32Type>();
        let counts = back.column(6).as_primitive::<UInt64Type>();
        let got: Vec<(u64, Option<&str>, i32, i32, u64)> = (0..back.num_rows())
            .map(|i| {
                (
                    ends.value(i),
                    services.is_valid(i).then(|| services.value(i)),
                    statuses.value(i),
                    parents.value(i),
                    counts.value(i),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (m, Some("a"), 0, -1, 1),
                (m, Some("a"), 0, 0, 2),
                (2 * m, Some("a"), 2, 0, 1),
                (2 * m, None, 0, 0, 1),
            ]
        );
    }

    #[test]
    fn too_many_distinct_rows_give_up_counting() {
        let mut b = RollupBuilder::default();
        let names: Vec<String> = (0..=MAX_ROWS).map(|i| format!("GET /user/{i}")).collect();
        let spans: Vec<_> = names
            .iter()
            .map(|n| (1, Some("a"), n.as_str(), 2, 0, 5))
            .collect();
        b.add(&rows(&spans)).unwrap();
        assert_eq!(b.rows(), 0);
        b.add(&rows(&[(1, Some("a"), "get", 2, 0, 5)])).unwrap();
        assert!(b.finish().unwrap().is_none());
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let mut b = RollupBuilder::default();
        b.add(&rows(&[(1, Some("a"), "get", 2, 0, 5)])).unwrap();
        let bytes = encode(&b.finish().unwrap().unwrap()).unwrap();
        let cut = bytes.slice(..bytes.len() / 2);
        assert!(decode("r", cut).is_err());
    }
}
