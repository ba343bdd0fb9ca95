//! Tag requests as every door sends them (HTTP v1/v2, gRPC `SearchTags*`), over one or more
//! tenants, answered as Tempo's messages: the doors only parse parameters and encode.

use std::collections::{BTreeMap, BTreeSet};

use super::QueryEngine;
use super::plan::Range;
use super::tags::{TagMetrics, TagValue, intrinsic_tags, parse_tag};
use crate::error::{EngineError, Result};
use crate::tempopb::{
    MetadataMetrics, SearchTagValuesResponse, SearchTagValuesV2Response, SearchTagsResponse,
    SearchTagsV2Response, SearchTagsV2Scope, TagValue as ProtoTagValue,
};

/// Scopes in the order v2 tag names list them.
pub const SCOPES: [&str; 6] = [
    "resource",
    "span",
    "event",
    "link",
    "instrumentation",
    "intrinsic",
];
/// Values returned when a request sets no limit.
pub const DEFAULT_VALUES: usize = 1000;

/// A tag-names request.
#[derive(Debug, Clone, Default)]
pub struct TagsRequest {
    /// One scope (see [`SCOPES`]), or all.
    pub scope: Option<&'static str>,
    /// Unix nanoseconds, inclusive.
    pub range: Range,
}

impl TagsRequest {
    /// A request for `scope` (empty or `all`: every scope).
    pub fn new(scope: &str, range: Range) -> Result<Self> {
        let s = scope.trim();
        let scope = if s.is_empty() || s == "all" {
            None
        } else {
            Some(*SCOPES.iter().find(|x| **x == s).ok_or_else(|| {
                EngineError::InvalidInput(format!(
                    "invalid scope {s:?}: expected one of {}",
                    SCOPES.join(", ")
                ))
            })?)
        };
        Ok(Self { scope, range })
    }
}

/// A tag-values request.
#[derive(Debug, Clone)]
pub struct TagValuesRequest {
    /// The attribute or intrinsic, as the request names it.
    pub tag: String,
    /// A TraceQL filter the values must occur under.
    pub query: Option<String>,
    /// Unix nanoseconds, inclusive.
    pub range: Range,
    /// Most values (`None`: [`DEFAULT_VALUES`]).
    pub limit: Option<usize>,
}

fn metadata(m: TagMetrics, jobs: u32) -> MetadataMetrics {
    MetadataMetrics {
        inspected_bytes: m.inspected_bytes,
        total_jobs: jobs,
        completed_jobs: jobs,
        total_blocks: m.total_blocks,
        total_block_bytes: 0,
    }
}

impl QueryEngine {
    async fn names_of(
        &self,
        tenants: &[String],
        range: Range,
    ) -> Result<(BTreeMap<&'static str, BTreeSet<String>>, MetadataMetrics)> {
        let mut all: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        let mut metrics = TagMetrics::default();
        for t in tenants {
            let (n, m) = self.tag_names(t, range).await?;
            for (scope, keys) in n {
                all.entry(scope).or_default().extend(keys);
            }
            metrics.inspected_bytes += m.inspected_bytes;
            metrics.total_blocks += m.total_blocks;
        }
        Ok((all, metadata(metrics, tenants.len() as u32)))
    }

    /// Attribute names without their scope (v1), or the intrinsics for scope `intrinsic`.
    pub async fn search_tags(
        &self,
        tenants: &[String],
        req: &TagsRequest,
    ) -> Result<SearchTagsResponse> {
        let (all, metrics) = self.names_of(tenants, req.range).await?;
        let mut out: BTreeSet<String> = BTreeSet::new();
        match req.scope {
            Some("intrinsic") => out.extend(intrinsic_tags().into_iter().map(String::from)),
            Some(s) => out.extend(all.get(s).cloned().unwrap_or_default()),
            None => out.extend(all.into_values().flatten()),
        }
        Ok(SearchTagsResponse {
            tag_names: out.into_iter().collect(),
            metrics: Some(metrics),
        })
    }

    /// Attribute names grouped by scope, intrinsics included (v2).
    pub async fn search_tags_v2(
        &self,
        tenants: &[String],
        req: &TagsRequest,
    ) -> Result<SearchTagsV2Response> {
        let (mut all, metrics) = self.names_of(tenants, req.range).await?;
        let mut scopes = Vec::new();
        for s in SCOPES {
            if req.scope.is_some_and(|x| x != s) {
                continue;
            }
            let tags: Vec<String> = if s == "intrinsic" {
                intrinsic_tags().into_iter().map(String::from).collect()
            } else {
                all.remove(s).unwrap_or_default().into_iter().collect()
            };
            if !tags.is_empty() {
                scopes.push(SearchTagsV2Scope {
                    name: s.to_string(),
                    tags,
                });
            }
        }
        Ok(SearchTagsV2Response {
            scopes,
            metrics: Some(metrics),
        })
    }

    /// The values of `req.tag`, typed, sorted, at most the limit; `bare` names without a
    /// scope are attributes (v1's `service.name`), as Tempo reads them.
    async fn values_of(
        &self,
        tenants: &[String],
        req: &TagValuesRequest,
        bare: bool,
    ) -> Result<(Vec<TagValue>, MetadataMetrics)> {
        let field = parse_tag(&req.tag, bare)?;
        let limit = req.limit.unwrap_or(DEFAULT_VALUES);
        let filter = req.query.as_deref().filter(|s| !s.trim().is_empty());
        let mut all: BTreeSet<TagValue> = BTreeSet::new();
        let mut metrics = TagMetrics::default();
        for t in tenants {
            let (v, m) = self.tag_values(t, &field, filter, req.range, limit).await?;
            all.extend(v);
            metrics.inspected_bytes += m.inspected_bytes;
            metrics.total_blocks += m.total_blocks;
        }
        let mut v: Vec<TagValue> = all.into_iter().collect();
        v.truncate(limit);
        Ok((v, metadata(metrics, tenants.len() as u32)))
    }

    /// Values as text (v1).
    pub async fn search_tag_values(
        &self,
        tenants: &[String],
        req: &TagValuesRequest,
    ) -> Result<SearchTagValuesResponse> {
        let (v, metrics) = self.values_of(tenants, req, true).await?;
        let mut tag_values: Vec<String> = v.into_iter().map(|t| t.value).collect();
        tag_values.dedup();
        Ok(SearchTagValuesResponse {
            tag_values,
            metrics: Some(metrics),
        })
    }

    /// Typed values (v2).
    pub async fn search_tag_values_v2(
        &self,
        tenants: &[String],
        req: &TagValuesRequest,
    ) -> Result<SearchTagValuesV2Response> {
        let (v, metrics) = self.values_of(tenants, req, false).await?;
        Ok(SearchTagValuesV2Response {
            tag_values: v
                .into_iter()
                .map(|t| ProtoTagValue {
                    r#type: t.kind.to_string(),
                    value: t.value,
                })
                .collect(),
            metrics: Some(metrics),
        })
    }
}
