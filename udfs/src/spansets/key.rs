//! `by()` keys travel as text with a one-letter type tag, so values of different types never
//! group together (`"s:1"` and `"i:1"` differ, as Tempo's typed statics do).

/// The type tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `s:` string.
    Str,
    /// `i:` integer.
    Int,
    /// `f:` float.
    Float,
    /// `b:` boolean.
    Bool,
    /// `d:` duration in nanoseconds.
    Duration,
    /// `S:` span status (TraceQL name).
    Status,
    /// `K:` span kind (TraceQL name).
    Kind,
}

impl KeyType {
    /// Every type, in the order of their codes (`KeyType as u8`).
    pub const ALL: [KeyType; 7] = [
        KeyType::Str,
        KeyType::Int,
        KeyType::Float,
        KeyType::Bool,
        KeyType::Duration,
        KeyType::Status,
        KeyType::Kind,
    ];

    /// The type of code `c` (`KeyType as u8`).
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(c as usize).copied()
    }

    /// The tag written before the value.
    pub fn tag(self) -> &'static str {
        match self {
            KeyType::Str => "s:",
            KeyType::Int => "i:",
            KeyType::Float => "f:",
            KeyType::Bool => "b:",
            KeyType::Duration => "d:",
            KeyType::Status => "S:",
            KeyType::Kind => "K:",
        }
    }
}

/// The key of `value` typed `t`: its tag, then the value's text ([`decode`] splits it again).
pub fn encode(t: KeyType, value: impl std::fmt::Display) -> String {
    format!("{}{value}", t.tag())
}

/// Splits a key into its type and value text.
pub fn decode(key: &str) -> Option<(KeyType, &str)> {
    let (tag, value) = key.split_at_checked(2)?;
    let t = KeyType::ALL.into_iter().find(|t| t.tag() == tag)?;
    Some((t, value))
}
