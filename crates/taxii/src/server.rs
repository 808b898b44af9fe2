//! The TAXII 2.1 server: one axum handler that resolves the path below the base path
//! itself, so every endpoint answers with and without a trailing slash and every miss
//! gets a TAXII error body.
//!
//! POST to objects answers `202` with a `pending` status at once and processes the
//! envelope in a task behind it: each object is validated on its own (invalid ones are
//! failures in the status, with the reason), and the valid ones are stored in one
//! backend transaction.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;

use crate::access::{
    self, ClientCertificate, CollectionConfig, Credentials, Principal, ServerConfig,
};
use crate::backend::{Backend, NewObject, Record, StatusRecord};
use crate::cursor::Cursor;
use crate::query::{Endpoint, Filters, Query, VersionMatch};
use crate::types::{
    ApiRoot, Collection, Collections, Discovery, ErrorMessage, Status, StatusDetail,
};
use crate::{MEDIA_TYPE_STIX, MEDIA_TYPE_TAXII};

/// The header naming the first record's `date_added` of a page.
pub const HEADER_FIRST: &str = "X-TAXII-Date-Added-First";
/// The header naming the last record's `date_added` of a page.
pub const HEADER_LAST: &str = "X-TAXII-Date-Added-Last";

struct ServerState {
    config: ServerConfig,
    backend: Arc<dyn Backend>,
}

/// The TAXII router, with routes under `config.base_path`.
pub fn router(config: ServerConfig, backend: Arc<dyn Backend>) -> Router {
    let base = config.base_path.trim_end_matches('/').to_owned();
    let state = Arc::new(ServerState { config, backend });
    Router::new()
        .route(&base, axum::routing::any(handle))
        .route(&format!("{base}/"), axum::routing::any(handle))
        .route(&format!("{base}/{{*rest}}"), axum::routing::any(handle))
        .with_state(state)
}

/// A TAXII error response.
#[derive(Debug)]
pub struct TaxiiError {
    pub status: StatusCode,
    pub title: String,
    pub description: Option<String>,
    allow: Option<&'static str>,
}

impl TaxiiError {
    pub fn new(status: StatusCode, title: &str, description: impl Into<String>) -> TaxiiError {
        TaxiiError {
            status,
            title: title.to_owned(),
            description: Some(description.into()),
            allow: None,
        }
    }
    fn bad_request(d: impl Into<String>) -> TaxiiError {
        TaxiiError::new(StatusCode::BAD_REQUEST, "bad request", d)
    }
    fn not_found() -> TaxiiError {
        TaxiiError::new(
            StatusCode::NOT_FOUND,
            "not found",
            "the resource does not exist or you have no access to it",
        )
    }
    fn unauthorized() -> TaxiiError {
        TaxiiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "valid credentials are required",
        )
    }
    fn forbidden(d: &str) -> TaxiiError {
        TaxiiError::new(StatusCode::FORBIDDEN, "forbidden", d)
    }
    fn internal() -> TaxiiError {
        TaxiiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "the server could not complete the request",
        )
    }
    fn method(allow: &'static str) -> TaxiiError {
        TaxiiError {
            allow: Some(allow),
            ..TaxiiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                format!("this resource allows {allow}"),
            )
        }
    }
}

impl IntoResponse for TaxiiError {
    fn into_response(self) -> Response {
        let body = ErrorMessage {
            title: self.title,
            description: self.description,
            error_id: None,
            error_code: None,
            http_status: Some(self.status.as_u16().to_string()),
            external_details: None,
        };
        let mut response = taxii_json(
            self.status,
            serde_json::to_string(&body).unwrap_or_default(),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"taxii\", Bearer"),
            );
        }
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<crate::backend::BackendError> for TaxiiError {
    fn from(err: crate::backend::BackendError) -> TaxiiError {
        tracing::error!(error = %err, "taxii backend failed");
        match err {
            crate::backend::BackendError::Unavailable(_) => TaxiiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server's storage is unavailable; retry later",
            ),
            crate::backend::BackendError::Internal(_) => TaxiiError::internal(),
        }
    }
}

type Result<T, E = TaxiiError> = std::result::Result<T, E>;

