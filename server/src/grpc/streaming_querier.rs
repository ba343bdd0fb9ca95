//! `tempopb.StreamingQuerier`: search streams partial answers as blocks complete, then the
//! whole answer; metrics queries their answer over the recent store first, then the whole
//! one; tag requests their answer. Messages longer than
//! [`MAX_PACKET_BYTES`] are cut into several (traces or series apart; every search message
//! carries the metrics so far, as Grafana reads them from the last one).

use std::sync::Arc;

use allegro_engine::query::tag_requests::{TagValuesRequest, TagsRequest};
use allegro_engine::query::{Partial, QueryEngine};
use allegro_engine::tempopb::{
    QueryInstantRequest, QueryInstantResponse, QueryRangeRequest, QueryRangeResponse,
    SearchRequest, SearchResponse, SearchTagValuesRequest, SearchTagValuesResponse,
    SearchTagValuesV2Response, SearchTagsRequest, SearchTagsResponse, SearchTagsV2Response,
};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::answers::Answers;
use super::{MAX_PACKET_BYTES, StreamingQuerier, status};
use crate::api::error::ApiError;
use crate::api::metrics::{MetricsParams, check_enabled, metrics_request};
use crate::api::search::{SearchParams, search_request};
use crate::api::time::seconds_range;
use crate::http::AppState;
use crate::tenant::request_tenants;

/// The service over the server's engine and settings.
#[derive(Clone)]
pub struct Querier {
    state: AppState,
}

impl Querier {
    /// The service answering from `state`.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// A stream of the one message the engine's `answer` produces.
    fn once<T, F, Fut>(&self, answer: F) -> Response<Answers<T>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<QueryEngine>) -> Fut,
        Fut: Future<Output = allegro_engine::error::Result<T>> + Send + 'static,
    {
        let fut = answer(self.state.query.clone());
        Response::new(Answers::spawn(move |tx| async move {
            let _ = tx.send(Ok(fut.await.map_err(engine_status)?));
            Ok(())
        }))
    }

    /// The request's tenants, from `x-scope-orgid` metadata as from the HTTP header.
    fn tenants(&self, md: &MetadataMap) -> Result<Vec<String>, Status> {
        request_tenants(self.state.multitenancy, &md.clone().into_headers()).map_err(status)
    }
}

fn engine_status(e: allegro_engine::error::EngineError) -> Status {
    status(ApiError::from(e))
}

/// `items` cut into messages of at most [`MAX_PACKET_BYTES`] (an item longer than that
/// alone), each built by `message` from its share; no items make one message.
fn packets<I: Message, M>(items: Vec<I>, message: impl Fn(Vec<I>) -> M) -> Vec<M> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for item in items {
        let len = item.encoded_len();
        if size + len > MAX_PACKET_BYTES && !cur.is_empty() {
            out.push(message(std::mem::take(&mut cur)));
            size = 0;
        }
        size += len;
        cur.push(item);
    }
    out.push(message(cur));
    out
}

/// A search answer in packets, traces apart; every one carries the metrics so far.
fn search_packets(r: SearchResponse) -> Vec<SearchResponse> {
    packets(r.traces, |traces| SearchResponse {
        traces,
        metrics: r.metrics,
    })
}

/// A range answer in packets, series apart; Grafana merges the frames of every message.
fn range_packets(r: QueryRangeResponse) -> Vec<QueryRangeResponse> {
    packets(r.series, |series| QueryRangeResponse {
        series,
        metrics: r.metrics,
        status: r.status,
        message: r.message.clone(),
    })
}

/// An instant answer is one message: Grafana shows only the latest.
fn instant_packets(r: QueryInstantResponse) -> Vec<QueryInstantResponse> {
    vec![r]
}

/// A stream of the partial answers `answer` tells its sink while it runs, then of its whole
/// answer, each cut into packets by `cut`.
fn streamed<T, F, Fut>(cut: fn(T) -> Vec<T>, answer: F) -> Response<Answers<T>>
where
    T: Send + 'static,
    F: FnOnce(Partial<T>) -> Fut,
    Fut: Future<Output = allegro_engine::error::Result<T>> + Send + 'static,
{
    Response::new(Answers::spawn(move |tx| {
        let partial_tx = tx.clone();
        let whole = answer(Arc::new(move |r| {
            for p in cut(r) {
                let _ = partial_tx.send(Ok(p));
            }
        }));
        async move {
            for p in cut(whole.await.map_err(engine_status)?) {
                let _ = tx.send(Ok(p));
            }
            Ok(())
        }
    }))
}

fn tags_request(scope: &str, start: u32, end: u32) -> Result<TagsRequest, Status> {
    let range = seconds_range(start.into(), end.into()).map_err(status)?;
    TagsRequest::new(scope, range).map_err(engine_status)
}

fn values_request(m: SearchTagValuesRequest) -> Result<TagValuesRequest, Status> {
    Ok(TagValuesRequest {
        tag: m.tag_name,
        query: Some(m.query).filter(|q| !q.trim().is_empty()),
        range: seconds_range(m.start.into(), m.end.into()).map_err(status)?,
        limit: (m.max_tag_values > 0).then_some(m.max_tag_values as usize),
    })
}

