//! The trace generator: realistic request flows through the shop, deterministic for a seed.

use std::collections::BTreeMap;

use allegro_engine::otlp::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use allegro_engine::otlp::resource::v1::Resource;
use allegro_engine::otlp::trace::v1::span::{Event, Link, SpanKind};
use allegro_engine::otlp::trace::v1::status::StatusCode;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::rng::Rng;
use crate::topology::{EXCEPTIONS, SERVICES, Work, ids::*, scope_for};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Seed: the same seed and options give the same spans.
    pub seed: u64,
    /// Stop after the trace that reaches this many spans.
    pub spans: u64,
    /// Start of the time window, unix nanoseconds.
    pub start_unix_nano: u64,
    /// Length of the window; traces are spread over it in order.
    pub duration_nano: u64,
}

const MS: u64 = 1_000_000;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}
fn ks(k: &str, v: impl Into<String>) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}
fn ki(k: &str, v: i64) -> KeyValue {
    kv(k, Value::IntValue(v))
}

/// A producer span waiting for a consumer in a later trace.
#[derive(Debug, Clone)]
struct Pending {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    order: u64,
}

/// Generates traces one at a time.
pub struct Generator {
    rng: Rng,
    opts: GenOptions,
    resources: Vec<Vec<Resource>>,
    produced: u64,
    traces: u64,
    pending: Vec<Pending>,
}

impl Generator {
    /// A generator for `opts`.
    pub fn new(opts: GenOptions) -> Self {
        let mut rng = Rng::new(opts.seed);
        let resources = SERVICES
            .iter()
            .map(|s| (0..=s.pods).map(|pod| resource(&mut rng, s, pod)).collect())
            .collect();
        Self {
            rng,
            opts,
            resources,
            produced: 0,
            traces: 0,
            pending: Vec::new(),
        }
    }

    /// Spans produced so far.
    pub fn spans_produced(&self) -> u64 {
        self.produced
    }

    /// Traces produced so far.
    pub fn traces_produced(&self) -> u64 {
        self.traces
    }

    /// The next trace, grouped by resource and scope; `None` once the span target is reached.
    pub fn next_trace(&mut self) -> Option<Vec<ResourceSpans>> {
        if self.produced >= self.opts.spans {
            return None;
        }
        let frac = self.produced as f64 / self.opts.spans.max(1) as f64;
        let start = self.opts.start_unix_nano
            + (self.opts.duration_nano as f64 * frac) as u64
            + self.rng.range(0, 50 * MS);
        let staging = self.rng.chance(0.08);
        let mut tb = TraceBuilder {
            rng: &mut self.rng,
            trace_id: Vec::new(),
            spans: Vec::new(),
            pods: [usize::MAX; 16],
            staging,
            user: 0,
            pending_out: Vec::new(),
        };
        tb.trace_id = tb.rng.id::<16>().to_vec();
        tb.user = tb.rng.range(1, 250_000);
        let weights = [
            25.0,
            25.0,
            14.0,
            8.0,
            5.0,
            12.0,
            1.5,
            1.0,
            if self.pending.len() >= 3 { 4.0 } else { 0.0 },
        ];
        match tb.rng.weighted(&weights) {
            0 => entry_http(&mut tb, "GET", "/", "/", start, home),
            1 => {
                let id = tb.rng.range(1000, 99_999);
                entry_http(
                    &mut tb,
                    "GET",
                    "/product/{id}",
                    &format!("/product/{id}"),
                    start,
                    product_page,
                )
            }
            2 => {
                let q = *tb.rng.pick(&[
                    "shoes",
                    "red+dress",
                    "laptop",
                    "coffee+beans",
                    "headphones",
                    "desk+lamp",
                ]);
                entry_http(
                    &mut tb,
                    "GET",
                    "/search",
                    &format!("/search?q={q}"),
                    start,
                    search,
                )
            }
            3 => entry_http(
                &mut tb,
                "POST",
                "/cart/checkout",
                "/cart/checkout",
                start,
                checkout,
            ),
            4 => entry_http(&mut tb, "POST", "/login", "/login", start, login),
            5 => healthz(&mut tb, start),
            6 => inventory_import(&mut tb, start),
            7 => graph_query(&mut tb, start),
            _ => {
                let n = tb.rng.range(2, 6).min(self.pending.len() as u64) as usize;
                let batch: Vec<Pending> = self.pending.drain(..n).collect();
                consume_batch(&mut tb, start, &batch)
            }
        };
        let TraceBuilder {
            spans,
            pods,
            pending_out,
            ..
        } = tb;
        self.pending.extend(pending_out);
        if self.pending.len() > 64 {
            self.pending.drain(..self.pending.len() - 64);
        }
        self.produced += spans.len() as u64;
        self.traces += 1;
        Some(group(spans, &pods, &self.resources))
    }
}

