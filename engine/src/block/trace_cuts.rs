//! Where each row group's rows cross trace-ID boundaries, kept in the Parquet footer.
//!
//! Rows of a row group are sorted by trace ID, so "the traces whose ID sorts below a bound" is
//! a leading row range of every row group. Knowing that range from the footer lets a sampled
//! scan select it directly: no trace-ID column to decode, no per-row predicate, and pages past
//! the range are never fetched. The ID space is cut into [`BUCKETS`] equal parts by its top
//! bits; sampling rates are multiples of one part.

use base64::Engine as _;
use parquet::file::metadata::ParquetMetaData;

/// Footer key-value entry holding the cuts.
pub const KEY: &str = "allegro.trace_id_cuts";

/// Parts of the trace-ID space (its top 10 bits).
pub const BUCKETS: usize = 1024;

/// Encoding version, the value's first field.
const VERSION: &str = "1";

/// The bucket of a trace ID: its top 10 bits.
pub fn bucket(id: &[u8]) -> u16 {
    match id {
        [a, b, ..] => (u16::from_be_bytes([*a, *b])) >> 6,
        _ => 0,
    }
}

/// Per row group, the rows whose trace ID falls below each bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceCuts {
    /// `below[rg][j]`: rows of row group `rg` in buckets `< j`; `BUCKETS + 1` entries.
    below: Vec<Vec<u32>>,
}

impl TraceCuts {
    /// The cuts of row groups of `rows` rows each, from the bucket of every row in file order;
    /// `None` when a row group is not in trace-ID order (its sample would not be a prefix).
    pub fn from_buckets(rows: &[usize], buckets: &[u16]) -> Option<Self> {
        if rows.iter().sum::<usize>() != buckets.len() {
            return None;
        }
        let mut below = Vec::with_capacity(rows.len());
        let mut at = 0;
        for &n in rows {
            let rg = &buckets[at..at + n];
            at += n;
            if rg.windows(2).any(|w| w[0] > w[1]) {
                return None;
            }
            let mut counts = vec![0u32; BUCKETS + 1];
            for &b in rg {
                counts[usize::from(b).min(BUCKETS - 1) + 1] += 1;
            }
            for j in 1..counts.len() {
                counts[j] += counts[j - 1];
            }
            below.push(counts);
        }
        Some(Self { below })
    }

    /// Rows of row group `rg` whose trace ID is in a bucket below `bucket`.
    pub fn rows_below(&self, rg: usize, bucket: usize) -> Option<u32> {
        self.below.get(rg)?.get(bucket.min(BUCKETS)).copied()
    }

    /// Approximate heap bytes.
    pub fn memory_size(&self) -> usize {
        self.below.len() * (BUCKETS + 1) * 4
    }

    /// The footer value: version, then per row group the count of every bucket as LEB128
    /// varints, base64 (about 1.4 KB per row group).
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(self.below.len() * BUCKETS * 2);
        for rg in &self.below {
            for w in rg.windows(2) {
                let mut v = w[1] - w[0];
                loop {
                    let low = (v & 0x7f) as u8;
                    v >>= 7;
                    if v == 0 {
                        bytes.push(low);
                        break;
                    }
                    bytes.push(low | 0x80);
                }
            }
        }
        format!(
            "{VERSION}:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// The cuts a Parquet footer records, checked against its row groups; `None` when it has
    /// none or they do not add up.
    pub fn from_footer(md: &ParquetMetaData) -> Option<Self> {
        let rows: Vec<i64> = md.row_groups().iter().map(|rg| rg.num_rows()).collect();
        md.file_metadata()
            .key_value_metadata()?
            .iter()
            .find(|e| e.key == KEY)?
            .value
            .as_deref()
            .and_then(|v| Self::decode(v, &rows))
    }

    /// Reads a footer value against the file's row-group row counts; `None` for anything that
    /// does not add up (the sampled scan then reads the file in full).
    pub fn decode(value: &str, rows: &[i64]) -> Option<Self> {
        let body = value.strip_prefix(VERSION)?.strip_prefix(':')?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?;
        let mut it = bytes.iter();
        let mut below = Vec::with_capacity(rows.len());
        for &n in rows {
            let mut counts = Vec::with_capacity(BUCKETS + 1);
            counts.push(0u32);
            for _ in 0..BUCKETS {
                let mut v = 0u32;
                let mut shift = 0;
                loop {
                    let byte = *it.next()?;
                    v |= u32::from(byte & 0x7f).checked_shl(shift)?;
                    if byte & 0x80 == 0 {
                        break;
                    }
                    shift += 7;
                    if shift > 28 {
                        return None;
                    }
                }
                counts.push(counts.last()?.checked_add(v)?);
            }
            if i64::from(*counts.last()?) != n {
                return None;
            }
            below.push(counts);
        }
        it.next().is_none().then_some(Self { below })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_top_ten_bits() {
        assert_eq!(bucket(&[0x00, 0x3f, 0xff]), 0);
        assert_eq!(bucket(&[0x00, 0x40]), 1);
        assert_eq!(bucket(&[0x80, 0x00]), 512);
        assert_eq!(bucket(&[0xff, 0xff]), 1023);
    }

    #[test]
    fn cuts_count_rows_below_each_bucket_and_survive_encoding() {
        // Two row groups: [0, 0, 5, 1023] and [3, 3, 3].
        let cuts = TraceCuts::from_buckets(&[4, 3], &[0, 0, 5, 1023, 3, 3, 3]).unwrap();
        let want = [
            (0, 0, 0),
            (0, 1, 2),
            (0, 5, 2),
            (0, 6, 3),
            (0, 1023, 3),
            (0, 1024, 4),
        ];
        for (rg, b, n) in want {
            assert_eq!(cuts.rows_below(rg, b), Some(n), "rg {rg} bucket {b}");
        }
        assert_eq!(cuts.rows_below(1, 3), Some(0));
        assert_eq!(cuts.rows_below(1, 4), Some(3));
        assert_eq!(cuts.rows_below(2, 4), None);
        let text = cuts.encode();
        assert_eq!(TraceCuts::decode(&text, &[4, 3]), Some(cuts.clone()));
        // Row counts that disagree with the footer's, or a truncated value, are refused.
        assert_eq!(TraceCuts::decode(&text, &[4, 4]), None);
        assert_eq!(TraceCuts::decode(&text, &[4]), None);
        assert_eq!(TraceCuts::decode(&text[..text.len() - 4], &[4, 3]), None);
        assert_eq!(TraceCuts::decode("2:AAAA", &[0]), None);
    }

    #[test]
    fn large_counts_take_several_varint_bytes() {
        let mut buckets = vec![7u16; 70_000];
        buckets.push(900);
        let cuts = TraceCuts::from_buckets(&[70_001], &buckets).unwrap();
        let back = TraceCuts::decode(&cuts.encode(), &[70_001]).unwrap();
        assert_eq!(back.rows_below(0, 8), Some(70_000));
        assert_eq!(back.rows_below(0, 901), Some(70_001));
    }

    #[test]
    fn unsorted_row_groups_have_no_cuts() {
        assert_eq!(TraceCuts::from_buckets(&[3], &[1, 0, 2]), None);
        assert_eq!(TraceCuts::from_buckets(&[3], &[1, 2]), None);
    }
}
