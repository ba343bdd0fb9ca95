//! Per-tenant limits (Tempo's `overrides`) and the ingestion rate limiter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One tenant's ingest limits; 0 means unlimited except where noted.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Sustained ingestion rate in bytes per second (Tempo default 15 MB/s).
    pub rate_limit_bytes: u64,
    /// Bytes that may arrive at once above the rate (Tempo default 20 MB).
    pub burst_size_bytes: u64,
    /// Live traces per tenant (Tempo's `max_traces_per_user`).
    pub max_traces_per_user: usize,
    /// Bytes one trace may hold in the live head (Tempo default 5 MB).
    pub max_bytes_per_trace: usize,
    /// Attribute values longer than this are cut to it (bytes; 0 keeps them whole).
    pub max_attribute_bytes: usize,
    /// Attribute keys longer than this are cut to it (bytes; 0 keeps them whole).
    pub max_attribute_key_bytes: usize,
    /// Span names longer than this are cut to it (bytes; 0 keeps them whole).
    pub max_span_name_bytes: usize,
    /// Attributes kept per list (span, resource, scope, event, link); the rest are dropped and
    /// counted in the list's `dropped_attributes_count` (0: keep all).
    pub max_attributes_per_span: usize,
    /// Bytes this tenant's head may hold, a share of the ingester's `max_head_bytes` (0: no
    /// share of its own, up to the whole budget).
    pub max_head_bytes: u64,
    /// Spans that started longer ago than this are refused (0: no limit).
    pub max_span_age: Duration,
    /// Spans that start further ahead of this server's clock than this are refused (0: no
    /// limit).
    pub max_span_future: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_limit_bytes: 15_000_000,
            burst_size_bytes: 20_000_000,
            max_traces_per_user: 10_000,
            max_bytes_per_trace: 5_000_000,
            max_attribute_bytes: 2048,
            max_attribute_key_bytes: 256,
            max_span_name_bytes: 2048,
            max_attributes_per_span: 256,
            max_head_bytes: 0,
            // Tempo's default block retention: an older span would be deleted as it lands.
            max_span_age: Duration::from_secs(14 * 24 * 3600),
            max_span_future: Duration::from_secs(3600),
        }
    }
}

/// Default limits plus per-tenant replacements.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Limits of tenants without an entry of their own.
    pub defaults: Limits,
    /// Tenants with their own limits.
    pub per_tenant: HashMap<String, Limits>,
}

impl Overrides {
    /// The limits of `tenant`.
    pub fn limits(&self, tenant: &str) -> &Limits {
        self.per_tenant.get(tenant).unwrap_or(&self.defaults)
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per tenant over request bytes (Tempo's `local` rate strategy).
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes `bytes` from `tenant`'s bucket, or says why it cannot.
    pub fn take(&self, tenant: &str, limits: &Limits, bytes: u64) -> Result<(), String> {
        self.take_at(tenant, limits, bytes, Instant::now())
    }

    fn take_at(
        &self,
        tenant: &str,
        limits: &Limits,
        bytes: u64,
        now: Instant,
    ) -> Result<(), String> {
        if limits.rate_limit_bytes == 0 {
            return Ok(());
        }
        let burst = limits.burst_size_bytes.max(limits.rate_limit_bytes) as f64;
        if bytes as f64 > burst {
            return Err(format!(
                "RATE_LIMITED: batch of {bytes} bytes exceeds tenant {tenant}'s burst size of {burst} bytes; send smaller batches"
            ));
        }
        let mut buckets = self.buckets.lock();
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * limits.rate_limit_bytes as f64).min(burst);
        b.at = now;
        if b.tokens < bytes as f64 {
            return Err(format!(
                "RATE_LIMITED: ingestion rate limit ({} bytes/s, burst {burst} bytes) exceeded for tenant {tenant} while adding {bytes} bytes; retry later",
                limits.rate_limit_bytes
            ));
        }
        b.tokens -= bytes as f64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let l = Limits {
            rate_limit_bytes: 1000,
            burst_size_bytes: 2000,
            ..Limits::default()
        };
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert!(r.take_at("a", &l, 1500, t0).is_ok());
        assert!(r.take_at("a", &l, 600, t0).is_err(), "only 500 left");
        assert!(r.take_at("a", &l, 500, t0).is_ok());
        // Another tenant has its own bucket.
        assert!(r.take_at("b", &l, 2000, t0).is_ok());
        // Half a second refills 500 bytes.
        assert!(
            r.take_at("a", &l, 600, t0 + Duration::from_millis(500))
                .is_err()
        );
        assert!(
            r.take_at("a", &l, 500, t0 + Duration::from_millis(500))
                .is_ok()
        );
        // Never above the burst.
        assert!(
            r.take_at("a", &l, 2001, t0 + Duration::from_secs(100))
                .unwrap_err()
                .contains("burst size")
        );
        let unlimited = Limits {
            rate_limit_bytes: 0,
            ..Limits::default()
        };
        assert!(r.take_at("a", &unlimited, u64::MAX, t0).is_ok());
    }
}
