//! The console's sign-in: a server-side session (a stored user token with an expiry,
//! the same kind `POST /api/v1/auth/login` issues) carried in a cookie, and CSRF protection
//! for every state-changing request made with that cookie.
//!
//! The cookie is `HttpOnly` (scripts never see the session), `SameSite=Strict` (other
//! sites' pages do not send it), `Path=/`, and `Secure` when the request came over TLS.
//! The CSRF token is derived from the session token (SHA-256 over a label and the token),
//! so it needs no storage, cannot be computed without the session, and dies with it; the
//! console reads it from `/api/v1/console/session` and sends it as `X-CSRF-Token` on every
//! request that is not GET or HEAD. A request with a cookie and without the right header
//! is refused before any handler runs, and so is one whose `Origin` names another host.
//! Bearer tokens (machines, the CLI) are untouched: a request with an `Authorization`
//! header is judged by its token alone, since no browser attaches one on its own.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::auth::{Principal, token_sha256, user_principal};
use crate::error::ApiError;

/// The session cookie's name.
pub const COOKIE: &str = "citysec_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Marks a request that arrived over TLS (the HTTPS listener inserts it), so the session
/// cookie gets the `Secure` attribute.
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// The CSRF token of a session.
pub(crate) fn csrf_of(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"citysec console csrf v1\n");
    h.update(session_token.as_bytes());
    hex::encode(h.finalize())
}

/// The session token in the request's cookies, if any.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The `Set-Cookie` value that starts a session.
pub(crate) fn set_cookie(token: &str, max_age_s: u64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("citysec_session=; Path=/; Max-Age=0"))
}

/// The `Set-Cookie` value that ends a session in the browser.
pub(crate) fn clear_cookie(tls: bool) -> HeaderValue {
    if tls {
        HeaderValue::from_static(
            "citysec_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("citysec_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request's `Origin`, when it has one, is this server (scheme aside: the
/// host and port must be those the request was sent to).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// The principal of a request that carries the session cookie and no bearer token;
/// `None` when the request has a bearer token or no session cookie (the bearer check
/// then decides). State-changing requests must carry the session's CSRF token.
pub(crate) async fn cookie_principal(
    state: &Shared,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let Some(token) = session_token(headers) else {
        return Ok(None);
    };
    if !matches!(*method, Method::GET | Method::HEAD) {
        if !same_origin(headers) {
            return Err(ApiError::forbidden("cross-origin request refused"));
        }
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !constant_time_eq(sent, csrf_of(token).as_bytes()) {
            return Err(ApiError::forbidden(
                "missing or wrong X-CSRF-Token for this session",
            ));
        }
    }
    // Only operator accounts' tokens count as sessions (never a platform API token).
    let key = format!("session:{}", token_sha256(token));
    if let Some(principal) = state.tokens.get(&key) {
        return Ok(Some(principal));
    }
    let principal = user_principal(state, &token_sha256(token))
        .await
        .map_err(|_| ApiError::unauthorized("session expired or ended; sign in again"))?;
    state.tokens.put(key, principal.clone());
    Ok(Some(principal))
}
