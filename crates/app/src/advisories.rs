//! Public advisories: the rules of drafting, approving, issuing and cancelling, the CAP 1.2
//! documents they become, their signatures, and the public Atom feed.
//!
//! - Anyone with the analyst role drafts; the content is rendered to CAP and checked at once.
//! - An `Actual` warning is issued only after a second person approved it: the approver's
//!   authenticated name must differ from the drafter's (the name of the API token or user
//!   account, whichever authenticated the request).
//! - Issuing renders the CAP document, signs its exact bytes with the city's Ed25519 key,
//!   stores both, and prepares the cancel, so every issued advisory has a ready cancel.
//!   Cancelling issues that prepared cancel at once: withdrawing a warning must not wait for
//!   a second person (who issued it and who cancelled it are both recorded).
//! - An `Update` supersedes the issued advisory it references; that advisory's prepared
//!   cancel is withdrawn.
//! - Drafts from an incident take the first template (`templates`, data) that fits what the
//!   incident is about, one text per configured language, and an area computed from the
//!   affected devices' positions ([`incident_area`]); they then follow the same draft,
//!   approval and issue path as any other advisory.
//!
//! **Signatures.** The CAP schema allows an XML-DSig enveloped signature, which needs XML
//! canonicalisation and a heavy stack to produce and check. We publish a detached Ed25519
//! signature of the document's bytes instead, and the public key at `/cap/key.pem`; anyone
//! can check a document with stock OpenSSL:
//!
//! ```text
//! curl -so alert.xml  $CITY/cap/alerts/$ID
//! curl -so alert.sig  $CITY/cap/alerts/$ID/signature
//! curl -so city.pem   $CITY/cap/key.pem
//! openssl pkeyutl -verify -pubin -inkey city.pem -rawin -in alert.xml -sigfile alert.sig
//! ```

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use base64::Engine as _;
use model::{
    Advisory, AdvisoryArea, AdvisoryCircle, AdvisoryContent, AdvisoryMsgType, AdvisoryOrigin,
    AdvisoryState, AdvisoryStatus, AdvisoryText, ErrorCode, Timestamp,
};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use store::{AdvisoryQuery, Store};
use web::{DraftRequest, FromAlertRequest, FromIncidentRequest, PlatformError, Principal};

use crate::directory::Directory;

pub mod templates;

/// `[advisories]`: how the city signs and publishes its warnings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvisoryConfig {
    /// The CAP `sender`: a globally unique name of the city as a sender, such as
    /// `alerts@city.example` (no spaces, commas, `<` or `&`).
    pub sender: String,
    /// The CAP `senderName` shown to residents.
    pub sender_name: String,
    /// The public base URL of this server, used in the feed's links.
    pub public_url: String,
    /// The feed's title.
    pub feed_title: String,
    /// How many issued advisories the feed lists, newest first.
    pub feed_entries: usize,
    /// The languages (RFC 3066 tags) advisories drafted from incidents are written in:
    /// one CAP `info` block each, from the template's text in that language.
    pub languages: Vec<String>,
    /// The advisory templates for drafts from incidents (format in
    /// `config/advisory-templates.toml`, the built-in set used when this is not given); a
    /// relative path is relative to the config file.
    pub templates: Option<std::path::PathBuf>,
}

impl Default for AdvisoryConfig {
    fn default() -> AdvisoryConfig {
        AdvisoryConfig {
            sender: "alerts@city.example".into(),
            sender_name: "City emergency management".into(),
            public_url: "http://127.0.0.1:8080".into(),
            feed_title: "Public warnings".into(),
            feed_entries: 100,
            languages: vec!["en-US".into()],
            templates: None,
        }
    }
}

/// The file the signing key is kept in, under the data directory.
pub const SIGNING_KEY_FILE: &str = "cap-signing.key";

/// Loads the Ed25519 signing key, generating it (mode 0600) on first start.
pub fn signing_key(data_dir: &Path) -> anyhow::Result<Ed25519KeyPair> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    if !path.exists() {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("failed to generate the CAP signing key"))?;
        let pem = pem("PRIVATE KEY", pkcs8.as_ref());
        crate::token::write_private(&path, &pem)
            .with_context(|| format!("failed to write {}", path.display()))?;
        tracing::info!(path = %path.display(), "generated the CAP signing key");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let der = unpem(&text).with_context(|| format!("{} is not a PEM key", path.display()))?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| anyhow::anyhow!("{} is not an Ed25519 key: {e}", path.display()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn unpem(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The public key as PEM SubjectPublicKeyInfo (RFC 8410).
pub fn public_key_pem(key: &Ed25519KeyPair) -> String {
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(key.public_key().as_ref());
    pem("PUBLIC KEY", &spki)
}

/// The advisory service the API drives.
pub struct AdvisoryService {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    config: AdvisoryConfig,
    templates: templates::Templates,
    key: Ed25519KeyPair,
    public_pem: String,
    /// The gateway's view of the warnings a siren activation may cite.
    warnings: Arc<crate::gateway::IssuedWarnings>,
}

/// Limits on what an advisory may hold.
const MAX_HEADLINE: usize = 160;
const MAX_TEXT: usize = 10_000;
const MAX_AREAS: usize = 50;
pub(crate) const MAX_POINTS: usize = 1_000;

fn invalid(message: impl Into<String>) -> PlatformError {
    PlatformError::invalid(message)
}

fn conflict(message: impl Into<String>) -> PlatformError {
    PlatformError::conflict(message)
}

fn forbidden(message: impl Into<String>) -> PlatformError {
    PlatformError::new(ErrorCode::Forbidden, message)
}

fn new_id() -> Result<String, PlatformError> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes)
        .map_err(|e| PlatformError::internal(format!("no randomness: {e}")))?;
    Ok(format!(
        "adv-{}-{}",
        Timestamp::now().as_millis(),
        hex::encode(bytes)
    ))
}