fn taxii_json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(MEDIA_TYPE_TAXII),
    );
    response
}

fn ok_json<T: serde::Serialize>(value: &T) -> Response {
    taxii_json(
        StatusCode::OK,
        serde_json::to_string(value).unwrap_or_default(),
    )
}

/// Whether a media type (with parameters) is TAXII 2.1 JSON; `wildcards` admits `*/*`
/// and `application/*` (for `Accept`).
fn is_taxii_media(range: &str, wildcards: bool) -> bool {
    let mut parts = range.split(';').map(str::trim);
    let essence = parts.next().unwrap_or("").to_ascii_lowercase();
    let mut version = None;
    let mut q_zero = false;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
            if k == "version" {
                version = Some(v.to_owned());
            } else if k == "q" && v.parse::<f32>().is_ok_and(|q| q == 0.0) {
                q_zero = true;
            }
        }
    }
    if q_zero {
        return false;
    }
    match essence.as_str() {
        "application/taxii+json" => version.as_deref().is_none_or(|v| v == "2.1"),
        "*/*" | "application/*" => wildcards,
        _ => false,
    }
}

/// `406` unless the client accepts TAXII 2.1 JSON (no `Accept` header accepts anything).
fn check_accept(headers: &HeaderMap) -> Result<()> {
    let values: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty()
        || values
            .iter()
            .flat_map(|v| v.split(','))
            .any(|r| is_taxii_media(r, true))
    {
        Ok(())
    } else {
        Err(TaxiiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not acceptable",
            format!("this server answers {MEDIA_TYPE_TAXII}"),
        ))
    }
}

/// The credentials of a request: `Authorization` (Basic or Bearer), else a client
/// certificate the TLS layer verified, else none.
pub fn credentials(headers: &HeaderMap, cert: Option<&ClientCertificate>) -> Result<Credentials> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| TaxiiError::bad_request("malformed Authorization header"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| TaxiiError::bad_request("malformed Basic credentials"))?;
            let (user, password) = raw
                .split_once(':')
                .ok_or_else(|| TaxiiError::bad_request("malformed Basic credentials"))?;
            Ok(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok(Credentials::Bearer(rest.to_owned()))
        } else {
            Err(TaxiiError::unauthorized())
        };
    }
    Ok(match cert {
        Some(c) => Credentials::ClientCertificate(c.0.clone()),
        None => Credentials::None,
    })
}

async fn principal(state: &ServerState, creds: Credentials) -> Result<Principal> {
    if creds == Credentials::None {
        return Ok(Principal::anonymous());
    }
    let mut p = state
        .backend
        .authenticate(&creds)
        .await?
        .ok_or_else(TaxiiError::unauthorized)?;
    // RED never leaves, whatever a backend says.
    if p.clearance == stix::object::tlp::Tlp::Red {
        p.clearance = stix::object::tlp::Tlp::AmberStrict;
    }
    Ok(p)
}

async fn handle(State(state): State<Arc<ServerState>>, req: Request) -> Response {
    match dispatch(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(state: &Arc<ServerState>, req: Request) -> Result<Response> {
    let base = state.config.base_path.trim_end_matches('/');
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix(base).unwrap_or("");
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    let allow: &'static str = match segs.as_slice() {
        [] | [_] | [_, "status", _] | [_, "collections"] | [_, "collections", _] => "GET",
        [_, "collections", _, "objects"] => "GET, POST",
        [_, "collections", _, "objects", _] => "GET, DELETE",
        [_, "collections", _, "manifest"] | [_, "collections", _, "objects", _, "versions"] => {
            "GET"
        }
        _ => return Err(TaxiiError::not_found()),
    };
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return Err(TaxiiError::method(allow));
    }
    check_accept(req.headers())?;
    let creds = credentials(req.headers(), req.extensions().get::<ClientCertificate>())?;
    let p = principal(state, creds).await?;
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let cfg = &state.config;
    match segs.as_slice() {
        [] => discovery(cfg, &p),
        [root] => api_root(cfg, root, &p),
        [root, "status", id] => status(state, root, id, &p).await,
        [root, "collections"] => collections(cfg, root, &p),
        [root, "collections", c] => {
            let (_, coll) = collection(cfg, root, c, &p)?;
            Ok(ok_json(&collection_resource(coll, &p)))
        }
        [root, "collections", c, "objects"] if method == Method::POST => {
            post_objects(state, root, c, &p, req).await
        }
        [root, "collections", c, "objects"] => {
            get_records(state, root, c, None, &p, query, Kind::Objects).await
        }
        [root, "collections", c, "manifest"] => {
            get_records(state, root, c, None, &p, query, Kind::Manifest).await
        }
        [root, "collections", c, "objects", o] if method == Method::DELETE => {
            delete_object(state, root, c, o, &p, query).await
        }
        [root, "collections", c, "objects", o] => {
            get_records(state, root, c, Some(o), &p, query, Kind::Object).await
        }
        [root, "collections", c, "objects", o, "versions"] => {
            get_records(state, root, c, Some(o), &p, query, Kind::Versions).await
        }
        _ => Err(TaxiiError::not_found()),
    }
}

