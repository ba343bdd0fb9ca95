//! Checksums of a block's objects, verified on every read.
//!
//! Parquet checks nothing a block needs: parquet-rs writes no page CRCs, and a flipped byte in
//! a delta-encoded page decodes into plausible values (16 bytes flipped inside a block moved
//! timestamps by about a minute and every answer was a 200). So a block carries its own, in
//! `meta.json` (`checksums`):
//!
//! - a CRC-32 per **page** of `data.parquet` (dictionary and data pages, and Parquet bloom
//!   filters, column by column, row group by row group; the page locations come from the
//!   footer's offset index), of the **page index** region and of the **footer**. Parquet
//!   readers fetch exactly these units (a page, the page index, the footer), so each fetched
//!   range is checked against the units it holds whole, with no extra byte read. Checksums per
//!   fixed 8 KiB stripe were tried first: a trace lookup fetches one small page from each of
//!   ~180 columns, and widening every range to whole stripes read 22 times the bytes.
//!   The CRCs take 4 bytes a page (about 8 KB for a 35k-span block, in base64).
//! - one CRC-32 of the whole file, for `allegro blocks --check`, which reads it all;
//! - one CRC-32 of `bloom`, checked when the filter is loaded. A damaged filter is an index
//!   lost, not data: the block is read as if the filter said "maybe".
//! - `meta.json` is sealed by `metaCrc32`, its last field, a CRC-32 of the file with that
//!   field's value zeroed. A sealed meta is checked byte for byte, with no second
//!   serialisation to disagree with. A meta with `checksums` but no seal is damaged (the seal's
//!   name is what a flip hit).
//!
//! Blocks written before checksums (no `checksums` in `meta.json`) are read unverified, as
//! before. CRC-32 runs at several GB/s (`crc32fast`, SIMD), well above what a query decodes.

use std::ops::Range;
use std::sync::Arc;

use base64::Engine as _;
use parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The checksums a block's `meta.json` records for its data and bloom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksums {
    /// CRC-32 of each unit of `data.parquet` in [`units`] order.
    pub pages: Crcs,
    /// The page index region of `data.parquet` (`None`: the file has no page index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_index: Option<Extent>,
    /// CRC-32 of the footer (the file's last `footerSize` bytes).
    pub footer: u32,
    /// CRC-32 of the whole of `data.parquet`.
    pub file: u32,
    /// CRC-32 of the bloom filter object.
    pub bloom: u32,
}

/// A checksummed byte range of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
    /// CRC-32 of them.
    pub crc: u32,
}

impl Extent {
    fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.len
    }
}

/// CRC-32s, shared by every reader of the block.
#[derive(Debug, Clone, PartialEq)]
pub struct Crcs(pub Arc<[u32]>);

