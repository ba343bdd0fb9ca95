//! The benchmark suites.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_datasets::Generator;
use allegro_engine::block::writer::encode_block;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::ids::TraceId;
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::trace::v1::ResourceSpans;
use prost::Message;
use serde_json::json;

use crate::Common;
use crate::dataset::{self, TENANT, gen_options};
use crate::report::{Latency, emit, peak_rss};

/// Encodes blocks of `block_spans` spans on one thread, repeatedly.
pub async fn block_write(c: &Common) -> Result<(), String> {
    let spans = c.block_spans.min(c.spans);
    let mut g = Generator::new(gen_options(c));
    let mut chunk: Vec<ResourceSpans> = Vec::new();
    while g.spans_produced() < spans {
        match g.next_trace() {
            Some(t) => chunk.extend(t),
            None => break,
        }
    }
    let n = allegro_engine::convert::normalize::span_count(&chunk) as u64;
    let otlp_bytes = ExportTraceServiceRequest {
        resource_spans: chunk.clone(),
    }
    .encode_to_vec()
    .len() as u64;
    let opts = dataset::write_options(c)?;
    let mut times = Vec::new();
    let mut cpu = Vec::new();
    let mut size = 0;
    for i in 0..c.warmup + c.reps {
        let input = flatten(chunk.clone()).0;
        let t0 = Instant::now();
        let c0 = crate::ingest::proc_cpu_secs(std::process::id());
        // Two threads: conversion to Arrow here, Parquet encoding on the encoder's own thread.
        let block = tokio::task::block_in_place(|| encode_block(TENANT, input, &opts))
            .map_err(|e| e.to_string())?;
        let took = t0.elapsed();
        let cpu_secs = crate::ingest::proc_cpu_secs(std::process::id()) - c0;
        size = block.meta.size + block.meta.bloom_size;
        if i >= c.warmup {
            times.push(took);
            cpu.push(cpu_secs);
        }
    }
    cpu.sort_by(f64::total_cmp);
    let cpu_median = cpu.get(cpu.len() / 2).copied().unwrap_or(0.0);
    // Where the time goes, measured once outside the timed runs.
    let mut input = flatten(chunk.clone()).0;
    let t0 = Instant::now();
    allegro_engine::nested_set::prepare_traces(&mut input);
    let t_prepare = t0.elapsed();
    let t0 = Instant::now();
    let hot = opts.hot.choose(&input);
    let t_hot = t0.elapsed();
    let t0 = Instant::now();
    let mut batches = Vec::new();
    for c in input.chunks(opts.batch_rows) {
        batches.push(
            allegro_engine::convert::to_arrow::spans_to_batch(c, &hot)
                .map_err(|e| e.to_string())?,
        );
    }
    let t_arrow = t0.elapsed();
    let phases = json!({
        "sort_and_nested_sets_ms": t_prepare.as_secs_f64() * 1e3,
        "choose_hot_columns_ms": t_hot.as_secs_f64() * 1e3,
        "to_arrow_ms": t_arrow.as_secs_f64() * 1e3,
    });
    let lat = Latency::of(times.clone());
    let median = Duration::from_secs_f64(lat.p50_ms / 1e3);
    let report = json!({
        "suite": "block-write",
        "compression": c.compression,
        "spans_per_block": n,
        "reps": c.reps,
        "encode_ms": lat,
        "spans_per_second": n as f64 / median.as_secs_f64(),
        "cpu_ms_median": cpu_median * 1e3,
        "spans_per_cpu_second": n as f64 / cpu_median.max(1e-9),
        "phases": phases,
        "block_bytes": size,
        "bytes_per_span": size as f64 / n as f64,
        "otlp_protobuf_bytes": otlp_bytes,
        "otlp_bytes_per_span": otlp_bytes as f64 / n as f64,
        "compression_vs_otlp_protobuf": otlp_bytes as f64 / size as f64,
        "peak_rss_bytes": peak_rss(),
    });
    emit("block-write", &report, c.json.as_deref())
}

