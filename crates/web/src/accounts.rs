//! Operator accounts: Argon2id password hashing, login (a bearer token with an expiry),
//! logout, personal API tokens, and user management for admins.
//!
//! There is no default password: the first admin account is made by `citysec user add
//! --role admin` (which prints a generated password) or through this API with the generated
//! admin token. Failed logins are rate-limited per source address and per user name.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::Timestamp;
use serde::{Deserialize, Serialize};
use store::{User, UserToken, UserTokenKind};

use crate::Shared;
use crate::auth::{Principal, Role, token_sha256};
use crate::error::{ApiError, Json, Path};

type AppState = State<Arc<Shared>>;

/// How long a login session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The longest lifetime of a personal API token.
pub const MAX_API_TOKEN_DAYS: u32 = 365;
pub const MIN_PASSWORD_LEN: usize = 12;
pub const MAX_PASSWORD_LEN: usize = 256;
pub const MAX_NAME_LEN: usize = 64;

/// Hashes a password with Argon2id (default parameters) in PHC format.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no system randomness: {e}"))?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("failed to hash password: {e}"))
}

/// Whether `password` matches a stored Argon2 hash (constant-time comparison).
pub fn verify_password(hash: &str, password: &str) -> bool {
    hash.starts_with("$argon2")
        && Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok()
}

/// A random password for a new account (32 hex digits: 128 bits).
pub fn generate_password() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no system randomness: {e}"))?;
    Ok(hex::encode(bytes))
}

/// A random bearer token for a user (`cs_u_` and 64 hex digits).
pub fn generate_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no system randomness: {e}"))?;
    Ok(format!("cs_u_{}", hex::encode(bytes)))
}

/// Checks a login name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name must be 1 to {MAX_NAME_LEN} of a-z, 0-9, '.', '_', '-' and start with a letter or digit"
        ))
    }
}

/// Checks a chosen password's length.
pub fn validate_password(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if len > MAX_PASSWORD_LEN {
        return Err(format!(
            "password must be at most {MAX_PASSWORD_LEN} characters"
        ));
    }
    Ok(())
}

/// Builds a new user record (hashing the password).
pub fn new_user(name: &str, role: Role, password: &str, now: Timestamp) -> Result<User, String> {
    validate_user_name(name)?;
    validate_password(password)?;
    Ok(User {
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        password_hash: hash_password(password)?,
        disabled: false,
        created_at: now,
        updated_at: now,
    })
}

/// Failed-login limits: at most `per_user` failures for one user name and `per_source`
/// from one address within `window`; further attempts are refused until the oldest
/// failure leaves the window.
pub(crate) struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    per_user: usize,
    per_source: usize,
    window: Duration,
}

impl LoginLimiter {
    const MAX_KEYS: usize = 100_000;

    pub(crate) fn new() -> LoginLimiter {
        LoginLimiter {
            failures: Mutex::new(HashMap::new()),
            per_user: 5,
            per_source: 20,
            window: Duration::from_secs(300),
        }
    }

    /// `Err(seconds to wait)` when either key is over its limit.
    fn check(&self, keys: &[(String, usize)]) -> Result<(), u64> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for (key, limit) in keys {
            if let Some(times) = map.get_mut(key) {
                while times.front().is_some_and(|t| t.elapsed() >= self.window) {
                    times.pop_front();
                }
                if times.len() >= *limit {
                    let oldest = times.front().map_or(Duration::ZERO, Instant::elapsed);
                    return Err(self.window.saturating_sub(oldest).as_secs().max(1));
                }
            }
        }
        Ok(())
    }

    fn fail(&self, keys: &[(String, usize)]) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= LoginLimiter::MAX_KEYS {
            let window = self.window;
            map.retain(|_, times| times.back().is_some_and(|t| t.elapsed() < window));
        }
        for (key, limit) in keys {
            let times = map.entry(key.clone()).or_default();
            times.push_back(Instant::now());
            while times.len() > *limit {
                times.pop_front();
            }
        }
    }

    fn succeed(&self, user_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(user_key);
    }
}

/// A hash to verify against when the user does not exist, so timing does not tell.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    pub(crate) user: String,
    pub(crate) password: String,
}

#[derive(Serialize)]
pub(crate) struct LoginReply {
    pub(crate) token: String,
    pub(crate) user: String,
    pub(crate) role: Role,
    pub(crate) expires_at: Timestamp,
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("password check failed: {e}")))
}

