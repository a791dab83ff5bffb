//! Checks shared by the `[cluster]` sections of the gateway's and the
//! worker's configs, so both refuse the same mistakes with the same words.

use std::time::Duration;

/// A lease's default time to live: a dead process leaves the pool within it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The lease TTLs accepted, in seconds.
pub const LEASE_TTL_RANGE: std::ops::RangeInclusive<u64> = 2..=300;

/// etcd endpoints must be `http://host:port` URLs (no TLS support yet).
pub fn check_endpoints(endpoints: &[String]) -> Result<(), String> {
    for endpoint in endpoints {
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return Err(format!(
                "`{endpoint}` is not an http:// URL (TLS to etcd is not supported yet)"
            ));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            return Err(format!("`{endpoint}` must be http://host:port"));
        }
    }
    Ok(())
}

/// A key prefix: absolute, without spaces.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') || prefix.chars().any(char::is_whitespace) {
        return Err("must start with `/` and contain no spaces".into());
    }
    Ok(())
}

pub fn check_lease_ttl(secs: u64) -> Result<(), String> {
    if LEASE_TTL_RANGE.contains(&secs) {
        Ok(())
    } else {
        Err(format!(
            "must be {} to {} seconds",
            LEASE_TTL_RANGE.start(),
            LEASE_TTL_RANGE.end()
        ))
    }
}

/// `--etcd a,b` and `HERD_ETCD=a,b` as a list, empty parts dropped.
pub fn split_endpoints(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|e| e.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_prefixes_and_ttls_are_checked() {
        assert!(check_endpoints(&["http://127.0.0.1:2379".into()]).is_ok());
        assert!(check_endpoints(&["127.0.0.1:2379".into()]).is_err());
        assert!(check_endpoints(&["https://e:2379".into()]).is_err());
        assert!(check_endpoints(&["http://e".into()]).is_err());
        assert!(check_prefix("/herd/").is_ok());
        assert!(check_prefix("herd").is_err());
        assert!(check_lease_ttl(10).is_ok());
        assert!(check_lease_ttl(1).is_err());
        assert_eq!(
            split_endpoints(&["http://a:1, http://b:2".into(), "http://c:3".into()]),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
    }
}
