//! Tenancy from `X-Scope-OrgID`, validated as Tempo validates tenant IDs.

use axum::http::HeaderMap;

use crate::api::error::ApiError;

/// The tenant of every request when multitenancy is off (Tempo's name).
pub const SINGLE_TENANT: &str = "single-tenant";
/// The header carrying the tenant.
pub const ORG_ID_HEADER: &str = "X-Scope-OrgID";

pub use allegro_engine::tenant::validate_tenant;

/// The tenants a request is for: `single-tenant` when multitenancy is off, otherwise the
/// header's value, where `a|b` asks for several tenants at once (Tempo's cross-tenant query).
pub fn request_tenants(multitenancy: bool, headers: &HeaderMap) -> Result<Vec<String>, ApiError> {
    if !multitenancy {
        return Ok(vec![SINGLE_TENANT.to_string()]);
    }
    let value = headers
        .get(ORG_ID_HEADER)
        .ok_or_else(|| {
            ApiError::unauthorized(
                "no org id: the X-Scope-OrgID header is required (multitenancy_enabled is true)",
            )
        })?
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Scope-OrgID is not valid text"))?;
    let mut out: Vec<String> = Vec::new();
    for t in value.split('|') {
        validate_tenant(t).map_err(ApiError::bad_request)?;
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_come_from_the_header_when_multitenancy_is_on() {
        let mut h = HeaderMap::new();
        assert_eq!(request_tenants(false, &h).unwrap(), vec![SINGLE_TENANT]);
        assert_eq!(request_tenants(true, &h).unwrap_err().status.as_u16(), 401);
        h.insert(ORG_ID_HEADER, "a|b|a".parse().unwrap());
        assert_eq!(request_tenants(true, &h).unwrap(), vec!["a", "b"]);
        h.insert(ORG_ID_HEADER, "a b".parse().unwrap());
        assert_eq!(request_tenants(true, &h).unwrap_err().status.as_u16(), 400);
    }
}