impl Serialize for Crcs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|c| c.to_le_bytes()).collect();
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Crcs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(serde::de::Error::custom("checksums not whole u32s"));
        }
        Ok(Crcs(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

/// The checksummed units of a Parquet file, in order: per row group, per column, its
/// dictionary page, its data pages and its bloom filter. `Err` when the footer's page
/// locations do not fit the file.
pub fn units(md: &ParquetMetaData) -> Result<Vec<Range<u64>>, String> {
    let offsets = md
        .offset_index()
        .ok_or("no offset index: the page locations are unknown")?;
    let mut out = Vec::new();
    for (rg, row_group) in md.row_groups().iter().enumerate() {
        for (c, col) in row_group.columns().iter().enumerate() {
            let pages = offsets
                .get(rg)
                .and_then(|r| r.get(c))
                .map(|o| o.page_locations())
                .ok_or_else(|| format!("no page locations for row group {rg} column {c}"))?;
            let first = pages.first().map_or(col.data_page_offset(), |p| p.offset);
            if let Some(dict) = col.dictionary_page_offset()
                && dict < first
            {
                out.push(to_u64(dict)?..to_u64(first)?);
            }
            for p in pages {
                let start = to_u64(p.offset)?;
                out.push(start..start + to_u64(i64::from(p.compressed_page_size))?);
            }
            if let (Some(o), Some(l)) = (col.bloom_filter_offset(), col.bloom_filter_length()) {
                let start = to_u64(o)?;
                out.push(start..start + to_u64(i64::from(l))?);
            }
        }
    }
    Ok(out)
}

fn to_u64(v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("negative offset {v} in the footer"))
}

/// The page index region: every column and offset index, as Parquet readers fetch it.
fn page_index_region(md: &ParquetMetaData) -> Option<Range<u64>> {
    let mut out: Option<Range<u64>> = None;
    for col in md.row_groups().iter().flat_map(|r| r.columns()) {
        let pairs = [
            (col.column_index_offset(), col.column_index_length()),
            (col.offset_index_offset(), col.offset_index_length()),
        ];
        for (o, l) in pairs {
            let (Some(o), Some(l)) = (o, l) else { continue };
            let (Ok(o), Ok(l)) = (u64::try_from(o), u64::try_from(l)) else {
                continue;
            };
            out = Some(match out {
                None => o..o + l,
                Some(r) => r.start.min(o)..r.end.max(o + l),
            });
        }
    }
    out
}

/// The checksums of a file fed front to back a chunk at a time, so that a block written to
/// disk (a merge's output) is checked without being held whole.
pub struct Sweep {
    size: u64,
    /// The pages ([`units`]), then the page index region when the file has one, then the
    /// footer.
    ranges: Vec<Range<u64>>,
    hashers: Vec<crc32fast::Hasher>,
    /// `ranges` by start.
    order: Vec<usize>,
    /// The first of `order` not yet wholly fed.
    lo: usize,
    /// How many of `ranges` are pages.
    pages: usize,
    file: crc32fast::Hasher,
    fed: u64,
}

impl Sweep {
    /// A sweep over a file of `size` bytes whose footer (`footer_len` bytes) is `md`.
    pub fn new(size: u64, md: &ParquetMetaData, footer_len: u64) -> Result<Self, String> {
        let mut ranges = units(md)?;
        if ranges.iter().any(|r| r.end > size) {
            return Err("a page lies past the end of the file".into());
        }
        let pages = ranges.len();
        ranges.extend(page_index_region(md).filter(|r| r.end <= size));
        ranges.push(size.saturating_sub(footer_len)..size);
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_by_key(|&i| ranges[i].start);
        Ok(Self {
            size,
            hashers: vec![crc32fast::Hasher::new(); ranges.len()],
            ranges,
            order,
            lo: 0,
            pages,
            file: crc32fast::Hasher::new(),
            fed: 0,
        })
    }

    /// Feeds the file's next bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        let (at, end) = (self.fed, self.fed + bytes.len() as u64);
        self.file.update(bytes);
        for &u in &self.order[self.lo..] {
            let r = &self.ranges[u];
            if r.start >= end {
                break;
            }
            let (s, e) = (r.start.max(at), r.end.min(end));
            if s < e {
                self.hashers[u].update(&bytes[(s - at) as usize..(e - at) as usize]);
            }
        }
        while let Some(&u) = self.order.get(self.lo) {
            if self.ranges[u].end > end {
                break;
            }
            self.lo += 1;
        }
        self.fed = end;
    }

    /// The checksums, once the whole file was fed, with those of `bloom`.
    pub fn finish(self, bloom: &[u8]) -> Result<Checksums, String> {
        if self.fed != self.size {
            return Err(format!(
                "{} of the file's {} bytes were checksummed",
                self.fed, self.size
            ));
        }
        let crcs: Vec<u32> = self.hashers.into_iter().map(|h| h.finalize()).collect();
        // Between the pages and the footer.
        let page_index = (crcs.len() == self.pages + 2).then(|| {
            let r = &self.ranges[self.pages];
            Extent {
                offset: r.start,
                len: r.end - r.start,
                crc: crcs[self.pages],
            }
        });
        Ok(Checksums {
            pages: Crcs(crcs[..self.pages].into()),
            page_index,
            footer: crcs.last().copied().unwrap_or(0),
            file: self.file.finalize(),
            bloom: crc32fast::hash(bloom),
        })
    }
}

