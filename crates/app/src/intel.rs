//! Threat sharing: the TAXII 2.1 server's backend over the store ([`IntelBackend`]), its
//! router at `/taxii2/`, the partner feeds polled into detection, [`publish`], which
//! puts the city's sightings and indicators into its sharing collection with a TLP, and
//! [`publish_incident`], what a confirmed incident shares ([`incident_objects`]).
//!
//! ```text
//! partners --TAXII--> taxii::server::router --> IntelBackend --> store (IntelStore)
//! partner feeds <--TAXII-- poll_feed --> detect (DetectControl::UpsertIndicators / RemoveIndicators)
//!                                    +--> store (a copy per feed, `feed:<name>`, counted by readiness)
//! confirmed incidents --> publish_incident --> store (the sharing collection) --> partners
//! ```

pub mod config;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use stix::object::tlp::Tlp;
use store::Store;
use store::intel::{IntelObject, IntelQuery, IntelStatus, IntelVersions};
use taxii::access::{self, Credentials, Principal};
use taxii::backend::{Added, BackendError, NewObject, Record, StatusRecord};
use taxii::query::Query;
use tokio::sync::watch;

use crate::intel::config::{FeedConfig, TaxiiConfig};
use crate::platform::{DetectControl, Inner};

/// Where the TAXII router is mounted.
pub const BASE_PATH: &str = "/taxii2";

