//! Tempo's jsonpb: one encoder per response message, shared by the HTTP API and the CLI.
//! Zero values are left out, 64-bit integers are strings, field names are Tempo's JSON names
//! (Grafana's parser for search and instant answers rejects unknown fields).

pub mod metrics;
pub mod search;
pub mod tags;

use serde_json::{Map, Value as J, json};

/// A jsonpb object builder that leaves out zero values.
#[derive(Default)]
pub(crate) struct Obj(Map<String, J>);

impl Obj {
    pub(crate) fn str(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), J::String(v.into()));
        }
        self
    }
    pub(crate) fn u64s(mut self, k: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(k.into(), J::String(v.to_string()));
        }
        self
    }
    pub(crate) fn u32(mut self, k: &str, v: u32) -> Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    pub(crate) fn arr(mut self, k: &str, v: Vec<J>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), J::Array(v));
        }
        self
    }
    pub(crate) fn set(mut self, k: &str, v: J) -> Self {
        self.0.insert(k.into(), v);
        self
    }
    pub(crate) fn done(self) -> J {
        J::Object(self.0)
    }
}
