//! Tenant IDs: what Tempo accepts, and how they name directories in storage.
//!
//! A tenant's blocks live under `<tenant>/` at the root of the store, so a directory there is
//! a tenant's exactly when its name is a valid tenant ID. Allegro keeps its own directories
//! (the WAL, the generator's queue) under names no tenant can have (`@wal`), so tenant `.wal`
//! or `.hidden` is an ordinary tenant.

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

/// The tenant whose directory in the store is named `part` (as the store lists it:
/// percent-encoded, so `*` is `%2A`); `None` for a directory that is not a tenant's.
pub fn tenant_of_dir(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let id = String::from_utf8(out).ok()?;
    validate_tenant(&id).ok().map(|()| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_rules_follow_tempo() {
        assert!(validate_tenant("team-a_1.prod").is_ok());
        assert!(validate_tenant("a*(b)'!").is_ok());
        assert!(validate_tenant("...").is_ok());
        assert!(validate_tenant("..").is_err());
        assert!(validate_tenant("a/b").unwrap_err().contains("'/'"));
        assert!(validate_tenant(&"x".repeat(151)).is_err());
    }

    #[test]
    fn directories_name_tenants_as_the_store_encodes_them() {
        for t in [".wal", ".hidden", "...", "*", "a*(b)'!"] {
            let part = object_store::path::Path::from(t);
            let name = part.parts().next().expect("one part");
            assert_eq!(tenant_of_dir(name.as_ref()).as_deref(), Some(t), "{t}");
        }
        assert_eq!(tenant_of_dir("%2A").as_deref(), Some("*"));
        // Allegro's own directories, and names that are no tenant's.
        for d in ["@wal", "a%2", "%zz", "%2F", ".", ""] {
            assert_eq!(tenant_of_dir(d), None, "{d}");
        }
    }
}