/// The store key of a collection.
fn collection_key(root: &str, collection: &str) -> String {
    format!("{root}/{collection}")
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn store_err(e: store::Error) -> BackendError {
    match e {
        store::Error::Unavailable(m) => BackendError::Unavailable(m),
        other => BackendError::Internal(other.to_string()),
    }
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares two strings in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The TAXII backend over the store, with the configured partners.
pub struct IntelBackend {
    store: Arc<dyn Store>,
    config: TaxiiConfig,
    /// Basic credentials already verified against their argon2 hash: partner name to the
    /// SHA-256 of the password, so each request does not pay for argon2.
    verified: verified_cache::Cache,
}

mod verified_cache {
    //! A tiny mutex-protected map (std only).
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Cache(Mutex<HashMap<String, String>>);

    impl Cache {
        pub fn get(&self, k: &str) -> Option<String> {
            self.0.lock().ok()?.get(k).cloned()
        }
        pub fn put(&self, k: &str, v: String) {
            if let Ok(mut m) = self.0.lock() {
                if m.len() > 10_000 {
                    m.clear();
                }
                m.insert(k.to_owned(), v);
            }
        }
    }
}

impl IntelBackend {
    pub fn new(store: Arc<dyn Store>, config: TaxiiConfig) -> IntelBackend {
        IntelBackend {
            store,
            config,
            verified: verified_cache::Cache::default(),
        }
    }

    fn principal(&self, p: &config::PartnerConfig) -> Principal {
        Principal {
            name: p.name.clone(),
            anonymous: false,
            clearance: access::parse_tlp(&p.tlp).unwrap_or(Tlp::Green),
        }
    }
}

fn to_intel_query(root: &str, collection: &str, q: &Query) -> IntelQuery {
    IntelQuery {
        collection: collection_key(root, collection),
        object_id: q.object_id.clone(),
        after: q
            .after
            .as_ref()
            .map(|c| (c.date_added_us, c.id.clone(), c.version_us)),
        added_after: q.added_after,
        ids: q.ids.clone(),
        types: q.types.clone(),
        versions: IntelVersions {
            first: q.versions.first,
            last: q.versions.last,
            all: q.versions.all,
            at: q.versions.at.clone(),
        },
        spec_versions: q.spec_versions.clone(),
        max_tlp: access::tlp_rank(q.max_tlp),
        limit: q.limit,
        with_body: q.with_objects,
    }
}

#[async_trait]
impl taxii::Backend for IntelBackend {
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Principal>, BackendError> {
        let partners = &self.config.partners;
        Ok(match credentials {
            Credentials::None => None,
            Credentials::Bearer(token) => {
                let h = sha256_hex(token);
                partners
                    .iter()
                    .find(|p| p.token_sha256.as_deref().is_some_and(|t| same(t, &h)))
                    .map(|p| self.principal(p))
            }
            Credentials::ClientCertificate(fp) => partners
                .iter()
                .find(|p| p.cert_sha256.as_deref().is_some_and(|c| same(c, fp)))
                .map(|p| self.principal(p)),
            Credentials::Basic { user, password } => {
                let Some(p) = partners.iter().find(|p| p.name == *user) else {
                    return Ok(None);
                };
                let Some(hash) = p.password_hash.clone() else {
                    return Ok(None);
                };
                let h = sha256_hex(password);
                if self.verified.get(user).is_some_and(|v| same(&v, &h)) {
                    return Ok(Some(self.principal(p)));
                }
                let password = password.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    ingest::credentials::verify(&hash, &password)
                })
                .await
                .map_err(|e| BackendError::Internal(e.to_string()))?;
                if ok {
                    self.verified.put(user, h);
                    Some(self.principal(p))
                } else {
                    None
                }
            }
        })
    }

    async fn query(
        &self,
        root: &str,
        collection: &str,
        query: &Query,
    ) -> Result<Vec<Record>, BackendError> {
        let rows = self
            .store
            .intel_query(&to_intel_query(root, collection, query))
            .await
            .map_err(store_err)?;
        Ok(rows
            .into_iter()
            .map(|r| Record {
                id: r.id,
                version: r.version,
                version_us: r.version_us,
                date_added_us: r.date_added_us,
                spec_version: r.spec_version,
                tlp: access::tlp_from_rank(r.tlp),
                object: r.body,
            })
            .collect())
    }

    async fn add(
        &self,
        root: &str,
        collection: &str,
        objects: Vec<NewObject>,
    ) -> Result<Vec<Added>, BackendError> {
        let objects: Vec<IntelObject> = objects
            .into_iter()
            .map(|o| IntelObject {
                id: o.id,
                object_type: o.object_type,
                version: o.version,
                version_us: o.version_us,
                spec_version: o.spec_version,
                tlp: access::tlp_rank(o.tlp),
                body: o.object,
            })
            .collect();
        let added = self
            .store
            .intel_add(&collection_key(root, collection), &objects, now_us())
            .await
            .map_err(store_err)?;
        Ok(added
            .into_iter()
            .map(|a| Added {
                id: a.id,
                version: a.version,
                new: a.new,
            })
            .collect())
    }

    async fn delete(
        &self,
        root: &str,
        collection: &str,
        object_id: &str,
        query: &Query,
    ) -> Result<u64, BackendError> {
        let mut q = to_intel_query(root, collection, query);
        q.object_id = Some(object_id.to_owned());
        self.store.intel_delete(&q).await.map_err(store_err)
    }

    async fn save_status(&self, root: &str, status: &StatusRecord) -> Result<(), BackendError> {
        let body = serde_json::to_string(&status.status)
            .map_err(|e| BackendError::Internal(e.to_string()))?;
        self.store
            .intel_put_status(&IntelStatus {
                root: root.to_owned(),
                id: status.status.id.clone(),
                owner: status.owner.clone(),
                created_us: status.created_us,
                body,
            })
            .await
            .map_err(store_err)
    }

    async fn load_status(
        &self,
        root: &str,
        id: &str,
    ) -> Result<Option<StatusRecord>, BackendError> {
        let Some(s) = self
            .store
            .intel_get_status(root, id)
            .await
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let status =
            serde_json::from_str(&s.body).map_err(|e| BackendError::Internal(e.to_string()))?;
        Ok(Some(StatusRecord {
            owner: s.owner,
            created_us: s.created_us,
            status,
        }))
    }
}

/// The TAXII server's description of what the config shares.
pub fn server_config(config: &TaxiiConfig) -> taxii::access::ServerConfig {
    taxii::access::ServerConfig {
        base_path: BASE_PATH.to_owned(),
        title: config.title.clone(),
        description: Some("threat sharing with the city's partners".to_owned()),
        contact: config.contact.clone(),
        default_root: Some(config.root.clone()),
        roots: vec![taxii::access::RootConfig {
            name: config.root.clone(),
            title: config.title.clone(),
            description: None,
            collections: config
                .collections
                .iter()
                .map(|c| taxii::access::CollectionConfig {
                    id: c.id.clone(),
                    title: c.title.clone(),
                    description: c.description.clone(),
                    alias: c.alias.clone(),
                    public: c.public,
                    read: c.read.clone(),
                    write: c.write.clone(),
                })
                .collect(),
        }],
        max_page_size: config.max_page_size,
        max_body_bytes: config.max_body_bytes,
        unmarked: config.unmarked_tlp(),
    }
}

