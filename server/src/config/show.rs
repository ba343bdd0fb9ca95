//! The effective configuration, with every default filled in, as `allegro config check` prints
//! it (Tempo's key names; durations in Go's notation).

use std::time::Duration;

use allegro_ingest::generator::{Parts, Processors, TenantSettings};
use allegro_ingest::limits::Limits;
use serde_json::{Value, json};

use super::{Config, ConfigError};

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

fn limits(l: &Limits) -> Value {
    json!({
        "ingestion": {
            "rate_limit_bytes": l.rate_limit_bytes,
            "burst_size_bytes": l.burst_size_bytes,
            "max_traces_per_user": l.max_traces_per_user,
            "max_attribute_bytes": l.max_attribute_bytes,
        },
        "global": { "max_bytes_per_trace": l.max_bytes_per_trace },
    })
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

impl Config {
    /// Every setting in effect, defaults included.
    pub fn effective(&self) -> Result<Value, ConfigError> {
        let ing = self.ingester_config()?;
        let tm = self.traceql_metrics()?.limits;
        let r = self.distributor.effective_receivers();
        let otlp = r.otlp.unwrap_or_default().protocols;
        let overrides = ing.overrides.clone();
        let mut per_tenant = serde_json::Map::new();
        let generator = self.generator()?;
        let tenant_gen = |s: &TenantSettings| {
            json!({
                "processors": processor_names(&s.processors),
                "max_active_series": s.max_active_series,
                "collection_interval": s.collection_interval.map(dur),
            })
        };
        let mut tenants: Vec<&String> = self.overrides.per_tenant.keys().collect();
        tenants.sort();
        for t in tenants {
            let mut v = limits(overrides.limits(t));
            if let Some(g) = &generator {
                v["metrics_generator"] = tenant_gen(g.generator.tenant(t));
            }
            per_tenant.insert(t.clone(), v);
        }
        let mut defaults = limits(&overrides.defaults);
        if let Some(g) = &generator {
            defaults["metrics_generator"] = tenant_gen(&g.generator.defaults);
        }
        let mut out = json!({
            "multitenancy_enabled": self.multitenancy_enabled,
            "stream_over_http_enabled": self.stream_over_http_enabled.unwrap_or(true),
            "server": {
                "http_listen_address": self.server.http_listen_address,
                "http_listen_port": self.server.http_listen_port,
                "http_api_prefix": self.server.http_api_prefix,
            },
            "distributor": { "receivers": {
                "otlp_grpc": otlp.grpc.map(|g| g.endpoint),
                "otlp_http": otlp.http.map(|h| h.endpoint),
                "zipkin": r.zipkin.map(|z| z.endpoint),
            }},
            "storage": { "trace": {
                "backend": self.storage.trace.backend,
                "wal": { "path": ing.wal.dir.display().to_string() },
                "block": {
                    "row_group_rows": ing.block.row_group_rows,
                },
            }},
            "ingester": {
                "trace_idle_period": dur(ing.cut.trace_idle_period),
                "max_trace_live": dur(ing.cut.max_trace_live),
                "max_block_duration": dur(ing.cut.max_block_duration),
                "max_block_bytes": ing.cut.max_block_bytes,
                "flush_check_period": dur(ing.flush_check_period),
                "max_head_bytes": ing.max_head_bytes,
            },
            "overrides": { "defaults": defaults, "per_tenant": per_tenant },
            "query_frontend": { "metrics": {
                "max_duration": dur(tm.max_duration),
                "max_intervals": tm.max_intervals,
                "max_exemplars": tm.max_exemplars,
                "max_response_series": tm.max_series,
                "query_backend_after": dur(tm.recent_window),
                "sample_target_spans": tm.sample_target_spans,
            }},
            "metrics_generator": Value::Null,
        });
        if self.storage.trace.backend == "local" {
            out["storage"]["trace"]["local"] =
                json!({ "path": self.storage.trace.local.path.display().to_string() });
        }
        if let Some(g) = generator {
            let c = &g.generator;
            let reg = &c.registry;
            let sm = &c.span_metrics;
            let sg = &c.service_graphs;
            let rw = &g.remote_write;
            out["metrics_generator"] = json!({
                "registry": {
                    "collection_interval": dur(reg.collection_interval),
                    "stale_duration": dur(reg.stale_duration),
                    "max_label_name_length": reg.max_label_name_length,
                    "max_label_value_length": reg.max_label_value_length,
                    "external_labels": reg.external_labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                    "inject_tenant_id_as": reg.inject_tenant_id_as,
                },
                "metrics_ingestion_time_range_slack": dur(c.ingestion_slack),
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
                        "dimension_mappings": sm.dimension_mappings.len(),
                        "filter_policies": sm.filter_policies.len(),
                        "enable_target_info": sm.enable_target_info,
                        "span_multiplier_key": sm.span_multiplier_key,
                    },
                    "service_graphs": {
                        "wait": dur(sg.wait),
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
                    "remote_write_flush_deadline": dur(rw.flush_deadline),
                    "max_queue_bytes": rw.max_queue_bytes,
                    // Header values may hold credentials; only their names are shown.
                    "remote_write": rw.endpoints.iter().map(|e| json!({
                        "name": e.name,
                        "url": e.url,
                        "send_exemplars": e.send_exemplars,
                        "headers": e.headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                        "remote_timeout": dur(e.timeout),
                    })).collect::<Vec<_>>(),
                },
            });
        }
        Ok(out)
    }
}
