//! What the web console shows of the configuration: the zone plan its map draws and the
//! threat sharing set-up (partners without their credentials, collections, partner feeds
//! with their bookmarks).

use serde_json::{Value, json};

use crate::config::Config;

/// The zones and conduits of `[detect]`.
pub fn zone_plan(config: &Config) -> web::console::ZonePlan {
    web::console::ZonePlan {
        zones: config.detect.zones.iter().map(|z| z.name.clone()).collect(),
        conduits: config
            .detect
            .conduits
            .iter()
            .map(|c| web::console::ConduitLink {
                name: c.name.clone(),
                from: c.from.clone(),
                to: c.to.clone(),
                protocol: c.protocol.clone(),
                ports: c.ports.clone(),
            })
            .collect(),
    }
}

/// `[taxii]` as the console shows it. Partners are named with how they authenticate and
/// their TLP clearance, never with a hash; feeds with their URL, collection, interval and
/// the `added_after` bookmark of the last page received.
pub async fn sharing(config: &Config, store: &dyn store::Store) -> store::Result<Value> {
    let taxii = &config.taxii;
    let partners: Vec<Value> = taxii
        .partners
        .iter()
        .map(|p| {
            let mut auth = Vec::new();
            if p.password_hash.is_some() {
                auth.push("password");
            }
            if p.token_sha256.is_some() {
                auth.push("token");
            }
            if p.cert_sha256.is_some() {
                auth.push("certificate");
            }
            json!({ "name": p.name, "tlp": p.tlp, "auth": auth })
        })
        .collect();
    let collections: Vec<Value> = taxii
        .collections
        .iter()
        .map(|c| {
            json!({
                "id": c.id, "title": c.title, "alias": c.alias, "public": c.public,
                "read": c.read, "write": c.write, "sharing": c.sharing,
            })
        })
        .collect();
    let mut feeds = Vec::new();
    for f in &taxii.feeds {
        let bookmark = store.intel_bookmark(&format!("feed:{}", f.name)).await?;
        // The valid objects this partner's feed delivered: the poller keeps a copy of
        // each in the feed's own collection.
        let copies = crate::intel::feed_collection(&f.name);
        let received = store.intel_count(&copies, i64::MIN).await?;
        let month_ago_us = model::Timestamp::now()
            .saturating_sub_ms(30 * 86_400_000)
            .as_millis()
            .saturating_mul(1000);
        let received_30d = store.intel_count(&copies, month_ago_us).await?;
        feeds.push(json!({
            "name": f.name, "api_root": f.api_root, "collection": f.collection,
            "interval_s": f.interval_s, "last_added": bookmark,
            "received": received, "received_30d": received_30d,
        }));
    }
    Ok(json!({
        "enabled": taxii.enabled,
        "root": taxii.root,
        "unmarked": taxii.unmarked,
        "partners": partners,
        "collections": collections,
        "feeds": feeds,
    }))
}