/// The router serving `/taxii2/` over the store. Over HTTPS, a client certificate the
/// TLS layer saw is handed to the server as [`taxii::access::ClientCertificate`].
pub fn router(config: &TaxiiConfig, store: Arc<dyn Store>) -> axum::Router {
    taxii::server::router(
        server_config(config),
        Arc::new(IntelBackend::new(store, config.clone())),
    )
    .layer(axum::middleware::from_fn(client_certificate))
}

async fn client_certificate(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<crate::tls::PeerCertificate>>()
        .and_then(|c| c.0.sha256.clone());
    if let Some(sha256) = peer {
        req.extensions_mut()
            .insert(taxii::access::ClientCertificate(sha256));
    }
    next.run(req).await
}

// ---------------------------------------------------------------- publishing

/// Adds TLP 2.0 marking to objects and stores them in the sharing collection; returns
/// the ids stored. Objects are validated first: if any is invalid nothing is written.
pub async fn publish(
    store: &dyn Store,
    config: &TaxiiConfig,
    objects: Vec<Value>,
    tlp: Tlp,
) -> anyhow::Result<Vec<String>> {
    Ok(publish_added(store, config, objects, tlp)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect())
}

async fn publish_added(
    store: &dyn Store,
    config: &TaxiiConfig,
    objects: Vec<Value>,
    tlp: Tlp,
) -> anyhow::Result<Vec<store::intel::IntelAdded>> {
    let Some(coll) = config.collections.iter().find(|c| c.sharing) else {
        bail!("no sharing collection is configured ([[taxii.collections]] with sharing = true)");
    };
    let now = now_us();
    let mut prepared = Vec::with_capacity(objects.len());
    for mut v in objects {
        let Some(m) = v.as_object_mut() else {
            bail!("a published object must be a JSON object");
        };
        let mut refs: Vec<Value> = m
            .get("object_marking_refs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // One TLP marking: the one given replaces any other TLP marking.
        refs.retain(|r| {
            r.as_str()
                .is_none_or(|s| stix::object::tlp::level(s).is_none())
        });
        refs.push(Value::String(stix::object::tlp::tlp2_id(tlp).to_owned()));
        m.insert("object_marking_refs".to_owned(), Value::Array(refs));
        let o = taxii::server::prepare_object(&v, config.unmarked_tlp(), now).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}",
                v.get("id").and_then(Value::as_str).unwrap_or("object")
            )
        })?;
        prepared.push(IntelObject {
            id: o.id,
            object_type: o.object_type,
            version: o.version,
            version_us: o.version_us,
            spec_version: o.spec_version,
            tlp: access::tlp_rank(o.tlp),
            body: o.object,
        });
    }
    let added = store
        .intel_add(&collection_key(&config.root, &coll.id), &prepared, now)
        .await
        .context("failed to store published intelligence")?;
    Ok(added)
}

// ---------------------------------------------------------------- incidents

/// The namespace of the city's deterministic STIX ids (UUIDv5 of a name in it), so the
/// same incident evidence always maps to the same objects.
const CITY_NAMESPACE: [u8; 16] = [
    0x6c, 0x69, 0x74, 0x79, 0x73, 0x65, 0x63, 0x00, 0x5a, 0x1b, 0x4e, 0x8f, 0x9d, 0x21, 0x33, 0x07,
];

fn city_id(object_type: &str, name: &str) -> String {
    format!(
        "{object_type}--{}",
        stix::object::uuid_v5(&CITY_NAMESPACE, format!("{object_type}/{name}").as_bytes())
    )
}

/// The STIX TLP level of an incident's TLP.
pub fn stix_tlp(tlp: model::Tlp) -> Tlp {
    match tlp {
        model::Tlp::Clear => Tlp::Clear,
        model::Tlp::Green => Tlp::Green,
        model::Tlp::Amber => Tlp::Amber,
        model::Tlp::AmberStrict => Tlp::AmberStrict,
        model::Tlp::Red => Tlp::Red,
    }
}

/// The city's STIX identity (`[taxii] identity_name`), the `where_sighted_refs` and
/// `created_by_ref` of what it publishes. Its id follows from the name and its version
/// never changes, so publishing it again stores nothing.
pub fn city_identity(config: &TaxiiConfig) -> Value {
    const SINCE: &str = "2020-01-01T00:00:00.000Z";
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": city_id("identity", &config.identity_name),
        "created": SINCE,
        "modified": SINCE,
        "name": config.identity_name,
        "identity_class": "organization",
        "sectors": ["government"],
    })
}