/// Every login attempt goes into the hash-chained audit log (the user name a failed
/// attempt gave is kept clipped, since anyone can send one).
async fn audit_login(s: &crate::Shared, user: &str, outcome: &str, source: &str, detail: &str) {
    let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
    let entry = store::audit::AuditEntry {
        ts: Timestamp::now(),
        actor: user.clone(),
        action: "login".to_owned(),
        subject: Some(user),
        outcome: outcome.to_owned(),
        detail: serde_json::json!({ "source": source, "detail": detail }),
    };
    if let Err(err) = s.api.store.append_audit(&[entry]).await {
        tracing::error!(error = %err, "failed to audit a login");
    }
}

pub(crate) async fn login(State(s): AppState, req: Request) -> Result<Response, ApiError> {
    let source = source_of(&req);
    let Json(body) = Json::<LoginRequest>::from_request(req, &()).await?;
    let session = open_session(&s, &source, body).await?;
    Ok(axum::Json(session).into_response())
}

/// The address a request came from, as the login limits and the audit log name it.
pub(crate) fn source_of(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string())
}

/// A new login session for a user name and password: rate limits, the password check, the
/// audit record, and the stored session token (used as a bearer token by `login`, as a
/// cookie by the console).
pub(crate) async fn open_session(
    s: &Shared,
    source: &str,
    body: LoginRequest,
) -> Result<LoginReply, ApiError> {
    let source = source.to_owned();
    let user_key = format!("user:{}", body.user.to_ascii_lowercase());
    let keys = [
        (user_key.clone(), s.logins.per_user),
        (format!("source:{source}"), s.logins.per_source),
    ];
    if let Err(retry_after_s) = s.logins.check(&keys) {
        tracing::warn!(user = %body.user, source, "login refused: too many failed attempts");
        audit_login(
            s,
            &body.user,
            "refused",
            &source,
            "too many failed attempts",
        )
        .await;
        return Err(ApiError::TooManyRequests {
            message: format!("too many failed logins; retry in {retry_after_s} s"),
            retry_after_s,
        });
    }
    let user = if validate_user_name(&body.user).is_ok() {
        s.api.store.get_user(&body.user).await?
    } else {
        None
    };
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
    let password = body.password;
    let matches = blocking(move || verify_password(&hash, &password)).await?;
    let user = match user {
        Some(user) if matches && !user.disabled => user,
        _ => {
            s.logins.fail(&keys);
            tracing::warn!(user = %body.user, source, "login failed");
            audit_login(
                s,
                &body.user,
                "failed",
                &source,
                "wrong user name or password",
            )
            .await;
            return Err(ApiError::unauthorized("wrong user name or password"));
        }
    };
    let role = user
        .role
        .parse::<Role>()
        .map_err(|_| ApiError::forbidden(format!("user {:?} has no usable role", user.name)))?;
    s.logins.succeed(&user_key);
    let token = generate_token().map_err(ApiError::internal)?;
    let now = Timestamp::now();
    let expires_at = now.saturating_add_ms(SESSION_TTL.as_millis() as i64);
    s.api
        .store
        .insert_user_token(&UserToken {
            sha256: token_sha256(&token),
            user: user.name.clone(),
            kind: UserTokenKind::Session,
            label: format!("login from {source}"),
            created_at: now,
            expires_at: Some(expires_at),
        })
        .await?;
    let _ = s.api.store.prune_user_tokens(now).await;
    tracing::info!(actor = %user.name, role = %role, source, "login");
    audit_login(s, &user.name, "ok", &source, role.as_str()).await;
    Ok(LoginReply {
        token,
        user: user.name,
        role,
        expires_at,
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

pub(crate) async fn logout(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sha256 = bearer(&headers).map(token_sha256).unwrap_or_default();
    if !s.api.store.delete_user_token(&sha256).await? {
        return Err(ApiError::invalid(
            "this token is not a login session or user token (platform tokens cannot log out)",
        ));
    }
    s.tokens.remove(&sha256);
    tracing::info!(actor = %principal.name, "logout");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize)]
struct Me<'a> {
    user: &'a str,
    role: Role,
}

pub(crate) async fn me(
    axum::Extension(principal): axum::Extension<Principal>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(Me {
        user: &principal.name,
        role: principal.role,
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    label: String,
    #[serde(default)]
    ttl_days: Option<u32>,
}

#[derive(Serialize)]
struct TokenReply {
    token: String,
    user: String,
    expires_at: Option<Timestamp>,
}

/// A personal API token for the calling user (scripts act as that person).
pub(crate) async fn create_token(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Json(body): Json<TokenRequest>,
) -> Result<Response, ApiError> {
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "label must be 1 to 200 printable characters",
        ));
    }
    let days = body.ttl_days.unwrap_or(90);
    if days == 0 || days > MAX_API_TOKEN_DAYS {
        return Err(ApiError::invalid(format!(
            "ttl_days must be from 1 to {MAX_API_TOKEN_DAYS}"
        )));
    }
    if s.api.store.get_user(&principal.name).await?.is_none() {
        return Err(ApiError::invalid(
            "only operator accounts can make personal tokens (log in as a user)",
        ));
    }
    let token = generate_token().map_err(ApiError::internal)?;
    let now = Timestamp::now();
    let expires_at = now.saturating_add_ms(i64::from(days) * 86_400_000);
    s.api
        .store
        .insert_user_token(&UserToken {
            sha256: token_sha256(&token),
            user: principal.name.clone(),
            kind: UserTokenKind::Api,
            label: label.to_owned(),
            created_at: now,
            expires_at: Some(expires_at),
        })
        .await?;
    tracing::info!(actor = %principal.name, label, "api token created");
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenReply {
            token,
            user: principal.name,
            expires_at: Some(expires_at),
        }),
    )
        .into_response())
}