fn resource(rng: &mut Rng, s: &crate::topology::Service, pod: usize) -> Resource {
    let staging = pod == s.pods;
    let cluster = if staging {
        "staging-us-east-1"
    } else if pod.is_multiple_of(2) {
        "prod-us-east-1"
    } else {
        "prod-eu-west-1"
    };
    let region = &cluster[cluster.find('-').map_or(0, |i| i + 1)..];
    let hash: String = (0..10)
        .map(|_| {
            *rng.pick(&[
                'b', 'c', 'd', 'f', 'g', 'h', 'j', 'k', 'l', 'm', 'n', 'p', 'q', 'r', '2', '4',
                '5', '7', '9',
            ])
        })
        .collect();
    let suffix: String = (0..5)
        .map(|_| *rng.pick(&['x', 'z', 'v', 'w', 't', 's', '6', '8']))
        .collect();
    let node = format!(
        "ip-10-{}-{}-{}.ec2.internal",
        rng.range(0, 8),
        rng.range(0, 255),
        rng.range(1, 255)
    );
    let instance = hex::encode(rng.id::<16>());
    Resource {
        attributes: vec![
            ks("service.name", s.name),
            ks("service.namespace", "shop"),
            ks(
                "service.version",
                if staging {
                    format!("{}-rc.1", s.version)
                } else {
                    s.version.to_string()
                },
            ),
            ks("service.instance.id", instance),
            ks(
                "deployment.environment",
                if staging { "staging" } else { "production" },
            ),
            ks("k8s.cluster.name", cluster),
            ks(
                "k8s.namespace.name",
                if staging { "shop-staging" } else { "shop" },
            ),
            ks("k8s.deployment.name", s.name),
            ks("k8s.pod.name", format!("{}-{hash}-{suffix}", s.name)),
            ks("k8s.node.name", node.clone()),
            ks("host.name", node),
            ks("cloud.provider", "aws"),
            ks("cloud.region", region),
            ks("telemetry.sdk.name", "opentelemetry"),
            ks("telemetry.sdk.language", s.language),
            ks("telemetry.sdk.version", "1.26.0"),
        ],
        dropped_attributes_count: 0,
        entity_refs: vec![],
    }
}

struct Rec {
    svc: usize,
    work: Work,
    span: Span,
}

struct TraceBuilder<'a> {
    rng: &'a mut Rng,
    trace_id: Vec<u8>,
    spans: Vec<Rec>,
    pods: [usize; 16],
    staging: bool,
    user: u64,
    pending_out: Vec<Pending>,
}

/// Result of a handler: when it ended and whether it failed.
type Outcome = (u64, bool);

impl TraceBuilder<'_> {
    // The arguments are the span's own fields; a builder struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        svc: usize,
        work: Work,
        kind: SpanKind,
        name: String,
        parent: &[u8],
        start: u64,
        attributes: Vec<KeyValue>,
    ) -> usize {
        if self.pods[svc] == usize::MAX {
            self.pods[svc] = if self.staging {
                SERVICES[svc].pods
            } else {
                self.rng.range(0, SERVICES[svc].pods as u64) as usize
            };
        }
        let span = Span {
            trace_id: self.trace_id.clone(),
            span_id: self.rng.id::<8>().to_vec(),
            parent_span_id: parent.to_vec(),
            flags: 0x101,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start,
            attributes,
            status: Some(Status::default()),
            ..Default::default()
        };
        self.spans.push(Rec { svc, work, span });
        self.spans.len() - 1
    }

    fn id(&self, i: usize) -> Vec<u8> {
        self.spans[i].span.span_id.clone()
    }

    fn close(&mut self, i: usize, end: u64, failed: bool) {
        let s = &mut self.spans[i].span;
        s.end_time_unix_nano = end.max(s.start_time_unix_nano + 1_000);
        if failed {
            s.status = Some(Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            });
        }
    }

    /// Marks `i` as the origin of an error: status message and an exception event.
    fn throw(&mut self, i: usize) {
        let (ty, msg) = *self.rng.pick(EXCEPTIONS);
        let lang = SERVICES[self.spans[i].svc].language;
        let frames: Vec<String> = (0..self.rng.range(3, 9))
            .map(|d| {
                format!(
                    "    at shop.{}.handler{}({}.{}:{})",
                    SERVICES[self.spans[i].svc].name.replace('-', "_"),
                    d,
                    lang,
                    "src",
                    40 + d * 7
                )
            })
            .collect();
        let s = &mut self.spans[i].span;
        let at = s
            .end_time_unix_nano
            .saturating_sub(1_000)
            .max(s.start_time_unix_nano);
        s.status = Some(Status {
            code: StatusCode::Error as i32,
            message: msg.to_string(),
        });
        s.events.push(Event {
            time_unix_nano: at,
            name: "exception".into(),
            attributes: vec![
                ks("exception.type", ty),
                ks("exception.message", msg),
                ks(
                    "exception.stacktrace",
                    format!("{ty}: {msg}\n{}", frames.join("\n")),
                ),
                kv("exception.escaped", Value::BoolValue(true)),
            ],
            dropped_attributes_count: 0,
        });
    }

    /// Tags a client/server pair with the response status and closes the client span after
    /// the server's answer has travelled back.
    fn finish_call(
        &mut self,
        client: usize,
        server: usize,
        status: KeyValue,
        end: u64,
        failed: bool,
    ) -> Outcome {
        self.spans[server].span.attributes.push(status.clone());
        self.spans[client].span.attributes.push(status);
        let end = end + self.net();
        self.close(client, end, failed);
        (end, failed)
    }

    fn self_time(&mut self, svc: usize) -> u64 {
        self.rng
            .latency(SERVICES[svc].median_ms * MS as f64, 0.6, 0.01)
    }

    fn net(&mut self) -> u64 {
        self.rng.range(150_000, 900_000)
    }

    fn fails(&mut self, svc: usize) -> bool {
        self.rng.chance(SERVICES[svc].error_rate)
    }
}

