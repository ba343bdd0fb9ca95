//! Checksums of a block's objects, verified on every read.
//!
//! Parquet checks nothing a block needs: parquet-rs writes no page CRCs, and a flipped byte in
//! a delta-encoded page decodes into plausible values (16 bytes flipped inside a block moved
//! timestamps by about a minute and every answer was a 200). So a block carries its own:
//!
//! - `data.parquet`: a CRC-32 per 8 KiB stripe of the file, in `meta.json` (`checksums.data`,
//!   base64 of little-endian u32s: 0.05% of the file, 2.7 KB for a 35k-span block). Every read
//!   of the file (footer, page index, pages) is widened to whole stripes and each stripe
//!   checked before Parquet sees a byte. Stripes are small because reads are: a trace lookup
//!   fetches one page per column, and widening costs at most 16 KiB per range.
//! - `bloom`: one CRC-32, checked when the filter is loaded. A damaged filter is an index
//!   lost, not data: the block is read as if the filter said "maybe".
//! - `meta.json`: sealed by `metaCrc32`, its last field, a CRC-32 of the file with that
//!   field's value zeroed. A sealed meta is checked byte for byte, with no second
//!   serialisation to disagree with. A meta with `checksums` but no seal is damaged (the seal's
//!   name is what a flip hit).
//!
//! Blocks written before checksums (no `checksums` in `meta.json`) are read unverified, as
//! before. CRC-32 runs at several GB/s (`crc32fast`, SIMD), well above what a query decodes.

use std::ops::Range;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes per checksummed stripe of `data.parquet`.
pub const STRIPE_BYTES: u64 = 8192;

/// The checksums a block's `meta.json` records for its data and bloom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksums {
    /// Bytes per stripe of `data.parquet`.
    pub stripe_bytes: u64,
    /// CRC-32 of each stripe of `data.parquet`, in file order.
    pub data: Stripes,
    /// CRC-32 of the bloom filter object.
    pub bloom: u32,
}

/// Per-stripe CRC-32s, shared by every reader of the block.
#[derive(Debug, Clone, PartialEq)]
pub struct Stripes(pub Arc<[u32]>);

impl Serialize for Stripes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|c| c.to_le_bytes()).collect();
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Stripes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        if !bytes.len().is_multiple_of(4) {
            return Err(serde::de::Error::custom("stripe checksums not whole u32s"));
        }
        Ok(Stripes(
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    }
}

impl Checksums {
    /// The checksums of a block's `data` and `bloom` objects.
    pub fn of(data: &[u8], bloom: &[u8]) -> Self {
        Self {
            stripe_bytes: STRIPE_BYTES,
            data: Stripes(
                data.chunks(STRIPE_BYTES as usize)
                    .map(crc32fast::hash)
                    .collect(),
            ),
            bloom: crc32fast::hash(bloom),
        }
    }

    /// `range` of a file of `size` bytes widened to whole stripes.
    pub fn widen(&self, range: &Range<u64>, size: u64) -> Range<u64> {
        let s = self.stripe_bytes.max(1);
        let start = range.start / s * s;
        let end = range.end.div_ceil(s).saturating_mul(s).min(size);
        start..end.max(range.end.min(size))
    }

    /// Checks `bytes`, read at `at` (a stripe boundary), stripe by stripe; says which failed.
    pub fn verify(&self, at: u64, bytes: &[u8]) -> Result<(), String> {
        let s = self.stripe_bytes.max(1);
        for (i, chunk) in bytes.chunks(s as usize).enumerate() {
            let offset = at + i as u64 * s;
            let stripe = (offset / s) as usize;
            let Some(want) = self.data.0.get(stripe) else {
                return Err(format!(
                    "bytes at {offset} lie past the {} checksummed stripes",
                    self.data.0.len()
                ));
            };
            let got = crc32fast::hash(chunk);
            if got != *want {
                return Err(format!(
                    "checksum mismatch in bytes {offset}..{} (stripe {stripe}: crc32 {got:08x}, \
                     recorded {want:08x})",
                    offset + chunk.len() as u64
                ));
            }
        }
        Ok(())
    }

    /// Checks the bloom filter's bytes.
    pub fn verify_bloom(&self, bytes: &[u8]) -> Result<(), String> {
        let got = crc32fast::hash(bytes);
        if got == self.bloom {
            return Ok(());
        }
        Err(format!(
            "checksum mismatch (crc32 {got:08x}, recorded {:08x})",
            self.bloom
        ))
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
    use super::*;

    #[test]
    fn a_flipped_byte_is_found_in_its_stripe() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sums = Checksums::of(&data, b"bloom");
        assert_eq!(sums.data.0.len(), 7, "50,000 bytes in 8 KiB stripes");
        let r = sums.widen(&(9_000..9_100), data.len() as u64);
        assert_eq!(r, 8192..16384);
        assert_eq!(
            sums.verify(r.start, &data[r.start as usize..r.end as usize]),
            Ok(())
        );
        // The last stripe is short, and widening stops at the end of the file.
        let r = sums.widen(&(49_990..50_000), data.len() as u64);
        assert_eq!(r, 49_152..50_000);
        assert_eq!(sums.verify(r.start, &data[r.start as usize..]), Ok(()));
        let mut bad = data.clone();
        bad[12_345] ^= 0x10;
        let e = sums.verify(8192, &bad[8192..16384]).unwrap_err();
        assert!(e.contains("8192..16384") && e.contains("stripe 1"), "{e}");
        assert!(sums.verify_bloom(b"bloom").is_ok());
        assert!(sums.verify_bloom(b"bloon").is_err());
    }

    #[test]
    fn stripes_round_trip_through_json() {
        let sums = Checksums::of(&[1u8; 20_000], &[]);
        let json = serde_json::to_string(&sums).unwrap();
        let back: Checksums = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sums);
        assert!(
            serde_json::from_str::<Checksums>(&json.replace("\"data\":\"", "\"data\":\"AA"))
                .is_err()
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
