//! The effective configuration, with every default filled in, as `allegro config check` prints
//! it and `/status/config` serves it (redacted there). It is itself a config in Tempo's layout:
//! `config check` accepts the print, and it means the same (a test holds every seed config to
//! that). Durations are in Go's notation (`336h`, `1m30s`).

use std::time::Duration;

use allegro_engine::query::executor::TenantQueryLimits;
use allegro_ingest::generator::{Parts, Processors, TenantSettings};
use allegro_ingest::limits::Limits;
use serde_json::{Map, Value, json};

use super::{Config, ConfigError};

/// `d` as Go prints a duration: hours, minutes, seconds, then sub-second units (`336h`,
/// `1h30m`, `1.5s` as `1s500ms`); zero is `0s`.
pub fn go_dur(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let nanos = d.subsec_nanos();
    let (ms, us, ns) = (nanos / 1_000_000, nanos / 1_000 % 1_000, nanos % 1_000);
    let mut out = String::new();
    for (v, unit) in [
        (h, "h"),
        (m, "m"),
        (s, "s"),
        (u64::from(ms), "ms"),
        (u64::from(us), "us"),
        (u64::from(ns), "ns"),
    ] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out
}

fn opt_dur(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| Value::String(go_dur(d)))
}

fn processor_names(p: &Processors) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut parts = |p: Parts, all: Parts, whole: &'static str, names: [&'static str; 3]| {
        if p == all {
            out.push(whole);
        } else {
            for (on, n) in [p.count, p.latency, p.size].into_iter().zip(names) {
                if on {
                    out.push(n);
                }
            }
        }
    };
    let every = Processors::all();
    parts(
        p.span_metrics,
        every.span_metrics,
        "span-metrics",
        [
            "span-metrics-count",
            "span-metrics-latency",
            "span-metrics-size",
        ],
    );
    parts(
        p.service_graphs,
        every.service_graphs,
        "service-graphs",
        [
            "service-graphs-request",
            "service-graphs-latency",
            "service-graphs-connection-info",
        ],
    );
    if p.local_blocks {
        out.push("local-blocks");
    }
    out
}

/// One tenant's limits in `overrides.*` layout.
fn tenant(
    l: &Limits,
    read: &TenantQueryLimits,
    metrics_on: bool,
    retention: Duration,
    generator: Option<&TenantSettings>,
) -> Value {
    let mut v = json!({
        "ingestion": {
            "rate_strategy": "local",
            "rate_limit_bytes": l.rate_limit_bytes,
            "burst_size_bytes": l.burst_size_bytes,
            "max_traces_per_user": l.max_traces_per_user,
            "max_attribute_bytes": l.max_attribute_bytes,
            "max_attribute_key_bytes": l.max_attribute_key_bytes,
            "max_span_name_bytes": l.max_span_name_bytes,
            "max_attributes_per_span": l.max_attributes_per_span,
            "max_head_bytes": l.max_head_bytes,
            "max_span_age": go_dur(l.max_span_age),
            "max_span_future": go_dur(l.max_span_future),
        },
        "global": { "max_bytes_per_trace": l.max_bytes_per_trace },
        "read": {
            "max_bytes_per_tag_values_query": read.max_bytes_per_tag_values_query,
            "max_concurrent_queries": read.max_concurrent_queries,
            "max_queued_queries": read.max_queued_queries,
            "max_memory_per_query_bytes": read.max_memory_per_query_bytes,
            "traceql_metrics_enabled": metrics_on,
        },
        "compaction": { "block_retention": go_dur(retention) },
    });
    if let Some(s) = generator {
        v["metrics_generator"] = json!({
            "processors": processor_names(&s.processors),
            "max_active_series": s.max_active_series,
            "collection_interval": opt_dur(s.collection_interval),
        });
    }
    v
}