type Handler = fn(&mut TraceBuilder, usize, &[u8], u64) -> Outcome;

/// A server span, its handler, and failure bookkeeping.
fn serve(tb: &mut TraceBuilder, svc: usize, i: usize, start: u64, handler: Handler) -> Outcome {
    let id = tb.id(i);
    let begin = start + tb.rng.range(20_000, 200_000);
    let (mut end, child_failed) = handler(tb, svc, &id, begin);
    end += tb.self_time(svc);
    let own = tb.fails(svc);
    // A failing dependency fails the caller half of the time; the rest is handled.
    let failed = own || (child_failed && tb.rng.chance(0.5));
    tb.close(i, end, failed);
    if own {
        tb.throw(i);
    }
    (end, failed)
}

fn entry_http(
    tb: &mut TraceBuilder,
    method: &str,
    route: &str,
    path: &str,
    start: u64,
    handler: Handler,
) -> Outcome {
    let user = tb.user;
    let attrs = vec![
        ks("http.request.method", method),
        ks("http.route", route),
        ks("url.path", path.split('?').next().unwrap_or(path)),
        ks("url.scheme", "https"),
        ks(
            "url.full",
            format!(
                "https://shop.example.com{path}{}sid={}",
                if path.contains('?') { "&" } else { "?" },
                hex::encode(tb.rng.id::<6>())
            ),
        ),
        ks(
            "user_agent.original",
            *tb.rng.pick(&[
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Safari/605.1.15",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/126.0 Safari/537.36",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148",
                "okhttp/4.12.0",
            ]),
        ),
        ks(
            "client.address",
            format!(
                "{}.{}.{}.{}",
                tb.rng.range(1, 224),
                tb.rng.range(0, 256),
                tb.rng.range(0, 256),
                tb.rng.range(1, 255)
            ),
        ),
        ks("enduser.id", format!("user-{user}")),
        ks("session.id", hex::encode(tb.rng.id::<8>())),
    ];
    let i = tb.open(
        FRONTEND,
        Work::Http,
        SpanKind::Server,
        format!("{method} {route}"),
        &[],
        start,
        attrs,
    );
    let out = serve(tb, FRONTEND, i, start, handler);
    let code = if out.1 { 500 } else { 200 };
    tb.spans[i]
        .span
        .attributes
        .push(ki("http.response.status_code", code));
    out
}

/// An HTTP client span in `from` calling `route` on `to`, and the server span there.
#[allow(clippy::too_many_arguments)]
fn http(
    tb: &mut TraceBuilder,
    from: usize,
    to: usize,
    method: &str,
    route: &str,
    path: &str,
    parent: &[u8],
    start: u64,
    handler: Handler,
) -> Outcome {
    let host = SERVICES[to].name;
    let c = tb.open(
        from,
        Work::Http,
        SpanKind::Client,
        method.to_string(),
        parent,
        start,
        vec![
            ks("http.request.method", method),
            ks("url.full", format!("http://{host}:8080{path}")),
            ks("server.address", host),
            ki("server.port", 8080),
            ks("network.protocol.version", "1.1"),
        ],
    );
    let s_start = start + tb.net();
    let cid = tb.id(c);
    let client_addr = format!(
        "10.{}.{}.{}",
        tb.rng.range(0, 8),
        tb.rng.range(0, 256),
        tb.rng.range(1, 255)
    );
    let s = tb.open(
        to,
        Work::Http,
        SpanKind::Server,
        format!("{method} {route}"),
        &cid,
        s_start,
        vec![
            ks("http.request.method", method),
            ks("http.route", route),
            ks("url.path", path.split('?').next().unwrap_or(path)),
            ks("url.scheme", "http"),
            ks("server.address", host),
            ks("client.address", client_addr),
            ks("enduser.id", format!("user-{}", tb.user)),
        ],
    );
    let (end, failed) = serve(tb, to, s, s_start, handler);
    let code = if failed {
        *tb.rng.pick(&[500, 502, 503])
    } else {
        *tb.rng.pick(&[200, 200, 200, 201, 204])
    };
    tb.finish_call(c, s, ki("http.response.status_code", code), end, failed)
}

