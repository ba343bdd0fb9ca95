//! Tempo's keys that mean nothing here, and the closest known key for a typo.
//!
//! A Tempo config holds keys for parts Allegro does not have (rings, gossip, the
//! frontend/querier split, vParquet encodings, Go caches). Each is accepted with one warning
//! saying why it has no effect, so a Tempo user's file starts Allegro unchanged, while any
//! other unknown key is still an error, with the closest known key when one is near.
//! Keys that have an equivalent here are moved to it first (with a warning naming it).

use serde_yaml::{Mapping, Value};

/// Tempo keys with an equivalent here: (Tempo's path, Allegro's path).
const MOVED: &[(&str, &str)] = &[
    ("http_api_prefix", "server.http_api_prefix"),
    (
        "storage.trace.block.parquet_dedicated_columns",
        "storage.trace.block.dedicated_columns",
    ),
    // Tempo 3.x's live store holds what the 2.x ingester did.
    ("live_store", "ingester"),
];

const ONE_PROCESS: &str = "Allegro runs as one process, so there is no ring, gossip or \
                           frontend/querier split to configure";
const NO_VPARQUET: &str = "Allegro writes its own Parquet span tables (docs/schema.md), not \
                           Tempo's block encodings";
const OWN_CACHES: &str = "Allegro caches footers, blooms and metas in process \
                          (storage.trace.cache.*_mb)";
const OWN_PLANNER: &str = "Allegro plans and schedules each query itself; no jobs are sharded \
                           across queriers";
const NO_KAFKA: &str = "Allegro receives, stores and compacts in one process";

