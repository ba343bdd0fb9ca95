//! Operators' endpoints, as Tempo has them: the effective config (`/status/config`), the
//! effective overrides (`/status/overrides`, and the caller's tenant's at `/api/overrides`),
//! the build (`/status/buildinfo`) and the routes (`/status/endpoints`). Read-only; secrets
//! never leave the process.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::Value;

use super::AppState;
use crate::api::error::ApiError;
use crate::tenant::request_tenants;

/// Every route of the HTTP API, as `/status/endpoints` lists them.
pub const ROUTES: [&str; 23] = [
    "GET /ready",
    "GET /api/echo",
    "GET /api/status/buildinfo",
    "GET /status/buildinfo",
    "GET /status/config",
    "GET /status/overrides",
    "GET /status/endpoints",
    "GET /api/overrides",
    "GET /metrics",
    "GET /api/metrics-generator/metrics",
    "GET, POST /flush",
    "GET /api/traces/{id}",
    "GET /api/v2/traces/{id}",
    "GET /api/search",
    "GET /api/metrics/query_range",
    "GET /api/metrics/query",
    "GET /api/search/tags",
    "GET /api/v2/search/tags",
    "GET /api/search/tag/{tag}/values",
    "GET /api/v2/search/tag/{tag}/values",
    "POST /tempopb.StreamingQuerier/* (gRPC, HTTP/2)",
    "POST <otlp_http>/v1/traces (receiver port)",
    "POST <zipkin>/api/v2/spans (receiver port)",
];

/// `GET` or `POST /flush`, Tempo's ingester endpoint: every live trace and head block of this
/// process (every tenant's) is cut and written as blocks; 204 once they are stored. Heads of
/// other ring members are theirs to flush.
pub async fn flush(State(state): State<AppState>) -> Result<axum::http::StatusCode, ApiError> {
    let Some(ingester) = &state.ingester else {
        return Err(ApiError::not_found(
            "this process does not ingest: nothing to flush",
        ));
    };
    match ingester.flush(true).await {
        Ok(_) => Ok(axum::http::StatusCode::NO_CONTENT),
        Err(e) => Err(ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: format!("the head could not be flushed: {e}; retry"),
        }),
    }
}

/// Whether a config key may hold a secret (credentials, tokens, headers).
fn secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "access_key",
        "account_key",
        "headers",
        "authorization",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// `v` with every secret value replaced and credentials in URLs (`https://user:pass@host`)
/// dropped.
pub fn redacted(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if secret(k) && !v.is_null() {
                        Value::String("<redacted>".into())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redacted).collect()),
        Value::String(s) => match s.split_once("://") {
            Some((scheme, rest)) if rest.split('/').next().is_some_and(|h| h.contains('@')) => {
                let host = rest.split_once('@').map_or(rest, |(_, h)| h);
                Value::String(format!("{scheme}://<redacted>@{host}"))
            }
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

fn yaml(v: &Value) -> impl IntoResponse + use<> {
    let text = serde_yaml::to_string(&redacted(v)).unwrap_or_else(|e| format!("# {e}\n"));
    ([("content-type", "text/plain; charset=utf-8")], text)
}

/// `GET /status/config`: the effective config (every default filled in) as YAML.
pub async fn config(State(state): State<AppState>) -> impl IntoResponse {
    yaml(&state.effective_config)
}

/// `GET /status/overrides`: every tenant's effective overrides as YAML.
pub async fn overrides(State(state): State<AppState>) -> impl IntoResponse {
    yaml(&state.effective_config["overrides"])
}

/// `GET /api/overrides`: the caller's tenant's effective overrides as JSON (read-only).
pub async fn tenant_overrides(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let [tenant] = tenants.as_slice() else {
        return Err(ApiError::bad_request(
            "overrides are per tenant: set X-Scope-OrgID to one tenant",
        ));
    };
    let o = &state.effective_config["overrides"];
    let own = &o["per_tenant"][tenant.as_str()];
    Ok(Json(redacted(if own.is_null() {
        &o["defaults"]
    } else {
        own
    })))
}

/// `GET /status/endpoints`: the routes, one a line.
pub async fn endpoints() -> impl IntoResponse {
    let mut text = ROUTES.join("\n");
    text.push('\n');
    ([("content-type", "text/plain; charset=utf-8")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let v = serde_json::json!({
            "s3": {"bucket": "b", "secret_key": "x", "access_key": "y"},
            "remote_write": [{"url": "https://u:p@mimir:9009/push", "headers": {"Authorization": "Bearer z"}}],
            "plain": "http://mimir:9009/push",
        });
        let r = redacted(&v).to_string();
        for s in ["\"x\"", "\"y\"", "u:p", "Bearer"] {
            assert!(!r.contains(s), "{s} in {r}");
        }
        assert!(r.contains("mimir:9009/push") && r.contains("\"b\""), "{r}");
    }
}