/// Looks traces up by ID over the cached dataset, cold and warm.
pub async fn trace_by_id(c: &Common, lookups: usize) -> Result<(), String> {
    let (_, dir, info) = dataset::ensure(c).await?;
    let catalog = Catalog::new(dataset::local_store(&dir)?, CatalogConfig::default());
    let blocks = catalog.blocks(TENANT).await.map_err(|e| e.to_string())?;
    // Real IDs spread over every block (each block's smallest and largest), plus absent ones.
    let mut present: Vec<TraceId> = Vec::new();
    for b in blocks.iter() {
        for id in [&b.min_id, &b.max_id] {
            present.push(TraceId::parse_hex(id).map_err(|e| e.to_string())?);
        }
    }
    let present: Vec<TraceId> = present.iter().cycle().take(lookups).copied().collect();
    let absent: Vec<TraceId> = (0..lookups as u64)
        .map(|i| {
            TraceId::parse_hex(&format!("{:032x}", i * 0x9e37_79b9_7f4a_7c15 + 1))
                .unwrap_or_default()
        })
        .collect();

    // Cold: a fresh catalog per lookup.
    let (cold, cold_bytes) =
        dataset::cold_trace_lookups(&dir, &present[..present.len().min(100)]).await?;
    let n_cold = cold.len().max(1) as u64;

    // Warm: one catalog, caches filled by the warm-up pass.
    for _ in 0..c.warmup {
        for id in &present {
            catalog
                .find_trace(TENANT, id, None)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let (_, before) = catalog.read_counters();
    let mut warm = Vec::new();
    let mut blocks_read = 0;
    let t_all = Instant::now();
    for _ in 0..c.reps {
        for id in &present {
            let t0 = Instant::now();
            let found = catalog
                .find_trace(TENANT, id, None)
                .await
                .map_err(|e| e.to_string())?;
            warm.push(t0.elapsed());
            blocks_read += found.blocks_read;
        }
    }
    let warm_secs = t_all.elapsed().as_secs_f64();
    let warm_n = warm.len().max(1);
    let warm_bytes = (catalog.read_counters().1 - before) / warm_n as u64;
    let mut miss = Vec::new();
    for id in &absent {
        let t0 = Instant::now();
        catalog
            .find_trace(TENANT, id, None)
            .await
            .map_err(|e| e.to_string())?;
        miss.push(t0.elapsed());
    }
    let concurrency = Arc::new(catalog);
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for chunk in present.chunks(present.len().div_ceil(8).max(1)) {
        let cat = concurrency.clone();
        let ids = chunk.to_vec();
        handles.push(tokio::spawn(async move {
            for id in ids {
                let _ = cat.find_trace(TENANT, &id, None).await;
            }
        }));
    }
    for h in handles {
        h.await.map_err(|e| e.to_string())?;
    }
    let concurrent_rate = present.len() as f64 / t0.elapsed().as_secs_f64();
    let report = json!({
        "suite": "trace-by-id",
        "compression": c.compression,
        "dataset": { "spans": info.spans, "traces": info.traces, "blocks": info.blocks, "data_bytes": info.data_bytes,
                     "bytes_per_span": info.data_bytes as f64 / info.spans as f64 },
        "cold": { "latency": Latency::of(cold), "bytes_read_per_lookup": cold_bytes / n_cold },
        "warm": { "latency": Latency::of(warm), "bytes_read_per_lookup": warm_bytes,
                  "blocks_read_per_lookup": blocks_read as f64 / warm_n as f64,
                  "lookups_per_second_serial": warm_n as f64 / warm_secs,
                  "lookups_per_second_8_concurrent": concurrent_rate },
        "absent_ids_warm": { "latency": Latency::of(miss) },
        "peak_rss_bytes": peak_rss(),
    });
    emit("trace-by-id", &report, c.json.as_deref())
}
