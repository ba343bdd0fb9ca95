//! `meta.json`: what a block holds, read before any Parquet is opened.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::checksums::{self, Checksums};
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::schema::{HotColumn, READABLE_FORMATS};

/// Names of the objects of a block under `<tenant>/<block_id>/`.
pub mod objects {
    /// Block metadata; written last, so a block without it is incomplete and ignored.
    pub const META: &str = "meta.json";
    /// The span table.
    pub const DATA: &str = "data.parquet";
    /// Trace-ID bloom filter.
    pub const BLOOM: &str = "bloom";
    /// Span counts per minute (see [`crate::block::rollup`]).
    pub const ROLLUP: &str = "rollup.parquet";
    /// Marks a directory that is not, or no longer, a whole block: put before a block's first
    /// object and before its deletion, removed once its `meta.json` is written. A directory
    /// without `meta.json` and without this marker held a whole block and lost its
    /// `meta.json`: damage to keep, not a write cut short to clean up.
    pub const PENDING: &str = "pending";
}

/// Block metadata; field names follow Tempo's `meta.json` where the concept is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    /// Block format version, checked on read.
    pub format: String,
    /// Block ID.
    #[serde(rename = "blockID")]
    pub block_id: Uuid,
    /// Tenant.
    #[serde(rename = "tenantID")]
    pub tenant_id: String,
    /// Earliest span start (RFC3339, second precision, rounded down).
    pub start_time: String,
    /// Latest span end (RFC3339, second precision, rounded up).
    pub end_time: String,
    /// Earliest span start, nanoseconds.
    pub start_unix_nano: u64,
    /// Latest span end, nanoseconds.
    pub end_unix_nano: u64,
    /// Number of traces.
    pub total_objects: u64,
    /// Number of spans.
    pub total_spans: u64,
    /// Bytes of `data.parquet`.
    pub size: u64,
    /// Bytes of the Parquet footer.
    pub footer_size: u64,
    /// Bytes of the bloom filter.
    pub bloom_size: u64,
    /// Number of Parquet row groups.
    pub row_groups: u64,
    /// Smallest trace ID (hex).
    #[serde(rename = "minID")]
    pub min_id: String,
    /// Largest trace ID (hex).
    #[serde(rename = "maxID")]
    pub max_id: String,
    /// Attributes stored as columns of their own in this block.
    pub hot_columns: Vec<HotColumn>,
    /// Keys holding arrays, kvlists or bytes somewhere in the block (`None` in blocks written
    /// before this was recorded: any key may).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_keys: Option<Vec<crate::hot::AttrKey>>,
    /// The scalar types of every span, resource and instrumentation attribute key (`None` in
    /// blocks written before this was recorded: any key may hold any type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_types: Option<Vec<crate::hot::KeyTypes>>,
    /// Every attribute key per scope (`None` in blocks written before this was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_keys: Option<crate::hot::AttributeKeys>,
    /// Distinct attribute values and span names, for tag-value requests without conditions
    /// (`None` in blocks written before this was recorded, or with too many keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_values: Option<crate::block::tag_values::TagValueIndex>,
    /// Traces whose part in this block is incomplete: no root span, or a span whose parent is
    /// not in the block (hex, sorted). Every trace split across blocks (or blocks and the head)
    /// has such a part, so search evaluates these traces over all their parts and every other
    /// trace block by block. `None` in blocks written before this was recorded and in blocks
    /// with more than [`MAX_RECORDED_INCOMPLETE`]: the query engine then finds them itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_traces: Option<Vec<String>>,
    /// Times merged by compaction; 0 for freshly written blocks.
    pub compaction_level: u32,
    /// The blocks this one was compacted from: the catalog hides them from the moment this
    /// block is visible, so its `meta.json` retires them in the same write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_from: Option<Vec<Uuid>>,
    /// The block's time slices, oldest first (format `allegro-2`, see [`BlockSlice`]); `None`:
    /// the block is one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slices: Option<Vec<BlockSlice>>,
    /// Checksums of `data.parquet` and `bloom`, verified on every read (`None` in blocks
    /// written before they were recorded: read unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<Checksums>,
    /// The block's span counts per minute, `rollup.parquet` (see [`crate::block::rollup`]);
    /// `None` in blocks written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollup: Option<RollupInfo>,
    /// The seal of `meta.json` itself (see [`crate::block::checksums`]); must stay last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_crc32: Option<String>,
}

/// The traces of a merged block that started within one stretch of its time, in row groups of
/// their own (non-root rows, then roots apart, each in trace-ID order).
///
/// Why: a merged block sorted by trace ID over its whole window has every row group spanning
/// the window, so a search for the newest traces, or a query over ten minutes of an hour, read
/// all of it where the small blocks it replaced let it read one. A slice is read like a
/// block of its own: a whole trace is in one slice (the one its start falls in), and `end`
/// bounds the start of every trace in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockSlice {
    /// Earliest span start of its rows, nanoseconds.
    pub start_unix_nano: u64,
    /// Latest span end of its rows, nanoseconds.
    pub end_unix_nano: u64,
    /// Its row groups, ascending.
    pub row_groups: Vec<u32>,
}

impl BlockSlice {
    /// Does the slice overlap `[start, end]` (unix nanoseconds)?
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        overlap((self.start_unix_nano, self.end_unix_nano), (start, end))
    }
}

