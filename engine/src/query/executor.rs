//! Where queries run, and the budget each one runs under.
//!
//! Queries get a thread pool of their own instead of sharing the runtime that serves ingest
//! and health checks. DataFusion polls CPU-bound work a batch at a time, and one expensive batch
//! (a long regex over 8,192 span names, a wide decode) holds its worker until it is done: two
//! such queries once took both workers of the shared runtime on a 2-core machine, and `/ready`
//! and OTLP exports waited 91 s behind them. Query threads also run at a lower OS priority
//! ([`QUERY_NICE`]), so when every core is busy the scheduler gives ingest the CPU first (and
//! queries get it before background work; see [`crate::priority`]).
//!
//! A query is one task on that pool, watched from the caller's side:
//! - it is aborted when the caller stops waiting for it (an HTTP client that went away drops
//!   the handler's future) or when its time budget ends, so nothing keeps burning CPU for an
//!   answer nobody will read; an abort lands at the operator's next batch;
//! - it holds a slot of each of its tenants' concurrency (`max_concurrent_queries`), waiting in
//!   a bounded queue for one, so one tenant's dashboard cannot occupy the pool;
//! - it gets a DataFusion memory pool of its own (`max_memory_per_query_bytes`): operators that
//!   track memory (aggregations, sorts, the per-trace stage) spill or fail with a clear error
//!   naming the limit instead of growing until the process is killed.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::error::{EngineError, Result};
use crate::priority::{QUERY_NICE, set_thread_nice};

/// The config key of the time budget.
const TIMEOUT_KEY: &str = "querier.search.query_timeout";

/// One tenant's query budget (`overrides.*.read`).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantQueryLimits {
    /// Queries of the tenant running at once; more wait in a queue.
    pub max_concurrent_queries: usize,
    /// Queries of the tenant waiting for a slot; more are refused (429).
    pub max_queued_queries: usize,
    /// Memory one query's operators may hold (bytes).
    pub max_memory_per_query_bytes: usize,
    /// Bytes of values one tag-values answer may hold (Tempo's
    /// `max_bytes_per_tag_values_query`); 0 = unlimited.
    pub max_bytes_per_tag_values_query: usize,
}

impl Default for TenantQueryLimits {
    fn default() -> Self {
        Self {
            max_concurrent_queries: 8,
            max_queued_queries: 100,
            max_memory_per_query_bytes: 1 << 30,
            max_bytes_per_tag_values_query: 5_000_000,
        }
    }
}

/// Query budgets of every tenant, and the pool they run on.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    /// Longest a query may take, queueing included (`querier.search.query_timeout`).
    pub timeout: Duration,
    /// Query threads (`querier.query_threads`; 0 = one per core).
    pub threads: usize,
    /// Budget of tenants without their own.
    pub defaults: TenantQueryLimits,
    /// Tenants with their own budget.
    pub per_tenant: HashMap<String, TenantQueryLimits>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            threads: 0,
            defaults: TenantQueryLimits::default(),
            per_tenant: HashMap::new(),
        }
    }
}

impl QueryLimits {
    /// The budget of `tenant`.
    pub fn tenant(&self, tenant: &str) -> &TenantQueryLimits {
        self.per_tenant.get(tenant).unwrap_or(&self.defaults)
    }

    /// The budget of a query over `tenants`: the tightest of theirs.
    pub fn of(&self, tenants: &[String]) -> TenantQueryLimits {
        let mut out = self.defaults.clone();
        if let Some(first) = tenants.first() {
            out = self.tenant(first).clone();
        }
        for t in tenants.iter().skip(1) {
            let l = self.tenant(t);
            out.max_memory_per_query_bytes = out
                .max_memory_per_query_bytes
                .min(l.max_memory_per_query_bytes);
            out.max_bytes_per_tag_values_query = match (
                out.max_bytes_per_tag_values_query,
                l.max_bytes_per_tag_values_query,
            ) {
                (0, b) | (b, 0) => b,
                (a, b) => a.min(b),
            };
        }
        out
    }
}

/// A tenant's running and waiting queries.
struct TenantSlots {
    running: Arc<Semaphore>,
    /// Queries waiting for a slot now.
    waiting: std::sync::atomic::AtomicUsize,
}

/// How queries ended, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Failed (the user's mistake or ours).
    Error,
    /// Stopped at the time budget.
    Timeout,
    /// Stopped because the caller went away.
    Cancelled,
    /// Refused: the tenant had too many queries.
    Refused,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Refused => "refused",
        }
    }
}

/// Query counts: tasks alive on the query threads, and outcomes.
#[derive(Debug, Default)]
struct Stats {
    running: AtomicUsize,
    outcomes: [AtomicU64; 5],
}

impl Stats {
    fn count(&self, o: Outcome) {
        self.outcomes[o as usize].fetch_add(1, Relaxed);
    }
}

/// Lowers a counter when dropped (a query task ending or aborted).
struct Running(Arc<Stats>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Relaxed);
    }
}

/// Counts a caller that went away before its query ended as cancelled.
struct Waiting<'a> {
    stats: &'a Stats,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stats.count(Outcome::Cancelled);
        }
    }
}

