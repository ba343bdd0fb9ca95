//! OTLP ⇄ Arrow conversion of the span table.

pub mod attrs;
pub mod flatten;
pub mod from_arrow;
pub mod normalize;
pub mod to_arrow;