fn cap_time(ts: Timestamp) -> Result<cap::DateTime, PlatformError> {
    cap::DateTime::from_unix(ts.as_millis().div_euclid(1000))
        .ok_or_else(|| invalid(format!("time {ts} cannot be written in CAP")))
}

fn cap_status(status: AdvisoryStatus) -> cap::Status {
    match status {
        AdvisoryStatus::Actual => cap::Status::Actual,
        AdvisoryStatus::Exercise => cap::Status::Exercise,
        AdvisoryStatus::Test => cap::Status::Test,
    }
}

fn parse_enum<T>(
    parse: fn(&str) -> Option<T>,
    all: &[T],
    text: &str,
    what: &str,
) -> Result<T, PlatformError>
where
    T: std::fmt::Display,
{
    parse(text).ok_or_else(|| {
        let allowed = all
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        invalid(format!("{what} {text:?} is not one of {allowed}"))
    })
}

fn check_limits(content: &AdvisoryContent) -> Result<(), PlatformError> {
    if content.texts.is_empty() {
        return Err(invalid(
            "an advisory needs at least one text (language and headline)",
        ));
    }
    for text in &content.texts {
        if text.headline.trim().is_empty() {
            return Err(invalid(format!("the {} headline is empty", text.language)));
        }
        if text.headline.chars().count() > MAX_HEADLINE {
            return Err(invalid(format!(
                "the {} headline is longer than {MAX_HEADLINE} characters",
                text.language
            )));
        }
        if text.description.chars().count() > MAX_TEXT
            || text.instruction.chars().count() > MAX_TEXT
        {
            return Err(invalid(format!(
                "texts are limited to {MAX_TEXT} characters"
            )));
        }
    }
    if content.areas.len() > MAX_AREAS {
        return Err(invalid(format!("at most {MAX_AREAS} areas")));
    }
    let points: usize = content
        .areas
        .iter()
        .flat_map(|a| a.polygons.iter().map(Vec::len))
        .sum();
    if points > MAX_POINTS {
        return Err(invalid(format!(
            "at most {MAX_POINTS} polygon points in all"
        )));
    }
    Ok(())
}

