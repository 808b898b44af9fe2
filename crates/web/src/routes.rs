//! The route table: every route the API serves, with the role it needs. The router is built
//! from [`ROUTES`] and a test checks the OpenAPI document against it, so they cannot drift.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::auth::{Guard, Role, require_role};
use crate::{
    FLOWS_BODY_LIMIT, IMPORT_BODY_LIMIT, REPORT_BODY_LIMIT, Shared, accounts, advisories, api,
    commands, console, detect, exercises, incidents, readiness, reports,
};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Patch,
}

impl Verb {
    /// The lowercase name, as OpenAPI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Patch => "patch",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Patch => MethodFilter::PATCH,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// Anyone when `ApiState::metrics_public`, otherwise a viewer token.
    Metrics,
    /// A bearer token with at least this role.
    Role(Role),
}

/// One route of the API.
pub struct Route {
    pub verb: Verb,
    /// The axum path, which is also the OpenAPI path (`{id}` parameters).
    pub path: &'static str,
    pub access: Access,
    handler: fn(MethodFilter) -> MethodRouter<Arc<Shared>>,
}

const VIEWER: Access = Access::Role(Role::Viewer);
const ANALYST: Access = Access::Role(Role::Analyst);
const OPERATOR: Access = Access::Role(Role::Operator);
const SUPERVISOR: Access = Access::Role(Role::Supervisor);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every route the API serves.
pub static ROUTES: &[Route] = &[
    Route {
        verb: Verb::Get,
        path: "/healthz",
        access: Access::Public,
        handler: |m| on(m, api::healthz),
    },
    Route {
        verb: Verb::Get,
        path: "/readyz",
        access: Access::Public,
        handler: |m| on(m, api::readyz),
    },
    Route {
        verb: Verb::Get,
        path: "/metrics",
        access: Access::Metrics,
        handler: |m| on(m, api::metrics),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/openapi.json",
        access: Access::Public,
        handler: |m| on(m, api::openapi),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/status",
        access: VIEWER,
        handler: |m| on(m, api::status),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/devices",
        access: VIEWER,
        handler: |m| on(m, api::list_devices),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/devices",
        access: ADMIN,
        handler: |m| on(m, api::create_device),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/devices/import",
        access: ADMIN,
        handler: |m| on(m, api::import_devices).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/devices/{id}",
        access: VIEWER,
        handler: |m| on(m, api::get_device),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/devices/{id}/revoke",
        access: ADMIN,
        handler: |m| on(m, api::revoke_device),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/alerts",
        access: VIEWER,
        handler: |m| on(m, api::list_alerts),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/alerts/{id}",
        access: VIEWER,
        handler: |m| on(m, api::get_alert),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/flows",
        access: OPERATOR,
        handler: |m| on(m, api::ingest_flows).layer(DefaultBodyLimit::max(FLOWS_BODY_LIMIT)),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/events",
        access: VIEWER,
        handler: |m| on(m, api::list_events),
    },
    // The command gateway decides who may send and approve what (and audits refusals),
    // so these need only a valid token.
    Route {
        verb: Verb::Get,
        path: "/api/v1/commands",
        access: VIEWER,
        handler: |m| on(m, commands::list),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/commands",
        access: VIEWER,
        handler: |m| on(m, commands::create),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/commands/{id}",
        access: VIEWER,
        handler: |m| on(m, commands::show),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/commands/{id}/approve",
        access: VIEWER,
        handler: |m| on(m, commands::approve),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/audit",
        access: ADMIN,
        handler: |m| on(m, commands::list_audit),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/audit/verify",
        access: ANALYST,
        handler: |m| on(m, commands::verify),
    },
    // Public advisories: drafting (analyst), approving, issuing and cancelling (operator).
    Route {
        verb: Verb::Get,
        path: "/api/v1/advisories",
        access: VIEWER,
        handler: |m| on(m, advisories::list),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/advisories",
        access: ANALYST,
        handler: |m| on(m, advisories::draft),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/advisories/{id}",
        access: VIEWER,
        handler: |m| on(m, advisories::get),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/advisories/import",
        access: ANALYST,
        handler: |m| on(m, advisories::import),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/advisories/from-alert/{id}",
        access: ANALYST,
        handler: |m| on(m, advisories::draft_from_alert),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/incidents/{id}/advisory",
        access: ANALYST,
        handler: |m| on(m, advisories::draft_from_incident),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/advisories/{id}/approve",
        access: OPERATOR,
        handler: |m| on(m, advisories::approve),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/advisories/{id}/issue",
        access: OPERATOR,
        handler: |m| on(m, advisories::issue),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/advisories/{id}/cancel",
        access: OPERATOR,
        handler: |m| on(m, advisories::cancel),
    },
    // The public CAP feed: issued documents only, signed.
    Route {
        verb: Verb::Get,
        path: "/cap/feed.atom",
        access: Access::Public,
        handler: |m| on(m, advisories::feed),
    },
    Route {
        verb: Verb::Get,
        path: "/cap/alerts/{id}",
        access: Access::Public,
        handler: |m| on(m, advisories::document),
    },
    Route {
        verb: Verb::Get,
        path: "/cap/alerts/{id}/signature",
        access: Access::Public,
        handler: |m| on(m, advisories::signature),
    },
    Route {
        verb: Verb::Get,
        path: "/cap/key.pem",
        access: Access::Public,
        handler: |m| on(m, advisories::public_key),
    },
    // Citizen reports: anonymous, rate-limited, size-limited.
    Route {
        verb: Verb::Post,
        path: "/api/v1/reports",
        access: Access::Public,
        handler: |m| on(m, reports::submit_json).layer(DefaultBodyLimit::max(REPORT_BODY_LIMIT)),
    },
    Route {
        verb: Verb::Get,
        path: "/report",
        access: Access::Public,
        handler: |m| on(m, reports::form_page),
    },
    Route {
        verb: Verb::Post,
        path: "/report",
        access: Access::Public,
        handler: |m| on(m, reports::submit_form).layer(DefaultBodyLimit::max(REPORT_BODY_LIMIT)),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/readiness",
        access: VIEWER,
        handler: |m| on(m, readiness::get),
    },
    // Exercise results (`citysec exercise run --api`), scored by the readiness index.
    Route {
        verb: Verb::Get,
        path: "/api/v1/exercises",
        access: VIEWER,
        handler: |m| on(m, exercises::list),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/exercises",
        access: OPERATOR,
        handler: |m| on(m, exercises::record),
    },
    // detection: learn and mute, suppressions, the city's indicators, engine status
    Route {
        verb: Verb::Post,
        path: "/api/v1/alerts/{id}/learn",
        access: ANALYST,
        handler: |m| on(m, detect::learn),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/alerts/{id}/mute",
        access: ANALYST,
        handler: |m| on(m, detect::mute),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/suppressions",
        access: VIEWER,
        handler: |m| on(m, detect::list_suppressions),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/suppressions/lift",
        access: ANALYST,
        handler: |m| on(m, detect::lift),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/indicators",
        access: VIEWER,
        handler: |m| on(m, detect::list_indicators),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/indicators",
        access: ANALYST,
        handler: |m| on(m, detect::add_indicators).layer(DefaultBodyLimit::max(IMPORT_BODY_LIMIT)),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/detect",
        access: VIEWER,
        handler: |m| on(m, detect::status),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/auth/login",
        access: Access::Public,
        handler: |m| on(m, accounts::login),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/auth/logout",
        access: VIEWER,
        handler: |m| on(m, accounts::logout),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/auth/me",
        access: VIEWER,
        handler: |m| on(m, accounts::me),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/auth/tokens",
        access: VIEWER,
        handler: |m| on(m, accounts::create_token),
    },
    // The console: its page and embedded assets, cookie sign-in, and what its views need.
    Route {
        verb: Verb::Get,
        path: "/",
        access: Access::Public,
        handler: |m| on(m, console::index),
    },
    Route {
        verb: Verb::Get,
        path: "/console/{file}",
        access: Access::Public,
        handler: |m| on(m, console::asset),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/console/login",
        access: Access::Public,
        handler: |m| on(m, console::api::login),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/console/logout",
        access: VIEWER,
        handler: |m| on(m, console::api::logout),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/session",
        access: VIEWER,
        handler: |m| on(m, console::api::current),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/map",
        access: VIEWER,
        handler: |m| on(m, console::api::map),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/alerts",
        access: VIEWER,
        handler: |m| on(m, console::api::queue),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/alerts/stream",
        access: VIEWER,
        handler: |m| on(m, console::live::stream),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/console/alerts/{id}/ack",
        access: ANALYST,
        handler: |m| on(m, console::api::ack),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/devices/{id}",
        access: VIEWER,
        handler: |m| on(m, console::api::device),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/reports",
        access: VIEWER,
        handler: |m| on(m, console::api::reports),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/console/sharing",
        access: VIEWER,
        handler: |m| on(m, console::api::sharing),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/users",
        access: ADMIN,
        handler: |m| on(m, accounts::list_users),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/users",
        access: ADMIN,
        handler: |m| on(m, accounts::create_user),
    },
    Route {
        verb: Verb::Patch,
        path: "/api/v1/users/{name}",
        access: ADMIN,
        handler: |m| on(m, accounts::update_user),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/incidents",
        access: VIEWER,
        handler: |m| on(m, incidents::list),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/incidents/{id}",
        access: VIEWER,
        handler: |m| on(m, incidents::show),
    },
    Route {
        verb: Verb::Patch,
        path: "/api/v1/incidents/{id}",
        access: ANALYST,
        handler: |m| on(m, incidents::patch),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/incidents/{id}/notes",
        access: ANALYST,
        handler: |m| on(m, incidents::add_note),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/incidents/{id}/actions",
        access: OPERATOR,
        handler: |m| on(m, incidents::request_action),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/incidents/{id}/actions/{action_id}/approve",
        access: SUPERVISOR,
        handler: |m| on(m, incidents::approve_action),
    },
    Route {
        verb: Verb::Post,
        path: "/api/v1/incidents/{id}/actions/{action_id}/reject",
        access: SUPERVISOR,
        handler: |m| on(m, incidents::reject_action),
    },
    Route {
        verb: Verb::Get,
        path: "/api/v1/integrations/status",
        access: ADMIN,
        handler: |m| on(m, incidents::integrations_status),
    },
];

/// Builds the routes of [`ROUTES`], each behind its access check.
/// The routes of a process without the API: liveness, readiness and metrics, so every
/// process of a split deployment can be probed and scraped.
pub const OPS_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

pub(crate) fn build(shared: Arc<Shared>) -> Router {
    build_only(shared, |_| true)
}

pub(crate) fn build_only(shared: Arc<Shared>, keep: impl Fn(&Route) -> bool) -> Router {
    let mut router = Router::new();
    for route in ROUTES.iter().filter(|r| keep(r)) {
        let mut method_router = (route.handler)(route.verb.filter());
        let min_role = match route.access {
            Access::Public => None,
            Access::Metrics => (!shared.api.metrics_public).then_some(Role::Viewer),
            Access::Role(role) => Some(role),
        };
        if let Some(min_role) = min_role {
            let guard = Guard {
                state: shared.clone(),
                min_role,
            };
            method_router =
                method_router.route_layer(middleware::from_fn_with_state(guard, require_role));
        }
        router = router.route(route.path, method_router);
    }
    router.with_state(shared)
}