/// What the alerts of one piece of evidence add up to.
struct Seen {
    count: u64,
    first: model::Timestamp,
    last: model::Timestamp,
    rules: Vec<String>,
}

fn seen<'a>(alerts: impl Iterator<Item = &'a model::IncidentAlert>) -> Option<Seen> {
    let mut out: Option<Seen> = None;
    for a in alerts {
        let s = out.get_or_insert(Seen {
            count: 0,
            first: a.ts,
            last: a.last_ts.max(a.ts),
            rules: Vec::new(),
        });
        s.count += u64::from(a.count.max(1));
        s.first = s.first.min(a.ts);
        s.last = s.last.max(a.last_ts.max(a.ts));
        if !s.rules.contains(&a.rule) {
            s.rules.push(a.rule.clone());
        }
    }
    out
}

/// The STIX objects a confirmed incident shares: an `indicator` per attacker address its
/// alerts name (the alerts' `source`, when it is an IP address), and a `sighting` of each
/// of those and of each partner indicator its alerts matched, seen by the city's identity
/// with the count and first and last times of those alerts.
///
/// Ids are UUIDv5 of the incident id and the evidence, and each object's version
/// (`modified`) is the later of its evidence's last alert and the incident's last TLP
/// change, so publishing the same incident again yields the same objects, and new
/// evidence or a new TLP a new version. Partner indicators are referenced, not
/// republished: their marking is the partner's to set.
pub fn incident_objects(incident: &model::Incident, identity_id: &str) -> Vec<Value> {
    let tlp_changed = incident
        .timeline
        .iter()
        .filter(|e| matches!(e.what, model::TimelineKind::TlpChanged { .. }))
        .map(|e| e.ts)
        .max();
    let version = |s: &Seen| tlp_changed.map_or(s.last, |t| t.max(s.last));
    let mut out = Vec::new();
    let sighting = |of: &str, s: &Seen, out: &mut Vec<Value>| {
        let v = version(s).to_rfc3339();
        out.push(json!({
            "type": "sighting",
            "spec_version": "2.1",
            "id": city_id("sighting", &format!("{}/{of}", incident.id)),
            "created": s.first.to_rfc3339(),
            "modified": v,
            "created_by_ref": identity_id,
            "sighting_of_ref": of,
            "where_sighted_refs": [identity_id],
            "count": s.count.min(999_999_999),
            "first_seen": s.first.to_rfc3339(),
            "last_seen": s.last.to_rfc3339(),
            "description": format!("seen by the city in incident {} ({})", incident.id, s.rules.join(", ")),
        }));
    };
    for source in &incident.sources {
        let Ok(ip) = source.parse::<std::net::IpAddr>() else {
            continue;
        };
        let Some(s) = seen(
            incident
                .alerts
                .iter()
                .filter(|a| a.source.as_deref() == Some(source.as_str())),
        ) else {
            continue;
        };
        let object = if ip.is_ipv4() {
            "ipv4-addr"
        } else {
            "ipv6-addr"
        };
        let id = city_id("indicator", &format!("{}/{ip}", incident.id));
        out.push(json!({
            "type": "indicator",
            "spec_version": "2.1",
            "id": id,
            "created": s.first.to_rfc3339(),
            "modified": version(&s).to_rfc3339(),
            "created_by_ref": identity_id,
            "name": format!("{ip}: {}", incident.title),
            "description": format!("address seen attacking the city in incident {} ({})", incident.id, s.rules.join(", ")),
            "indicator_types": ["malicious-activity"],
            "pattern": format!("[{object}:value = '{ip}']"),
            "pattern_type": "stix",
            "pattern_version": "2.1",
            "valid_from": s.first.to_rfc3339(),
        }));
        sighting(&id, &s, &mut out);
    }
    for indicator in &incident.indicators {
        if !stix::object::is_identifier(indicator, Some("indicator")) {
            continue;
        }
        let Some(s) = seen(
            incident
                .alerts
                .iter()
                .filter(|a| a.indicator.as_deref() == Some(indicator.as_str())),
        ) else {
            continue;
        };
        sighting(indicator, &s, &mut out);
    }
    out
}

