//! Sharded ingest, the write side: each span goes to the ingester that owns its trace on the
//! ring (`allegro_engine::ring`), so that a trace's live spans, WAL records and block are in one
//! process however many receive its spans.
//!
//! A request is split by owner; this process's share goes to its own ingester, each other
//! share to its owner over HTTP ([`crate::peers`]), all at once. The request is acknowledged
//! when every share is durable in its owner's WAL, and refused when any share is refused,
//! with that share's class (429, 503, 400): nothing acknowledged is lost, but a client
//! retrying a refused request sends the other shares again. Spans stored twice that way are
//! dropped when their blocks are merged (compaction drops spans received twice), as in
//! Tempo, whose distributor answers a partly failed push the same way.
//!
//! Splitting needs the decoded request: the wire path that regroups protobuf without decoding
//! it (`crate::wire`) serves the owner's side, which receives its share encoded.

use std::sync::Arc;

use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans};
use allegro_engine::ring::Ring;

use crate::peers::Peers;

/// The ring and the client of its other members.
pub struct Distributor {
    ring: Arc<Ring>,
    peers: Peers,
}

impl Distributor {
    /// Splits writes over `ring`.
    pub fn new(ring: Arc<Ring>) -> Self {
        Self {
            ring,
            peers: Peers::new(),
        }
    }

    /// The ring.
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The client of the other members.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// `batches` split by the member owning each span's trace: one list per member, in the
    /// ring's order, each resource and scope kept beside the spans of it that member owns.
    pub fn split(&self, batches: Vec<ResourceSpans>) -> Vec<Vec<ResourceSpans>> {
        let n = self.ring.members().len();
        let mut shares: Vec<Vec<ResourceSpans>> = vec![Vec::new(); n];
        for rs in batches {
            let mut per_member: Vec<Vec<ScopeSpans>> = vec![Vec::new(); n];
            for scope in rs.scope_spans {
                let mut spans_of: Vec<Vec<_>> = vec![Vec::new(); n];
                for span in scope.spans {
                    spans_of[self.ring.owner(&span.trace_id)].push(span);
                }
                for (m, spans) in spans_of.into_iter().enumerate() {
                    if !spans.is_empty() {
                        per_member[m].push(ScopeSpans {
                            scope: scope.scope.clone(),
                            spans,
                            schema_url: scope.schema_url.clone(),
                        });
                    }
                }
            }
            for (m, scopes) in per_member.into_iter().enumerate() {
                if !scopes.is_empty() {
                    shares[m].push(ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: scopes,
                        schema_url: rs.schema_url.clone(),
                    });
                }
            }
        }
        shares
    }
}

/// Spans in `batches`.
pub fn span_count(batches: &[ResourceSpans]) -> u64 {
    batches
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use allegro_engine::otlp::common::v1::InstrumentationScope;
    use allegro_engine::otlp::resource::v1::Resource;
    use allegro_engine::otlp::trace::v1::Span;
    use allegro_engine::ring::Member;

    fn distributor(me: &str) -> Distributor {
        let members = ["a", "b", "c"]
            .map(|id| Member {
                id: id.into(),
                address: format!("http://{id}:3200"),
            })
            .to_vec();
        Distributor::new(Arc::new(Ring::new(members, me).unwrap()))
    }

    #[test]
    fn a_request_splits_by_trace_keeping_resources_and_scopes() {
        let d = distributor("a");
        let span = |t: u8, s: u8| Span {
            trace_id: vec![t; 16],
            span_id: vec![s; 8],
            name: format!("{t}/{s}"),
            ..Default::default()
        };
        let rs = |svc: &str, spans: Vec<Span>| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![allegro_engine::otlp::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(allegro_engine::otlp::common::v1::AnyValue {
                        value: Some(
                            allegro_engine::otlp::common::v1::any_value::Value::StringValue(
                                svc.into(),
                            ),
                        ),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: format!("scope-{svc}"),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        };
        let traces: Vec<u8> = (1..=30).collect();
        let req = vec![
            rs("x", traces.iter().map(|&t| span(t, 1)).collect()),
            rs("y", traces.iter().map(|&t| span(t, 2)).collect()),
        ];
        let shares = d.split(req.clone());
        assert_eq!(shares.len(), 3);
        assert_eq!(shares.iter().map(|s| span_count(s)).sum::<u64>(), 60);
        for (m, share) in shares.iter().enumerate() {
            assert!(!share.is_empty(), "member {m} owns none of 30 traces");
            for r in share {
                let svc = &r.resource.as_ref().unwrap().attributes[0];
                let scope = r.scope_spans[0].scope.as_ref().unwrap();
                let svc_name = format!("{:?}", svc.value);
                for s in &r.scope_spans[0].spans {
                    // Every span is with its own resource and scope, at its trace's owner.
                    assert_eq!(d.ring().owner(&s.trace_id), m);
                    let original = req
                        .iter()
                        .find(|o| o.scope_spans[0].spans.contains(s))
                        .unwrap();
                    assert_eq!(
                        format!(
                            "{:?}",
                            original.resource.as_ref().unwrap().attributes[0].value
                        ),
                        svc_name
                    );
                    assert_eq!(original.scope_spans[0].scope.as_ref().unwrap(), scope);
                }
            }
        }
        // Both spans of a trace go to one member.
        for t in traces {
            let owners: Vec<usize> = (0..3)
                .filter(|&m| {
                    shares[m]
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                        .any(|s| s.trace_id == vec![t; 16])
                })
                .collect();
            assert_eq!(owners.len(), 1, "trace {t}: {owners:?}");
        }
        // Every process splits the same way.
        assert_eq!(distributor("c").split(req.clone()), shares);
    }
}
