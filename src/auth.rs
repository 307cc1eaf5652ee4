//! Who may do what. Reads (WebSocket, SSE, history) need NetRaven's viewer JWT: HS256 with
//! claims `sub`, `role`, `exp`, from `Authorization: Bearer` or `?access_token=`. Ingest needs
//! one of the configured service tokens, which are not JWTs (a viewer's JWT gets 403).
//! WebSocket upgrades from a browser must come from an allowed `Origin`. Tokens are compared
//! in constant time and never logged.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Clock skew tolerated on `exp`, in seconds.
pub const EXP_LEEWAY_SECS: i64 = 30;

/// A viewer, as its token says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub role: String,
    pub exp: i64,
}

/// Why a token was refused (the text goes into the 401 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a bearer token is required (Authorization: Bearer … or ?access_token=…)")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm {0:?} is not accepted (HS256 only)")]
    Algorithm(String),
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Checks an HS256 JWT against `secret` at time `now` (seconds since the epoch).
pub fn verify_jwt(token: &str, secret: &[u8], now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.trim().split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
    let header: Header = decode(header_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(TokenError::Malformed(
            "the header is not base64url JSON with an alg",
        ))?;
    // Checked before anything else: `none`, RS256 and friends never reach the signature check.
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg));
    }
    let signature = decode(signature_b64)
        .map_err(|_| TokenError::Malformed("the signature is not base64url"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(header_b64.as_bytes());
    mac.update(b".");
    mac.update(payload_b64.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::Signature)?;
    let payload =
        decode(payload_b64).map_err(|_| TokenError::Malformed("the payload is not base64url"))?;
    let claims: Value = serde_json::from_slice(&payload)
        .map_err(|_| TokenError::Malformed("the payload is not JSON"))?;
    // python-jose writes `exp` as an integer; accept a float too.
    let exp = claims
        .get("exp")
        .and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)))
        .ok_or(TokenError::Malformed("the exp claim is missing"))?;
    if now > exp + EXP_LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed("the sub claim is missing"))?;
    let role = claims.get("role").and_then(Value::as_str).unwrap_or("");
    Ok(Claims {
        sub: sub.to_string(),
        role: role.to_string(),
        exp,
    })
}

/// Signs claims as an HS256 JWT (for tests and tooling; NetRaven issues the real ones).
pub fn sign_jwt(claims: &Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{header}.{payload}").as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{signature}")
}

/// Equality that takes the same time wherever the inputs differ (and whatever their
/// lengths: both sides are hashed first).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The gateway's access policy, from configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// HS256 secret of viewer JWTs; `None` serves reads without auth (loopback only, or with
    /// `--insecure-no-auth`).
    pub jwt_secret: Option<String>,
    /// Service tokens accepted by ingest. Empty: ingest is open when `jwt_secret` is `None`,
    /// closed otherwise.
    pub ingest_tokens: Vec<String>,
    /// Origins allowed to open WebSockets (`*`: any). Empty: same origin only.
    pub allowed_origins: Vec<String>,
}

/// What an ingest request's credentials amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestAccess {
    Allowed,
    /// No or unknown credentials: 401.
    Unauthorized(String),
    /// A valid viewer token, which cannot ingest: 403.
    Forbidden(String),
}

impl Policy {
    /// Checks a reader's token; `Ok(None)` when reads need no token.
    pub fn check_reader(
        &self,
        token: Option<&str>,
        now: i64,
    ) -> Result<Option<Claims>, TokenError> {
        let Some(secret) = &self.jwt_secret else {
            return Ok(None);
        };
        let token = token.filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
        verify_jwt(token, secret.as_bytes(), now).map(Some)
    }

    /// Checks an ingest request's bearer token.
    pub fn check_ingest(&self, token: Option<&str>, now: i64) -> IngestAccess {
        if self.ingest_tokens.is_empty() && self.jwt_secret.is_none() {
            return IngestAccess::Allowed;
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return IngestAccess::Unauthorized(
                "a service token is required (Authorization: Bearer …)".into(),
            );
        };
        // Every configured token is compared, so timing does not tell which one matched.
        let matched = self
            .ingest_tokens
            .iter()
            .fold(false, |acc, known| constant_time_eq(known, token) | acc);
        if matched {
            return IngestAccess::Allowed;
        }
        if self
            .check_reader(Some(token), now)
            .is_ok_and(|c| c.is_some())
        {
            return IngestAccess::Forbidden(
                "viewer tokens cannot ingest; use a service token".into(),
            );
        }
        IngestAccess::Unauthorized("the service token is not valid".into())
    }