impl Config {
    /// Every setting in effect, defaults included, as a config in Tempo's layout.
    pub fn effective(&self) -> Result<Value, ConfigError> {
        let ing = self.ingester_config()?;
        let metrics = self.traceql_metrics()?;
        let tm = &metrics.limits;
        let queries = self.query_limits()?;
        let search = self.search_limits()?;
        let lifecycle = self.lifecycle();
        let c = &self.compactor.compaction;
        let overrides = ing.overrides.clone();
        let generator = self.generator()?;
        let gen_of = |t: Option<&str>| {
            generator.as_ref().map(|g| match t {
                Some(t) => g.generator.tenant(t),
                None => &g.generator.defaults,
            })
        };
        let mut per_tenant = Map::new();
        for t in self.overrides.per_tenant.keys() {
            per_tenant.insert(
                t.clone(),
                tenant(
                    overrides.limits(t),
                    queries.per_tenant.get(t).unwrap_or(&queries.defaults),
                    metrics.enabled(t),
                    lifecycle
                        .tenant_retention
                        .get(t)
                        .copied()
                        .unwrap_or(lifecycle.block_retention),
                    gen_of(Some(t)),
                ),
            );
        }
        let t = &self.storage.trace;
        let block = &t.block;
        let mut trace = json!({
            "backend": t.backend,
            "wal": {
                "path": ing.wal.dir.display().to_string(),
                "segment_bytes": ing.wal.segment_bytes,
            },
            "block": {
                "row_group_rows": block.row_group_rows,
                "page_rows": block.page_rows,
                "compression": if block.compression.is_empty() { "lz4" } else { block.compression.as_str() },
                "dedicated_columns": serde_json::to_value(&block.dedicated_columns).unwrap_or_default(),
            },
            "cache": {
                "footer_mb": t.cache.footer_mb,
                "bloom_mb": t.cache.bloom_mb,
                "meta_mb": t.cache.meta_mb,
                "rollup_mb": t.cache.rollup_mb,
            },
            "blocklist_poll": opt_dur(t.blocklist_poll),
            "blocklist_poll_stale_tenant_index": opt_dur(t.blocklist_poll_stale_tenant_index),
        });
        match t.backend.as_str() {
            "local" => trace["local"] = json!({ "path": t.local.path.display().to_string() }),
            "s3" => {
                let s = &t.s3;
                trace["s3"] = json!({
                    "bucket": s.bucket, "endpoint": s.endpoint, "region": s.region,
                    "access_key": s.access_key, "secret_key": s.secret_key,
                    "insecure": s.insecure, "forcepathstyle": s.forcepathstyle,
                });
            }
            "gcs" => trace["gcs"] = json!({ "bucket_name": t.gcs.bucket_name }),
            "azure" => {
                let a = &t.azure;
                trace["azure"] = json!({
                    "container_name": a.container_name,
                    "storage_account_name": a.storage_account_name,
                    "storage_account_key": a.storage_account_key,
                });
            }
            _ => {}
        }
        let mut out = json!({
            "multitenancy_enabled": self.multitenancy_enabled,
            "stream_over_http_enabled": self.stream_over_http_enabled.unwrap_or(true),
            "sql": {
                "flight_listen_address": self.sql.flight_listen_address.as_deref().unwrap_or(super::DEFAULT_FLIGHT_SQL),
            },
            "query": { "ballista": {
                "scheduler": self.query.ballista.scheduler,
                "rows_address": self.query.ballista.rows_address,
            } },
            "server": {
                "http_listen_address": self.server.http_listen_address,
                "http_listen_port": self.server.http_listen_port,
                "http_api_prefix": self.server.http_api_prefix,
                "graceful_shutdown_timeout": go_dur(self.server.graceful_shutdown_timeout.unwrap_or(Duration::from_secs(30))),
                "log_level": self.server.log_level.as_deref().unwrap_or("info"),
            },
            "distributor": { "receivers": serde_json::to_value(self.distributor.effective_receivers()).unwrap_or_default() },
            "storage": { "trace": trace },
            "ingester": {
                "trace_idle_period": go_dur(ing.cut.trace_idle_period),
                "max_trace_live": go_dur(ing.cut.max_trace_live),
                "max_block_duration": go_dur(ing.cut.max_block_duration),
                "max_block_bytes": ing.cut.max_block_bytes,
                "flush_check_period": go_dur(ing.flush_check_period),
                "max_head_bytes": ing.max_head_bytes,
            },
            "compactor": { "compaction": {
                "block_retention": go_dur(lifecycle.block_retention),
                "compacted_block_retention": go_dur(lifecycle.compacted_block_retention),
                "compaction_window": go_dur(lifecycle.window),
                "max_compaction_objects": lifecycle.max_objects,
                "max_block_bytes": lifecycle.max_block_bytes,
                "compaction_cycle": go_dur(c.cycle()),
                "max_time_per_tenant": go_dur(c.per_tenant()),
            }},
            "querier": {
                "search": { "query_timeout": go_dur(queries.timeout) },
                "query_threads": queries.threads,
            },
            "overrides": {
                "defaults": tenant(
                    &overrides.defaults,
                    &queries.defaults,
                    metrics.enabled_by_default(),
                    lifecycle.block_retention,
                    gen_of(None),
                ),
                "per_tenant": per_tenant,
            },
            "query_frontend": {
              "search": {
                "default_result_limit": search.default_limit,
                "max_result_limit": search.max_limit,
                "default_spans_per_span_set": search.default_spss,
                "max_spans_per_span_set": search.max_spss,
                "max_duration": go_dur(search.max_duration.unwrap_or_default()),
              },
              "metrics": {
                "max_duration": go_dur(tm.max_duration),
                "max_intervals": tm.max_intervals,
                "max_exemplars": tm.max_exemplars,
                "max_response_series": tm.max_series,
                "query_backend_after": go_dur(tm.recent_window),
                "sample_target_spans": tm.sample_target_spans,
              },
            },
        });
        if let (Some(g), Some(section)) = (generator, &self.metrics_generator) {
            let c = &g.generator;
            let reg = &c.registry;
            let sm = &c.span_metrics;
            let sg = &c.service_graphs;
            let rw = &g.remote_write;
            let raw = &section.processor.span_metrics;
            out["metrics_generator"] = json!({
                "registry": {
                    "collection_interval": go_dur(reg.collection_interval),
                    "stale_duration": go_dur(reg.stale_duration),
                    "max_label_name_length": reg.max_label_name_length,
                    "max_label_value_length": reg.max_label_value_length,
                    "external_labels": reg.external_labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "inject_tenant_id_as": reg.inject_tenant_id_as,
                },
                "metrics_ingestion_time_range_slack": go_dur(c.ingestion_slack),
                "processor": {
                    "span_metrics": {
                        "histogram_buckets": sm.histogram_buckets,
                        "intrinsic_dimensions": {
                            "service": sm.intrinsic_dimensions.service,
                            "span_name": sm.intrinsic_dimensions.span_name,
                            "span_kind": sm.intrinsic_dimensions.span_kind,
                            "status_code": sm.intrinsic_dimensions.status_code,
                            "status_message": sm.intrinsic_dimensions.status_message,
                        },
                        "dimensions": sm.dimensions,
                        "dimension_mappings": serde_json::to_value(&raw.dimension_mappings).unwrap_or_default(),
                        "filter_policies": serde_json::to_value(&raw.filter_policies).unwrap_or_default(),
                        "enable_target_info": sm.enable_target_info,
                        "span_multiplier_key": sm.span_multiplier_key,
                    },
                    "service_graphs": {
                        "wait": go_dur(sg.wait),
                        "max_items": sg.max_items,
                        "histogram_buckets": sg.histogram_buckets,
                        "dimensions": sg.dimensions,
                        "enable_client_server_prefix": sg.enable_client_server_prefix,
                        "enable_messaging_system_latency_histogram": sg.enable_messaging_system_latency_histogram,
                        "enable_virtual_node_label": sg.enable_virtual_node_label,
                        "peer_attributes": sg.peer_attributes,
                        "database_name_attributes": sg.database_name_attributes,
                    },
                },
                "storage": {
                    "path": rw.dir.display().to_string(),
                    "remote_write_add_org_id_header": rw.add_org_id_header,
                    "remote_write_flush_deadline": go_dur(rw.flush_deadline),
                    "max_queue_bytes": rw.max_queue_bytes,
                    "remote_write": rw.endpoints.iter().map(|e| json!({
                        "name": e.name,
                        "url": e.url,
                        "send_exemplars": e.send_exemplars,
                        "headers": e.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                        "remote_timeout": go_dur(e.timeout),
                    })).collect::<Vec<_>>(),
                },
            });
        }
        // Only when configured: an empty `ring:` would read back as a ring without members.
        if let Some(r) = &self.ingester.ring {
            out["ingester"]["ring"] = json!({
                "instance_id": r.instance_id.trim(),
                "members": r.members.iter().map(|m| json!({
                    "id": m.id.trim(),
                    "address": m.address.trim().trim_end_matches('/'),
                })).collect::<Vec<_>>(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_does_and_parse_back() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(336 * 3600), "336h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_micros(250), "250us"),
        ] {
            assert_eq!(go_dur(d), s);
            assert_eq!(super::super::parse_duration(s).unwrap(), d, "{s}");
        }
    }
}