/// Runs queries on their own lower-priority threads under their tenants' budgets.
pub struct QueryExecutor {
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
    limits: QueryLimits,
    slots: Mutex<HashMap<String, Arc<TenantSlots>>>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for QueryExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryExecutor")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Aborts a task when dropped: the caller stopped waiting.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QueryExecutor {
    /// Starts the query threads.
    pub fn start(limits: QueryLimits) -> Result<Self> {
        let threads = match limits.threads {
            0 => std::thread::available_parallelism().map_or(2, NonZeroUsize::get),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("allegro-query")
            .on_thread_start(|| set_thread_nice(QUERY_NICE))
            .enable_all()
            .build()
            .map_err(|e| EngineError::Internal(format!("cannot start the query threads: {e}")))?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            limits,
            slots: Mutex::new(HashMap::new()),
            stats: Arc::default(),
        })
    }

    /// Query tasks alive on the query threads now.
    pub fn running(&self) -> usize {
        self.stats.running.load(Relaxed)
    }

    /// The query metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            out,
            "# HELP allegro_queries_running Queries running on the query threads.\n\
             # TYPE allegro_queries_running gauge\nallegro_queries_running {}",
            self.running()
        );
        let _ = writeln!(
            out,
            "# HELP allegro_queries_total Queries by outcome (timeout: over \
             querier.search.query_timeout; cancelled: the client went away; refused: over \
             max_concurrent_queries and max_queued_queries).\n# TYPE allegro_queries_total counter"
        );
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "allegro_queries_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.stats.outcomes[o as usize].load(Relaxed)
            );
        }
    }

    /// The budgets in force.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// A memory pool for one query over `tenants`.
    pub fn memory_pool(&self, tenants: &[String]) -> Arc<dyn MemoryPool> {
        let limit = self.limits.of(tenants).max_memory_per_query_bytes;
        Arc::new(TrackConsumersPool::new(
            GreedyMemoryPool::new(limit),
            NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        ))
    }

    fn slots(&self, tenant: &str) -> Arc<TenantSlots> {
        let mut slots = self.slots.lock();
        slots
            .entry(tenant.to_string())
            .or_insert_with(|| {
                Arc::new(TenantSlots {
                    running: Arc::new(Semaphore::new(
                        self.limits.tenant(tenant).max_concurrent_queries.max(1),
                    )),
                    waiting: Default::default(),
                })
            })
            .clone()
    }

    /// Takes a running slot of each tenant (in name order, so two multi-tenant queries cannot
    /// wait on each other), waiting until `deadline`.
    async fn admit(
        &self,
        tenants: &[String],
        deadline: Instant,
    ) -> Result<Vec<OwnedSemaphorePermit>> {
        let mut sorted: Vec<&String> = tenants.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut permits = Vec::with_capacity(sorted.len());
        for t in sorted {
            let slots = self.slots(t);
            if let Ok(p) = slots.running.clone().try_acquire_owned() {
                permits.push(p);
                continue;
            }
            let limits = self.limits.tenant(t);
            if slots.waiting.fetch_add(1, Relaxed) >= limits.max_queued_queries {
                slots.waiting.fetch_sub(1, Relaxed);
                return Err(EngineError::TooManyQueries(format!(
                    "tenant {t} has {} queries running and {} waiting \
                     (overrides.read.max_concurrent_queries, max_queued_queries); retry shortly",
                    limits.max_concurrent_queries, limits.max_queued_queries
                )));
            }
            let got =
                tokio::time::timeout_at(deadline, slots.running.clone().acquire_owned()).await;
            slots.waiting.fetch_sub(1, Relaxed);
            match got {
                Ok(Ok(p)) => permits.push(p),
                Ok(Err(_)) => return Err(EngineError::Internal("query slots closed".into())),
                Err(_) => return Err(self.timed_out()),
            }
        }
        Ok(permits)
    }

    fn timed_out(&self) -> EngineError {
        EngineError::Budget {
            limit: TIMEOUT_KEY.into(),
            message: format!(
                "the query did not finish within {} and was stopped; narrow its time range or \
                 its conditions",
                humantime::format_duration(self.limits.timeout)
            ),
        }
    }

    /// Runs `query` for `tenants` on the query threads under their budget. Dropping the
    /// returned future, or reaching the time budget, aborts the query.
    pub async fn run<T, F>(&self, tenants: &[String], query: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let mut waiting = Waiting {
            stats: &self.stats,
            done: false,
        };
        let r = self.run_counted(tenants, query).await;
        waiting.done = true;
        self.stats.count(match &r {
            Ok(_) => Outcome::Ok,
            Err(EngineError::TooManyQueries(_)) => Outcome::Refused,
            Err(EngineError::Budget { limit, .. }) if limit == TIMEOUT_KEY => Outcome::Timeout,
            Err(_) => Outcome::Error,
        });
        r
    }

    async fn run_counted<T, F>(&self, tenants: &[String], query: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let deadline = Instant::now() + self.limits.timeout;
        let _permits = self.admit(tenants, deadline).await?;
        self.stats.running.fetch_add(1, Relaxed);
        let running = Running(self.stats.clone());
        let task = self.handle.spawn(async move {
            let _running = running;
            query.await
        });
        let _abort = AbortOnDrop(task.abort_handle());
        match tokio::time::timeout_at(deadline, task).await {
            Err(_) => Err(self.timed_out()),
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_panic() => {
                let p = e.into_panic();
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(EngineError::Internal(format!("the query panicked: {what}")))
            }
            Ok(Err(_)) => Err(EngineError::Internal("the query was cancelled".into())),
        }
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        let Some(rt) = self.runtime.lock().take() else {
            return;
        };
        // A runtime cannot be shut down from one of its own threads; hand it to another.
        let own = Handle::try_current().is_ok_and(|h| h.id() == self.handle.id());
        if own {
            let _ = std::thread::Builder::new()
                .name("allegro-query-stop".into())
                .spawn(move || rt.shutdown_background());
        } else {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrent: usize, queued: usize, timeout: Duration) -> QueryLimits {
        QueryLimits {
            timeout,
            threads: 1,
            defaults: TenantQueryLimits {
                max_concurrent_queries: concurrent,
                max_queued_queries: queued,
                ..Default::default()
            },
            per_tenant: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn a_query_that_outlives_its_budget_is_stopped() {
        let ex = QueryExecutor::start(limits(1, 1, Duration::from_millis(200))).unwrap();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = stopped.clone();
        let e = ex
            .run(&["t".into()], async move {
                // Never finishes on its own; the abort drops it at the sleep.
                struct Mark(Arc<std::sync::atomic::AtomicBool>);
                impl Drop for Mark {
                    fn drop(&mut self) {
                        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                flag.store(false, std::sync::atomic::Ordering::SeqCst);
                let _m = Mark(flag);
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(
            matches!(&e, EngineError::Budget { limit, .. } if limit == "querier.search.query_timeout"),
            "{e}"
        );
        // The abort is asynchronous; the task is gone well within a second.
        for _ in 0..100 {
            if stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the query task still runs after its budget ended");
    }

    #[tokio::test]
    async fn a_query_whose_caller_goes_away_stops_running() {
        let ex = QueryExecutor::start(limits(1, 1, Duration::from_secs(60))).unwrap();
        let tenants = ["t".to_string()];
        let call = ex.run(&tenants, async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        // The caller gives up (an HTTP client that disconnected drops the handler's future).
        assert!(
            tokio::time::timeout(Duration::from_millis(100), call)
                .await
                .is_err()
        );
        for _ in 0..100 {
            if ex.running() == 0 {
                let mut m = String::new();
                ex.render_metrics(&mut m);
                assert!(
                    m.contains("allegro_queries_total{outcome=\"cancelled\"} 1"),
                    "{m}"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the query still runs after its caller went away");
    }

    #[tokio::test]
    async fn a_tenant_over_its_slots_and_queue_is_refused_and_others_still_run() {
        let ex = Arc::new(QueryExecutor::start(limits(1, 1, Duration::from_secs(10))).unwrap());
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let ex = ex.clone();
            tokio::spawn(async move {
                ex.run(&["a".into()], async move {
                    let _ = hold.await;
                    Ok(1)
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let queued = {
            let ex = ex.clone();
            tokio::spawn(async move { ex.run(&["a".into()], async { Ok(2) }).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One running, one waiting: the third is over the queue.
        let e = ex.run(&["a".into()], async { Ok(3) }).await.unwrap_err();
        assert!(matches!(e, EngineError::TooManyQueries(_)), "{e}");
        // Another tenant is not held up by tenant a.
        assert_eq!(ex.run(&["b".into()], async { Ok(4) }).await.unwrap(), 4);
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(queued.await.unwrap().unwrap(), 2);
    }

    #[test]
    fn a_query_hogging_its_threads_leaves_the_callers_runtime_free() {
        // One thread serves the caller: had the query run on it, nothing else could until the
        // query's blocking work ended.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ex = QueryExecutor::start(limits(1, 1, Duration::from_secs(30))).unwrap();
            let tenants = ["t".to_string()];
            let busy = ex.run(&tenants, async {
                // A CPU-bound batch: no await point for a long time.
                std::thread::sleep(Duration::from_millis(800));
                Ok("query")
            });
            let ticks = async {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Ok("ticks")
            };
            let first = tokio::select! {
                biased;
                r = ticks => r,
                r = busy => r,
            };
            assert_eq!(first.unwrap(), "ticks");
        });
    }

    #[test]
    fn a_multi_tenant_query_gets_the_tightest_budget() {
        let mut l = QueryLimits::default();
        l.per_tenant.insert(
            "small".into(),
            TenantQueryLimits {
                max_memory_per_query_bytes: 10,
                max_bytes_per_tag_values_query: 0,
                ..Default::default()
            },
        );
        let b = l.of(&["big".into(), "small".into()]);
        assert_eq!(b.max_memory_per_query_bytes, 10);
        assert_eq!(b.max_bytes_per_tag_values_query, 5_000_000);
    }
}