    /// Whether a WebSocket from `origin` may connect to a server reached as `host`.
    pub fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            // Not a browser: judged by its token alone.
            return true;
        };
        if self
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // Same origin: the Origin's host[:port] is the Host the request was sent to.
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin);
        host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
    }
}

/// The bearer token of a request: the `Authorization` header, else `?access_token=`.
pub fn bearer_token(authorization: Option<&str>, query: &str) -> Option<String> {
    if let Some(value) = authorization {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

/// A query string with the value of `access_token` replaced, for logs.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k == "access_token" => format!("{k}=REDACTED"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"netraven-secret";
    const NOW: i64 = 1_800_000_000;

    fn token(claims: Value) -> String {
        sign_jwt(&claims, SECRET)
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let t = token(json!({"sub": "alice", "role": "admin", "exp": NOW + 60}));
        assert_eq!(
            verify_jwt(&t, SECRET, NOW),
            Ok(Claims {
                sub: "alice".into(),
                role: "admin".into(),
                exp: NOW + 60
            })
        );
    }

    #[test]
    fn expired_wrongly_signed_alg_none_and_malformed_tokens_are_refused() {
        let expired = token(json!({"sub": "a", "role": "user", "exp": NOW - 120}));
        assert_eq!(verify_jwt(&expired, SECRET, NOW), Err(TokenError::Expired));
        let good = token(json!({"sub": "a", "role": "user", "exp": NOW + 60}));
        assert_eq!(
            verify_jwt(&good, b"other secret", NOW),
            Err(TokenError::Signature)
        );
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = good.split('.').nth(1).unwrap();
        assert_eq!(
            verify_jwt(&format!("{none_header}.{payload}."), SECRET, NOW),
            Err(TokenError::Algorithm("none".into()))
        );
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.??.##"] {
            assert!(
                matches!(verify_jwt(bad, SECRET, NOW), Err(TokenError::Malformed(_))),
                "{bad}"
            );
        }
        let no_exp = token(json!({"sub": "a"}));
        assert!(matches!(
            verify_jwt(&no_exp, SECRET, NOW),
            Err(TokenError::Malformed(_))
        ));
        // A tampered payload breaks the signature.
        let forged_payload =
            URL_SAFE_NO_PAD.encode(json!({"sub":"a","role":"admin","exp":NOW+60}).to_string());
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(verify_jwt(&forged, SECRET, NOW), Err(TokenError::Signature));
    }

    #[test]
    fn ingest_needs_a_service_token_and_a_viewer_token_is_forbidden() {
        let policy = Policy {
            jwt_secret: Some("netraven-secret".into()),
            ingest_tokens: vec!["svc-1".into(), "svc-2".into()],
            allowed_origins: vec![],
        };
        assert_eq!(
            policy.check_ingest(Some("svc-2"), NOW),
            IngestAccess::Allowed
        );
        assert!(matches!(
            policy.check_ingest(None, NOW),
            IngestAccess::Unauthorized(_)
        ));
        assert!(matches!(
            policy.check_ingest(Some("svc-3"), NOW),
            IngestAccess::Unauthorized(_)
        ));
        let viewer = token(json!({"sub": "a", "role": "admin", "exp": NOW + 60}));
        assert!(matches!(
            policy.check_ingest(Some(&viewer), NOW),
            IngestAccess::Forbidden(_)
        ));
        assert_eq!(
            Policy::default().check_ingest(None, NOW),
            IngestAccess::Allowed
        );
    }

    #[test]
    fn origins_are_checked_against_the_allowlist_or_the_host() {
        let same = Policy::default();
        assert!(same.origin_allowed(None, Some("gw:8080")));
        assert!(same.origin_allowed(Some("http://gw:8080"), Some("gw:8080")));
        assert!(!same.origin_allowed(Some("http://evil.example"), Some("gw:8080")));
        let listed = Policy {
            allowed_origins: vec!["https://netraven.local".into()],
            ..Default::default()
        };
        assert!(listed.origin_allowed(Some("https://netraven.local"), Some("gw:8080")));
        assert!(!listed.origin_allowed(Some("https://other.local"), Some("gw:8080")));
    }

    #[test]
    fn tokens_come_from_the_header_or_the_query_and_are_redacted_in_logs() {
        assert_eq!(bearer_token(Some("Bearer abc"), ""), Some("abc".into()));
        assert_eq!(bearer_token(Some("Basic abc"), "access_token=x"), None);
        assert_eq!(
            bearer_token(None, "tail=5&access_token=x%2By"),
            Some("x+y".into())
        );
        assert_eq!(
            redact_query("tail=5&access_token=secret"),
            "tail=5&access_token=REDACTED"
        );
        assert!(constant_time_eq("a", "a") && !constant_time_eq("a", "b"));
    }
}