impl Checksums {
    /// The checksums of a block's `data` (whose footer, page index included, is `md`, and
    /// whose footer is its last `footer_len` bytes) and `bloom`.
    pub fn of(
        data: &[u8],
        md: &ParquetMetaData,
        footer_len: u64,
        bloom: &[u8],
    ) -> Result<Self, String> {
        let mut sweep = Sweep::new(data.len() as u64, md, footer_len)?;
        sweep.feed(data);
        sweep.finish(bloom)
    }

    /// Checks the footer or the page index when `bytes`, read at `at` from a file of `size`
    /// bytes whose footer is `footer_len` long, holds either whole.
    pub fn verify_metadata(
        &self,
        at: u64,
        bytes: &[u8],
        size: u64,
        footer_len: u64,
    ) -> Result<(), String> {
        let footer = Extent {
            offset: size.saturating_sub(footer_len),
            len: footer_len.min(size),
            crc: self.footer,
        };
        for (what, e) in [("footer", Some(footer)), ("page index", self.page_index)] {
            if let Some(e) = e {
                check(what, &e, at, bytes)?;
            }
        }
        Ok(())
    }

    /// Checks the bloom filter's bytes.
    pub fn verify_bloom(&self, bytes: &[u8]) -> Result<(), String> {
        whole("bloom filter", bytes, self.bloom)
    }

    /// Checks the whole of `data.parquet`.
    pub fn verify_file(&self, bytes: &[u8]) -> Result<(), String> {
        whole("whole file", bytes, self.file)
    }
}

/// Checks all of `bytes` (named `what`) against `crc`.
fn whole(what: &str, bytes: &[u8], crc: u32) -> Result<(), String> {
    let got = crc32fast::hash(bytes);
    if got == crc {
        return Ok(());
    }
    Err(format!(
        "checksum mismatch over the {what} (crc32 {got:08x}, recorded {crc:08x})"
    ))
}

/// Checks extent `e` (named `what`) against `bytes` read at `at`, when they hold it whole.
fn check(what: &str, e: &Extent, at: u64, bytes: &[u8]) -> Result<(), String> {
    let r = e.range();
    let end = at + bytes.len() as u64;
    if r.start < at || r.end > end {
        return Ok(());
    }
    let got = crc32fast::hash(&bytes[(r.start - at) as usize..(r.end - at) as usize]);
    if got == e.crc {
        return Ok(());
    }
    Err(format!(
        "checksum mismatch in the {what} at bytes {}..{} (crc32 {got:08x}, recorded {:08x})",
        r.start, r.end, e.crc
    ))
}

/// A block's page checksums placed at their pages, for checking reads of data pages.
#[derive(Debug)]
pub struct PageSums {
    /// Units sorted by offset, each with its CRC.
    extents: Vec<Extent>,
}

impl PageSums {
    /// The page checksums of a block whose footer is `md`. `Err` when they do not match the
    /// footer's pages one for one (the footer or `meta.json` is damaged).
    pub fn new(md: &ParquetMetaData, sums: &Checksums) -> Result<Self, String> {
        let units = units(md)?;
        if units.len() != sums.pages.0.len() {
            return Err(format!(
                "meta.json records {} page checksums, the footer has {} pages",
                sums.pages.0.len(),
                units.len()
            ));
        }
        let mut extents: Vec<Extent> = units
            .into_iter()
            .zip(sums.pages.0.iter())
            .map(|(r, crc)| Extent {
                offset: r.start,
                len: r.end - r.start,
                crc: *crc,
            })
            .collect();
        extents.sort_by_key(|e| e.offset);
        Ok(Self { extents })
    }