fn anonymous_allowed(cfg: &ServerConfig) -> bool {
    cfg.roots
        .iter()
        .any(|r| r.collections.iter().any(|c| c.public))
}

fn discovery(cfg: &ServerConfig, p: &Principal) -> Result<Response> {
    if p.anonymous && !anonymous_allowed(cfg) {
        return Err(TaxiiError::unauthorized());
    }
    let base = cfg.base_path.trim_end_matches('/');
    Ok(ok_json(&Discovery {
        title: cfg.title.clone(),
        description: cfg.description.clone(),
        contact: cfg.contact.clone(),
        default: cfg.default_root.as_ref().map(|r| format!("{base}/{r}/")),
        api_roots: cfg
            .roots
            .iter()
            .map(|r| format!("{base}/{}/", r.name))
            .collect(),
    }))
}

fn root<'a>(cfg: &'a ServerConfig, name: &str, p: &Principal) -> Result<&'a access::RootConfig> {
    let root = cfg.root(name);
    if p.anonymous && !root.is_some_and(|r| r.collections.iter().any(|c| c.public)) {
        return Err(TaxiiError::unauthorized());
    }
    root.ok_or_else(TaxiiError::not_found)
}

fn api_root(cfg: &ServerConfig, name: &str, p: &Principal) -> Result<Response> {
    let r = root(cfg, name, p)?;
    Ok(ok_json(&ApiRoot {
        title: r.title.clone(),
        description: r.description.clone(),
        versions: vec![MEDIA_TYPE_TAXII.to_owned()],
        max_content_length: cfg.max_body_bytes as u64,
    }))
}

fn collection_resource(c: &CollectionConfig, p: &Principal) -> Collection {
    Collection {
        id: c.id.clone(),
        title: c.title.clone(),
        description: c.description.clone(),
        alias: c.alias.clone(),
        can_read: c.can_read(p),
        can_write: c.can_write(p),
        media_types: vec![MEDIA_TYPE_STIX.to_owned()],
    }
}

fn collections(cfg: &ServerConfig, name: &str, p: &Principal) -> Result<Response> {
    let r = root(cfg, name, p)?;
    Ok(ok_json(&Collections {
        collections: r
            .collections
            .iter()
            .filter(|c| c.visible(p))
            .map(|c| collection_resource(c, p))
            .collect(),
    }))
}