/// Tempo keys without effect here, and why; `*` matches any map key (a tenant's name).
const NO_EFFECT: &[(&str, &str)] = &[
    (
        "target",
        "Allegro always runs every part (Tempo's target: all)",
    ),
    ("memberlist", ONE_PROCESS),
    ("usage_report", "Allegro sends no usage reports"),
    ("use_otel_tracer", "Allegro does not trace itself"),
    ("enable_go_runtime_metrics", "Allegro is not a Go program"),
    (
        "autocomplete_filtering_enabled",
        "tag value lookups always honour their q filter here",
    ),
    ("cache", OWN_CACHES),
    (
        "server.grpc_listen_port",
        "gRPC (the streaming API) shares the HTTP port, as with Tempo's stream_over_http_enabled",
    ),
    (
        "server.grpc_listen_address",
        "gRPC (the streaming API) shares the HTTP port",
    ),
    (
        "server.log_format",
        "Allegro writes one plain-text log format",
    ),
    (
        "server.log_source_ips_enabled",
        "requests are not logged per source address",
    ),
    (
        "server.register_instrumentation",
        "/metrics is always served",
    ),
    (
        "server.http_server_read_timeout",
        "query time is bounded by querier.search.query_timeout",
    ),
    (
        "server.http_server_write_timeout",
        "query time is bounded by querier.search.query_timeout",
    ),
    (
        "server.http_server_idle_timeout",
        "idle connections are kept by the HTTP library's defaults",
    ),
    (
        "server.grpc_server_max_recv_msg_size",
        "receivers set their own limits (distributor.receivers.*)",
    ),
    (
        "server.grpc_server_max_send_msg_size",
        "streamed answers are cut into 1 MiB packets",
    ),
    (
        "server.grpc_server_max_concurrent_streams",
        "the HTTP/2 library's default applies",
    ),
    (
        "server.grpc_server_ping_without_stream_allowed",
        "the HTTP/2 library's default applies",
    ),
    ("distributor.ring", ONE_PROCESS),
    (
        "distributor.log_received_spans",
        "received spans are counted in /metrics, not logged",
    ),
    (
        "distributor.log_discarded_spans",
        "refused spans are counted in /metrics with their reason",
    ),
    (
        "distributor.metric_received_spans",
        "received spans are always counted in /metrics",
    ),
    (
        "distributor.forwarders",
        "spans are not forwarded elsewhere",
    ),
    ("distributor.extend_writes", ONE_PROCESS),
    (
        "distributor.retry_after_on_resource_exhausted",
        "refusals answer 429 / RESOURCE_EXHAUSTED without a retry hint",
    ),
    ("distributor.usage", "Allegro keeps no usage trackers"),
    ("ingester.lifecycler", ONE_PROCESS),
    ("ingester.override_ring_key", ONE_PROCESS),
    ("ingester.partition_ring", ONE_PROCESS),
    (
        "ingester.concurrent_flushes",
        "blocks are written one at a time, streamed",
    ),
    (
        "ingester.flush_op_timeout",
        "a block write is retried until it lands",
    ),
    (
        "ingester.flush_all_on_shutdown",
        "the WAL keeps unflushed spans across restarts",
    ),
    (
        "ingester.complete_block_timeout",
        "blocks are queryable from storage the moment they are written",
    ),
    (
        "ingester.max_live_traces_bytes",
        "the head's memory is bounded by ingester.max_head_bytes",
    ),
    (
        "ingester.block_reclaim_grace",
        "blocks are queryable from storage the moment they are written",
    ),
    ("ingester.commit_interval", NO_KAFKA),
    ("ingester.fail_on_high_lag", NO_KAFKA),
    ("ingester.wal", "the WAL is storage.trace.wal"),
    ("querier.frontend_worker", ONE_PROCESS),
    (
        "querier.max_concurrent_queries",
        "concurrency is per tenant here: overrides.*.read.max_concurrent_queries",
    ),
    ("querier.query_relevant_ingesters", ONE_PROCESS),
    ("querier.shuffle_sharding_ingesters_enabled", ONE_PROCESS),
    (
        "querier.shuffle_sharding_ingesters_lookback_period",
        ONE_PROCESS,
    ),
    ("querier.secondary_ingester_ring", ONE_PROCESS),
    ("querier.partition_ring", ONE_PROCESS),
    (
        "querier.trace_by_id",
        "trace lookups share querier.search.query_timeout",
    ),
    (
        "querier.search.external_endpoints",
        "searches run in process, never on external endpoints",
    ),
    (
        "querier.search.external_backend",
        "searches run in process, never on external endpoints",
    ),
    (
        "querier.search.external_hedge_requests_at",
        "searches run in process",
    ),
    (
        "querier.search.external_hedge_requests_up_to",
        "searches run in process",
    ),
    ("querier.search.prefer_self", "searches run in process"),
    (
        "query_frontend.max_outstanding_per_tenant",
        "queued queries per tenant: overrides.*.read.max_queued_queries",
    ),
    ("query_frontend.max_batch_size", OWN_PLANNER),
    (
        "query_frontend.max_retries",
        "a query that fails is not retried behind the caller's back",
    ),
    (
        "query_frontend.log_query_request_headers",
        "request headers are not logged",
    ),
    (
        "query_frontend.multi_tenant_queries_enabled",
        "a|b in X-Scope-OrgID always federates tenants here",
    ),
    ("query_frontend.response_consumers", OWN_PLANNER),
    ("query_frontend.weights", OWN_PLANNER),
    (
        "query_frontend.api_timeout",
        "query time is bounded by querier.search.query_timeout",
    ),
    ("query_frontend.trace_by_id", OWN_PLANNER),
    ("query_frontend.search.concurrent_jobs", OWN_PLANNER),
    ("query_frontend.search.target_bytes_per_job", OWN_PLANNER),
    (
        "query_frontend.search.query_backend_after",
        "searches read the live head and the blocks together",
    ),
    (
        "query_frontend.search.query_ingesters_until",
        "searches read the live head and the blocks together",
    ),
    ("query_frontend.search.ingester_shards", OWN_PLANNER),
    ("query_frontend.search.most_recent_shards", OWN_PLANNER),
    ("query_frontend.metrics.concurrent_jobs", OWN_PLANNER),
    ("query_frontend.metrics.target_bytes_per_job", OWN_PLANNER),
    ("query_frontend.metrics.interval", OWN_PLANNER),
    (
        "query_frontend.metrics.query_end_cutoff",
        "the live head is read, so the newest data is answered at once",
    ),
    (
        "query_frontend.metrics.exemplars",
        "exemplars follow the request's exemplars parameter and max_exemplars",
    ),
    (
        "compactor.disabled",
        "compaction runs in serve; set compactor.compaction.compaction_cycle to pace it",
    ),
    ("compactor.override_ring_key", ONE_PROCESS),
    ("compactor.compaction.v2_in_buffer_bytes", NO_VPARQUET),
    ("compactor.compaction.v2_out_buffer_bytes", NO_VPARQUET),
    ("compactor.compaction.v2_prefetch_traces_count", NO_VPARQUET),
    ("compactor.compaction.iterator_buffer_size", NO_VPARQUET),
    (
        "compactor.compaction.flush_size_bytes",
        "merged blocks are streamed in row groups of storage.trace.block.row_group_rows",
    ),
    (
        "compactor.compaction.compaction_concurrency",
        "one merge runs at a time, streamed",
    ),
    ("storage.trace.block.version", NO_VPARQUET),
    (
        "storage.trace.block.bloom_filter_false_positive",
        "trace-ID blooms are sized per block for a fixed 1% false-positive rate",
    ),
    (
        "storage.trace.block.bloom_filter_shard_size_bytes",
        "trace-ID blooms are sized per block",
    ),
    ("storage.trace.block.v2_index_downsample_bytes", NO_VPARQUET),
    ("storage.trace.block.v2_index_page_size_bytes", NO_VPARQUET),
    ("storage.trace.block.v2_encoding", NO_VPARQUET),
    ("storage.trace.block.search_encoding", NO_VPARQUET),
    ("storage.trace.block.search_page_size_bytes", NO_VPARQUET),
    (
        "storage.trace.block.parquet_row_group_size_bytes",
        "row groups are sized in rows: storage.trace.block.row_group_rows",
    ),
    ("storage.trace.search", OWN_PLANNER),
    ("storage.trace.pool", OWN_PLANNER),
    ("storage.trace.background_cache", OWN_CACHES),
    ("storage.trace.memcached", OWN_CACHES),
    ("storage.trace.redis", OWN_CACHES),
    (
        "storage.trace.wal.encoding",
        "the WAL frames OTLP records with its own checksums",
    ),
    (
        "storage.trace.wal.search_encoding",
        "the WAL frames OTLP records with its own checksums",
    ),
    (
        "storage.trace.wal.version",
        "the WAL frames OTLP records with its own checksums",
    ),
    (
        "storage.trace.wal.ingestion_time_range_slack",
        "span times are checked against overrides.*.ingestion.max_span_age and max_span_future",
    ),
    (
        "storage.trace.empty_tenant_deletion_enabled",
        "a tenant's directory goes when its last block does",
    ),
    (
        "storage.trace.empty_tenant_deletion_age",
        "a tenant's directory goes when its last block does",
    ),
    (
        "storage.trace.s3.hedge_requests_at",
        "object-store requests are retried, not hedged",
    ),
    (
        "storage.trace.s3.hedge_requests_up_to",
        "object-store requests are retried, not hedged",
    ),
    (
        "storage.trace.s3.part_size",
        "uploads use the object-store library's part size",
    ),
    (
        "storage.trace.s3.list_blocks_concurrency",
        "listing uses the tenant index",
    ),
    ("storage.trace.s3.tags", "objects are written without tags"),
    (
        "storage.trace.s3.storage_class",
        "objects use the bucket's default storage class",
    ),
    (
        "storage.trace.gcs.hedge_requests_at",
        "object-store requests are retried, not hedged",
    ),
    (
        "storage.trace.gcs.hedge_requests_up_to",
        "object-store requests are retried, not hedged",
    ),
    (
        "storage.trace.gcs.chunk_buffer_size",
        "uploads use the object-store library's chunk size",
    ),
    (
        "storage.trace.azure.hedge_requests_at",
        "object-store requests are retried, not hedged",
    ),
    (
        "storage.trace.azure.hedge_requests_up_to",
        "object-store requests are retried, not hedged",
    ),
    (
        "storage.trace.azure.buffer_size",
        "uploads use the object-store library's buffer size",
    ),
    (
        "metrics_generator.query_timeout",
        "TraceQL metrics share querier.search.query_timeout",
    ),
    ("metrics_generator.override_ring_key", ONE_PROCESS),
    ("metrics_generator.assigned_partitions", NO_KAFKA),
    ("metrics_generator.instance_id", ONE_PROCESS),
    (
        "metrics_generator.ingest_concurrency",
        "spans reach the generator in process, as they are stored",
    ),
    (
        "metrics_generator.codec",
        "spans reach the generator in process, as they are stored",
    ),
    (
        "overrides.per_tenant_override_period",
        "overrides are read once at start",
    ),
    (
        "overrides.user_configurable_overrides",
        "overrides come from this file only",
    ),
    (
        "overrides.defaults.forwarders",
        "spans are not forwarded elsewhere",
    ),
    (
        "overrides.per_tenant.*.forwarders",
        "spans are not forwarded elsewhere",
    ),
];