/// A gRPC client span in `from` and the server span in `to`.
#[allow(clippy::too_many_arguments)]
fn grpc(
    tb: &mut TraceBuilder,
    from: usize,
    to: usize,
    service: &str,
    method: &str,
    parent: &[u8],
    start: u64,
    handler: Handler,
) -> Outcome {
    let name = format!("{service}/{method}");
    let attrs = |host: &str| {
        vec![
            ks("rpc.system", "grpc"),
            ks("rpc.service", service),
            ks("rpc.method", method),
            ks("server.address", host.to_string()),
            ki("server.port", 50051),
        ]
    };
    let c = tb.open(
        from,
        Work::Grpc,
        SpanKind::Client,
        name.clone(),
        parent,
        start,
        attrs(SERVICES[to].name),
    );
    let s_start = start + tb.net();
    let cid = tb.id(c);
    let s = tb.open(
        to,
        Work::Grpc,
        SpanKind::Server,
        name,
        &cid,
        s_start,
        attrs(SERVICES[to].name),
    );
    let (end, failed) = serve(tb, to, s, s_start, handler);
    let code = if failed { *tb.rng.pick(&[2, 4, 14]) } else { 0 };
    tb.finish_call(c, s, ki("rpc.grpc.status_code", code), end, failed)
}

/// A database client span.
#[allow(clippy::too_many_arguments)]
fn db(
    tb: &mut TraceBuilder,
    svc: usize,
    system: &str,
    dbname: &str,
    op: &str,
    table: &str,
    statement: String,
    parent: &[u8],
    start: u64,
) -> Outcome {
    let (host, port) = match system {
        "postgresql" => ("pg-main.shop.svc", 5432),
        "mysql" => ("mysql-inventory.shop.svc", 3306),
        "redis" => ("redis-cache.shop.svc", 6379),
        _ => ("es-search.shop.svc", 9200),
    };
    let name = if system == "redis" {
        op.to_string()
    } else {
        format!("{op} {dbname}.{table}")
    };
    let i = tb.open(
        svc,
        Work::Db,
        SpanKind::Client,
        name,
        parent,
        start,
        vec![
            ks("db.system", system),
            ks("db.name", dbname),
            ks("db.operation", op),
            ks("db.sql.table", table),
            ks("db.statement", statement),
            ks("server.address", host),
            ki("server.port", port),
        ],
    );
    let median = if system == "redis" { 0.3 } else { 2.0 } * MS as f64;
    let end = start + tb.rng.latency(median, 0.8, 0.02);
    let failed = tb.rng.chance(0.002);
    tb.close(i, end, failed);
    if failed {
        tb.throw(i);
    }
    (end, failed)
}

fn internal(
    tb: &mut TraceBuilder,
    svc: usize,
    name: &str,
    parent: &[u8],
    start: u64,
    handler: Handler,
) -> Outcome {
    let i = tb.open(
        svc,
        Work::Internal,
        SpanKind::Internal,
        name.to_string(),
        parent,
        start,
        vec![ks("code.function", name.to_string())],
    );
    let id = tb.id(i);
    let (end, failed) = handler(tb, svc, &id, start + 10_000);
    let end = end + tb.rng.latency(0.2 * MS as f64, 0.5, 0.0);
    tb.close(i, end, failed);
    (end, failed)
}

/// One call in a sequence: given the start time, returns its outcome.
type Step<'a> = &'a dyn Fn(&mut TraceBuilder, u64) -> Outcome;

/// Runs calls one after another; returns the last end and whether any failed.
fn seq(tb: &mut TraceBuilder, start: u64, calls: &[Step]) -> Outcome {
    let mut t = start;
    let mut failed = false;
    for c in calls {
        let (end, f) = c(tb, t);
        t = end + tb.rng.range(5_000, 80_000);
        failed |= f;
    }
    (t, failed)
}

fn noop(_: &mut TraceBuilder, _: usize, _: &[u8], start: u64) -> Outcome {
    (start, false)
}

fn get_product(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let id = tb.rng.range(1000, 99_999);
    let (t, f) = db(
        tb,
        svc,
        "redis",
        "0",
        "GET",
        "products",
        format!("GET product:{id}"),
        p,
        start,
    );
    if tb.rng.chance(0.3) {
        let sql = "SELECT id, name, price_cents, currency FROM products WHERE id = $1".to_string();
        let (t2, f2) = db(
            tb,
            svc,
            "postgresql",
            "catalog",
            "SELECT",
            "products",
            sql,
            p,
            t + 10_000,
        );
        return (t2, f || f2);
    }
    (t, f)
}