fn collection<'a>(
    cfg: &'a ServerConfig,
    root_name: &str,
    id: &str,
    p: &Principal,
) -> Result<(&'a access::RootConfig, &'a CollectionConfig)> {
    let r = root(cfg, root_name, p)?;
    match r.collection(id) {
        Some(c) if c.visible(p) => Ok((r, c)),
        _ if p.anonymous => Err(TaxiiError::unauthorized()),
        _ => Err(TaxiiError::not_found()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Objects,
    Manifest,
    Object,
    Versions,
}

fn build_query(
    cfg: &ServerConfig,
    filters: Filters,
    object_id: Option<&str>,
    p: &Principal,
    kind: Kind,
) -> (Query, usize) {
    let limit = filters
        .limit
        .unwrap_or(cfg.max_page_size)
        .min(cfg.max_page_size)
        .max(1);
    let versions = if kind == Kind::Versions {
        VersionMatch {
            all: true,
            ..VersionMatch::default()
        }
    } else {
        filters.versions
    };
    let spec_versions = if filters.spec_versions.is_empty() {
        vec!["2.1".to_owned()]
    } else {
        filters.spec_versions
    };
    let query = Query {
        object_id: object_id.map(str::to_owned),
        added_after: filters.added_after,
        after: filters.next,
        limit: limit + 1,
        ids: filters.ids,
        types: filters.types,
        versions,
        spec_versions,
        max_tlp: p.clearance,
        with_objects: matches!(kind, Kind::Objects | Kind::Object),
    };
    (query, limit)
}

fn timestamp(us: i64) -> String {
    stix::time::format_micros(us)
}

#[allow(clippy::too_many_arguments)]
async fn get_records(
    state: &ServerState,
    root_name: &str,
    coll_id: &str,
    object_id: Option<&str>,
    p: &Principal,
    raw_query: Option<&str>,
    kind: Kind,
) -> Result<Response> {
    let cfg = &state.config;
    let (r, c) = collection(cfg, root_name, coll_id, p)?;
    if !c.can_read(p) {
        return Err(TaxiiError::forbidden("you may not read this collection"));
    }
    if let Some(o) = object_id
        && !stix::object::is_identifier(o, None)
    {
        return Err(TaxiiError::not_found());
    }
    let endpoint = match kind {
        Kind::Objects | Kind::Manifest => Endpoint::Objects,
        Kind::Object => Endpoint::Object,
        Kind::Versions => Endpoint::Versions,
    };
    let filters = Filters::parse(raw_query, endpoint).map_err(|e| TaxiiError::bad_request(e.0))?;
    let continuing = filters.next.is_some();
    let (query, limit) = build_query(cfg, filters, object_id, p, kind);
    let mut records = state.backend.query(&r.name, &c.id, &query).await?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next = more.then(|| {
        let last = records.last().expect("a page with more has records");
        Cursor {
            date_added_us: last.date_added_us,
            id: last.id.clone(),
            version_us: last.version_us,
        }
        .encode()
    });
    let first_added = records.first().map(|r| r.date_added_us);
    let last_added = records.last().map(|r| r.date_added_us);
    // Defence in depth: the backend already filtered by clearance.
    records.retain(|rec| access::may_leave(rec.tlp, p));
    if records.is_empty() && object_id.is_some() && !continuing && !more {
        return Err(TaxiiError::not_found());
    }
    let mut out = String::with_capacity(256 + records.len() * 512);
    out.push_str("{\"more\":");
    out.push_str(if more { "true" } else { "false" });
    if let Some(next) = &next {
        out.push_str(",\"next\":");
        out.push_str(&Value::String(next.clone()).to_string());
    }
    match kind {
        Kind::Objects | Kind::Object => {
            if !records.is_empty() {
                out.push_str(",\"objects\":[");
                push_joined(&mut out, &records, |rec, out| {
                    out.push_str(rec.object.as_deref().unwrap_or("null"))
                });
                out.push(']');
            }
        }
        Kind::Manifest => {
            if !records.is_empty() {
                out.push_str(",\"objects\":[");
                push_joined(&mut out, &records, |rec, out| {
                    let m = crate::types::ManifestRecord {
                        id: rec.id.clone(),
                        date_added: timestamp(rec.date_added_us),
                        version: rec.version.clone(),
                        media_type: Some(format!(
                            "application/stix+json;version={}",
                            rec.spec_version
                        )),
                    };
                    out.push_str(&serde_json::to_string(&m).unwrap_or_default());
                });
                out.push(']');
            }
        }
        Kind::Versions => {
            if !records.is_empty() {
                out.push_str(",\"versions\":[");
                push_joined(&mut out, &records, |rec, out| {
                    out.push_str(&Value::String(rec.version.clone()).to_string())
                });
                out.push(']');
            }
        }
    }
    out.push('}');
    let mut response = taxii_json(StatusCode::OK, out);
    if let (Some(first), Some(last)) = (first_added, last_added) {
        for (name, us) in [(HEADER_FIRST, first), (HEADER_LAST, last)] {
            if let Ok(v) = HeaderValue::from_str(&timestamp(us)) {
                response.headers_mut().insert(name, v);
            }
        }
    }
    Ok(response)
}

fn push_joined(out: &mut String, records: &[Record], mut f: impl FnMut(&Record, &mut String)) {
    for (i, rec) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(rec, out);
    }
}

async fn delete_object(
    state: &ServerState,
    root_name: &str,
    coll_id: &str,
    object_id: &str,
    p: &Principal,
    raw_query: Option<&str>,
) -> Result<Response> {
    let cfg = &state.config;
    let (r, c) = collection(cfg, root_name, coll_id, p)?;
    if !(c.can_read(p) && c.can_write(p)) {
        return Err(TaxiiError::forbidden(
            "you may not delete from this collection",
        ));
    }
    if !stix::object::is_identifier(object_id, None) {
        return Err(TaxiiError::not_found());
    }
    let mut filters =
        Filters::parse(raw_query, Endpoint::Delete).map_err(|e| TaxiiError::bad_request(e.0))?;
    // Without filters a delete removes every version of every spec version.
    if !raw_query.is_some_and(|q| q.contains("match%5Bversion%5D") || q.contains("match[version]"))
    {
        filters.versions = VersionMatch {
            all: true,
            last: false,
            ..VersionMatch::default()
        };
    }
    if filters.spec_versions.is_empty() {
        filters.spec_versions = vec!["2.0".to_owned(), "2.1".to_owned()];
    }
    let (query, _) = build_query(cfg, filters, Some(object_id), p, Kind::Object);
    let n = state
        .backend
        .delete(&r.name, &c.id, object_id, &query)
        .await?;
    if n == 0 {
        return Err(TaxiiError::not_found());
    }
    Ok(taxii_json(StatusCode::OK, String::new()))
}

async fn status(state: &ServerState, root_name: &str, id: &str, p: &Principal) -> Result<Response> {
    let r = root(&state.config, root_name, p)?;
    if p.anonymous {
        return Err(TaxiiError::unauthorized());
    }
    match state.backend.load_status(&r.name, id).await? {
        Some(rec) if rec.owner == p.name => Ok(ok_json(&rec.status)),
        _ => Err(TaxiiError::not_found()),
    }
}

/// A fresh random UUID (version 4).
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the system random source works");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Whether a `Content-Type` is TAXII 2.1 JSON.
fn check_content_type(headers: &HeaderMap) -> Result<()> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| is_taxii_media(v, false));
    if ok {
        Ok(())
    } else {
        Err(TaxiiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported media type",
            format!("send {MEDIA_TYPE_TAXII}"),
        ))
    }
}

