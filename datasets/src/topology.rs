//! The simulated system: an online shop of a dozen services in two clusters.

/// One service and how it is deployed.
#[derive(Debug, Clone)]
pub struct Service {
    /// `service.name`.
    pub name: &'static str,
    /// `telemetry.sdk.language`.
    pub language: &'static str,
    /// `service.version`.
    pub version: &'static str,
    /// Replicas (one resource per pod).
    pub pods: usize,
    /// Share of server spans that fail.
    pub error_rate: f64,
    /// Median handler self-time, milliseconds.
    pub median_ms: f64,
}

/// Every service of the shop, indexed by the `S_*` constants.
pub const SERVICES: &[Service] = &[
    Service {
        name: "web-frontend",
        language: "nodejs",
        version: "2.14.1",
        pods: 4,
        error_rate: 0.005,
        median_ms: 4.0,
    },
    Service {
        name: "api-gateway",
        language: "go",
        version: "1.32.0",
        pods: 3,
        error_rate: 0.002,
        median_ms: 0.8,
    },
    Service {
        name: "auth-service",
        language: "java",
        version: "5.2.3",
        pods: 2,
        error_rate: 0.004,
        median_ms: 2.5,
    },
    Service {
        name: "product-catalog",
        language: "go",
        version: "3.8.0",
        pods: 3,
        error_rate: 0.003,
        median_ms: 1.5,
    },
    Service {
        name: "cart-service",
        language: "dotnet",
        version: "1.9.12",
        pods: 2,
        error_rate: 0.006,
        median_ms: 1.2,
    },
    Service {
        name: "checkout-service",
        language: "go",
        version: "4.1.7",
        pods: 2,
        error_rate: 0.01,
        median_ms: 3.0,
    },
    Service {
        name: "payment-service",
        language: "java",
        version: "2.0.4",
        pods: 2,
        error_rate: 0.04,
        median_ms: 25.0,
    },
    Service {
        name: "shipping-service",
        language: "rust",
        version: "0.12.2",
        pods: 1,
        error_rate: 0.008,
        median_ms: 2.0,
    },
    Service {
        name: "recommendation-service",
        language: "python",
        version: "1.4.0",
        pods: 2,
        error_rate: 0.01,
        median_ms: 12.0,
    },
    Service {
        name: "inventory-service",
        language: "java",
        version: "7.3.1",
        pods: 2,
        error_rate: 0.005,
        median_ms: 1.8,
    },
    Service {
        name: "email-service",
        language: "ruby",
        version: "3.1.0",
        pods: 1,
        error_rate: 0.02,
        median_ms: 8.0,
    },
    Service {
        name: "order-processor",
        language: "java",
        version: "2.6.5",
        pods: 2,
        error_rate: 0.015,
        median_ms: 4.0,
    },
    Service {
        name: "search-service",
        language: "python",
        version: "0.9.3",
        pods: 2,
        error_rate: 0.007,
        median_ms: 6.0,
    },
    Service {
        name: "graph-resolver",
        language: "go",
        version: "1.1.0",
        pods: 1,
        error_rate: 0.01,
        median_ms: 0.6,
    },
];

#[allow(missing_docs)]
pub mod ids {
    pub const FRONTEND: usize = 0;
    pub const GATEWAY: usize = 1;
    pub const AUTH: usize = 2;
    pub const CATALOG: usize = 3;
    pub const CART: usize = 4;
    pub const CHECKOUT: usize = 5;
    pub const PAYMENT: usize = 6;
    pub const SHIPPING: usize = 7;
    pub const RECOMMEND: usize = 8;
    pub const INVENTORY: usize = 9;
    pub const EMAIL: usize = 10;
    pub const ORDERS: usize = 11;
    pub const SEARCH: usize = 12;
    pub const GRAPH: usize = 13;
}

/// Instrumentation scope (name, version) by kind of work and language.
pub fn scope_for(work: Work, language: &str) -> (&'static str, &'static str) {
    match (work, language) {
        (Work::Http, "nodejs") => ("@opentelemetry/instrumentation-http", "0.52.1"),
        (Work::Http, "java") => ("io.opentelemetry.tomcat-10.0", "2.6.0-alpha"),
        (Work::Http, "python") => ("opentelemetry.instrumentation.flask", "0.47b0"),
        (Work::Http, "dotnet") => ("OpenTelemetry.Instrumentation.AspNetCore", "1.9.0"),
        (Work::Http, "ruby") => ("OpenTelemetry::Instrumentation::Rack", "0.24.6"),
        (Work::Http, _) => (
            "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
            "0.53.0",
        ),
        (Work::Grpc, "java") => ("io.opentelemetry.grpc-1.6", "2.6.0-alpha"),
        (Work::Grpc, "python") => ("opentelemetry.instrumentation.grpc", "0.47b0"),
        (Work::Grpc, _) => (
            "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
            "0.53.0",
        ),
        (Work::Db, "java") => ("io.opentelemetry.jdbc", "2.6.0-alpha"),
        (Work::Db, "dotnet") => (
            "OpenTelemetry.Instrumentation.StackExchangeRedis",
            "1.0.0-rc9.15",
        ),
        (Work::Db, "python") => ("opentelemetry.instrumentation.elasticsearch", "0.47b0"),
        (Work::Db, _) => ("github.com/XSAM/otelsql", "0.32.0"),
        (Work::Messaging, _) => ("io.opentelemetry.kafka-clients-2.6", "2.6.0-alpha"),
        (Work::Internal, _) => ("shop.internal", "1.0.0"),
    }
}

/// Kinds of work, which pick the instrumentation scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// HTTP client or server.
    Http,
    /// gRPC client or server.
    Grpc,
    /// Database client.
    Db,
    /// Kafka producer or consumer.
    Messaging,
    /// Business logic.
    Internal,
}

/// Exceptions thrown by failing handlers: (type, message, language).
pub const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "java.net.SocketTimeoutException",
        "Read timed out after 5000 ms",
    ),
    (
        "PaymentDeclinedException",
        "card declined: insufficient funds",
    ),
    ("context.DeadlineExceeded", "context deadline exceeded"),
    ("sql.ErrConnDone", "sql: connection is already closed"),
    (
        "RedisTimeoutException",
        "Timeout performing GET cart:session, inst: 1",
    ),
    (
        "ValueError",
        "invalid literal for int() with base 10: 'abc'",
    ),
    (
        "NullPointerException",
        "Cannot invoke \"Order.getId()\" because \"order\" is null",
    ),
    (
        "Net::ReadTimeout",
        "Net::ReadTimeout with #<TCPSocket:(closed)>",
    ),
];