fn list_products(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let sql =
        "SELECT id, name, price_cents FROM products WHERE category_id = $1 ORDER BY rank LIMIT 24"
            .to_string();
    db(
        tb,
        svc,
        "postgresql",
        "catalog",
        "SELECT",
        "products",
        sql,
        p,
        start,
    )
}

fn recommend(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let n = tb.rng.range(2, 6);
    let mut t = start;
    let mut failed = false;
    for _ in 0..n {
        let (e, f) = grpc(
            tb,
            svc,
            CATALOG,
            "shop.catalog.v1.ProductCatalogService",
            "GetProduct",
            p,
            t,
            get_product,
        );
        t = e + 20_000;
        failed |= f;
    }
    (t + tb.rng.latency(3.0 * MS as f64, 0.5, 0.02), failed)
}

fn cart_get(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let user = tb.user;
    db(
        tb,
        svc,
        "redis",
        "0",
        "HGETALL",
        "cart",
        format!("HGETALL cart:user-{user}"),
        p,
        start,
    )
}

fn stock(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let sql = "SELECT quantity FROM stock WHERE sku = ? AND warehouse_id IN (?, ?)".to_string();
    db(
        tb,
        svc,
        "mysql",
        "inventory",
        "SELECT",
        "stock",
        sql,
        p,
        start,
    )
}

fn reserve(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let sql = "UPDATE stock SET reserved = reserved + ? WHERE sku = ? AND quantity - reserved >= ?"
        .to_string();
    db(
        tb,
        svc,
        "mysql",
        "inventory",
        "UPDATE",
        "stock",
        sql,
        p,
        start,
    )
}

fn gw_products(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    grpc(
        tb,
        svc,
        CATALOG,
        "shop.catalog.v1.ProductCatalogService",
        "ListProducts",
        p,
        start,
        list_products,
    )
}

fn gw_recs(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    grpc(
        tb,
        svc,
        RECOMMEND,
        "shop.recommendation.v1.RecommendationService",
        "ListRecommendations",
        p,
        start,
        recommend,
    )
}

fn gw_cart(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    http(
        tb,
        svc,
        CART,
        "GET",
        "/api/cart",
        "/api/cart",
        p,
        start,
        cart_get,
    )
}

/// The frontend asking the gateway for recommendations (home and product pages).
fn frontend_recommendations(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    http(
        tb,
        svc,
        GATEWAY,
        "GET",
        "/api/recommendations",
        "/api/recommendations",
        p,
        start,
        gw_recs,
    )
}

fn home(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    seq(
        tb,
        start,
        &[
            &|tb, t| {
                http(
                    tb,
                    svc,
                    GATEWAY,
                    "GET",
                    "/api/products",
                    "/api/products?category=featured",
                    p,
                    t,
                    gw_products,
                )
            },
            &|tb, t| frontend_recommendations(tb, svc, p, t),
            &|tb, t| {
                http(
                    tb,
                    svc,
                    GATEWAY,
                    "GET",
                    "/api/cart",
                    "/api/cart",
                    p,
                    t,
                    gw_cart,
                )
            },
        ],
    )
}

fn product_page(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let id = tb.rng.range(1000, 99_999);
    let path = format!("/api/products/{id}");
    seq(
        tb,
        start,
        &[
            &|tb, t| {
                http(
                    tb,
                    svc,
                    GATEWAY,
                    "GET",
                    "/api/products/{id}",
                    &path,
                    p,
                    t,
                    |tb, s, p, t| {
                        seq(
                            tb,
                            t,
                            &[
                                &|tb, t| {
                                    grpc(
                                        tb,
                                        s,
                                        CATALOG,
                                        "shop.catalog.v1.ProductCatalogService",
                                        "GetProduct",
                                        p,
                                        t,
                                        get_product,
                                    )
                                },
                                &|tb, t| {
                                    grpc(
                                        tb,
                                        s,
                                        INVENTORY,
                                        "shop.inventory.v1.InventoryService",
                                        "CheckStock",
                                        p,
                                        t,
                                        stock,
                                    )
                                },
                            ],
                        )
                    },
                )
            },
            &|tb, t| frontend_recommendations(tb, svc, p, t),
        ],
    )
}