fn detail(v: &Value, message: Option<String>) -> StatusDetail {
    let id = v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let version = v
        .get("modified")
        .or_else(|| v.get("created"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    StatusDetail {
        id,
        version,
        message,
    }
}

/// Parses a POSTed envelope into its objects; an error is the reason it is malformed.
pub fn parse_envelope(body: &[u8]) -> Result<Vec<Value>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Value::Object(mut m) = value else {
        return Err("the envelope must be a JSON object".to_owned());
    };
    match m.remove("objects") {
        Some(Value::Array(objects)) => Ok(objects),
        Some(_) => Err("the envelope's objects must be a list".to_owned()),
        None => Ok(Vec::new()),
    }
}

/// Turns one posted value into what the backend stores, or the reason it is refused.
pub fn prepare_object(
    v: &Value,
    unmarked: stix::object::tlp::Tlp,
    now: i64,
) -> Result<NewObject, String> {
    let Some(m) = v.as_object() else {
        return Err("not a JSON object".to_owned());
    };
    let t = m.get("type").and_then(Value::as_str).unwrap_or("");
    if t == "bundle" {
        return Err("a bundle is not an object; post its objects".to_owned());
    }
    let mut issues = Vec::new();
    stix::object::validate_at(v, "$", &mut issues);
    if !issues.is_empty() {
        let text: Vec<String> = issues.iter().take(5).map(|i| i.to_string()).collect();
        return Err(format!("invalid STIX object: {}", text.join("; ")));
    }
    let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let (version, version_us) = ["modified", "created"]
        .iter()
        .find_map(|k| {
            let s = m.get(*k)?.as_str()?;
            Some((s.to_owned(), crate::query::parse_timestamp(s)?))
        })
        .unwrap_or_else(|| (timestamp(now), now));
    let spec_version = m
        .get("spec_version")
        .and_then(Value::as_str)
        .unwrap_or("2.1")
        .to_owned();
    Ok(NewObject {
        id,
        object_type: t.to_owned(),
        version,
        version_us,
        spec_version,
        tlp: access::object_tlp(m, unmarked),
        object: serde_json::to_string(&Value::Object(m.clone())).unwrap_or_default(),
    })
}

async fn post_objects(
    state: &Arc<ServerState>,
    root_name: &str,
    coll_id: &str,
    p: &Principal,
    req: Request,
) -> Result<Response> {
    let cfg = &state.config;
    let (r, c) = collection(cfg, root_name, coll_id, p)?;
    if !c.can_write(p) {
        return Err(TaxiiError::forbidden(
            "you may not write to this collection",
        ));
    }
    check_content_type(req.headers())?;
    let body = axum::body::to_bytes(req.into_body(), cfg.max_body_bytes)
        .await
        .map_err(|_| {
            TaxiiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request too large",
                format!("the body exceeds {} bytes", cfg.max_body_bytes),
            )
        })?;
    let objects = parse_envelope(&body).map_err(TaxiiError::bad_request)?;
    let now = now_us();
    let status = Status {
        id: uuid_v4(),
        status: "pending".to_owned(),
        request_timestamp: Some(timestamp(now)),
        total_count: objects.len() as u64,
        success_count: 0,
        successes: Vec::new(),
        failure_count: 0,
        failures: Vec::new(),
        pending_count: objects.len() as u64,
        pendings: objects.iter().map(|v| detail(v, None)).collect(),
    };
    let record = StatusRecord {
        owner: p.name.clone(),
        created_us: now,
        status,
    };
    state.backend.save_status(&r.name, &record).await?;
    let response = taxii_json(
        StatusCode::ACCEPTED,
        serde_json::to_string(&record.status).unwrap_or_default(),
    );
    let state = state.clone();
    let (root_name, coll_id) = (r.name.clone(), c.id.clone());
    tokio::spawn(async move {
        process_envelope(&state, &root_name, &coll_id, record, objects).await;
    });
    Ok(response)
}