impl AdvisoryService {
    /// Tells the gateway which warnings a siren activation may cite now.
    async fn refresh_warnings(&self) {
        if let Err(err) = self.warnings.refresh(self.store.as_ref()).await {
            tracing::error!(error = %format!("{err:#}"), "failed to refresh the issued warnings");
        }
    }

    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        config: AdvisoryConfig,
        templates: templates::Templates,
        key: Ed25519KeyPair,
        warnings: Arc<crate::gateway::IssuedWarnings>,
    ) -> anyhow::Result<AdvisoryService> {
        let probe = cap::Alert::new(
            "probe",
            config.sender.clone(),
            cap::DateTime::from_unix(0).expect("epoch"),
            cap::Status::Test,
        );
        probe.validate().map_err(|e| {
            anyhow::anyhow!(
                "[advisories] sender {:?} is not a valid CAP sender: {e}",
                config.sender
            )
        })?;
        let public_pem = public_key_pem(&key);
        Ok(AdvisoryService {
            store,
            directory,
            config,
            templates,
            key,
            public_pem,
            warnings,
        })
    }

    /// The CAP document of an advisory, as it would be issued at `sent`.
    fn to_cap(
        &self,
        advisory: &Advisory,
        sent: Timestamp,
        references: Vec<cap::Reference>,
    ) -> Result<cap::Alert, PlatformError> {
        let content = &advisory.content;
        let mut alert = cap::Alert::new(
            advisory.id.clone(),
            self.config.sender.clone(),
            cap_time(sent)?,
            cap_status(advisory.status),
        );
        alert.msg_type = match advisory.msg_type {
            AdvisoryMsgType::Alert => cap::MsgType::Alert,
            AdvisoryMsgType::Update => cap::MsgType::Update,
            AdvisoryMsgType::Cancel => cap::MsgType::Cancel,
        };
        alert.source = Some("citysec".into());
        alert.note = content.note.clone();
        alert.references = references;
        if advisory.msg_type == AdvisoryMsgType::Cancel {
            return Ok(alert);
        }
        let categories = content
            .categories
            .iter()
            .map(|c| parse_enum(cap::Category::parse, cap::Category::ALL, c, "category"))
            .collect::<Result<Vec<_>, _>>()?;
        if categories.is_empty() {
            return Err(invalid("an advisory needs at least one category"));
        }
        let response_types = content
            .response_types
            .iter()
            .map(|r| {
                parse_enum(
                    cap::ResponseType::parse,
                    cap::ResponseType::ALL,
                    r,
                    "response type",
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let urgency = parse_enum(
            cap::Urgency::parse,
            cap::Urgency::ALL,
            &content.urgency,
            "urgency",
        )?;
        let severity = parse_enum(
            cap::Severity::parse,
            cap::Severity::ALL,
            &content.severity,
            "severity",
        )?;
        let certainty = parse_enum(
            cap::Certainty::parse,
            cap::Certainty::ALL,
            &content.certainty,
            "certainty",
        )?;
        let expires = content.expires.map(cap_time).transpose()?;
        let areas = content.areas.iter().map(cap_area).collect::<Vec<_>>();
        for text in &content.texts {
            let mut info = cap::Info::new(
                categories[0],
                content.event.clone(),
                urgency,
                severity,
                certainty,
            );
            info.categories = categories.clone();
            info.language = Some(text.language.clone());
            info.response_types = response_types.clone();
            info.effective = Some(alert.sent);
            info.expires = expires;
            info.sender_name = Some(self.config.sender_name.clone());
            info.headline = Some(text.headline.clone());
            info.description = (!text.description.is_empty()).then(|| text.description.clone());
            info.instruction = (!text.instruction.is_empty()).then(|| text.instruction.clone());
            info.web = content.web.clone();
            info.contact = content.contact.clone();
            info.resources = content
                .resources
                .iter()
                .map(|r| cap::Resource {
                    description: r.description.clone(),
                    mime_type: r.mime_type.clone(),
                    size: None,
                    uri: Some(r.uri.clone()),
                    deref_uri: None,
                    digest: None,
                })
                .collect();
            info.areas = areas.clone();
            alert.info.push(info);
        }
        Ok(alert)
    }

    fn render(&self, alert: &cap::Alert) -> Result<String, PlatformError> {
        alert
            .to_xml()
            .map_err(|e| invalid(format!("the advisory is not valid CAP: {e}")))
    }

    fn sign(&self, document: &str) -> String {
        let signature = self.key.sign(document.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    }

    async fn load(&self, id: &str) -> Result<Advisory, PlatformError> {
        self.store
            .get_advisory(id)
            .await?
            .ok_or_else(|| PlatformError::not_found(format!("no advisory {id}")))
    }

    /// The CAP reference to an issued advisory.
    fn reference(&self, advisory: &Advisory) -> Result<cap::Reference, PlatformError> {
        let issued = advisory
            .issued_at
            .ok_or_else(|| conflict(format!("advisory {} was not issued", advisory.id)))?;
        Ok(cap::Reference {
            sender: self.config.sender.clone(),
            identifier: advisory
                .cap_identifier
                .clone()
                .unwrap_or_else(|| advisory.id.clone()),
            sent: cap_time(issued)?,
        })
    }

    async fn store_draft(
        &self,
        by: &Principal,
        request: DraftRequest,
    ) -> Result<Advisory, PlatformError> {
        let msg_type = request.msg_type.unwrap_or(AdvisoryMsgType::Alert);
        let mut references = Vec::new();
        match (msg_type, &request.references) {
            (AdvisoryMsgType::Cancel, _) => {
                return Err(invalid(
                    "cancels are issued with POST /api/v1/advisories/{id}/cancel",
                ));
            }
            (AdvisoryMsgType::Alert, Some(_)) => {
                return Err(invalid(
                    "an Alert does not reference anything; use msg_type Update",
                ));
            }
            (AdvisoryMsgType::Update, None) => {
                return Err(invalid(
                    "an Update must reference the issued advisory it replaces",
                ));
            }
            (AdvisoryMsgType::Update, Some(id)) => {
                let earlier = self.load(id).await?;
                if earlier.state != AdvisoryState::Issued
                    || earlier.msg_type == AdvisoryMsgType::Cancel
                {
                    return Err(conflict(format!(
                        "advisory {id} is {}; only an issued advisory can be updated",
                        earlier.state.as_str()
                    )));
                }
                if earlier.status != request.status {
                    return Err(invalid(format!(
                        "an update keeps the status of the advisory it replaces ({:?})",
                        earlier.status
                    )));
                }
                references.push(self.reference(&earlier)?);
            }
            (AdvisoryMsgType::Alert, None) => {}
        }
        check_limits(&request.content)?;
        let now = Timestamp::now();
        let advisory = Advisory {
            id: new_id()?,
            version: 1,
            state: AdvisoryState::Draft,
            status: request.status,
            msg_type,
            references: request.references,
            content: request.content,
            origin: request.origin,
            drafted_by: by.name.clone(),
            drafted_at: now,
            approved_by: None,
            approved_at: None,
            issued_by: None,
            issued_at: None,
            cancel_id: None,
            cap_identifier: None,
            document: None,
            signature: None,
        };
        // Rendered now so that a draft that could never be issued is refused at once.
        self.render(&self.to_cap(&advisory, now, references)?)?;
        self.store
            .write_advisories(std::slice::from_ref(&advisory))
            .await?;
        tracing::info!(advisory = %advisory.id, by = %by.name, status = ?advisory.status, "advisory drafted");
        Ok(advisory)
    }
}

pub(crate) fn cap_area(area: &AdvisoryArea) -> cap::Area {
    let point = |l: &model::Location| cap::Point {
        lat: l.lat,
        lon: l.lon,
    };
    cap::Area {
        description: area.description.clone(),
        polygons: area
            .polygons
            .iter()
            .map(|ring| cap::Polygon(ring.iter().map(point).collect()))
            .collect(),
        circles: area
            .circles
            .iter()
            .map(|c| cap::Circle {
                center: point(&c.center),
                radius_km: c.radius_km,
            })
            .collect(),
        geocodes: area
            .geocodes
            .iter()
            .map(|g| cap::NamedValue {
                name: g.name.clone(),
                value: g.value.clone(),
            })
            .collect(),
        altitude: None,
        ceiling: None,
    }
}

const KM_PER_DEGREE: f64 = 111.32;
/// Vertices of the circle drawn around each device when the area is a polygon.
const RING_VERTICES: usize = 12;

pub(crate) fn distance_km(a: model::Location, b: model::Location) -> f64 {
    let (la, lb) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lb - la;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la.cos() * lb.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6_371.0 * h.sqrt().min(1.0).asin()
}

fn round5(v: f64) -> f64 {
    (v * 100_000.0).round() / 100_000.0
}

/// The affected area of devices at `points`, reaching `radius_km` around each: no shape
/// without positions; a circle when they all lie within `radius_km` of their centre (its
/// radius grown to cover them); otherwise the convex hull of a ring around each device, a
/// closed polygon (or, should the hull need more than `MAX_POINTS` vertices, the circle
/// around them all).
pub fn incident_area(
    points: &[model::Location],
    radius_km: f64,
) -> (Vec<AdvisoryCircle>, Vec<Vec<model::Location>>) {
    let points: Vec<model::Location> = points
        .iter()
        .copied()
        .filter(|p| {
            p.lat.is_finite() && p.lon.is_finite() && p.lat.abs() <= 90.0 && p.lon.abs() <= 180.0
        })
        .collect();
    if points.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let n = points.len() as f64;
    let center = model::Location {
        lat: points.iter().map(|p| p.lat).sum::<f64>() / n,
        lon: points.iter().map(|p| p.lon).sum::<f64>() / n,
    };
    let spread = points
        .iter()
        .map(|p| distance_km(center, *p))
        .fold(0.0, f64::max);
    let circle = || {
        vec![AdvisoryCircle {
            center: model::Location {
                lat: round5(center.lat),
                lon: round5(center.lon),
            },
            // Rounded up to 10 m so rounding never leaves a device outside.
            radius_km: ((spread + radius_km) * 100.0).ceil() / 100.0,
        }]
    };
    if spread <= radius_km {
        return (circle(), Vec::new());
    }
    let mut vertices: Vec<(f64, f64)> = Vec::with_capacity(points.len() * RING_VERTICES);
    for p in &points {
        let dlat = radius_km / KM_PER_DEGREE;
        let dlon = radius_km / (KM_PER_DEGREE * p.lat.to_radians().cos().max(0.01));
        for k in 0..RING_VERTICES {
            let a = std::f64::consts::TAU * k as f64 / RING_VERTICES as f64;
            // The ring's vertices lie outside the circle it stands for, so the polygon
            // covers each device's whole circle.
            let grow = 1.0 / (std::f64::consts::PI / RING_VERTICES as f64).cos();
            vertices.push((
                round5((p.lon + dlon * grow * a.cos()).clamp(-180.0, 180.0)),
                round5((p.lat + dlat * grow * a.sin()).clamp(-90.0, 90.0)),
            ));
        }
    }
    let hull = convex_hull(vertices);
    if hull.len() < 3 || hull.len() + 1 > MAX_POINTS {
        return (circle(), Vec::new());
    }
    let mut ring: Vec<model::Location> = hull
        .iter()
        .map(|&(lon, lat)| model::Location { lat, lon })
        .collect();
    ring.push(ring[0]);
    (Vec::new(), vec![ring])
}

/// Andrew's monotone chain: the hull's vertices counter-clockwise, no repeats.
fn convex_hull(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(points.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f64, f64)>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// `HH:MM UTC` of a timestamp.
fn clock(ts: Timestamp) -> String {
    let text = ts.to_rfc3339();
    format!("{} UTC", text.get(11..16).unwrap_or("??:??"))
}

#[async_trait]
impl web::Advisories for AdvisoryService {
    async fn draft(
        &self,
        by: &Principal,
        request: DraftRequest,
    ) -> Result<Advisory, PlatformError> {
        self.store_draft(by, request).await
    }

    async fn draft_from_alert(
        &self,
        by: &Principal,
        alert_id: &str,
        request: FromAlertRequest,
    ) -> Result<Advisory, PlatformError> {
        let alert = self
            .store
            .get_alert(&model::AlertId(alert_id.to_owned()))
            .await?
            .ok_or_else(|| PlatformError::not_found(format!("no alert {alert_id}")))?;
        let radius_km = request.radius_km.unwrap_or(2.0);
        if !(radius_km.is_finite() && radius_km > 0.0 && radius_km <= 100.0) {
            return Err(invalid("radius_km must be more than 0 and at most 100"));
        }
        let (event, headline, description, instruction, certainty) = match alert.rule.as_str() {
            "actuation.uncommanded" => (
                "Siren false alarm",
                "The sirens you heard were not a real warning".to_owned(),
                format!(
                    "At {} the warning sirens in your area sounded without an order from the city. There is no emergency.",
                    clock(alert.ts)
                ),
                "No action is needed. You do not need to call the emergency number about the sirens.",
                "Observed",
            ),
            "reports.siren_unconfirmed" => (
                "Siren reports, no warning issued",
                "Sirens reported in your area: the city issued no warning".to_owned(),
                format!(
                    "Residents reported hearing warning sirens around {}. The city has not issued any warning and is checking the sirens.",
                    clock(alert.ts)
                ),
                "No action is needed unless you receive an official warning through the usual channels.",
                "Likely",
            ),
            other => {
                return Err(invalid(format!(
                    "advisories can be drafted from siren alerts (actuation.uncommanded, \
                     reports.siren_unconfirmed); alert {alert_id} is {other}: write its advisory \
                     with POST /api/v1/advisories"
                )));
            }
        };
        // Only the device's position reaches the public text, never its id or network zone.
        let location = alert
            .device_id
            .as_ref()
            .and_then(|id| self.directory.lookup(id.as_str()))
            .and_then(|device| device.location);
        let area = AdvisoryArea {
            description: "The area around the sirens that sounded".into(),
            polygons: Vec::new(),
            circles: location
                .map(|center| vec![AdvisoryCircle { center, radius_km }])
                .unwrap_or_default(),
            geocodes: Vec::new(),
        };
        let content = AdvisoryContent {
            event: event.into(),
            categories: vec!["Safety".into()],
            urgency: "Immediate".into(),
            severity: "Minor".into(),
            certainty: certainty.into(),
            response_types: vec!["AllClear".into()],
            texts: vec![AdvisoryText {
                language: "en-US".into(),
                headline,
                description,
                instruction: instruction.into(),
            }],
            areas: vec![area],
            resources: Vec::new(),
            expires: Some(Timestamp::now().saturating_add_ms(6 * 3_600_000)),
            web: None,
            contact: None,
            note: None,
        };
        self.store_draft(
            by,
            DraftRequest {
                status: request.status,
                msg_type: Some(AdvisoryMsgType::Alert),
                references: None,
                content,
                origin: Some(AdvisoryOrigin::Alert(alert_id.to_owned())),
            },
        )
        .await
    }

    async fn draft_from_incident(
        &self,
        by: &Principal,
        incident_id: &str,
        request: FromIncidentRequest,
    ) -> Result<Advisory, PlatformError> {
        let radius_km = request.radius_km.unwrap_or(2.0);
        if !(radius_km.is_finite() && radius_km > 0.0 && radius_km <= 100.0) {
            return Err(invalid("radius_km must be more than 0 and at most 100"));
        }
        let template = match &request.template {
            Some(id) => Some(self.templates.get(id).ok_or_else(|| {
                invalid(format!(
                    "no advisory template {id:?} (templates: {})",
                    self.templates.ids().join(", ")
                ))
            })?),
            None => None,
        };
        let incident = self
            .store
            .get_incident(&model::IncidentId(incident_id.to_owned()))
            .await?
            .ok_or_else(|| PlatformError::not_found(format!("no incident {incident_id}")))?;
        // What the incident is about: its devices' classes and its alerts' rules. Only the
        // devices' positions reach the public text, never their ids, zones or addresses.
        let mut ids: Vec<&model::DeviceId> = incident.devices.iter().collect();
        ids.extend(incident.alerts.iter().filter_map(|a| a.device_id.as_ref()));
        ids.sort();
        ids.dedup();
        let devices: Vec<_> = ids
            .iter()
            .filter_map(|id| self.directory.lookup(id.as_str()))
            .collect();
        let mut classes: Vec<model::DeviceClass> = devices.iter().map(|d| d.class).collect();
        classes.sort();
        classes.dedup();
        let rules: Vec<&str> = incident.alerts.iter().map(|a| a.rule.as_str()).collect();
        let template = template.unwrap_or_else(|| self.templates.select(&classes, &rules));
        let locations: Vec<model::Location> = devices.iter().filter_map(|d| d.location).collect();
        let (circles, polygons) = incident_area(&locations, radius_km);
        let first = incident.times.first_alert;
        let values = [
            ("time", clock(first)),
            (
                "date",
                first.to_rfc3339().get(..10).unwrap_or("").to_owned(),
            ),
            ("devices", ids.len().to_string()),
        ];
        let texts: Vec<AdvisoryText> = self
            .templates
            .languages
            .iter()
            .filter_map(|language| {
                let text = template.texts.get(language)?;
                Some(AdvisoryText {
                    language: language.clone(),
                    headline: templates::fill(&text.headline, &values),
                    description: templates::fill(&text.description, &values),
                    instruction: templates::fill(&text.instruction, &values),
                })
            })
            .collect();
        let area_description = self
            .templates
            .languages
            .first()
            .and_then(|l| template.texts.get(l))
            .map(|t| templates::fill(&t.area, &values))
            .unwrap_or_else(|| "The affected area".to_owned());
        let content = AdvisoryContent {
            event: template.event.clone(),
            categories: template.categories.clone(),
            urgency: template.urgency.clone(),
            severity: template.severity.clone(),
            certainty: template.certainty.clone(),
            response_types: template.response_types.clone(),
            texts,
            areas: vec![AdvisoryArea {
                description: area_description,
                polygons,
                circles,
                geocodes: Vec::new(),
            }],
            resources: Vec::new(),
            expires: Some(
                Timestamp::now().saturating_add_ms(i64::from(template.expires_h) * 3_600_000),
            ),
            web: None,
            contact: None,
            note: None,
        };
        let advisory = self
            .store_draft(
                by,
                DraftRequest {
                    status: request.status,
                    msg_type: Some(AdvisoryMsgType::Alert),
                    references: None,
                    content,
                    origin: Some(AdvisoryOrigin::Incident(incident.id.0.clone())),
                },
            )
            .await?;
        tracing::info!(advisory = %advisory.id, incident_id = %incident.id, template = %template.id, "advisory drafted from an incident");
        Ok(advisory)
    }

    async fn import(&self, by: &Principal, document: &str) -> Result<Advisory, PlatformError> {
        let alert = cap::Alert::from_xml(document)
            .map_err(|e| invalid(format!("not a valid CAP 1.2 document: {e}")))?;
        let status = match alert.status {
            cap::Status::Actual => AdvisoryStatus::Actual,
            cap::Status::Exercise => AdvisoryStatus::Exercise,
            cap::Status::Test => AdvisoryStatus::Test,
            other => {
                return Err(invalid(format!(
                    "a {other} message cannot become an advisory (Actual, Exercise or Test)"
                )));
            }
        };
        if alert.msg_type != cap::MsgType::Alert {
            return Err(invalid(format!(
                "only Alert messages can be imported; a {} acts on messages this city did not issue",
                alert.msg_type
            )));
        }
        if alert.scope != cap::Scope::Public {
            return Err(invalid(format!(
                "only Public messages can become public advisories (this one is {})",
                alert.scope
            )));
        }
        let Some(first) = alert.info.first() else {
            return Err(invalid("the document has no info block to draft from"));
        };
        let texts = alert
            .info
            .iter()
            .map(|info| AdvisoryText {
                language: info.language.clone().unwrap_or_else(|| "en-US".into()),
                headline: info.headline.clone().unwrap_or_else(|| info.event.clone()),
                description: info.description.clone().unwrap_or_default(),
                instruction: info.instruction.clone().unwrap_or_default(),
            })
            .collect();
        let location = |p: &cap::Point| model::Location {
            lat: p.lat,
            lon: p.lon,
        };
        let content = AdvisoryContent {
            event: first.event.clone(),
            categories: first.categories.iter().map(|c| c.to_string()).collect(),
            urgency: first.urgency.to_string(),
            severity: first.severity.to_string(),
            certainty: first.certainty.to_string(),
            response_types: first.response_types.iter().map(|r| r.to_string()).collect(),
            texts,
            areas: first
                .areas
                .iter()
                .map(|a| AdvisoryArea {
                    description: a.description.clone(),
                    polygons: a
                        .polygons
                        .iter()
                        .map(|p| p.0.iter().map(location).collect())
                        .collect(),
                    circles: a
                        .circles
                        .iter()
                        .map(|c| AdvisoryCircle {
                            center: location(&c.center),
                            radius_km: c.radius_km,
                        })
                        .collect(),
                    geocodes: a
                        .geocodes
                        .iter()
                        .map(|g| model::Geocode {
                            name: g.name.clone(),
                            value: g.value.clone(),
                        })
                        .collect(),
                })
                .collect(),
            resources: first
                .resources
                .iter()
                .filter_map(|r| {
                    Some(model::AdvisoryResource {
                        description: r.description.clone(),
                        mime_type: r.mime_type.clone(),
                        uri: r.uri.clone()?,
                    })
                })
                .collect(),
            expires: first
                .expires
                .map(|e| Timestamp::from_millis(e.unix().saturating_mul(1000))),
            web: first.web.clone(),
            contact: first.contact.clone(),
            note: alert.note.clone(),
        };
        self.store_draft(
            by,
            DraftRequest {
                status,
                msg_type: Some(AdvisoryMsgType::Alert),
                references: None,
                content,
                origin: None,
            },
        )
        .await
    }

    async fn approve(&self, by: &Principal, id: &str) -> Result<Advisory, PlatformError> {
        let mut advisory = self.load(id).await?;
        if advisory.msg_type == AdvisoryMsgType::Cancel {
            return Err(conflict(
                "a prepared cancel is issued with POST /api/v1/advisories/{id}/cancel of the advisory it cancels",
            ));
        }
        if advisory.state != AdvisoryState::Draft {
            return Err(conflict(format!(
                "advisory {id} is {}; only drafts can be approved",
                advisory.state.as_str()
            )));
        }
        if advisory.drafted_by == by.name {
            return Err(forbidden(format!(
                "a second person must approve: {} drafted this advisory",
                by.name
            )));
        }
        advisory.version += 1;
        advisory.state = AdvisoryState::Approved;
        advisory.approved_by = Some(by.name.clone());
        advisory.approved_at = Some(Timestamp::now());
        self.store
            .write_advisories(std::slice::from_ref(&advisory))
            .await?;
        tracing::info!(advisory = %id, by = %by.name, "advisory approved");
        Ok(advisory)
    }

    async fn issue(&self, by: &Principal, id: &str) -> Result<Advisory, PlatformError> {
        let mut advisory = self.load(id).await?;
        if advisory.msg_type == AdvisoryMsgType::Cancel {
            return Err(conflict(
                "a prepared cancel is issued with POST /api/v1/advisories/{id}/cancel of the advisory it cancels",
            ));
        }
        match advisory.state {
            AdvisoryState::Draft | AdvisoryState::Approved => {}
            other => {
                return Err(conflict(format!(
                    "advisory {id} is {}; it cannot be issued again",
                    other.as_str()
                )));
            }
        }
        if advisory.status == AdvisoryStatus::Actual && advisory.state != AdvisoryState::Approved {
            return Err(forbidden(
                "an Actual warning to the public must be approved by a second person before it is issued",
            ));
        }
        let mut writes = Vec::new();
        let mut references = Vec::new();
        if advisory.msg_type == AdvisoryMsgType::Update {
            let earlier_id = advisory
                .references
                .clone()
                .ok_or_else(|| PlatformError::internal(format!("update {id} has no reference")))?;
            let mut earlier = self.load(&earlier_id).await?;
            if earlier.state != AdvisoryState::Issued {
                return Err(conflict(format!(
                    "advisory {earlier_id} is {}; only an issued advisory can be updated",
                    earlier.state.as_str()
                )));
            }
            references.push(self.reference(&earlier)?);
            if let Some(cancel_id) = &earlier.cancel_id {
                let mut cancel = self.load(cancel_id).await?;
                cancel.version += 1;
                cancel.state = AdvisoryState::Withdrawn;
                writes.push(cancel);
            }
            earlier.version += 1;
            earlier.state = AdvisoryState::Superseded;
            writes.push(earlier);
        }
        let now = Timestamp::now();
        let document = self.render(&self.to_cap(&advisory, now, references)?)?;
        let cancel = Advisory {
            id: format!("{}-cancel", advisory.id),
            version: 1,
            state: AdvisoryState::Draft,
            status: advisory.status,
            msg_type: AdvisoryMsgType::Cancel,
            references: Some(advisory.id.clone()),
            content: AdvisoryContent {
                note: Some(format!(
                    "This message cancels the earlier warning: {}",
                    advisory
                        .content
                        .texts
                        .first()
                        .map_or("", |t| t.headline.as_str())
                )),
                ..advisory.content.clone()
            },
            origin: advisory.origin.clone(),
            drafted_by: by.name.clone(),
            drafted_at: now,
            approved_by: None,
            approved_at: None,
            issued_by: None,
            issued_at: None,
            cancel_id: None,
            cap_identifier: None,
            document: None,
            signature: None,
        };
        advisory.version += 1;
        advisory.state = AdvisoryState::Issued;
        advisory.issued_by = Some(by.name.clone());
        advisory.issued_at = Some(now);
        advisory.cap_identifier = Some(advisory.id.clone());
        advisory.signature = Some(self.sign(&document));
        advisory.document = Some(document);
        advisory.cancel_id = Some(cancel.id.clone());
        let mut all = vec![advisory.clone(), cancel];
        all.extend(writes);
        self.store.write_advisories(&all).await?;
        tracing::warn!(advisory = %id, by = %by.name, status = ?advisory.status, "advisory issued");
        self.refresh_warnings().await;
        Ok(advisory)
    }

    async fn cancel(
        &self,
        by: &Principal,
        id: &str,
        note: Option<String>,
    ) -> Result<Advisory, PlatformError> {
        let mut original = self.load(id).await?;
        if original.msg_type == AdvisoryMsgType::Cancel {
            return Err(conflict("a cancel cannot be cancelled"));
        }
        if original.state != AdvisoryState::Issued {
            return Err(conflict(format!(
                "advisory {id} is {}; only an issued advisory can be cancelled",
                original.state.as_str()
            )));
        }
        let cancel_id = original.cancel_id.clone().ok_or_else(|| {
            PlatformError::internal(format!("issued advisory {id} has no prepared cancel"))
        })?;
        let mut cancel = self.load(&cancel_id).await?;
        if let Some(note) = note.filter(|n| !n.trim().is_empty()) {
            cancel.content.note = Some(note);
        }
        let now = Timestamp::now();
        let document =
            self.render(&self.to_cap(&cancel, now, vec![self.reference(&original)?])?)?;
        cancel.version += 1;
        cancel.state = AdvisoryState::Issued;
        cancel.issued_by = Some(by.name.clone());
        cancel.issued_at = Some(now);
        cancel.cap_identifier = Some(cancel.id.clone());
        cancel.signature = Some(self.sign(&document));
        cancel.document = Some(document);
        original.version += 1;
        original.state = AdvisoryState::Cancelled;
        self.store
            .write_advisories(&[cancel.clone(), original])
            .await?;
        tracing::warn!(advisory = %id, by = %by.name, "advisory cancelled");
        self.refresh_warnings().await;
        Ok(cancel)
    }

    async fn feed(&self) -> Result<String, PlatformError> {
        let issued = self
            .store
            .list_advisories(&AdvisoryQuery {
                state: None,
                issued: true,
                limit: self.config.feed_entries.max(1),
                after: None,
            })
            .await?;
        let base = self.config.public_url.trim_end_matches('/');
        let mut entries = Vec::with_capacity(issued.len());
        for advisory in &issued {
            let (Some(document), Some(issued_at)) = (&advisory.document, advisory.issued_at) else {
                continue;
            };
            let alert = cap::Alert::from_xml(document).map_err(|e| {
                PlatformError::internal(format!(
                    "stored document of {} does not read back: {e}",
                    advisory.id
                ))
            })?;
            let title = match advisory.msg_type {
                AdvisoryMsgType::Cancel => format!(
                    "Cancelled: {}",
                    advisory
                        .content
                        .texts
                        .first()
                        .map_or("", |t| t.headline.as_str())
                ),
                _ => advisory
                    .content
                    .texts
                    .first()
                    .map_or_else(|| advisory.content.event.clone(), |t| t.headline.clone()),
            };
            let link = format!("{base}/cap/alerts/{}", advisory.id);
            entries.push(cap::feed::Entry {
                id: link.clone(),
                title,
                updated: cap_time(issued_at)?,
                related: vec![(
                    "related".into(),
                    "application/octet-stream".into(),
                    format!("{link}/signature"),
                )],
                link,
                summary: Some(format!(
                    "{} {} from {}",
                    alert.status, alert.msg_type, self.config.sender_name
                )),
                alert,
            });
        }
        let updated = issued
            .first()
            .and_then(|a| a.issued_at)
            .unwrap_or_else(Timestamp::now);
        let feed = cap::feed::Feed {
            id: format!("{base}/cap/feed.atom"),
            title: self.config.feed_title.clone(),
            updated: cap_time(updated)?,
            author: self.config.sender_name.clone(),
            self_link: format!("{base}/cap/feed.atom"),
            entries,
        };
        feed.to_xml()
            .map_err(|e| PlatformError::internal(format!("feed does not render: {e}")))
    }

    fn public_key_pem(&self) -> String {
        self.public_pem.clone()
    }
}

#[cfg(test)]
mod tests;