fn search(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    http(
        tb,
        svc,
        GATEWAY,
        "GET",
        "/api/search",
        "/api/search",
        p,
        start,
        |tb, s, p, t| {
            http(
                tb,
                s,
                SEARCH,
                "GET",
                "/v1/search",
                "/v1/search",
                p,
                t,
                |tb, s, p, t| {
                    let body = r#"{"query":{"multi_match":{"query":"?","fields":["name^3","description"]}},"size":24}"#.to_string();
                    seq(
                        tb,
                        t,
                        &[
                            &|tb, t| {
                                db(
                                    tb,
                                    s,
                                    "elasticsearch",
                                    "products",
                                    "search",
                                    "products",
                                    body.clone(),
                                    p,
                                    t,
                                )
                            },
                            &|tb, t| {
                                grpc(
                                    tb,
                                    s,
                                    CATALOG,
                                    "shop.catalog.v1.ProductCatalogService",
                                    "GetProducts",
                                    p,
                                    t,
                                    list_products,
                                )
                            },
                        ],
                    )
                },
            )
        },
    )
}

fn login(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    http(
        tb,
        svc,
        GATEWAY,
        "POST",
        "/api/login",
        "/api/login",
        p,
        start,
        |tb, s, p, t| {
            http(
                tb,
                s,
                AUTH,
                "POST",
                "/v1/sessions",
                "/v1/sessions",
                p,
                t,
                |tb, s, p, t| {
                    seq(
                        tb,
                        t,
                        &[
                            &|tb, t| {
                                db(
                                    tb,
                                    s,
                                    "postgresql",
                                    "auth",
                                    "SELECT",
                                    "users",
                                    "SELECT id, password_hash, mfa FROM users WHERE email = $1"
                                        .into(),
                                    p,
                                    t,
                                )
                            },
                            &|tb, t| {
                                internal(tb, s, "bcrypt.verify", p, t, |tb, _, _, t| {
                                    (t + tb.rng.latency(45.0 * MS as f64, 0.1, 0.0), false)
                                })
                            },
                            &|tb, t| {
                                let session = hex::encode(tb.rng.id::<8>());
                                db(
                                    tb,
                                    s,
                                    "redis",
                                    "1",
                                    "SETEX",
                                    "sessions",
                                    format!("SETEX session:{session} 3600"),
                                    p,
                                    t,
                                )
                            },
                        ],
                    )
                },
            )
        },
    )
}

fn checkout(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    http(
        tb,
        svc,
        GATEWAY,
        "POST",
        "/api/checkout",
        "/api/checkout",
        p,
        start,
        |tb, s, p, t| {
            seq(
                tb,
                t,
                &[
                    &|tb, t| {
                        grpc(
                            tb,
                            s,
                            AUTH,
                            "shop.auth.v1.AuthService",
                            "VerifyToken",
                            p,
                            t,
                            |tb, s, p, t| {
                                db(
                                    tb,
                                    s,
                                    "redis",
                                    "1",
                                    "GET",
                                    "sessions",
                                    "GET session:<token>".into(),
                                    p,
                                    t,
                                )
                            },
                        )
                    },
                    &|tb, t| {
                        grpc(
                            tb,
                            s,
                            CHECKOUT,
                            "shop.checkout.v1.CheckoutService",
                            "PlaceOrder",
                            p,
                            t,
                            place_order,
                        )
                    },
                ],
            )
        },
    )
}

fn place_order(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    let items = tb.rng.range(1, 9);
    let (mut t, mut failed) = grpc(
        tb,
        svc,
        CART,
        "shop.cart.v1.CartService",
        "GetCart",
        p,
        start,
        cart_get,
    );
    for _ in 0..items {
        let (e, f) = grpc(
            tb,
            svc,
            INVENTORY,
            "shop.inventory.v1.InventoryService",
            "ReserveStock",
            p,
            t,
            reserve,
        );
        t = e + 10_000;
        failed |= f;
    }
    let order = tb.rng.range(10_000_000, 99_999_999);
    let (t, f) = seq(
        tb,
        t,
        &[
            &|tb, t| {
                http(
                    tb,
                    svc,
                    PAYMENT,
                    "POST",
                    "/v2/charges",
                    "/v2/charges",
                    p,
                    t,
                    charge,
                )
            },
            &|tb, t| {
                grpc(
                    tb,
                    svc,
                    SHIPPING,
                    "shop.shipping.v1.ShippingService",
                    "GetQuote",
                    p,
                    t,
                    |tb, _, _, t| (t + tb.rng.latency(1.5 * MS as f64, 0.4, 0.01), false),
                )
            },
            &|tb, t| produce(tb, svc, "orders", order, p, t),
            &|tb, t| {
                http(
                    tb,
                    svc,
                    EMAIL,
                    "POST",
                    "/send",
                    "/send",
                    p,
                    t,
                    |tb, s, p, t| internal(tb, s, "render_template", p, t, noop),
                )
            },
        ],
    );
    (t, failed || f)
}

