//! Bearer-token authentication and role checks.
//!
//! A token is looked up by the lowercase hex SHA-256 of its text: first among the platform's
//! API tokens (`Store::find_token`, e.g. the generated admin token), then among the tokens of
//! operator accounts (`UserStore::find_user_token`: login sessions and API tokens, refused
//! once expired or when the user is disabled). The clear token is never stored. Found tokens are cached briefly in a bounded map so a busy
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
    /// Approves response actions and, with the gateway, safety-critical commands.
    Supervisor,
    Admin,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Analyst,
        Role::Operator,
        Role::Supervisor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
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
            "supervisor" => Role::Supervisor,
            "admin" => Role::Admin,
            _ => return Err(format!("unknown role {s:?}")),
        })
    }
}

/// Who made a request, as established by its token; handlers may extract it from the
/// request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The person (the user name of an operator account) or, for a platform API token, the
    /// token's name (`admin` for the generated admin token).
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

    /// Forgets one token (logout).
    pub(crate) fn remove(&self, sha256: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sha256);
    }

    /// Forgets every token (a user was disabled or changed password).
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
    principal_for_token(state, token).await
}

/// Resolves a bearer token's text (a platform API token or a user's) to a principal.
pub(crate) async fn principal_for_token(
    state: &Shared,
    token: &str,
) -> Result<Principal, ApiError> {
    let sha256 = token_sha256(token);
    if let Some(principal) = state.tokens.get(&sha256) {
        return Ok(principal);
    }
    let principal = match state.api.store.find_token(&sha256).await? {
        Some(stored) => {
            let role = stored.role.parse::<Role>().map_err(|_| {
                ApiError::forbidden(format!("token {:?} has no usable role", stored.name))
            })?;
            Principal {
                name: stored.name,
                role,
            }
        }
        None => user_principal(state, &sha256).await?,
    };
    state.tokens.put(sha256, principal.clone());
    Ok(principal)
}

/// Resolves an operator account's token (session or API token) to its user.
pub(crate) async fn user_principal(state: &Shared, sha256: &str) -> Result<Principal, ApiError> {
    let invalid = || ApiError::unauthorized("invalid token");
    let token = state
        .api
        .store
        .find_user_token(sha256)
        .await?
        .ok_or_else(invalid)?;
    if token
        .expires_at
        .is_some_and(|at| at <= model::Timestamp::now())
    {
        return Err(ApiError::unauthorized("token expired; log in again"));
    }
    let user = state
        .api
        .store
        .get_user(&token.user)
        .await?
        .ok_or_else(invalid)?;
    if user.disabled {
        return Err(ApiError::unauthorized("account disabled"));
    }
    let role = user
        .role
        .parse::<Role>()
        .map_err(|_| ApiError::forbidden(format!("user {:?} has no usable role", user.name)))?;
    Ok(Principal {
        name: user.name,
        role,
    })
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
    // The console's session cookie (with its CSRF check), else the bearer token.
    let method = req.method().clone();
    let cookie = crate::console::session::cookie_principal(&guard.state, &method, req.headers());
    let principal = match cookie.await? {
        Some(principal) => principal,
        None => authenticate(&guard.state, req.headers()).await?,
    };
    if principal.role < guard.min_role {
        return Err(ApiError::forbidden(format!(
            "this needs the {} role; the token has {}",
            guard.min_role, principal.role
        )));
    }
    // Every change is attributed to a person.
    if req.method() != axum::http::Method::GET {
        tracing::info!(
            actor = %principal.name,
            role = %principal.role,
            method = %req.method(),
            path = %req.uri().path(),
            "api call"
        );
    }
    req.extensions_mut().insert(principal);
    Ok(next.run(req).await)
}
