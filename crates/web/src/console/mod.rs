//! The security operations console: a single page served at `/` with every asset embedded
//! in the binary (plain ES modules and hand-written CSS under `console/assets/`, no build
//! step, nothing fetched from elsewhere), the endpoints it needs beyond the rest of the
//! API (`/api/v1/console/...`), the cookie session and CSRF check ([`session`]), and the
//! live alert stream ([`live`]).
//!
//! Every console page answers with a strict Content-Security-Policy: scripts, styles,
//! images and connections from this origin only, no inline script or style, no framing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;
use crate::error::{ApiError, Path};

pub(crate) mod api;
pub(crate) mod live;
pub(crate) mod session;

pub use crate::console::api::{ConduitLink, ZonePlan};

/// The policy of the console's page and assets.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's files: name under `/console/`, content type, body.
pub(crate) static ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    ("app.js", JS, include_str!("assets/app.js")),
    ("dom.js", JS, include_str!("assets/dom.js")),
    ("api.js", JS, include_str!("assets/api.js")),
    ("chart.js", JS, include_str!("assets/chart.js")),
    ("map.js", JS, include_str!("assets/map.js")),
    ("alerts.js", JS, include_str!("assets/alerts.js")),
    ("incidents.js", JS, include_str!("assets/incidents.js")),
    ("device.js", JS, include_str!("assets/device.js")),
    ("sharing.js", JS, include_str!("assets/sharing.js")),
    ("advisories.js", JS, include_str!("assets/advisories.js")),
    ("readiness.js", JS, include_str!("assets/readiness.js")),
    ("audit.js", JS, include_str!("assets/audit.js")),
    ("reports.js", JS, include_str!("assets/reports.js")),
    ("commands.js", JS, include_str!("assets/commands.js")),
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";

const INDEX: &str = include_str!("assets/index.html");

/// What the console keeps in memory: the live alert hub and the last map summary.
pub(crate) struct ConsoleState {
    pub(crate) hub: live::Hub,
    pub(crate) map: Mutex<Option<(Instant, Arc<String>)>>,
}

impl ConsoleState {
    pub(crate) fn new() -> ConsoleState {
        ConsoleState {
            hub: live::Hub::new(),
            map: Mutex::new(None),
        }
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the console's page (it signs in and loads everything else itself).
pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

/// `GET /console/{file}`: one embedded asset.
pub(crate) async fn asset(
    State(_): State<Arc<Shared>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::not_found(format!("no console file {file:?}")))?;
    let mut response = page(content_type, body);
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}