async fn process_envelope(
    state: &ServerState,
    root_name: &str,
    coll_id: &str,
    mut record: StatusRecord,
    objects: Vec<Value>,
) {
    let now = now_us();
    let mut valid = Vec::new();
    let mut valid_src = Vec::new();
    let mut failures = Vec::new();
    for v in &objects {
        match prepare_object(v, state.config.unmarked, now) {
            Ok(o) => {
                valid.push(o);
                valid_src.push(v);
            }
            Err(msg) => failures.push(detail(v, Some(msg))),
        }
    }
    let mut successes = Vec::new();
    if !valid.is_empty() {
        match state.backend.add(root_name, coll_id, valid).await {
            Ok(added) => {
                for a in added {
                    successes.push(StatusDetail {
                        id: a.id,
                        version: a.version,
                        message: (!a.new).then(|| "already present".to_owned()),
                    });
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "failed to store a taxii envelope");
                for v in valid_src {
                    failures.push(detail(
                        v,
                        Some("the server could not store the object; retry".to_owned()),
                    ));
                }
            }
        }
    }
    let s = &mut record.status;
    s.status = "complete".to_owned();
    s.success_count = successes.len() as u64;
    s.successes = successes;
    s.failure_count = failures.len() as u64;
    s.failures = failures;
    s.pending_count = 0;
    s.pendings.clear();
    if let Err(err) = state.backend.save_status(root_name, &record).await {
        tracing::error!(error = %err, status = %record.status.id, "failed to save a taxii status");
    }
}