/// Publishes a confirmed incident's objects ([`incident_objects`]) with the city's
/// identity to the sharing collection, marked with the incident's TLP. Returns how many
/// objects (or versions) were new; publishing the same incident twice stores nothing the
/// second time. An incident that is not confirmed publishes nothing.
pub async fn publish_incident(
    store: &dyn Store,
    config: &TaxiiConfig,
    incident: &model::Incident,
) -> anyhow::Result<usize> {
    if !incident.state.is_confirmed() {
        return Ok(0);
    }
    let identity = city_identity(config);
    let identity_id = identity["id"].as_str().unwrap_or_default().to_owned();
    let objects = incident_objects(incident, &identity_id);
    if objects.is_empty() {
        return Ok(0);
    }
    let mut new = publish_marked(store, config, vec![identity], Tlp::Clear).await?;
    new += publish_marked(store, config, objects, stix_tlp(incident.tlp)).await?;
    Ok(new)
}

async fn publish_marked(
    store: &dyn Store,
    config: &TaxiiConfig,
    objects: Vec<Value>,
    tlp: Tlp,
) -> anyhow::Result<usize> {
    Ok(publish_added(store, config, objects, tlp)
        .await?
        .into_iter()
        .filter(|a| a.new)
        .count())
}

/// A new STIX indicator for a pattern the city observed.
pub fn new_indicator(pattern: &str, name: &str, now: model::Timestamp) -> Value {
    let ts = now.to_rfc3339();
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": format!("indicator--{}", taxii::server::uuid_v4()),
        "created": ts,
        "modified": ts,
        "name": name,
        "pattern": pattern,
        "pattern_type": "stix",
        "valid_from": ts,
    })
}

/// A new STIX sighting of `sighting_of` (an indicator id, say) seen `count` times.
pub fn new_sighting(
    sighting_of: &str,
    count: u64,
    first_seen: model::Timestamp,
    last_seen: model::Timestamp,
    now: model::Timestamp,
) -> Value {
    let ts = now.to_rfc3339();
    json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": format!("sighting--{}", taxii::server::uuid_v4()),
        "created": ts,
        "modified": ts,
        "sighting_of_ref": sighting_of,
        "count": count,
        "first_seen": first_seen.to_rfc3339(),
        "last_seen": last_seen.to_rfc3339(),
    })
}

// ---------------------------------------------------------------- partner feeds

/// What received objects mean for detection: indicators to match and ids to drop.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndicatorChanges {
    pub upsert: Vec<detect::Indicator>,
    pub remove: Vec<String>,
}

/// Maps objects from a partner feed to detection changes: live STIX-pattern indicators
/// are upserted (source = the partner); revoked or expired ones are removed. Other
/// objects and other pattern languages are ignored.
pub fn indicator_changes(
    objects: &[Value],
    source: &str,
    now: model::Timestamp,
) -> IndicatorChanges {
    let mut out = IndicatorChanges::default();
    for o in objects {
        if o.get("type").and_then(Value::as_str) != Some("indicator") {
            continue;
        }
        let Some(id) = o.get("id").and_then(Value::as_str) else {
            continue;
        };
        let valid_until = o
            .get("valid_until")
            .and_then(Value::as_str)
            .and_then(model::Timestamp::parse_rfc3339);
        let revoked = o.get("revoked").and_then(Value::as_bool).unwrap_or(false);
        if revoked || valid_until.is_some_and(|t| t <= now) {
            out.remove.push(id.to_owned());
            continue;
        }
        // The same mapping as the city's own indicators (`POST /api/v1/indicators`).
        match crate::detect::indicator_from_stix(o, source) {
            Ok(indicator) => out.upsert.push(indicator),
            Err(reason) => tracing::debug!(indicator = id, source, reason, "indicator not matched"),
        }
    }
    out
}

fn feed_client(feed: &FeedConfig) -> taxii::client::Client {
    let auth = match (&feed.user, &feed.password, &feed.token) {
        (Some(user), Some(password), _) => taxii::client::Auth::Basic {
            user: user.clone(),
            password: password.clone(),
        },
        (_, _, Some(token)) => taxii::client::Auth::Bearer(token.clone()),
        _ => taxii::client::Auth::None,
    };
    taxii::client::Client::new(auth)
}

/// The intel store collection that keeps what a partner feed sent (never served over
/// TAXII: served collections are keyed `<root>/<id>`, and a root has no `:`).
pub fn feed_collection(feed: &str) -> String {
    format!("feed:{feed}")
}

