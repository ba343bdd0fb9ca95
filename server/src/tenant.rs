//! Tenancy from `X-Scope-OrgID`, validated as Tempo validates tenant IDs.

use axum::http::HeaderMap;

use crate::http::error::ApiError;

/// The tenant of every request when multitenancy is off (Tempo's name).
pub const SINGLE_TENANT: &str = "single-tenant";
/// The header carrying the tenant.
pub const ORG_ID_HEADER: &str = "X-Scope-OrgID";

/// Checks one tenant ID: at most 150 bytes of `[0-9A-Za-z!-_.*'()]`, not `.` or `..`.
pub fn validate_tenant(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("tenant ID is empty".into());
    }
    if id.len() > 150 {
        return Err(format!(
            "tenant ID is {} bytes long; at most 150 are allowed",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("tenant ID {id:?} is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
    {
        return Err(format!(
            "tenant ID {id:?} contains {c:?}; allowed are letters, digits and ! - _ . * ' ( )"
        ));
    }
    Ok(())
}

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
    fn tenant_rules_follow_tempo() {
        assert!(validate_tenant("team-a_1.prod").is_ok());
        assert!(validate_tenant("a*(b)'!").is_ok());
        assert!(validate_tenant("..").is_err());
        assert!(validate_tenant("a/b").unwrap_err().contains("'/'"));
        assert!(validate_tenant(&"x".repeat(151)).is_err());
        let mut h = HeaderMap::new();
        assert_eq!(request_tenants(false, &h).unwrap(), vec![SINGLE_TENANT]);
        assert_eq!(request_tenants(true, &h).unwrap_err().status.as_u16(), 401);
        h.insert(ORG_ID_HEADER, "a|b|a".parse().unwrap());
        assert_eq!(request_tenants(true, &h).unwrap(), vec!["a", "b"]);
        h.insert(ORG_ID_HEADER, "a b".parse().unwrap());
        assert_eq!(request_tenants(true, &h).unwrap_err().status.as_u16(), 400);
    }
}
