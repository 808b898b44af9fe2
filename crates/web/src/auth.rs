//! Bearer-token authentication and role checks.
//!
//! A token is looked up by the lowercase hex SHA-256 of its text (`Store::find_token`); the
//! clear token is never stored. Found tokens are cached briefly in a bounded map so a busy
//! console does not hit the store on every request.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::error::ApiError;

/// API roles, each allowed everything the ones before it are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Analyst,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Ok(match s {
            "viewer" => Role::Viewer,
            "analyst" => Role::Analyst,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return Err(format!("unknown role {s:?}")),
        })
    }
}

/// Who made a request, as established by its token; handlers may extract it from the
/// request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    pub role: Role,
}

/// Lowercase hex SHA-256 of a token's text: the form tokens are stored in.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A small cache of successful token lookups.
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl TokenCache {
    const TTL: Duration = Duration::from_secs(10);
    pub(crate) const MAX_ENTRIES: usize = 1024;

    pub(crate) fn new() -> TokenCache {
        TokenCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, sha256: &str) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(sha256)
            .filter(|(_, at)| at.elapsed() < TokenCache::TTL)
            .map(|(p, _)| p.clone())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub(crate) fn put(&self, sha256: String, principal: Principal) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= TokenCache::MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < TokenCache::TTL);
            if entries.len() >= TokenCache::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(sha256, (principal, Instant::now()));
    }
}

/// Resolves the bearer token of a request to a principal.
pub(crate) async fn authenticate(
    state: &Shared,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("authorization must be 'Bearer <token>'"))?;
    let sha256 = token_sha256(token);
    if let Some(principal) = state.tokens.get(&sha256) {
        return Ok(principal);
    }
    let stored = state
        .api
        .store
        .find_token(&sha256)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid token"))?;
    let role = stored
        .role
        .parse::<Role>()
        .map_err(|_| ApiError::forbidden(format!("token {:?} has no usable role", stored.name)))?;
    let principal = Principal {
        name: stored.name,
        role,
    };
    state.tokens.put(sha256, principal.clone());
    Ok(principal)
}

/// Middleware state: who may call the route.
#[derive(Clone)]
pub(crate) struct Guard {
    pub state: Arc<Shared>,
    pub min_role: Role,
}

/// Middleware: 401 without a valid token, 403 below the route's role.
pub(crate) async fn require_role(
    State(guard): State<Guard>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = authenticate(&guard.state, req.headers()).await?;
    if principal.role < guard.min_role {
        return Err(ApiError::forbidden(format!(
            "this needs the {} role; the token has {}",
            guard.min_role, principal.role
        )));
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}
