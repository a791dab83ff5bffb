//! The registry token handshake (Docker's bearer-token flow), done here
//! with a cap on every body read: `oci-client` reads a token response
//! whole, so a registry streaming an endless one grew the process by
//! gigabytes. The token found is handed to `oci-client` as a bearer
//! credential, which it then uses without a handshake of its own.

use oci_client::Reference;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

/// The largest token response read.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Why the handshake failed.
#[derive(Debug)]
pub enum AuthError {
    /// The registry could not be reached or answered nonsense.
    Transport(reqwest::Error),
    /// The token service refused the credentials, or its answer was not a
    /// token (too large, not JSON).
    Refused(String),
}

/// [`resolve`] for `oci_ref`, its failures in `oci-client`'s terms.
pub async fn for_reference(
    oci_ref: &Reference,
    auth: &RegistryAuth,
    plain_http: bool,
    push: bool,
) -> Result<RegistryAuth, OciDistributionError> {
    let scheme = if plain_http { "http" } else { "https" };
    resolve(
        scheme,
        oci_ref.resolve_registry(),
        oci_ref.repository(),
        push,
        auth,
    )
    .await
    .map_err(|e| match e {
        AuthError::Transport(e) => e.into(),
        AuthError::Refused(why) => OciDistributionError::AuthenticationFailure(why),
    })
}

/// The credentials to give `oci-client` for `repository` on `registry`:
/// a bearer token when the registry asks for one (fetched with `auth`),
/// else `auth` itself.
pub async fn resolve(
    scheme: &str,
    registry: &str,
    repository: &str,
    push: bool,
    auth: &RegistryAuth,
) -> Result<RegistryAuth, AuthError> {
    if matches!(auth, RegistryAuth::Bearer(_)) {
        return Ok(auth.clone());
    }
    let http = reqwest::Client::builder()
        .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(AuthError::Transport)?;
    let probe = http
        .get(format!("{scheme}://{registry}/v2/"))
        .send()
        .await
        .map_err(AuthError::Transport)?;
    let Some(challenge) = probe
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .and_then(Challenge::parse)
    else {
        // No bearer challenge: anonymous, or HTTP basic (oci-client's).
        return Ok(auth.clone());
    };
    drop(probe);
    let scope = if push {
        format!("repository:{repository}:pull,push")
    } else {
        format!("repository:{repository}:pull")
    };
    let mut query = vec![("scope", scope.as_str())];
    if let Some(service) = &challenge.service {
        query.push(("service", service));
    }
    let mut request = http.get(&challenge.realm).query(&query);
    if let RegistryAuth::Basic(username, password) = auth {
        request = request.basic_auth(username, Some(password));
    }
    let response = request.send().await.map_err(AuthError::Transport)?;
    let ok = response.status().is_success();
    let (body, whole) = read_at_most(response, MAX_TOKEN_BYTES)
        .await
        .map_err(AuthError::Transport)?;
    if !whole {
        return Err(AuthError::Refused(format!(
            "the token response is larger than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    if !ok {
        return Err(AuthError::Refused(
            String::from_utf8_lossy(&body).chars().take(512).collect(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| AuthError::Refused(format!("the token response is not JSON: {e}")))?;
    match value
        .get("token")
        .or_else(|| value.get("access_token"))
        .and_then(serde_json::Value::as_str)
    {
        Some(token) => Ok(RegistryAuth::Bearer(token.to_owned())),
        None => Err(AuthError::Refused("the token response has no token".into())),
    }
}

/// The body of `response`, up to `limit` bytes; the flag says whether that
/// was all of it (reading stops at the limit).
pub async fn read_at_most(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

impl Challenge {
    fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut realm = None;
        let mut service = None;
        let mut rest = params.trim();
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, next) = match after.strip_prefix('"') {
                Some(quoted) => {
                    let end = quoted.find('"')?;
                    (&quoted[..end], &quoted[end + 1..])
                }
                None => after.split_once(',').unwrap_or((after, "")),
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value.to_owned()),
                "service" => service = Some(value.to_owned()),
                _ => {}
            }
            rest = next.trim_start_matches([',', ' ']);
        }
        Some(Self {
            realm: realm?,
            service,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Some(Challenge {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm="http://x/t", scope="repository:a:pull""#)
                .map(|c| c.realm),
            Some("http://x/t".into())
        );
        assert_eq!(Challenge::parse(r#"Basic realm="x""#), None);
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None);
        assert_eq!(Challenge::parse("Bearer realm=\"unterminated"), None);
    }
}