fn charge(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    seq(
        tb,
        start,
        &[
            &|tb, t| {
                internal(tb, svc, "fraud.score", p, t, |tb, _, _, t| {
                    (t + tb.rng.latency(6.0 * MS as f64, 0.7, 0.03), false)
                })
            },
            &|tb, t| {
                let key = hex::encode(tb.rng.id::<8>());
                let c = tb.open(
                    svc,
                    Work::Http,
                    SpanKind::Client,
                    "POST".into(),
                    p,
                    t,
                    vec![
                        ks("http.request.method", "POST"),
                        ks(
                            "url.full",
                            format!(
                                "https://api.payments.example.com/v1/charges?idempotency_key={key}"
                            ),
                        ),
                        ks("server.address", "api.payments.example.com"),
                        ki("server.port", 443),
                        ks("peer.service", "payments-provider"),
                    ],
                );
                let end = t + tb.rng.latency(180.0 * MS as f64, 0.5, 0.03);
                let failed = tb.rng.chance(0.02);
                tb.spans[c].span.attributes.push(ki(
                    "http.response.status_code",
                    if failed { 402 } else { 200 },
                ));
                tb.close(c, end, failed);
                (end, failed)
            },
            &|tb, t| {
                db(tb, svc, "postgresql", "payments", "INSERT", "charges", "INSERT INTO charges (order_id, amount_cents, provider_ref) VALUES ($1, $2, $3)".into(), p, t)
            },
        ],
    )
}

fn produce(
    tb: &mut TraceBuilder,
    svc: usize,
    topic: &str,
    order: u64,
    p: &[u8],
    start: u64,
) -> Outcome {
    let partition = tb.rng.range(0, 12) as i64;
    let i = tb.open(
        svc,
        Work::Messaging,
        SpanKind::Producer,
        format!("{topic} publish"),
        p,
        start,
        vec![
            ks("messaging.system", "kafka"),
            ks("messaging.destination.name", topic),
            ks("messaging.operation", "publish"),
            ks("messaging.kafka.message.key", format!("order-{order}")),
            ki("messaging.kafka.destination.partition", partition),
        ],
    );
    let end = start + tb.rng.latency(1.2 * MS as f64, 0.5, 0.01);
    tb.close(i, end, false);
    let pid = tb.id(i);
    if tb.rng.chance(0.7) {
        // Consumed promptly: the consumer continues this trace.
        let c_start = end + tb.rng.latency(15.0 * MS as f64, 1.0, 0.05);
        let c = tb.open(
            ORDERS,
            Work::Messaging,
            SpanKind::Consumer,
            format!("{topic} process"),
            &pid,
            c_start,
            vec![
                ks("messaging.system", "kafka"),
                ks("messaging.destination.name", topic),
                ks("messaging.operation", "process"),
                ks("messaging.consumer.group.name", "order-processor"),
                ks("messaging.kafka.message.key", format!("order-{order}")),
            ],
        );
        let cid = tb.id(c);
        let (e, f) = process_order(tb, ORDERS, &cid, c_start + 30_000);
        tb.close(c, e, f);
    } else {
        let trace_id = tb.trace_id.clone();
        tb.pending_out.push(Pending {
            trace_id,
            span_id: pid,
            order,
        });
    }
    (end, false)
}

fn process_order(tb: &mut TraceBuilder, svc: usize, p: &[u8], start: u64) -> Outcome {
    seq(
        tb,
        start,
        &[
            &|tb, t| {
                db(tb, svc, "postgresql", "orders", "INSERT", "orders", "INSERT INTO orders (id, user_id, status, total_cents) VALUES ($1, $2, 'placed', $3)".into(), p, t)
            },
            &|tb, t| {
                grpc(
                    tb,
                    svc,
                    INVENTORY,
                    "shop.inventory.v1.InventoryService",
                    "CommitReservation",
                    p,
                    t,
                    reserve,
                )
            },
            &|tb, t| {
                db(
                    tb,
                    svc,
                    "postgresql",
                    "orders",
                    "UPDATE",
                    "orders",
                    "UPDATE orders SET status = 'confirmed' WHERE id = $1".into(),
                    p,
                    t,
                )
            },
        ],
    )
}

fn consume_batch(tb: &mut TraceBuilder, start: u64, batch: &[Pending]) -> Outcome {
    let i = tb.open(
        ORDERS,
        Work::Messaging,
        SpanKind::Consumer,
        "orders process".into(),
        &[],
        start,
        vec![
            ks("messaging.system", "kafka"),
            ks("messaging.destination.name", "orders"),
            ks("messaging.operation", "process"),
            ks("messaging.consumer.group.name", "order-processor"),
            ki("messaging.batch.message_count", batch.len() as i64),
        ],
    );
    tb.spans[i].span.links = batch
        .iter()
        .map(|b| Link {
            trace_id: b.trace_id.clone(),
            span_id: b.span_id.clone(),
            trace_state: String::new(),
            attributes: vec![ks(
                "messaging.kafka.message.key",
                format!("order-{}", b.order),
            )],
            dropped_attributes_count: 0,
            flags: 0x101,
        })
        .collect();
    let id = tb.id(i);
    let mut t = start + 50_000;
    let mut failed = false;
    for _ in batch {
        let (e, f) = process_order(tb, ORDERS, &id, t);
        t = e + 20_000;
        failed |= f;
    }
    tb.close(i, t, failed);
    (t, failed)
}