    /// Checks every page that `bytes`, read at `at`, holds whole.
    pub fn verify(&self, at: u64, bytes: &[u8]) -> Result<(), String> {
        let end = at + bytes.len() as u64;
        let first = self.extents.partition_point(|e| e.offset < at);
        for e in self.extents[first..].iter().take_while(|e| e.offset < end) {
            check("page", e, at, bytes)?;
        }
        Ok(())
    }

    /// Bytes held in memory, roughly.
    pub fn memory_size(&self) -> usize {
        64 + self.extents.len() * std::mem::size_of::<Extent>()
    }
}

/// The seal's field, last in `meta.json`.
const SEAL_KEY: &[u8] = b"\"metaCrc32\": \"";
/// The seal's value while its checksum is computed.
pub const UNSEALED: &str = "00000000";

/// Seals serialised `meta.json` bytes ending in the seal field with [`UNSEALED`] as its value.
pub fn seal(mut json: Vec<u8>) -> Vec<u8> {
    if let Some(at) = seal_at(&json) {
        let crc = format!("{:08x}", crc32fast::hash(&json));
        json[at..at + UNSEALED.len()].copy_from_slice(crc.as_bytes());
    }
    json
}

/// Is `json` (a `meta.json`) intact? `Ok(false)`: it has no seal.
pub fn check_seal(json: &[u8]) -> Result<bool, String> {
    let Some(at) = seal_at(json) else {
        return Ok(false);
    };
    let recorded = &json[at..at + UNSEALED.len()];
    let mut zeroed = json.to_vec();
    zeroed[at..at + UNSEALED.len()].copy_from_slice(UNSEALED.as_bytes());
    let got = format!("{:08x}", crc32fast::hash(&zeroed));
    if got.as_bytes() == recorded {
        return Ok(true);
    }
    Err(format!(
        "meta.json checksum mismatch (crc32 {got}, recorded {})",
        String::from_utf8_lossy(recorded)
    ))
}