/// Keeps a copy of the valid objects of a feed page in the feed's collection (what the
/// readiness index counts as received); objects that do not validate are skipped.
async fn keep_received(
    store: &dyn Store,
    feed: &FeedConfig,
    objects: &[Value],
    unmarked: Tlp,
) -> anyhow::Result<()> {
    let now = now_us();
    let mut kept = Vec::with_capacity(objects.len());
    for v in objects {
        match taxii::server::prepare_object(v, unmarked, now) {
            Ok(o) => kept.push(IntelObject {
                id: o.id,
                object_type: o.object_type,
                version: o.version,
                version_us: o.version_us,
                spec_version: o.spec_version,
                tlp: access::tlp_rank(o.tlp),
                body: o.object,
            }),
            Err(e) => tracing::debug!(feed = %feed.name, error = %e, "received object not kept"),
        }
    }
    if !kept.is_empty() {
        store
            .intel_add(&feed_collection(&feed.name), &kept, now)
            .await
            .with_context(|| format!("failed to keep what feed {} sent", feed.name))?;
    }
    Ok(())
}

/// Polls one feed once: every page after the stored bookmark goes to detection (and a copy
/// to the feed's collection, [`feed_collection`]) and the bookmark advances page by page.
/// Objects without a TLP marking are kept as `unmarked`. Returns how many objects were
/// received.
pub async fn poll_feed(
    store: &dyn Store,
    feed: &FeedConfig,
    unmarked: Tlp,
    detect: &tokio::sync::mpsc::UnboundedSender<DetectControl>,
) -> anyhow::Result<usize> {
    let key = format!("feed:{}", feed.name);
    let mut added_after = store.intel_bookmark(&key).await?;
    let client = feed_client(feed);
    let mut next: Option<String> = None;
    let mut total = 0;
    loop {
        // `limit` goes with `next` too: some servers (medallion) require it.
        let mut params: Vec<(&'static str, String)> = vec![
            ("match[type]", "indicator".to_owned()),
            ("limit", taxii::client::PULL_PAGE.to_string()),
        ];
        if let Some(a) = &added_after {
            params.push(("added_after", a.clone()));
        }
        if let Some(n) = &next {
            params.push(("next", n.clone()));
        }
        let (c, root, coll) = (
            client.clone(),
            feed.api_root.clone(),
            feed.collection.clone(),
        );
        let page = tokio::task::spawn_blocking(move || c.get_objects(&root, &coll, &params))
            .await?
            .with_context(|| format!("failed to poll feed {}", feed.name))?;
        total += page.body.objects.len();
        keep_received(store, feed, &page.body.objects, unmarked).await?;
        let changes = indicator_changes(&page.body.objects, &feed.name, model::Timestamp::now());
        if !changes.upsert.is_empty() {
            let _ = detect.send(DetectControl::UpsertIndicators(changes.upsert));
        }
        if !changes.remove.is_empty() {
            let _ = detect.send(DetectControl::RemoveIndicators(changes.remove));
        }
        let more = page.body.more == Some(true) && page.body.next.is_some();
        if let Some(last) = page.date_added_last {
            // Within one poll `next` continues the listing; the bookmark is saved for the
            // next poll (and a restart) once a page is handed to detection.
            store.intel_set_bookmark(&key, &last).await?;
            if !more {
                added_after = Some(last);
            }
        }
        if !more {
            return Ok(total);
        }
        next = page.body.next;
    }
}

/// Starts the feed pollers and the hourly status pruning.
pub(crate) fn start(
    inner: Arc<Inner>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let config = inner.config.taxii.clone();
    let unmarked = config.unmarked_tlp();
    for feed in config.feeds.clone() {
        let inner = inner.clone();
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(feed.interval_s));
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = shutdown.changed() => return,
                }
                match poll_feed(inner.store.as_ref(), &feed, unmarked, &inner.detect_control).await {
                    Ok(n) => tracing::debug!(feed = %feed.name, objects = n, "partner feed polled"),
                    Err(err) => tracing::warn!(feed = %feed.name, error = %format!("{err:#}"), "partner feed poll failed"),
                }
            }
        }));
    }
    let store = inner.store.clone();
    let keep = i64::from(config.status_retention_hours) * 3_600_000_000;
    let mut shutdown = shutdown;
    tasks.push(tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(err) = store.intel_prune_statuses(now_us() - keep).await {
                tracing::warn!(error = %err, "failed to prune taxii statuses");
            }
        }
    }));
    tasks
}

/// Hashes a partner password for `[[taxii.partners]] password_hash`.
pub fn hash_password(password: &str) -> String {
    ingest::credentials::hash_password(password)
}