/// A user as the API shows it: never the password hash.
#[derive(Serialize)]
pub(crate) struct UserView<'a> {
    name: &'a str,
    role: &'a str,
    disabled: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl<'a> UserView<'a> {
    fn new(user: &'a User) -> UserView<'a> {
        UserView {
            name: &user.name,
            role: &user.role,
            disabled: user.disabled,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

pub(crate) async fn list_users(State(s): AppState) -> Result<Response, ApiError> {
    let users = s.api.store.list_users().await?;
    let items: Vec<UserView> = users.iter().map(UserView::new).collect();
    Ok(axum::Json(serde_json::json!({ "items": items })).into_response())
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse::<Role>().map_err(|_| {
        ApiError::invalid(format!(
            "unknown role {text:?} (expected one of: viewer, analyst, operator, supervisor, admin)"
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUserRequest {
    name: String,
    role: String,
    /// Omitted: a password is generated and returned once.
    #[serde(default)]
    password: Option<String>,
}

pub(crate) async fn create_user(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Json(body): Json<NewUserRequest>,
) -> Result<Response, ApiError> {
    let role = parse_role(&body.role)?;
    let (password, generated) = match body.password {
        Some(p) => (p, false),
        None => (generate_password().map_err(ApiError::internal)?, true),
    };
    validate_user_name(&body.name).map_err(ApiError::invalid)?;
    validate_password(&password).map_err(ApiError::invalid)?;
    let name = body.name.clone();
    let pw = password.clone();
    let user = blocking(move || new_user(&name, role, &pw, Timestamp::now()))
        .await?
        .map_err(ApiError::invalid)?;
    s.api.store.insert_user(&user).await?;
    tracing::info!(actor = %principal.name, user = %user.name, role = %role, "user created");
    let mut reply = serde_json::json!({ "user": UserView::new(&user) });
    if generated {
        reply["password"] = serde_json::Value::String(password);
    }
    Ok((StatusCode::CREATED, axum::Json(reply)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUserRequest {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

pub(crate) async fn update_user(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(name): Path<String>,
    Json(body): Json<UpdateUserRequest>,
) -> Result<Response, ApiError> {
    if body.role.is_none() && body.disabled.is_none() && body.password.is_none() {
        return Err(ApiError::invalid(
            "give at least one of role, disabled, password",
        ));
    }
    let mut user = s
        .api
        .store
        .get_user(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("user {name} not found")))?;
    if let Some(role) = &body.role {
        user.role = parse_role(role)?.as_str().to_owned();
    }
    if let Some(disabled) = body.disabled {
        user.disabled = disabled;
    }
    let revoke_sessions = body.disabled == Some(true) || body.password.is_some();
    if let Some(password) = body.password {
        validate_password(&password).map_err(ApiError::invalid)?;
        user.password_hash = blocking(move || hash_password(&password))
            .await?
            .map_err(ApiError::internal)?;
    }
    user.updated_at = Timestamp::now();
    s.api.store.update_user(&user).await?;
    if revoke_sessions || body.role.is_some() {
        if revoke_sessions {
            s.api.store.delete_user_tokens(&user.name).await?;
        }
        s.tokens.clear();
    }
    tracing::info!(actor = %principal.name, user = %user.name, role = %user.role, disabled = user.disabled, "user changed");
    Ok(axum::Json(UserView::new(&user)).into_response())
}