/// Where the seal's 8 hex digits start: after the last occurrence of its key.
fn seal_at(json: &[u8]) -> Option<usize> {
    let key = json.windows(SEAL_KEY.len()).rposition(|w| w == SEAL_KEY)?;
    let at = key + SEAL_KEY.len();
    (json.len() >= at + UNSEALED.len()).then_some(at)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    use super::*;

    /// A small Parquet file with a page index, several pages and a dictionary.
    fn file() -> (Bytes, ParquetMetaData) {
        let schema = StdArc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let n: Vec<i64> = (0..10_000).collect();
        let s: Vec<String> = (0..10_000).map(|i| format!("v{}", i % 7)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                StdArc::new(Int64Array::from(n)),
                StdArc::new(StringArray::from(s)),
            ],
        )
        .unwrap();
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(1000)
            .build();
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let bytes = Bytes::from(out);
        let md = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();
        (bytes, md)
    }

    fn footer_len(b: &[u8]) -> u64 {
        let at = b.len() - 8;
        u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])) + 8
    }

    #[test]
    fn every_page_read_whole_is_checked_and_a_flip_is_found() {
        let (data, md) = file();
        let flen = footer_len(&data);
        let sums = Checksums::of(&data, &md, flen, b"bloom").unwrap();
        let units = units(&md).unwrap();
        assert!(units.len() > 10, "{} units", units.len());
        let pages = PageSums::new(&md, &sums).unwrap();
        for r in &units {
            let b = &data[r.start as usize..r.end as usize];
            assert_eq!(pages.verify(r.start, b), Ok(()));
        }
        let size = data.len() as u64;
        let footer = &data[(size - flen) as usize..];
        assert_eq!(
            sums.verify_metadata(size - flen, footer, size, flen),
            Ok(())
        );
        assert_eq!(sums.verify_file(&data), Ok(()));

        let victim = units[units.len() / 2].clone();
        let mut bad = data.to_vec();
        bad[(victim.start + (victim.end - victim.start) / 2) as usize] ^= 0x10;
        let e = pages
            .verify(
                victim.start,
                &bad[victim.start as usize..victim.end as usize],
            )
            .unwrap_err();
        assert!(e.contains("checksum mismatch in the page"), "{e}");
        // A read of several pages at once checks each.
        let all = units[0].start..units[units.len() - 1].end;
        assert!(
            pages
                .verify(all.start, &bad[all.start as usize..all.end as usize])
                .is_err()
        );
        assert!(sums.verify_file(&bad).is_err());
        let mut bad_footer = footer.to_vec();
        bad_footer[3] ^= 1;
        assert!(
            sums.verify_metadata(size - flen, &bad_footer, size, flen)
                .is_err()
        );
        assert!(sums.verify_bloom(b"bloom").is_ok());
        assert!(sums.verify_bloom(b"bloon").is_err());
    }

    #[test]
    fn a_file_fed_in_chunks_gets_the_checksums_of_each_unit_hashed_alone() {
        let (data, md) = file();
        let flen = footer_len(&data);
        let size = data.len() as u64;
        // Each unit hashed alone, independently of the sweep.
        let expected: Vec<u32> = units(&md)
            .unwrap()
            .iter()
            .map(|r| crc32fast::hash(&data[r.start as usize..r.end as usize]))
            .collect();
        for chunk in [1, 7, 4096, 100_003, data.len()] {
            let mut sweep = Sweep::new(size, &md, flen).unwrap();
            for c in data.chunks(chunk) {
                sweep.feed(c);
            }
            let sums = sweep.finish(b"bloom").unwrap();
            assert_eq!(&*sums.pages.0, &expected[..], "chunks of {chunk}");
            assert_eq!(
                sums.footer,
                crc32fast::hash(&data[(size - flen) as usize..])
            );
            assert_eq!(sums.file, crc32fast::hash(&data));
            let pi = sums.page_index.expect("the file has a page index");
            let region = &data[pi.offset as usize..(pi.offset + pi.len) as usize];
            assert_eq!(pi.crc, crc32fast::hash(region));
            assert_eq!(sums, Checksums::of(&data, &md, flen, b"bloom").unwrap());
        }
        // A file fed short is refused, not checksummed in part.
        let mut sweep = Sweep::new(size, &md, flen).unwrap();
        sweep.feed(&data[..data.len() - 1]);
        assert!(sweep.finish(b"bloom").is_err());
    }

    #[test]
    fn checksums_round_trip_through_json_and_must_match_the_footer() {
        let (data, md) = file();
        let sums = Checksums::of(&data, &md, footer_len(&data), &[]).unwrap();
        let json = serde_json::to_string(&sums).unwrap();
        let back: Checksums = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sums);
        assert!(
            serde_json::from_str::<Checksums>(&json.replace("\"pages\":\"", "\"pages\":\"AA"))
                .is_err()
        );
        let fewer = Checksums {
            pages: Crcs(sums.pages.0[1..].into()),
            ..sums
        };
        assert!(
            PageSums::new(&md, &fewer)
                .unwrap_err()
                .contains("page checksums")
        );
    }

    #[test]
    fn a_sealed_meta_detects_any_changed_byte() {
        let json = b"{\n  \"size\": 123,\n  \"metaCrc32\": \"00000000\"\n}".to_vec();
        let sealed = seal(json);
        assert_eq!(check_seal(&sealed), Ok(true));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_ne!(check_seal(&bad), Ok(true), "a flip at byte {i} went unseen");
        }
        assert_eq!(check_seal(b"{\"size\": 1}"), Ok(false));
    }
}