#[tonic::async_trait]
impl StreamingQuerier for Querier {
    type SearchStream = Answers<SearchResponse>;
    type SearchTagsStream = Answers<SearchTagsResponse>;
    type SearchTagsV2Stream = Answers<SearchTagsV2Response>;
    type SearchTagValuesStream = Answers<SearchTagValuesResponse>;
    type SearchTagValuesV2Stream = Answers<SearchTagValuesV2Response>;
    type MetricsQueryRangeStream = Answers<QueryRangeResponse>;
    type MetricsQueryInstantStream = Answers<QueryInstantResponse>;

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<Self::SearchStream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        let m = request.into_inner();
        let ms = |v: u32| (v > 0).then(|| i64::from(v) * 1_000_000);
        let mut tags: Vec<(String, String)> = m.tags.into_iter().collect();
        tags.sort();
        let req = search_request(
            &SearchParams {
                query: m.query,
                tags,
                min_duration: ms(m.min_duration_ms),
                max_duration: ms(m.max_duration_ms),
                limit: (m.limit > 0).then_some(m.limit as usize),
                spss: (m.spans_per_span_set > 0).then_some(m.spans_per_span_set as usize),
                start: m.start.into(),
                end: m.end.into(),
            },
            &self.state.search_limits,
        )
        .map_err(status)?;
        let engine = self.state.query.clone();
        Ok(streamed(search_packets, |partial| async move {
            engine.search_streamed(&tenants, &req, Some(partial)).await
        }))
    }

    async fn search_tags(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsStream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        let m = request.into_inner();
        let req = tags_request(&m.scope, m.start, m.end)?;
        Ok(self.once(|e| async move { e.search_tags(&tenants, &req).await }))
    }

    async fn search_tags_v2(
        &self,
        request: Request<SearchTagsRequest>,
    ) -> Result<Response<Self::SearchTagsV2Stream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        let m = request.into_inner();
        let req = tags_request(&m.scope, m.start, m.end)?;
        Ok(self.once(|e| async move { e.search_tags_v2(&tenants, &req).await }))
    }

    async fn search_tag_values(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesStream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        let req = values_request(request.into_inner())?;
        Ok(self.once(|e| async move { e.search_tag_values(&tenants, &req).await }))
    }

    async fn search_tag_values_v2(
        &self,
        request: Request<SearchTagValuesRequest>,
    ) -> Result<Response<Self::SearchTagValuesV2Stream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        let req = values_request(request.into_inner())?;
        Ok(self.once(|e| async move { e.search_tag_values_v2(&tenants, &req).await }))
    }

    async fn metrics_query_range(
        &self,
        request: Request<QueryRangeRequest>,
    ) -> Result<Response<Self::MetricsQueryRangeStream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        check_enabled(&self.state.traceql_metrics, &tenants).map_err(status)?;
        let m = request.into_inner();
        let nonzero = |v: u64| (v > 0).then_some(v);
        let req = metrics_request(&MetricsParams {
            query: m.query,
            start: nonzero(m.start),
            end: nonzero(m.end),
            since: None,
            step: nonzero(m.step),
            exemplars: (m.exemplars > 0).then_some(m.exemplars),
            max_series: (m.max_series > 0).then_some(m.max_series),
            mode: Some(m.query_mode),
        })
        .map_err(status)?;
        let (engine, settings) = (self.state.query.clone(), self.state.traceql_metrics.clone());
        Ok(streamed(range_packets, |partial| async move {
            engine
                .query_range_streamed(&tenants, &req, &settings.limits, Some(partial))
                .await
        }))
    }

    async fn metrics_query_instant(
        &self,
        request: Request<QueryInstantRequest>,
    ) -> Result<Response<Self::MetricsQueryInstantStream>, Status> {
        let tenants = self.tenants(request.metadata())?;
        check_enabled(&self.state.traceql_metrics, &tenants).map_err(status)?;
        let m = request.into_inner();
        let nonzero = |v: u64| (v > 0).then_some(v);
        let req = metrics_request(&MetricsParams {
            query: m.query,
            start: nonzero(m.start),
            end: nonzero(m.end),
            ..Default::default()
        })
        .map_err(status)?;
        // The recent store's value first when the range reaches past it.
        let (engine, settings) = (self.state.query.clone(), self.state.traceql_metrics.clone());
        Ok(streamed(instant_packets, |partial| async move {
            engine
                .query_instant_streamed(&tenants, &req, &settings.limits, Some(partial))
                .await
        }))
    }
}

#[cfg(test)]
mod tests {
    use allegro_engine::tempopb::{SearchMetrics, Span, SpanSet, TraceSearchMetadata};

    use super::*;

    fn trace(i: usize, name_bytes: usize) -> TraceSearchMetadata {
        TraceSearchMetadata {
            trace_id: format!("{i:x}"),
            root_trace_name: "x".repeat(name_bytes),
            span_sets: vec![SpanSet {
                spans: vec![Span {
                    span_id: format!("{i:016x}"),
                    ..Default::default()
                }],
                matched: 1,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn long_searches_are_cut_into_packets_that_keep_every_trace_and_the_metrics() {
        let metrics = Some(SearchMetrics {
            total_jobs: 7,
            completed_jobs: 7,
            ..Default::default()
        });
        // 40 traces of about 100 KB: 4 MB in all.
        let whole = SearchResponse {
            traces: (0..40).map(|i| trace(i, 100_000)).collect(),
            metrics,
        };
        let packets = search_packets(whole.clone());
        assert_eq!(packets.len(), 4);
        for p in &packets {
            assert!(p.encoded_len() <= MAX_PACKET_BYTES, "{}", p.encoded_len());
            assert_eq!(p.metrics, metrics);
        }
        let joined: Vec<_> = packets.into_iter().flat_map(|p| p.traces).collect();
        assert_eq!(joined, whole.traces);
        // A trace longer than a packet goes alone; an empty answer is one message.
        assert_eq!(
            search_packets(SearchResponse {
                traces: vec![trace(1, 2 * MAX_PACKET_BYTES)],
                metrics,
            })
            .len(),
            1
        );
        assert_eq!(search_packets(SearchResponse::default()).len(), 1);
    }
}
