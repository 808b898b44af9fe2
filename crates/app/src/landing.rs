//! A small landing page at `/` until the console arrives: what this server is and where
//! its API lives. It shows no data, so it needs no authentication.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>citysec</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;color:#1d2733}
code{background:#eef1f5;padding:.1rem .3rem;border-radius:3px}</style></head>
<body><h1>citysec</h1>
<p>Security operations for the city's connected devices.</p>
<ul>
<li>API: <code>/api/v1/</code> (bearer token; the admin token is in <code>&lt;data-dir&gt;/admin.token</code>)</li>
<li>API description: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a></li>
<li>Devices: <code>GET /api/v1/devices</code>, alerts: <code>GET /api/v1/alerts</code>, status: <code>GET /api/v1/status</code></li>
<li>Health: <a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a>; metrics: <code>/metrics</code></li>
</ul></body></html>"#;

pub(crate) fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
}
