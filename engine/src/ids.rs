//! Trace and span IDs: binary inside, hex only at the API edge.

use crate::error::{EngineError, Result};

/// A 128-bit trace ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// Parses a hex trace ID of 1 to 32 digits, left-padding with zeros as Tempo does
    /// (search results drop leading zeros, so clients send short IDs).
    pub fn parse_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EngineError::InvalidInput("trace ID is empty".into()));
        }
        if s.len() > 32 {
            return Err(EngineError::InvalidInput(format!(
                "trace ID {s:?} is {} hex digits long; at most 32 are allowed",
                s.len()
            )));
        }
        if let Some((pos, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(EngineError::InvalidInput(format!(
                "trace ID {s:?} has a non-hex character {c:?} at position {}",
                pos + 1
            )));
        }
        let padded = format!("{s:0>32}");
        let mut out = [0u8; 16];
        hex::decode_to_slice(&padded, &mut out)
            .map_err(|e| EngineError::InvalidInput(format!("trace ID {s:?}: {e}")))?;
        Ok(Self(out))
    }

    /// Takes a trace ID from OTLP bytes, which must be exactly 16 bytes and not all zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let arr: [u8; 16] = b.try_into().map_err(|_| {
            EngineError::InvalidInput(format!("trace ID must be 16 bytes, got {}", b.len()))
        })?;
        if arr == [0; 16] {
            return Err(EngineError::InvalidInput("trace ID is all zeros".into()));
        }
        Ok(Self(arr))
    }

    /// Lower-case 32-digit hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TraceId({})", self.to_hex())
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Checks an OTLP span ID: exactly 8 bytes.
pub fn span_id_from_bytes(b: &[u8]) -> Result<[u8; 8]> {
    b.try_into()
        .map_err(|_| EngineError::InvalidInput(format!("span ID must be 8 bytes, got {}", b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_left_padded() {
        let id = TraceId::parse_hex("2a6bee861db8a7dff9561ae4344c226").unwrap();
        assert_eq!(id.to_hex(), "02a6bee861db8a7dff9561ae4344c226");
        assert_eq!(TraceId::parse_hex("1").unwrap().0[15], 1);
        assert_eq!(
            TraceId::parse_hex("ABCDEF").unwrap().to_hex(),
            format!("{:0>32}", "abcdef")
        );
    }

    #[test]
    fn malformed_ids_say_what_is_wrong() {
        let e = TraceId::parse_hex("12xz").unwrap_err().to_string();
        assert!(e.contains("non-hex character 'x' at position 3"), "{e}");
        let e = TraceId::parse_hex(&"a".repeat(33)).unwrap_err().to_string();
        assert!(e.contains("33 hex digits"), "{e}");
        assert!(TraceId::parse_hex("").is_err());
        assert!(TraceId::from_bytes(&[1; 8]).is_err());
        assert!(TraceId::from_bytes(&[0; 16]).is_err());
    }
}