fn path_of(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

/// Removes every value at `path` (with `*` wildcards); returns the concrete paths removed.
fn remove(v: &mut Value, path: &[&str], at: String, out: &mut Vec<(String, Value)>) {
    let Value::Mapping(m) = v else { return };
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    // Per-tenant overrides sit under `overrides.per_tenant.<tenant>` here and directly
    // under `overrides.<tenant>` in Tempo's per-tenant files; `*` matches any map key.
    let keys: Vec<Value> = if *first == "*" {
        m.keys().cloned().collect()
    } else {
        vec![Value::String((*first).to_string())]
    };
    for k in keys {
        let name = k.as_str().unwrap_or_default().to_string();
        let here = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        if rest.is_empty() {
            if let Some(old) = m.remove(&k) {
                out.push((here, old));
            }
        } else if let Some(child) = m.get_mut(&k) {
            remove(child, rest, here, out);
        }
    }
}

/// Sets `path` to `value` unless something is there already (the current key wins).
fn insert(v: &mut Value, path: &[&str], value: Value) -> bool {
    let Value::Mapping(m) = v else { return false };
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let k = Value::String((*first).to_string());
    if rest.is_empty() {
        if m.contains_key(&k) {
            return false;
        }
        m.insert(k, value);
        return true;
    }
    let child = m.entry(k).or_insert_with(|| Value::Mapping(Mapping::new()));
    if child.is_null() {
        *child = Value::Mapping(Mapping::new());
    }
    insert(child, rest, value)
}

/// Moves Tempo keys with an equivalent to it and removes those without effect; one warning
/// for each.
pub fn prepare(v: &mut Value) -> Vec<String> {
    let mut warnings = Vec::new();
    for (from, to) in MOVED {
        let mut found = Vec::new();
        remove(v, &path_of(from), String::new(), &mut found);
        for (_, value) in found {
            if insert(v, &path_of(to), value) {
                warnings.push(format!(
                    "{from} is Tempo's spelling: applied as {to}; write it there"
                ));
            } else {
                warnings.push(format!("{from} is ignored: {to} is set too and wins"));
            }
        }
    }
    // Tempo 2.0's `storage.trace.cache: memcached` names a cache backend; here that key
    // holds in-process cache sizes.
    let mut found = Vec::new();
    remove_if(
        v,
        &["storage", "trace", "cache"],
        &|c| !c.is_mapping() && !c.is_null(),
        &mut found,
    );
    for (path, _) in found {
        warnings.push(format!("{path}: has no effect in Allegro: {OWN_CACHES}"));
    }
    for (path, why) in NO_EFFECT {
        let mut found = Vec::new();
        remove(v, &path_of(path), String::new(), &mut found);
        for (at, _) in found {
            warnings.push(format!("{at}: has no effect in Allegro: {why}"));
        }
    }
    warnings
}

fn remove_if(
    v: &mut Value,
    path: &[&str],
    pred: &dyn Fn(&Value) -> bool,
    out: &mut Vec<(String, Value)>,
) {
    let mut cur = &mut *v;
    for (i, p) in path.iter().enumerate() {
        let Value::Mapping(m) = cur else { return };
        let k = Value::String((*p).to_string());
        if i + 1 == path.len() {
            if m.get(&k).is_some_and(pred)
                && let Some(old) = m.remove(&k)
            {
                out.push((path.join("."), old));
            }
            return;
        }
        let Some(next) = m.get_mut(&k) else { return };
        cur = next;
    }
}

/// The known key closest to `unknown` among `expected`, when one is close enough to be a typo.
pub fn closest<'a>(unknown: &str, expected: &[&'a str]) -> Option<&'a str> {
    expected
        .iter()
        .map(|e| (edit_distance(unknown, e), *e))
        .filter(|(d, e)| *d <= (e.len().max(unknown.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// serde's "unknown field `x`, expected one of `a`, `b`" with the closest known key added.
pub fn with_hint(message: &str) -> String {
    // serde_yaml puts the path before it (`overrides: unknown field ...`).
    let Some((_, rest)) = message.split_once("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(unknown, &names) {
        Some(c) => format!("{message} (did you mean `{c}`?)"),
        None => message.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempo_only_keys_go_with_one_warning_each_and_moved_keys_move() {
        let mut v: Value = serde_yaml::from_str(
            "target: all\nhttp_api_prefix: /tempo\nmemberlist:\n  join_members: [a]\n\
             server:\n  grpc_listen_port: 9095\n  http_listen_port: 3200\n\
             storage:\n  trace:\n    cache: memcached\n    block:\n      version: vParquet4\n\
             \x20     parquet_dedicated_columns: [{name: a}]\n\
             overrides:\n  per_tenant:\n    t1:\n      forwarders: [x]\n",
        )
        .unwrap();
        let w = prepare(&mut v);
        let want = serde_yaml::from_str::<Value>(
            "server:\n  http_listen_port: 3200\n  http_api_prefix: /tempo\n\
             storage:\n  trace:\n    block:\n      dedicated_columns: [{name: a}]\n\
             overrides:\n  per_tenant:\n    t1: {}\n",
        )
        .unwrap();
        assert_eq!(v, want);
        assert_eq!(w.len(), 8, "{w:#?}");
        assert!(
            w.iter()
                .any(|w| w.starts_with("storage.trace.block.version: has no effect"))
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("overrides.per_tenant.t1.forwarders"))
        );
        assert!(
            w.iter()
                .any(|w| w.starts_with("http_api_prefix is Tempo's spelling"))
        );
    }

    #[test]
    fn typos_name_the_closest_key() {
        assert_eq!(
            with_hint(
                "unknown field `max_trace_per_user`, expected one of `rate_limit_bytes`, `max_traces_per_user`"
            ),
            "unknown field `max_trace_per_user`, expected one of `rate_limit_bytes`, `max_traces_per_user` (did you mean `max_traces_per_user`?)"
        );
        assert_eq!(closest("otlp_grpc", &["otlp", "zipkin", "jaeger"]), None);
        assert_eq!(
            closest("recievers", &["receivers", "ring"]),
            Some("receivers")
        );
    }
}