fn healthz(tb: &mut TraceBuilder, start: u64) -> Outcome {
    let i = tb.open(
        GATEWAY,
        Work::Http,
        SpanKind::Server,
        "GET /healthz".into(),
        &[],
        start,
        vec![
            ks("http.request.method", "GET"),
            ks("http.route", "/healthz"),
            ks("url.path", "/healthz"),
            ks("user_agent.original", "kube-probe/1.30"),
            ki("http.response.status_code", 200),
        ],
    );
    let end = start + tb.rng.latency(0.15 * MS as f64, 0.3, 0.0);
    tb.close(i, end, false);
    (end, false)
}

fn inventory_import(tb: &mut TraceBuilder, start: u64) -> Outcome {
    let rows = tb.rng.range(60, 320);
    let file = format!(
        "s3://shop-feeds/supplier-{}/stock-{}.csv",
        tb.rng.range(1, 40),
        tb.rng.range(100_000, 999_999)
    );
    let i = tb.open(
        INVENTORY,
        Work::Internal,
        SpanKind::Internal,
        "inventory.import-batch".into(),
        &[],
        start,
        vec![
            ks("code.function", "ImportJob.run"),
            ki("import.rows", rows as i64),
            ks("import.file", file),
        ],
    );
    let id = tb.id(i);
    let mut t = start + 200_000;
    let mut failed = false;
    for _ in 0..rows {
        let (e, f) = db(
            tb,
            INVENTORY,
            "mysql",
            "inventory",
            "UPDATE",
            "stock",
            "UPDATE stock SET quantity = ? WHERE sku = ? AND warehouse_id = ?".into(),
            &id,
            t,
        );
        t = e + 5_000;
        failed |= f;
    }
    tb.close(i, t, failed);
    (t, failed)
}

/// A GraphQL resolver chain more than 20 levels deep.
fn graph_query(tb: &mut TraceBuilder, start: u64) -> Outcome {
    let depth = tb.rng.range(21, 33) as usize;
    let root = tb.open(
        GRAPH,
        Work::Http,
        SpanKind::Server,
        "POST /graphql".into(),
        &[],
        start,
        vec![
            ks("http.request.method", "POST"),
            ks("http.route", "/graphql"),
            ks("graphql.operation.name", "CategoryTree"),
            ks("graphql.operation.type", "query"),
        ],
    );
    let mut parents = vec![root];
    let mut t = start + 30_000;
    for d in 1..depth {
        let pid = tb.id(parents[d - 1]);
        let i = tb.open(
            GRAPH,
            Work::Internal,
            SpanKind::Internal,
            format!("resolve Category.children[{d}]"),
            &pid,
            t,
            vec![
                ks(
                    "graphql.field.path",
                    format!("category{}", ".children".repeat(d)),
                ),
                ki("graphql.field.depth", d as i64),
            ],
        );
        parents.push(i);
        t += tb.rng.range(5_000, 40_000);
    }
    let leaf = tb.id(*parents.last().unwrap_or(&root));
    let (mut end, failed) = db(tb, GRAPH, "postgresql", "catalog", "SELECT", "categories", "WITH RECURSIVE tree AS (SELECT id, parent_id FROM categories WHERE id = $1 UNION ALL SELECT c.id, c.parent_id FROM categories c JOIN tree t ON c.parent_id = t.id) SELECT * FROM tree".into(), &leaf, t);
    for &i in parents.iter().rev() {
        end += tb.rng.range(2_000, 20_000);
        tb.close(i, end, failed);
    }
    tb.spans[root].span.attributes.push(ki(
        "http.response.status_code",
        if failed { 500 } else { 200 },
    ));
    (end, failed)
}

/// Groups a trace's spans by (service, pod) resource and instrumentation scope.
fn group(spans: Vec<Rec>, pods: &[usize; 16], resources: &[Vec<Resource>]) -> Vec<ResourceSpans> {
    type ByScope = BTreeMap<(&'static str, &'static str), Vec<Span>>;
    let mut by_res: BTreeMap<(usize, usize), ByScope> = BTreeMap::new();
    for r in spans {
        let pod = pods[r.svc];
        let scope = scope_for(r.work, SERVICES[r.svc].language);
        by_res
            .entry((r.svc, pod))
            .or_default()
            .entry(scope)
            .or_default()
            .push(r.span);
    }
    by_res
        .into_iter()
        .map(|((svc, pod), scopes)| ResourceSpans {
            resource: Some(resources[svc][pod].clone()),
            scope_spans: scopes
                .into_iter()
                .map(|((name, version), spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: name.into(),
                        version: version.into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        })
        .collect()
}