/// What `meta.json` records of a block's `rollup.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollupInfo {
    /// Its bytes.
    pub size: u64,
    /// Its rows.
    pub rows: u64,
    /// CRC-32 of its bytes, verified on read.
    pub crc32: u32,
}

/// Do the closed ranges `a` and `b` overlap?
fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && a.1 >= b.0
}

/// Most incomplete trace IDs `meta.json` lists (330 KB of hex).
pub const MAX_RECORDED_INCOMPLETE: usize = 10_000;

/// RFC3339 with second precision.
pub fn rfc3339_seconds(unix_nano: u64, round_up: bool) -> String {
    let mut secs = (unix_nano / 1_000_000_000) as i64;
    if round_up && !unix_nano.is_multiple_of(1_000_000_000) {
        secs += 1;
    }
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl BlockMeta {
    /// Parses `meta.json`, refusing formats this build cannot read.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Version {
            format: String,
            #[serde(rename = "blockID", default)]
            block_id: String,
        }
        let v: Version =
            serde_json::from_slice(bytes).map_err(|e| EngineError::corrupt(path, e))?;
        if !READABLE_FORMATS.contains(&v.format.as_str()) {
            return Err(EngineError::UnsupportedFormat {
                block: v.block_id,
                found: v.format,
                supported: READABLE_FORMATS.join(", "),
            });
        }
        let meta: Self =
            serde_json::from_slice(bytes).map_err(|e| EngineError::corrupt(path, e))?;
        // Readers index row groups by the slices' lists: checked once, here.
        if let Some(g) = meta
            .slices
            .iter()
            .flatten()
            .flat_map(|s| &s.row_groups)
            .find(|&&g| u64::from(g) >= meta.row_groups)
        {
            return Err(EngineError::corrupt(
                path,
                format!(
                    "a slice lists row group {g}; the block has {}",
                    meta.row_groups
                ),
            ));
        }
        match checksums::check_seal(bytes) {
            Err(e) => Err(EngineError::corrupt(path, e)),
            Ok(false) if meta.checksums.is_some() => Err(EngineError::corrupt(
                path,
                "meta.json records checksums but is not sealed",
            )),
            Ok(_) => Ok(meta),
        }
    }

    /// `meta.json` as stored: pretty JSON, sealed by its own checksum.
    pub fn to_sealed_json(&self) -> Result<Vec<u8>> {
        let unsealed = Self {
            meta_crc32: Some(checksums::UNSEALED.to_string()),
            ..self.clone()
        };
        let json = serde_json::to_vec_pretty(&unsealed)
            .map_err(|e| EngineError::Internal(format!("meta.json: {e}")))?;
        Ok(checksums::seal(json))
    }

    /// Bytes the parsed metadata holds in memory, roughly (for cache weights): keys dominate.
    pub fn memory_size(&self) -> usize {
        let keys = |v: &[String]| v.iter().map(|k| k.len() + 24).sum::<usize>();
        let attrs = self.attribute_keys.as_ref().map_or(0, |k| {
            crate::hot::AttributeKeys::SCOPES
                .iter()
                .map(|s| keys(k.scope(s)))
                .sum()
        });
        let others = self
            .other_keys
            .as_ref()
            .map_or(0, |o| o.iter().map(|k| k.key.len() + 32).sum());
        let types = self
            .key_types
            .as_ref()
            .map_or(0, |t| t.iter().map(|k| k.key.len() + 64).sum());
        let hot: usize = self.hot_columns.iter().map(|h| h.key.len() + 64).sum();
        let incomplete = self.incomplete_traces.as_ref().map_or(0, |v| v.len() * 56);
        let sums = self.checksums.as_ref().map_or(0, |c| c.pages.0.len() * 4);
        512 + attrs + others + types + hot + incomplete + sums
    }

    /// Could the block hold spans of `id`?
    pub fn may_contain_id(&self, id: &TraceId) -> bool {
        let hex = id.to_hex();
        self.min_id.as_str() <= hex.as_str() && hex.as_str() <= self.max_id.as_str()
    }

    /// The row groups that can hold spans of a trace overlapping `[start, end]`: those of the
    /// slices overlapping it (a trace's spans all lie within its slice's bounds); `None` for a
    /// block of one run (every row group).
    pub fn row_groups_overlapping(&self, start: u64, end: u64) -> Option<Vec<usize>> {
        let slices = self.slices.as_ref()?;
        let mut groups: Vec<usize> = slices
            .iter()
            .filter(|s| s.overlaps(start, end))
            .flat_map(|s| s.row_groups.iter().map(|&g| g as usize))
            .collect();
        groups.sort_unstable();
        Some(groups)
    }

    /// Does the block overlap `[start, end]` (unix nanoseconds)?
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        overlap((self.start_unix_nano, self.end_unix_nano), (start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_formats_are_refused_with_a_clear_error() {
        let e = BlockMeta::parse("x/meta.json", br#"{"format":"allegro-99","blockID":"b1"}"#)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("allegro-99") && msg.contains("allegro-1") && msg.contains("b1"),
            "{msg}"
        );
        assert!(matches!(
            BlockMeta::parse("x", b"{"),
            Err(EngineError::Corrupt { .. })
        ));
    }

    #[test]
    fn times_are_rounded_outward_to_seconds() {
        assert_eq!(
            rfc3339_seconds(1_700_000_000_500_000_000, false),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339_seconds(1_700_000_000_500_000_000, true),
            "2023-11-14T22:13:21Z"
        );
    }
}
