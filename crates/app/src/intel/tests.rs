//! Tests of `app::intel`: the TAXII server over the real embedded store (access, TLP,
//! paging, statuses, bad input), a full OASIS `taxii2-client` session against it, our
//! client and feed poller against medallion, publishing, and indicator delivery.
//!
//! The Python peers run when `CITYSEC_TEST_PYTHON` names a python with
//! `scripts/requirements-oracles.txt` installed; they skip with a message otherwise, and
//! fail instead when `CITYSEC_REQUIRE_PEERS=1`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stix::object::tlp::{self, Tlp};
use store::Store;
use taxii::client::{Auth, Client, ClientError};

use crate::intel::config::{CollectionConfig, FeedConfig, PartnerConfig, TaxiiConfig};
use crate::platform::DetectControl;

const SHARED: &str = "11111111-1111-4111-8111-111111111111";
const PUBLIC: &str = "22222222-2222-4222-8222-222222222222";
const TOKEN: &str = "tok-of-the-isac";

fn config() -> TaxiiConfig {
    TaxiiConfig {
        partners: vec![
            PartnerConfig {
                name: "utility".into(),
                password_hash: Some(crate::intel::hash_password("utility-pass")),
                token_sha256: None,
                cert_sha256: None,
                tlp: "amber".into(),
            },
            PartnerConfig {
                name: "isac".into(),
                password_hash: None,
                token_sha256: Some(super::sha256_hex(TOKEN)),
                cert_sha256: None,
                tlp: "green".into(),
            },
        ],
        collections: vec![
            CollectionConfig {
                id: SHARED.into(),
                title: "shared".into(),
                description: None,
                alias: None,
                public: false,
                read: vec!["*".into()],
                write: vec!["utility".into()],
                sharing: true,
            },
            CollectionConfig {
                id: PUBLIC.into(),
                title: "public".into(),
                description: None,
                alias: Some("advisories".into()),
                public: true,
                read: vec![],
                write: vec!["utility".into()],
                sharing: false,
            },
        ],
        max_page_size: 50,
        max_body_bytes: 64 * 1024,
        ..TaxiiConfig::default()
    }
}

/// Our TAXII server over a fresh embedded store, on a loopback port.
struct Served {
    url: String,
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    rt: tokio::runtime::Runtime,
}

fn serve(config: TaxiiConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(store::EmbeddedStore::open(&dir.path().join("citysec.db")).unwrap());
    serve_over(config, store, Some(dir))
}

/// A server instance over an existing store (another process, or the same one restarted,
/// shares nothing with the first but the store).
fn serve_over(
    config: TaxiiConfig,
    store: Arc<dyn Store>,
    dir: Option<tempfile::TempDir>,
) -> Served {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let router = super::router(&config, store.clone());
    let addr: SocketAddr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    });
    Served {
        url: format!("http://{addr}/taxii2/"),
        store,
        _dir: dir,
        rt,
    }
}

impl Served {
    fn root(&self) -> String {
        format!("{}city/", self.url)
    }
}

fn utility() -> Client {
    Client::new(Auth::Basic {
        user: "utility".into(),
        password: "utility-pass".into(),
    })
}

fn isac() -> Client {
    Client::new(Auth::Bearer(TOKEN.into()))
}

fn indicator(n: u32, modified: &str, marking: Option<&str>) -> Value {
    let mut v = json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": format!("indicator--00000000-0000-4000-8000-{n:012}"),
        "created": "2026-01-01T00:00:00.000Z",
        "modified": modified,
        "name": format!("bad address {n}"),
        "pattern": format!("[ipv4-addr:value = '198.51.100.{}']", n % 250),
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
    });
    if let Some(m) = marking {
        v["object_marking_refs"] = json!([m]);
    }
    v
}

fn http_status(err: ClientError) -> u16 {
    match err {
        ClientError::Http { status, .. } => status,
        other => panic!("expected an HTTP error, got {other}"),
    }
}

fn add(client: &Client, root: &str, coll: &str, objects: &[Value]) -> taxii::types::Status {
    let s = client.add_objects(root, coll, objects).unwrap();
    client
        .wait_status(root, s, Duration::from_secs(20))
        .unwrap()
}

fn raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, Vec<(String, String)>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = match body {
        Some(b) => {
            let mut r = agent.post(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.send(b.as_bytes()).unwrap()
        }
        None => {
            let mut r = match method {
                "DELETE" => agent.delete(url),
                "PUT" => {
                    let mut r = agent.put(url);
                    for (k, v) in headers {
                        r = r.header(*k, *v);
                    }
                    let mut resp = r.send_empty().unwrap();
                    let hs = resp
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    return (resp.status().as_u16(), text, hs);
                }
                _ => agent.get(url),
            };
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call().unwrap()
        }
    };
    let hs = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), text, hs)
}

const BASIC_UTILITY: &str = "Basic dXRpbGl0eTp1dGlsaXR5LXBhc3M=";

#[test]
fn discovery_roots_collections_and_access() {
    let s = serve(config());
    let d = utility().discover(&s.url).unwrap();
    assert_eq!(d.api_roots, vec!["/taxii2/city/"]);
    assert_eq!(d.default.as_deref(), Some("/taxii2/city/"));
    let roots = utility().api_root_urls(&s.url).unwrap();
    assert_eq!(roots, vec![s.root()]);
    let root = utility().api_root(&s.root()).unwrap();
    assert_eq!(root.versions, vec![taxii::MEDIA_TYPE_TAXII]);
    assert_eq!(root.max_content_length, 64 * 1024);
    // The writer sees both with write access; the isac reads the shared one and the public one.
    let c = utility().collections(&s.root()).unwrap().collections;
    assert_eq!(
        c.iter()
            .map(|c| (c.id.as_str(), c.can_read, c.can_write))
            .collect::<Vec<_>>(),
        vec![(SHARED, true, true), (PUBLIC, true, true)]
    );
    let c = isac().collections(&s.root()).unwrap().collections;
    assert_eq!(
        c.iter()
            .map(|c| (c.id.as_str(), c.can_read, c.can_write))
            .collect::<Vec<_>>(),
        vec![(SHARED, true, false), (PUBLIC, true, false)]
    );
    // Anonymous: only the public collection.
    let anon = Client::new(Auth::None);
    let c = anon.collections(&s.root()).unwrap().collections;
    assert_eq!(
        c.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![PUBLIC]
    );
    assert_eq!(
        http_status(anon.get_objects(&s.root(), SHARED, &[]).unwrap_err()),
        401
    );
    // Wrong credentials.
    let wrong = Client::new(Auth::Basic {
        user: "utility".into(),
        password: "nope".into(),
    });
    assert_eq!(http_status(wrong.collections(&s.root()).unwrap_err()), 401);
    assert_eq!(
        http_status(
            Client::new(Auth::Bearer("x".into()))
                .discover(&s.url)
                .unwrap_err()
        ),
        401
    );
    // A reader may not write; nobody sees a collection that does not exist.
    assert_eq!(
        http_status(isac().add_objects(&s.root(), SHARED, &[]).unwrap_err()),
        403
    );
    assert_eq!(
        http_status(anon.add_objects(&s.root(), PUBLIC, &[]).unwrap_err()),
        403
    );
    assert_eq!(
        http_status(
            utility()
                .get_objects(&s.root(), "33333333-3333-4333-8333-333333333333", &[])
                .unwrap_err()
        ),
        404
    );
    assert_eq!(
        http_status(utility().api_root(&format!("{}nope/", s.url)).unwrap_err()),
        404
    );
    // The alias names the same collection.
    assert!(anon.get_objects(&s.root(), "advisories", &[]).is_ok());
}

#[test]
fn tlp_is_enforced_on_what_leaves() {
    let s = serve(config());
    let objects = vec![
        indicator(1, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_CLEAR)),
        indicator(2, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_GREEN)),
        indicator(3, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_AMBER)),
        indicator(4, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_AMBER_STRICT)),
        indicator(5, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_RED)),
        indicator(6, "2026-01-01T00:00:00.000Z", None),
        // TLP 1.0 markings count as their TLP 2.0 levels.
        indicator(7, "2026-01-01T00:00:00.000Z", Some(tlp::TLP1_RED)),
    ];
    for coll in [SHARED, PUBLIC] {
        let st = add(&utility(), &s.root(), coll, &objects);
        assert_eq!(st.success_count, 7, "{st:?}");
    }
    let seen = |c: &Client, coll: &str| -> Vec<u64> {
        let mut n: Vec<u64> = c
            .get_objects(&s.root(), coll, &[])
            .unwrap()
            .body
            .objects
            .iter()
            .map(|o| o["id"].as_str().unwrap()[35..].parse().unwrap())
            .collect();
        n.sort();
        n
    };
    // utility is cleared for AMBER (unmarked counts as AMBER); RED never leaves.
    assert_eq!(seen(&utility(), SHARED), vec![1, 2, 3, 6]);
    // isac: GREEN.
    assert_eq!(seen(&isac(), SHARED), vec![1, 2]);
    // Anonymous readers of the public collection: CLEAR only.
    assert_eq!(seen(&Client::new(Auth::None), PUBLIC), vec![1]);
    // Not by id either, nor in the manifest or versions.
    let red = indicator(5, "", None)["id"].as_str().unwrap().to_owned();
    assert_eq!(
        http_status(
            utility()
                .get_object(&s.root(), SHARED, &red, &[])
                .unwrap_err()
        ),
        404
    );
    assert_eq!(
        http_status(
            utility()
                .versions(&s.root(), SHARED, &red, &[])
                .unwrap_err()
        ),
        404
    );
    let m = utility()
        .manifest(&s.root(), SHARED, &[])
        .unwrap()
        .body
        .objects;
    assert!(m.iter().all(|r| r.id != red));
    assert_eq!(m.len(), 4);
}

#[test]
fn paging_filters_headers_and_versions() {
    let s = serve(config());
    let root = s.root();
    // Three envelopes: 30 objects in one instant, then versions of object 1, then more.
    let first: Vec<Value> = (1..=30)
        .map(|n| indicator(n, "2026-01-01T00:00:00.000Z", None))
        .collect();
    add(&utility(), &root, SHARED, &first);
    add(
        &utility(),
        &root,
        SHARED,
        &[
            indicator(1, "2026-02-01T00:00:00.000Z", None),
            indicator(1, "2026-03-01T00:00:00.123456Z", None),
        ],
    );
    add(
        &utility(),
        &root,
        SHARED,
        &[indicator(31, "2026-01-01T00:00:00.000Z", None)],
    );

    // Page through with limit 7: 31 objects (last versions), each once, in order.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("limit", "7".to_owned())];
        if let Some(n) = &next {
            params.push(("next", n.clone()));
        }
        let page = utility().get_objects(&root, SHARED, &params).unwrap();
        pages += 1;
        seen.extend(
            page.body
                .objects
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned()),
        );
        assert!(page.date_added_first.is_some() && page.date_added_last.is_some());
        match page.body.next {
            Some(n) if page.body.more == Some(true) => next = Some(n),
            _ => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 31);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 31, "no object repeated across pages");
    // A cursor survives a restart of the server: it is a position, not a session. A new
    // server instance over the same store continues the listing where the first left it.
    let page = utility()
        .get_objects(&root, SHARED, &[("limit", "10".to_owned())])
        .unwrap();
    let cursor = page.body.next.unwrap();
    let restarted = serve_over(config(), s.store.clone(), None);
    let p2 = utility()
        .get_objects(
            &restarted.root(),
            SHARED,
            &[("limit", "10".to_owned()), ("next", cursor)],
        )
        .unwrap();
    let ids = |e: &taxii::types::Envelope| -> Vec<String> {
        e.objects
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&p2.body), seen[10..20].to_vec());

    // added_after is exclusive.
    let all = utility().get_objects(&root, SHARED, &[]).unwrap();
    let last = all.date_added_last.clone().unwrap();
    let first_added = all.date_added_first.clone().unwrap();
    assert!(
        utility()
            .get_objects(&root, SHARED, &[("added_after", last)])
            .unwrap()
            .body
            .objects
            .is_empty()
    );
    let after_first = utility()
        .get_objects(&root, SHARED, &[("added_after", first_added)])
        .unwrap();
    assert_eq!(
        after_first.body.objects.len(),
        2,
        "object 1's latest version and object 31"
    );

    // match[version].
    let one = indicator(1, "", None)["id"].as_str().unwrap().to_owned();
    let versions_of = |v: &str| -> Vec<String> {
        utility()
            .get_object(&root, SHARED, &one, &[("match[version]", v.to_owned())])
            .unwrap()
            .body
            .objects
            .iter()
            .map(|o| o["modified"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(versions_of("first"), ["2026-01-01T00:00:00.000Z"]);
    assert_eq!(versions_of("last"), ["2026-03-01T00:00:00.123456Z"]);
    assert_eq!(versions_of("all").len(), 3);
    assert_eq!(versions_of("first,last").len(), 2);
    assert_eq!(
        versions_of("2026-02-01T00:00:00Z"),
        ["2026-02-01T00:00:00.000Z"]
    );
    let v = utility()
        .versions(&root, SHARED, &one, &[])
        .unwrap()
        .body
        .versions;
    assert_eq!(v.len(), 3);
    // match[id], match[type], match[spec_version].
    let two = indicator(2, "", None)["id"].as_str().unwrap().to_owned();
    let by_id = utility()
        .get_objects(&root, SHARED, &[("match[id]", format!("{one},{two}"))])
        .unwrap();
    assert_eq!(by_id.body.objects.len(), 2);
    assert_eq!(
        utility()
            .get_objects(&root, SHARED, &[("match[type]", "malware".into())])
            .unwrap()
            .body
            .objects
            .len(),
        0
    );
    assert_eq!(
        utility()
            .get_objects(
                &root,
                SHARED,
                &[("match[type]", "malware,indicator".into())]
            )
            .unwrap()
            .body
            .objects
            .len(),
        31
    );
    assert_eq!(
        utility()
            .get_objects(&root, SHARED, &[("match[spec_version]", "2.0".into())])
            .unwrap()
            .body
            .objects
            .len(),
        0
    );
    // Manifest pages like objects.
    let m = utility()
        .manifest(&root, SHARED, &[("limit", "30".into())])
        .unwrap();
    assert_eq!(m.body.objects.len(), 30);
    assert_eq!(m.body.more, Some(true));
    assert_eq!(
        m.body.objects[0].media_type.as_deref(),
        Some(taxii::MEDIA_TYPE_STIX)
    );
    // A larger limit than the server's page size is lowered to it.
    let big = utility()
        .get_objects(
            &root,
            SHARED,
            &[("limit", "100000".into()), ("match[version]", "all".into())],
        )
        .unwrap();
    assert_eq!(big.body.objects.len(), 33);

    // Delete one version, then the rest.
    utility()
        .delete_object(&root, SHARED, &one, &[("match[version]", "first".into())])
        .unwrap();
    assert_eq!(
        utility()
            .versions(&root, SHARED, &one, &[])
            .unwrap()
            .body
            .versions
            .len(),
        2
    );
    utility()
        .delete_object(&root, SHARED, &one, &[("match[version]", "all".into())])
        .unwrap();
    assert_eq!(
        http_status(utility().get_object(&root, SHARED, &one, &[]).unwrap_err()),
        404
    );
    assert_eq!(
        http_status(
            utility()
                .delete_object(&root, SHARED, &one, &[])
                .unwrap_err()
        ),
        404
    );
    assert_eq!(
        http_status(isac().delete_object(&root, SHARED, &two, &[]).unwrap_err()),
        403
    );
}

#[test]
fn statuses_report_each_object_and_bad_input_changes_nothing() {
    let s = serve(config());
    let root = s.root();
    let objects = vec![
        indicator(1, "2026-01-01T00:00:00.000Z", None),
        json!({"type": "indicator", "id": "indicator--00000000-0000-4000-8000-000000000002", "spec_version": "2.1"}),
        json!("not an object"),
        json!({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000003", "objects": []}),
        indicator(1, "2026-01-01T00:00:00.000Z", None),
    ];
    let pending = utility().add_objects(&root, SHARED, &objects).unwrap();
    assert_eq!(pending.total_count, 5);
    let done = utility()
        .wait_status(&root, pending.clone(), Duration::from_secs(20))
        .unwrap();
    assert_eq!(done.status, "complete");
    assert_eq!(
        (done.success_count, done.failure_count, done.pending_count),
        (2, 3, 0)
    );
    assert_eq!(
        done.successes[1].message.as_deref(),
        Some("already present")
    );
    assert!(
        done.failures[0]
            .message
            .as_deref()
            .unwrap()
            .contains("pattern"),
        "{:?}",
        done.failures
    );
    // The status is the poster's: others do not see it; without a trailing slash too.
    assert_eq!(
        http_status(isac().status(&root, &done.id).unwrap_err()),
        404
    );
    let (code, body, _) = raw(
        "GET",
        &format!("{root}status/{}", done.id),
        &[("Authorization", BASIC_UTILITY)],
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        utility()
            .get_objects(&root, SHARED, &[])
            .unwrap()
            .body
            .objects
            .len(),
        1
    );

    let accept = ("Accept", taxii::MEDIA_TYPE_TAXII);
    let auth = ("Authorization", BASIC_UTILITY);
    let objects_url = format!("{root}collections/{SHARED}/objects/");
    let error = |code: u16, body: &str| {
        let v: Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("error body is JSON: {body}"));
        assert_eq!(v["http_status"], code.to_string(), "{body}");
        assert!(v["title"].is_string());
    };
    // Wrong media types.
    let (code, body, _) = raw(
        "GET",
        &objects_url,
        &[auth, ("Accept", "application/json")],
        None,
    );
    assert_eq!(code, 406);
    error(406, &body);
    let (code, _, _) = raw(
        "GET",
        &objects_url,
        &[auth, ("Accept", "application/taxii+json;version=2.0")],
        None,
    );
    assert_eq!(code, 406);
    let (code, body, _) = raw(
        "POST",
        &objects_url,
        &[auth, accept, ("Content-Type", "application/json")],
        Some("{}"),
    );
    assert_eq!(code, 415);
    error(415, &body);
    // Malformed envelopes, huge bodies, bad cursors and filters: 400/413, nothing stored.
    let ct = ("Content-Type", taxii::MEDIA_TYPE_TAXII);
    for bad in ["{", "[]", "{\"objects\": 5}", "null"] {
        let (code, body, _) = raw("POST", &objects_url, &[auth, accept, ct], Some(bad));
        assert_eq!(code, 400, "{bad}: {body}");
        error(400, &body);
    }
    let huge = format!("{{\"objects\": [\"{}\"]}}", "x".repeat(70 * 1024));
    let (code, body, _) = raw("POST", &objects_url, &[auth, accept, ct], Some(&huge));
    assert_eq!(code, 413);
    error(413, &body);
    for q in [
        "next=garbage",
        "limit=0",
        "limit=x",
        "added_after=yesterday",
        "match[version]=newest",
        "match[id]=nope",
        "match[spec_version]=3.0",
        "match[type]=Bad_Type",
    ] {
        let (code, body, _) = raw("GET", &format!("{objects_url}?{q}"), &[auth, accept], None);
        assert_eq!(code, 400, "{q}: {body}");
        error(400, &body);
    }
    let (code, body, hs) = raw("PUT", &objects_url, &[auth, accept], None);
    assert_eq!(code, 405);
    error(405, &body);
    let _ = hs;
    let (code, _, _) = raw(
        "GET",
        &format!("{}nowhere/at/all/", s.url),
        &[auth, accept],
        None,
    );
    assert_eq!(code, 404);
    // Answers carry the TAXII media type; endpoints answer without the trailing slash.
    let (code, _, hs) = raw("GET", &format!("{root}collections"), &[auth, accept], None);
    assert_eq!(code, 200);
    assert!(
        hs.iter()
            .any(|(k, v)| k == "content-type" && v == taxii::MEDIA_TYPE_TAXII)
    );
    assert_eq!(
        utility()
            .get_objects(&root, SHARED, &[])
            .unwrap()
            .body
            .objects
            .len(),
        1
    );
}

#[test]
fn publish_marks_and_stores_in_the_sharing_collection() {
    let s = serve(config());
    let now = model::Timestamp::from_millis(1_780_000_000_000);
    let ind = super::new_indicator("[ipv4-addr:value = '203.0.113.9']", "scanner", now);
    let sight = super::new_sighting(ind["id"].as_str().unwrap(), 3, now, now, now);
    let cfg = config();
    let ids =
        s.rt.block_on(super::publish(
            s.store.as_ref(),
            &cfg,
            vec![ind.clone(), sight.clone()],
            Tlp::Green,
        ))
        .unwrap();
    assert_eq!(
        ids,
        vec![ind["id"].as_str().unwrap(), sight["id"].as_str().unwrap()]
    );
    let got = isac()
        .get_objects(&s.root(), SHARED, &[])
        .unwrap()
        .body
        .objects;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|o| o["object_marking_refs"] == json!([tlp::TLP2_GREEN]))
    );
    // AMBER reaches the utility but not the isac; RED stays home.
    let amber = super::new_indicator("[domain-name:value = 'evil.example']", "c2", now);
    let red = super::new_indicator("[domain-name:value = 'internal.example']", "internal", now);
    s.rt.block_on(super::publish(
        s.store.as_ref(),
        &cfg,
        vec![amber],
        Tlp::Amber,
    ))
    .unwrap();
    s.rt.block_on(super::publish(s.store.as_ref(), &cfg, vec![red], Tlp::Red))
        .unwrap();
    assert_eq!(
        isac()
            .get_objects(&s.root(), SHARED, &[])
            .unwrap()
            .body
            .objects
            .len(),
        2
    );
    assert_eq!(
        utility()
            .get_objects(&s.root(), SHARED, &[])
            .unwrap()
            .body
            .objects
            .len(),
        3
    );
    // Invalid objects are refused and nothing is written.
    let err =
        s.rt.block_on(super::publish(
            s.store.as_ref(),
            &cfg,
            vec![json!({"type": "indicator", "id": "indicator--x"})],
            Tlp::Clear,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
    let mut no_sharing = cfg.clone();
    no_sharing
        .collections
        .iter_mut()
        .for_each(|c| c.sharing = false);
    assert!(
        s.rt.block_on(super::publish(
            s.store.as_ref(),
            &no_sharing,
            vec![],
            Tlp::Clear
        ))
        .is_err()
    );
}

#[test]
fn indicator_changes_for_detection() {
    let now = model::Timestamp::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
    let mut revoked = indicator(2, "2026-01-01T00:00:00.000Z", None);
    revoked["revoked"] = json!(true);
    let mut expired = indicator(3, "2026-01-01T00:00:00.000Z", None);
    expired["valid_until"] = json!("2026-05-01T00:00:00Z");
    let mut later = indicator(4, "2026-01-01T00:00:00.000Z", None);
    later["valid_until"] = json!("2026-07-01T00:00:00Z");
    let mut yara = indicator(5, "2026-01-01T00:00:00.000Z", None);
    yara["pattern_type"] = json!("yara");
    let objects = vec![
        indicator(1, "2026-01-01T00:00:00.000Z", None),
        revoked,
        expired,
        later,
        yara,
        json!({"type": "malware"}),
    ];
    let c = super::indicator_changes(&objects, "isac", now);
    let summary: Vec<(String, String, String, Option<String>)> = c
        .upsert
        .iter()
        .map(|i| {
            (
                i.id[35..].trim_start_matches('0').to_owned(),
                i.name.clone(),
                i.source.clone(),
                i.valid_until.map(|t| t.to_rfc3339()),
            )
        })
        .collect();
    expect_test::expect![[r#"
        [
            (
                "1",
                "bad address 1",
                "isac",
                None,
            ),
            (
                "4",
                "bad address 4",
                "isac",
                Some(
                    "2026-07-01T00:00:00.000Z",
                ),
            ),
        ]
    "#]]
    .assert_debug_eq(&summary);
    assert_eq!(
        c.remove
            .iter()
            .map(|i| i[35..].trim_start_matches('0'))
            .collect::<Vec<_>>(),
        vec!["2", "3"]
    );
}

// ---------------------------------------------------------------- real peers

fn python(test: &str) -> Option<String> {
    match std::env::var("CITYSEC_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("{test}: CITYSEC_REQUIRE_PEERS=1 but CITYSEC_TEST_PYTHON is not set");
            }
            println!(
                "skipping: {test}: CITYSEC_TEST_PYTHON is not set (a python with scripts/requirements-oracles.txt installed)"
            );
            None
        }
    }
}

fn oracle_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/oracles")
        .join(name)
}

#[test]
fn oasis_taxii2_client_full_session() {
    let Some(py) = python("oasis_taxii2_client_full_session") else {
        return;
    };
    let s = serve(config());
    let url = s.url.clone();
    let out = Command::new(&py)
        .arg(oracle_script("taxii_session.py"))
        .args([url.as_str(), "utility", "utility-pass", SHARED])
        .output()
        .expect("run taxii_session.py");
    assert!(
        out.status.success(),
        "taxii2-client session failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = s.root();
    assert_eq!(v["api_roots"], json!([root]));
    assert_eq!(v["collections"], json!([SHARED, PUBLIC]));
    assert_eq!(
        (v["can_read"].clone(), v["can_write"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        v["status"],
        json!({"status": "complete", "total": 14, "success": 13, "failure": 1, "failures": ["indicator--bad"]})
    );
    assert_eq!(v["status_refreshed"], "complete");
    assert_eq!(v["all"], 12);
    assert_eq!(v["by_type"], 12);
    assert_eq!(v["by_type_none"], 0);
    assert_eq!(
        v["by_id"],
        json!(["indicator--00000000-0000-4000-8000-000000000003"])
    );
    assert_eq!(v["version_first"], json!(["2026-01-01T00:00:00.000Z"]));
    assert_eq!(v["version_last"], json!(["2026-01-02T00:00:00.000Z"]));
    assert_eq!(
        v["version_all"],
        json!(["2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z"])
    );
    assert_eq!(v["version_ts"], json!(["2026-01-01T00:00:00.000Z"]));
    assert_eq!(
        (v["spec_21"].clone(), v["spec_20"].clone()),
        (json!(12), json!(0))
    );
    assert_eq!(
        (v["limit_1"].clone(), v["limit_1_more"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(v["pages"], json!([5, 5, 2]));
    let paged: Vec<&str> = v["paged_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let mut dedup = paged.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 12);
    assert!(v["header_first"].is_string() && v["header_last"].is_string());
    assert_eq!(
        v["added_after_last"], 0,
        "added_after is exclusive and all 13 versions share one date_added"
    );
    assert_eq!(v["manifest"], 12);
    assert_eq!(
        v["manifest_keys"],
        json!(["date_added", "id", "media_type", "version"])
    );
    assert_eq!(v["manifest_pages"], json!([4, 4, 4]));
    assert_eq!(v["object"], json!(["2026-01-02T00:00:00.000Z"]));
    assert_eq!(
        v["versions"],
        json!(["2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z"])
    );
    assert_eq!(v["after_delete"], 404);
    assert_eq!(v["all_after_delete"], 11);
}

/// medallion (the OASIS reference server) on a loopback port, killed on drop.
struct Medallion {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Medallion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MEDALLION_COLL: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";

fn medallion(py: &str) -> Medallion {
    let dir = tempfile::tempdir().unwrap();
    let data = json!({
        "/discovery": {"title": "medallion", "default": "/api1/", "api_roots": ["/api1/"]},
        "api1": {
            "information": {"title": "api1", "versions": [taxii::MEDIA_TYPE_TAXII], "max_content_length": 100_000_000},
            "status": [],
            "collections": [{
                "id": MEDALLION_COLL, "title": "partner indicators", "can_read": true, "can_write": true,
                "media_types": [taxii::MEDIA_TYPE_STIX], "objects": [], "manifest": []
            }]
        }
    });
    std::fs::write(dir.path().join("data.json"), data.to_string()).unwrap();
    let conf = json!({
        "backend": {"module_class": "MemoryBackend", "module": "medallion.backends.memory_backend",
                     "filename": dir.path().join("data.json")},
        "users": {"partner": "partner-pass"},
        "taxii": {"max_page_size": 20}
    });
    std::fs::write(dir.path().join("medallion.json"), conf.to_string()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(py)
        .args([
            "-c",
            "import sys; from medallion.scripts.run import main; sys.exit(main())",
        ])
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "ERROR",
        ])
        .arg(dir.path().join("medallion.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start medallion");
    let url = format!("http://127.0.0.1:{port}/");
    let m = Medallion {
        child,
        url,
        _dir: dir,
    };
    let client = medallion_client();
    for _ in 0..200 {
        if client.discover(&format!("{}taxii2/", m.url)).is_ok() {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("medallion did not start");
}

fn medallion_client() -> Client {
    Client::new(Auth::Basic {
        user: "partner".into(),
        password: "partner-pass".into(),
    })
}

#[test]
fn our_client_and_feed_against_medallion() {
    let Some(py) = python("our_client_and_feed_against_medallion") else {
        return;
    };
    let m = medallion(&py);
    let c = medallion_client();
    let roots = c.api_root_urls(&format!("{}taxii2/", m.url)).unwrap();
    assert_eq!(roots, vec![format!("{}api1/", m.url)]);
    let root = roots[0].clone();
    let colls = c.collections(&root).unwrap().collections;
    assert_eq!(colls[0].id, MEDALLION_COLL);
    // Push 45 indicators (one revoked) and a malware object.
    let mut objects: Vec<Value> = (1..=45)
        .map(|n| indicator(n, "2026-01-01T00:00:00.000Z", None))
        .collect();
    objects[44]["revoked"] = json!(true);
    objects.push(json!({"type": "malware", "spec_version": "2.1", "id": "malware--00000000-0000-4000-8000-000000000001",
        "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z", "name": "x", "is_family": false}));
    let st = c.add_objects(&root, MEDALLION_COLL, &objects).unwrap();
    let st = c.wait_status(&root, st, Duration::from_secs(20)).unwrap();
    assert_eq!((st.success_count, st.failure_count), (46, 0), "{st:?}");
    // Pull every page back (medallion pages by 20).
    let mut got = 0;
    c.pull(&root, MEDALLION_COLL, None, &[], |objs| {
        got += objs.len();
        Ok(())
    })
    .unwrap();
    assert_eq!(got, 46);
    let manifest = c.manifest(&root, MEDALLION_COLL, &[]).unwrap();
    assert!(!manifest.body.objects.is_empty());

    // The feed poller: indicators to detection, with a bookmark in the store.
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(store::EmbeddedStore::open(&dir.path().join("c.db")).unwrap());
    let feed = FeedConfig {
        name: "neighbour-city".into(),
        api_root: root.clone(),
        collection: MEDALLION_COLL.into(),
        user: Some("partner".into()),
        password: Some("partner-pass".into()),
        token: None,
        interval_s: 60,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let n = rt
        .block_on(super::poll_feed(store.as_ref(), &feed, Tlp::Amber, &tx))
        .unwrap();
    assert_eq!(n, 45, "only indicators are asked for");
    let (mut upserted, mut removed) = (Vec::new(), Vec::new());
    while let Ok(msg) = rx.try_recv() {
        match msg {
            DetectControl::UpsertIndicators(v) => upserted.extend(v),
            DetectControl::RemoveIndicators(v) => removed.extend(v),
            other => panic!("unexpected detection change {other:?}"),
        }
    }
    assert_eq!(upserted.len(), 44);
    assert!(upserted.iter().all(|i| i.source == "neighbour-city"));
    assert_eq!(
        removed,
        vec![objects[44]["id"].as_str().unwrap().to_owned()]
    );
    let bookmark = rt
        .block_on(store.intel_bookmark("feed:neighbour-city"))
        .unwrap();
    assert!(bookmark.is_some());
    // A copy of what the feed sent is kept for the readiness index's count.
    let received = |rt: &tokio::runtime::Runtime| {
        rt.block_on(store.intel_count(&super::feed_collection("neighbour-city"), 0))
            .unwrap()
    };
    assert_eq!(received(&rt), 45);
    // The next poll asks only for what is new.
    assert_eq!(
        rt.block_on(super::poll_feed(store.as_ref(), &feed, Tlp::Amber, &tx))
            .unwrap(),
        0
    );
    let st = c
        .add_objects(
            &root,
            MEDALLION_COLL,
            &[indicator(46, "2026-01-01T00:00:00.000Z", None)],
        )
        .unwrap();
    c.wait_status(&root, st, Duration::from_secs(20)).unwrap();
    assert_eq!(
        rt.block_on(super::poll_feed(store.as_ref(), &feed, Tlp::Amber, &tx))
            .unwrap(),
        1
    );
    assert_eq!(received(&rt), 46);
    // The console's sharing view shows what each partner feed delivered.
    let mut config = crate::Config::load(
        crate::config::DEFAULT_CONFIG,
        &std::collections::HashMap::new(),
    )
    .unwrap();
    config.taxii.feeds = vec![feed.clone()];
    let view = rt
        .block_on(crate::console::sharing(&config, store.as_ref()))
        .unwrap();
    assert_eq!(view["feeds"][0]["name"], "neighbour-city");
    assert_eq!(view["feeds"][0]["received"], 46);
    assert_eq!(view["feeds"][0]["received_30d"], 46);
}

#[test]
fn client_certificate_identifies_a_partner() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::create("test ca").unwrap();
    let server = ca
        .issue_server(
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            1,
        )
        .unwrap();
    let client_cert = ca.issue_device("water-utility", 1).unwrap();
    let other_cert = ca.issue_device("stranger", 1).unwrap();
    std::fs::write(dir.path().join("s.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.path().join("s.key"), &server.key_pem).unwrap();
    let mut cfg = config();
    cfg.partners.push(PartnerConfig {
        name: "cert-partner".into(),
        password_hash: None,
        token_sha256: None,
        cert_sha256: Some(client_cert.sha256_hex.clone()),
        tlp: "green".into(),
    });
    let store: Arc<dyn Store> =
        Arc::new(store::EmbeddedStore::open(&dir.path().join("c.db")).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let router = super::router(&cfg, store);
    let tls = crate::tls::server_config_with_client_certs(
        &dir.path().join("s.pem"),
        &dir.path().join("s.key"),
        true,
    )
    .unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = crate::tls::TlsListener::new(listener, tls).unwrap();
        let svc = router.into_make_service_with_connect_info::<crate::tls::PeerCertificate>();
        tokio::spawn(async move { axum::serve(tls, svc).await.unwrap() });
        addr
    });
    let get = |cert: Option<&pki::Issued>| -> (u16, String) {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca_cert = Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap();
        let mut tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[ca_cert]));
        if let Some(c) = cert {
            tls = tls.client_cert(Some(ClientCert::new_with_certs(
                &[Certificate::from_pem(c.cert_pem.as_bytes()).unwrap()],
                PrivateKey::from_pem(c.key_pem.as_bytes()).unwrap(),
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        let mut r = agent
            .get(&format!(
                "https://127.0.0.1:{}/taxii2/city/collections/",
                addr.port()
            ))
            .header("Accept", taxii::MEDIA_TYPE_TAXII)
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let (code, body) = get(Some(&client_cert));
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    // The pinned certificate is the partner: it reads the shared and the public collection.
    assert_eq!(v["collections"].as_array().unwrap().len(), 2);
    assert_eq!(v["collections"][0]["id"], SHARED);
    // Without a certificate: anonymous (the public collection only); an unpinned one: 401.
    let (code, body) = get(None);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["collections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(get(Some(&other_cert)).0, 401);
}

#[test]
fn taxii_config_section_is_checked() {
    let env = std::collections::HashMap::new();
    let default = crate::Config::default_with_env(&env).unwrap();
    assert!(default.taxii.enabled);
    assert!(default.taxii.partners.is_empty() && default.taxii.collections.is_empty());
    let base = "version = 1\ndata_dir = 'x'\n";
    let hash = crate::intel::hash_password("pw");
    let good = format!(
        "{base}[taxii]\n[[taxii.partners]]\nname = 'utility'\npassword_hash = '{hash}'\ntlp = 'amber'\n\
         [[taxii.collections]]\nid = '{SHARED}'\ntitle = 't'\nread = ['*']\nwrite = ['utility']\nsharing = true\n\
         [[taxii.feeds]]\nname = 'isac'\napi_root = 'https://isac.example/taxii2/api1/'\ncollection = 'c'\ntoken = 't'\n"
    );
    let c = crate::Config::load(&good, &env).unwrap();
    assert_eq!(c.taxii.partners[0].tlp, "amber");
    assert_eq!(c.taxii.feeds[0].interval_s, 300);
    let cases: &[(&str, &str)] = &[
        (
            "[[taxii.partners]]\nname = 'u'\npassword_hash = 'secret'\n",
            "plain passwords are not accepted",
        ),
        (
            "[[taxii.partners]]\nname = 'u'\n",
            "needs password_hash, token_sha256 or cert_sha256",
        ),
        (
            "[[taxii.partners]]\nname = 'u'\ntoken_sha256 = 'ABC'\n",
            "must be 64 lowercase hex digits",
        ),
        (
            "[[taxii.partners]]\nname = 'u'\ntoken_sha256 = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'\ntlp = 'red'\n",
            "tlp must be clear, green, amber or amber+strict",
        ),
        (
            "[[taxii.collections]]\nid = 'nope'\ntitle = 't'\n",
            "id must be a unique UUID",
        ),
        (
            "[[taxii.collections]]\nid = '11111111-1111-4111-8111-111111111111'\ntitle = 't'\nread = ['ghost']\n",
            "unknown partner \"ghost\"",
        ),
        ("[taxii]\nstatus_retention_hours = 1\n", "at least 24"),
        ("[taxii]\nunmarked = 'purple'\n", "not a TLP level"),
        (
            "[[taxii.feeds]]\nname = 'f'\napi_root = 'ftp://x'\ncollection = 'c'\n",
            "must be an http(s) URL",
        ),
    ];
    for (section, want) in cases {
        let err = crate::Config::load(&format!("{base}{section}"), &env).unwrap_err();
        assert!(format!("{err:#}").contains(want), "{section}: {err:#}");
    }
}

/// The running platform serves `/taxii2/` to its partners and polls a partner's feed into
/// the detection engine (the engine's indicator count is `/api/v1/detect`'s).
#[test]
fn platform_serves_taxii_and_polls_feeds_into_detection() {
    // The partner: a TAXII server holding three GREEN indicators, one revoked, one AMBER.
    let partner = serve(config());
    let mut revoked = indicator(3, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_GREEN));
    revoked["revoked"] = json!(true);
    add(
        &utility(),
        &partner.root(),
        SHARED,
        &[
            indicator(1, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_GREEN)),
            indicator(2, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_GREEN)),
            revoked,
            // The feed identity (isac, GREEN) never receives this one.
            indicator(4, "2026-01-01T00:00:00.000Z", Some(tlp::TLP2_AMBER)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\ndata_dir = '{}'\n[http]\nlisten = '127.0.0.1:0'\n[ingest.mqtt]\nlisten = '127.0.0.1:0'\n\
         [[taxii.partners]]\nname = 'isac'\ntoken_sha256 = '{}'\n\
         [[taxii.collections]]\nid = '{SHARED}'\ntitle = 'city'\nread = ['isac']\nsharing = true\n\
         [[taxii.feeds]]\nname = 'neighbour'\napi_root = '{}'\ncollection = '{SHARED}'\ntoken = '{TOKEN}'\ninterval_s = 1\n",
        dir.path().display(),
        super::sha256_hex(TOKEN),
        partner.root()
    );
    let config = crate::Config::load(&text, &std::collections::HashMap::new()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let platform = rt.block_on(crate::Platform::start(config)).unwrap();
    let base = format!("http://{}", platform.http_addr());
    let root = format!("{base}/taxii2/city/");
    let c = isac().collections(&root).unwrap().collections;
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].can_read, c[0].can_write), (true, false));
    let token = platform.admin_token().to_owned();
    let mut indicators = 0;
    for _ in 0..100 {
        let (code, body, _) = raw(
            "GET",
            &format!("{base}/api/v1/detect"),
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
        assert_eq!(code, 200, "{body}");
        indicators = serde_json::from_str::<Value>(&body).unwrap()["indicators"]
            .as_u64()
            .unwrap();
        if indicators == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        indicators, 2,
        "the two live GREEN indicators reached detection"
    );
    let bookmark = rt
        .block_on(platform.store().intel_bookmark("feed:neighbour"))
        .unwrap();
    assert!(
        bookmark.is_some(),
        "the feed's added_after bookmark is stored"
    );
    rt.block_on(platform.shutdown()).unwrap();
}

// ---------------------------------------------------------------- conformance cases

/// One case of `test_data/taxii_interop.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InteropCase {
    id: String,
    spec: String,
    title: String,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(default = "default_auth")]
    auth: String,
    accept: Option<String>,
    content_type: Option<String>,
    body: Option<String>,
    status: u16,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    eq: std::collections::BTreeMap<String, toml::Value>,
    #[serde(default)]
    has: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    count: std::collections::BTreeMap<String, usize>,
    #[serde(default)]
    contains: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    wait: bool,
    #[serde(default)]
    save: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    save_header: std::collections::BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_auth() -> String {
    "utility".to_owned()
}

#[derive(Debug, serde::Deserialize)]
struct InteropCases {
    case: Vec<InteropCase>,
}

fn interop_cases() -> Vec<InteropCase> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_data/taxii_interop.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str::<InteropCases>(&text).unwrap().case
}

/// Percent-encodes what may not stand in a query string as it is.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn substitute(text: &str, vars: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// The failures of one answer against its case (empty: it passed).
fn check_case(
    case: &InteropCase,
    vars: &std::collections::BTreeMap<String, String>,
    status: u16,
    body: &str,
    headers: &[(String, String)],
) -> Vec<String> {
    let mut failures = Vec::new();
    if status != case.status {
        failures.push(format!("status {status}, expected {}: {body}", case.status));
    }
    for (name, want) in &case.headers {
        let got = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        match (want.as_str(), got) {
            ("!", None) => {}
            ("!", Some(v)) => failures.push(format!("header {name} should be absent, is {v:?}")),
            (_, Some(v)) if v.contains(want.as_str()) => {}
            (_, got) => failures.push(format!(
                "header {name} is {got:?}, expected it to contain {want:?}"
            )),
        }
    }
    let checks_body = !(case.eq.is_empty()
        && case.has.is_empty()
        && case.absent.is_empty()
        && case.count.is_empty()
        && case.contains.is_empty());
    if !checks_body {
        return failures;
    }
    let json: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("the body is not JSON ({e}): {body:?}"));
            return failures;
        }
    };
    for (pointer, want) in &case.eq {
        let want = match want {
            toml::Value::String(s) => Value::String(substitute(s, vars)),
            toml::Value::Integer(i) => json!(i),
            toml::Value::Boolean(b) => json!(b),
            other => panic!("{}: unsupported eq value {other}", case.id),
        };
        if json.pointer(pointer) != Some(&want) {
            failures.push(format!(
                "{pointer} is {:?}, expected {want}",
                json.pointer(pointer)
            ));
        }
    }
    for pointer in &case.has {
        if json.pointer(pointer).is_none() {
            failures.push(format!("{pointer} is missing"));
        }
    }
    for pointer in &case.absent {
        if let Some(v) = json.pointer(pointer) {
            failures.push(format!("{pointer} should be absent, is {v}"));
        }
    }
    for (pointer, n) in &case.count {
        let got = json
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(Vec::len);
        if got != Some(*n) {
            failures.push(format!("{pointer} has {got:?} entries, expected {n}"));
        }
    }
    for (pointer, part) in &case.contains {
        let got = json.pointer(pointer).and_then(Value::as_str);
        if !got.is_some_and(|s| s.contains(part.as_str())) {
            failures.push(format!(
                "{pointer} is {got:?}, expected it to contain {part:?}"
            ));
        }
    }
    failures
}

/// The TAXII 2.1 server conformance cases of `test_data/taxii_interop.toml`, in order,
/// against the real server; every failure of every case is reported at the end.
#[test]
fn taxii_interop_cases() {
    let mut cfg = config();
    // No anonymous access here: the public collection becomes a partner-only one.
    cfg.collections[1].public = false;
    let s = serve(cfg);
    let base = s.url.trim_end_matches("/taxii2/").to_owned();
    let mut vars = std::collections::BTreeMap::from([
        ("root".to_owned(), "/taxii2/city".to_owned()),
        ("shared".to_owned(), SHARED.to_owned()),
        ("public".to_owned(), PUBLIC.to_owned()),
        (
            "a".to_owned(),
            "indicator--a0000000-0000-4000-8000-000000000001".to_owned(),
        ),
        (
            "b".to_owned(),
            "indicator--b0000000-0000-4000-8000-000000000002".to_owned(),
        ),
        (
            "c".to_owned(),
            "indicator--c0000000-0000-4000-8000-000000000003".to_owned(),
        ),
        (
            "large".to_owned(),
            format!("{{\"objects\": [], \"x_pad\": \"{}\"}}", "x".repeat(70_000)),
        ),
    ]);
    let cases = interop_cases();
    let mut failed = Vec::new();
    for case in &cases {
        let path = substitute(&case.path, &vars);
        let (p, q) = path.split_once('?').unwrap_or((path.as_str(), ""));
        let q: Vec<String> = q
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                format!("{}={}", query_escape(k), query_escape(v))
            })
            .collect();
        let url = if q.is_empty() {
            format!("{base}{p}")
        } else {
            format!("{base}{p}?{}", q.join("&"))
        };
        let mut headers: Vec<(&str, String)> = Vec::new();
        match case.auth.as_str() {
            "utility" => headers.push(("Authorization", BASIC_UTILITY.to_owned())),
            "isac" => headers.push(("Authorization", format!("Bearer {TOKEN}"))),
            "wrong" => headers.push(("Authorization", "Basic dXRpbGl0eTp3cm9uZw==".to_owned())),
            "none" => {}
            other => panic!("{}: unknown auth {other}", case.id),
        }
        match case.accept.as_deref() {
            None => headers.push(("Accept", taxii::MEDIA_TYPE_TAXII.to_owned())),
            Some("") => {}
            Some(a) => headers.push(("Accept", a.to_owned())),
        }
        if let Some(ct) = &case.content_type {
            headers.push(("Content-Type", ct.clone()));
        }
        let header_refs: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = case.body.as_ref().map(|b| substitute(b, &vars));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let failures = loop {
            let (status, text, hs) = match (case.method.as_str(), &body) {
                ("POST", Some(b)) => raw("POST", &url, &header_refs, Some(b)),
                (m, _) => raw(m, &url, &header_refs, None),
            };
            let failures = check_case(case, &vars, status, &text, &hs);
            if failures.is_empty() || !case.wait || std::time::Instant::now() > deadline {
                if failures.is_empty() {
                    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    for (var, pointer) in &case.save {
                        let v = json
                            .pointer(pointer)
                            .and_then(Value::as_str)
                            .unwrap_or_else(|| panic!("{}: nothing at {pointer} to save", case.id));
                        vars.insert(var.clone(), v.to_owned());
                    }
                    for (var, name) in &case.save_header {
                        let v = hs
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v.clone())
                            .unwrap_or_else(|| panic!("{}: no header {name} to save", case.id));
                        vars.insert(var.clone(), v);
                    }
                }
                break failures;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !failures.is_empty() {
            failed.push(format!(
                "{} ({}: {}):\n    {}",
                case.id,
                case.spec,
                case.title,
                failures.join("\n    ")
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// docs/taxii-interop.md lists every case with its result; a case added to the table
/// must be added there.
#[test]
fn taxii_interop_doc_lists_every_case() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/taxii-interop.md"),
    )
    .unwrap();
    let cases = interop_cases();
    let mut ids = std::collections::HashSet::new();
    for case in &cases {
        assert!(
            ids.insert(case.id.clone()),
            "case id {} is used twice",
            case.id
        );
        let row = format!("| {} | {} | {} | pass |", case.id, case.spec, case.title);
        assert!(
            doc.contains(&row),
            "docs/taxii-interop.md lacks the row\n{row}"
        );
    }
    let rows = doc.lines().filter(|l| l.starts_with("| TXS-")).count();
    assert_eq!(
        rows,
        cases.len(),
        "docs/taxii-interop.md lists cases the table no longer has"
    );
}

// ---------------------------------------------------------------- incident sharing

const PARTNER_IND: &str = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";

fn intel_alert(
    id: &str,
    ts_ms: i64,
    count: u32,
    source: &str,
    indicator: Option<&str>,
) -> model::Alert {
    let ts = model::Timestamp::from_millis(ts_ms);
    model::Alert {
        id: model::AlertId(id.to_owned()),
        rule: if indicator.is_some() {
            "intel.indicator"
        } else {
            "flow.scan"
        }
        .to_owned(),
        key: match indicator {
            Some(i) => format!("{i}/{source}"),
            None => source.to_owned(),
        },
        severity: model::Severity::High,
        ts,
        last_ts: ts,
        count,
        device_id: None,
        zone: None,
        source: Some(source.to_owned()),
        title: format!("traffic from {source}"),
        explanation: "test".to_owned(),
        evidence: Vec::new(),
    }
}

/// An incident the correlator opened from two alerts about 203.0.113.66 (one matching a
/// partner indicator), triaged at `t0 + 10 s`.
fn confirmed_incident(tlp: model::Tlp) -> (incident::Correlator, model::Incident) {
    let mut c = incident::Correlator::new(
        incident::CorrelatorConfig {
            default_tlp: tlp,
            ..Default::default()
        },
        Vec::new(),
        1,
    );
    let t0 = 1_780_000_000_000;
    c.on_alert(&intel_alert(
        "al-1",
        t0,
        2,
        "203.0.113.66",
        Some(PARTNER_IND),
    ));
    let out = c.on_alert(&intel_alert("al-2", t0 + 5_000, 3, "203.0.113.66", None));
    let (i, _) = c
        .apply(
            out.incident,
            incident::Op::Transition(model::IncidentState::Triaged),
            "ada",
            model::Timestamp::from_millis(t0 + 10_000),
        )
        .unwrap();
    (c, i)
}

fn versions_in(store: &dyn Store, rt: &tokio::runtime::Runtime) -> Vec<(String, String, u8)> {
    let q = store::intel::IntelQuery {
        collection: format!("city/{SHARED}"),
        object_id: None,
        after: None,
        added_after: None,
        ids: vec![],
        types: vec![],
        versions: store::intel::IntelVersions {
            first: false,
            last: false,
            all: true,
            at: vec![],
        },
        spec_versions: vec!["2.1".into()],
        max_tlp: taxii::access::tlp_rank(Tlp::Red),
        limit: 1000,
        with_body: false,
    };
    let mut v: Vec<_> = rt
        .block_on(store.intel_query(&q))
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.version, r.tlp))
        .collect();
    v.sort();
    v
}

#[test]
fn incident_objects_are_sightings_and_indicators_of_its_evidence() {
    let (_, i) = confirmed_incident(model::Tlp::Amber);
    let identity = super::city_identity(&config());
    let objects = super::incident_objects(&i, identity["id"].as_str().unwrap());
    // Deterministic: the same incident gives the same objects.
    assert_eq!(
        objects,
        super::incident_objects(&i, identity["id"].as_str().unwrap())
    );
    let summary: Vec<String> = objects
        .iter()
        .map(|o| match o["type"].as_str().unwrap() {
            "indicator" => format!("indicator {} {} v{}", o["id"], o["pattern"], o["modified"]),
            _ => format!(
                "sighting of {} count {} {}..{} v{} by {}",
                o["sighting_of_ref"],
                o["count"],
                o["first_seen"],
                o["last_seen"],
                o["modified"],
                o["where_sighted_refs"][0] == identity["id"]
            ),
        })
        .collect();
    expect_test::expect![[r#"
        [
            "indicator \"indicator--12710403-4574-5fd5-9c6f-7b30eb72b6e9\" \"[ipv4-addr:value = '203.0.113.66']\" v\"2026-05-28T20:26:45.000Z\"",
            "sighting of \"indicator--12710403-4574-5fd5-9c6f-7b30eb72b6e9\" count 5 \"2026-05-28T20:26:40.000Z\"..\"2026-05-28T20:26:45.000Z\" v\"2026-05-28T20:26:45.000Z\" by true",
            "sighting of \"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f\" count 2 \"2026-05-28T20:26:40.000Z\"..\"2026-05-28T20:26:40.000Z\" v\"2026-05-28T20:26:40.000Z\" by true",
        ]
    "#]]
    .assert_debug_eq(&summary);
    // The OASIS validator accepts every object, identity included.
    if let Some(py) = python("incident_objects_are_sightings_and_indicators_of_its_evidence") {
        let mut all = objects.clone();
        all.push(identity);
        for (o, verdict) in all.iter().zip(stix2_validate(&py, &all)) {
            assert!(verdict["valid"] == true, "{o}: {verdict}");
        }
    }
}

/// Validates objects with the OASIS stix2-validator (through `scripts/oracles/oracle.py`).
fn stix2_validate(py: &str, objects: &[Value]) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(py)
        .arg(oracle_script("oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run oracle.py");
    let mut input = String::new();
    for o in objects {
        input.push_str(&json!({"op": "object", "doc": o}).to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn publishing_an_incident_is_idempotent_and_new_evidence_is_a_new_version() {
    let s = serve(config());
    let cfg = config();
    let (mut c, i) = confirmed_incident(model::Tlp::Amber);
    let n =
        s.rt.block_on(super::publish_incident(s.store.as_ref(), &cfg, &i))
            .unwrap();
    assert_eq!(n, 4, "the identity, one indicator, two sightings");
    let first = versions_in(s.store.as_ref(), &s.rt);
    assert_eq!(first.len(), 4);
    // Publishing again (confirming twice, or after a restart) stores nothing.
    let again =
        s.rt.block_on(super::publish_incident(s.store.as_ref(), &cfg, &i))
            .unwrap();
    assert_eq!(again, 0);
    assert_eq!(versions_in(s.store.as_ref(), &s.rt), first);
    // An unconfirmed incident shares nothing.
    let mut fresh = i.clone();
    fresh.state = model::IncidentState::New;
    assert_eq!(
        s.rt.block_on(super::publish_incident(s.store.as_ref(), &cfg, &fresh))
            .unwrap(),
        0
    );
    // New evidence: the address's alert repeats later. The indicator and its sighting get a
    // new version; the partner indicator's sighting and the identity do not.
    let mut repeat = intel_alert("al-2", 1_780_000_000_000 + 5_000, 7, "203.0.113.66", None);
    repeat.last_ts = model::Timestamp::from_millis(1_780_000_000_000 + 60_000);
    let i2 = c.on_alert(&repeat).incident;
    let n =
        s.rt.block_on(super::publish_incident(s.store.as_ref(), &cfg, &i2))
            .unwrap();
    assert_eq!(n, 2);
    let now = versions_in(s.store.as_ref(), &s.rt);
    assert_eq!(now.len(), 6);
    let amber = taxii::access::tlp_rank(Tlp::Amber);
    assert!(
        now.iter()
            .filter(|v| !v.0.starts_with("identity--"))
            .all(|v| v.2 == amber),
        "{now:?}"
    );
    let latest = utility()
        .get_objects(&s.root(), SHARED, &[("match[type]", "sighting".to_owned())])
        .unwrap()
        .body
        .objects;
    let counts: Vec<u64> = latest
        .iter()
        .map(|o| o["count"].as_u64().unwrap())
        .collect();
    assert!(counts.contains(&9) && counts.contains(&2), "{counts:?}");
    // A new TLP is a new version of every incident object, marked with it.
    let (i3, _) = c
        .apply(
            i2,
            incident::Op::SetTlp(model::Tlp::Red),
            "ada",
            model::Timestamp::from_millis(1_780_000_100_000),
        )
        .unwrap();
    assert_eq!(
        s.rt.block_on(super::publish_incident(s.store.as_ref(), &cfg, &i3))
            .unwrap(),
        3
    );
    assert!(
        utility()
            .get_objects(
                &s.root(),
                SHARED,
                &[("match[type]", "sighting,indicator".to_owned())]
            )
            .unwrap()
            .body
            .objects
            .is_empty(),
        "the latest versions are RED now and stay home"
    );
}

const CITY_AMBER_IND: &str = "indicator--6a1d0e0c-4b5f-4f7e-9a0b-1c2d3e4f5a61";
const CITY_RED_IND: &str = "indicator--6a1d0e0c-4b5f-4f7e-9a0b-1c2d3e4f5a62";

/// What a partner pulls with the OASIS taxii2-client.
fn partner_pull(py: &str, url: &str, user: &str, password: &str) -> Value {
    let out = Command::new(py)
        .arg(oracle_script("taxii_pull.py"))
        .args([url, user, password, SHARED])
        .output()
        .expect("run taxii_pull.py");
    assert!(
        out.status.success(),
        "taxii_pull.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn api(
    method: &str,
    url: &str,
    token: &str,
    content_type: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("Content-Type", content_type));
    }
    let (code, text, _) = match (method, body) {
        ("PATCH", Some(b)) => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut r = agent.patch(url);
            for (k, v) in &headers {
                r = r.header(*k, *v);
            }
            let mut resp = r.send(b.as_bytes()).unwrap();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (resp.status().as_u16(), text, vec![])
        }
        (m, b) => raw(m, url, &headers, b),
    };
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send_flow(base: &str, token: &str, src: &str) {
    let now = model::Timestamp::now().as_millis();
    let line = format!(
        "{{\"src4_addr\":\"{src}\",\"dst4_addr\":\"10.0.0.7\",\"proto\":\"tcp\",\"src_port\":4444,\"dst_port\":23,\"in_bytes\":60,\"in_packets\":1,\"t_first\":{},\"t_last\":{now}}}\n",
        now - 10
    );
    let (code, report) = api(
        "POST",
        &format!("{base}/api/v1/flows"),
        token,
        "application/x-ndjson",
        Some(&line),
    );
    assert_eq!(
        (code, report["accepted"].clone()),
        (200, json!(1)),
        "{report}"
    );
}

/// The whole path on a running platform: two partner-style indicators of the city's own
/// match flows from two attackers, the correlator opens two incidents, an operator
/// confirms one as AMBER (the default) and the other as RED, and partners pull the
/// sharing collection with the OASIS taxii2-client: the partner cleared for AMBER gets the
/// AMBER incident's sightings and indicators (valid STIX 2.1 for stix2-validator, marked
/// TLP:AMBER), the GREEN partner gets none of them, and nothing of the RED incident
/// leaves. Confirming twice and a restart add nothing; new evidence is a new version.
#[test]
fn confirmed_incidents_reach_partners_by_their_tlp() {
    let Some(py) = python("confirmed_incidents_reach_partners_by_their_tlp") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\ndata_dir = '{}'\n[http]\nlisten = '127.0.0.1:0'\n[ingest.mqtt]\nlisten = '127.0.0.1:0'\n\
         [[taxii.partners]]\nname = 'utility'\npassword_hash = '{}'\ntlp = 'amber'\n\
         [[taxii.partners]]\nname = 'isac'\npassword_hash = '{}'\ntlp = 'green'\n\
         [[taxii.collections]]\nid = '{SHARED}'\ntitle = 'city'\nread = ['*']\nsharing = true\n",
        dir.path().display(),
        crate::intel::hash_password("utility-pass"),
        crate::intel::hash_password("isac-pass"),
    );
    let config = crate::Config::load(&text, &std::collections::HashMap::new()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let platform = rt.block_on(crate::Platform::start(config.clone())).unwrap();
    let base = format!("http://{}", platform.http_addr());
    let token = platform.admin_token().to_owned();
    let indicator_of = |id: &str, ip: &str| {
        json!({"type": "indicator", "spec_version": "2.1", "id": id,
               "created": "2026-12-01T10:00:00.000Z", "modified": "2026-12-01T10:00:00.000Z",
               "name": format!("scanner {ip}"), "pattern": format!("[ipv4-addr:value = '{ip}']"),
               "pattern_type": "stix", "valid_from": "2026-12-01T10:00:00Z"})
    };
    let bundle = json!({"type": "bundle", "id": "bundle--5d2d6b4c-3c1e-4a52-9bb8-0e1c4a1f7a10", "objects": [
        indicator_of(CITY_AMBER_IND, "203.0.113.66"), indicator_of(CITY_RED_IND, "203.0.113.77")]});
    let (code, report) = api(
        "POST",
        &format!("{base}/api/v1/indicators"),
        &token,
        "application/json",
        Some(&bundle.to_string()),
    );
    assert_eq!(code, 200, "{report}");
    wait_until("the indicators in detection", || {
        api("GET", &format!("{base}/api/v1/detect"), &token, "", None).1["indicators"] == 2
    });
    send_flow(&base, &token, "203.0.113.66");
    send_flow(&base, &token, "203.0.113.77");
    let incident_of = |ip: &str| -> Option<Value> {
        let (_, list) = api("GET", &format!("{base}/api/v1/incidents"), &token, "", None);
        list["items"]
            .as_array()?
            .iter()
            .find(|i| {
                i["sources"]
                    .as_array()
                    .is_some_and(|s| s.contains(&json!(ip)))
            })
            .cloned()
    };
    wait_until("two incidents", || {
        incident_of("203.0.113.66").is_some() && incident_of("203.0.113.77").is_some()
    });
    let amber = incident_of("203.0.113.66").unwrap();
    let red = incident_of("203.0.113.77").unwrap();
    assert_ne!(amber["id"], red["id"]);
    assert_eq!(
        (amber["tlp"].clone(), amber["state"].clone()),
        (json!("amber"), json!("new"))
    );
    let incident_url = |i: &Value| format!("{base}/api/v1/incidents/{}", i["id"].as_str().unwrap());
    // Nothing is shared before confirmation.
    let url = format!("{base}/taxii2/");
    assert_eq!(
        partner_pull(&py, &url, "utility", "utility-pass")["objects"],
        json!([])
    );
    // Confirm: AMBER (the default) and RED (set in the same request).
    let (code, body) = api(
        "PATCH",
        &incident_url(&amber),
        &token,
        "application/json",
        Some(r#"{"state": "triaged"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = api(
        "PATCH",
        &incident_url(&red),
        &token,
        "application/json",
        Some(r#"{"tlp": "red", "state": "triaged"}"#),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tlp"], "red");
    let (code, body) = api(
        "PATCH",
        &incident_url(&red),
        &token,
        "application/json",
        Some(r#"{"tlp": "purple"}"#),
    );
    assert_eq!(code, 400, "{body}");

    let pulled = partner_pull(&py, &url, "utility", "utility-pass");
    let objects = pulled["objects"].as_array().unwrap().clone();
    let text = serde_json::to_string(&objects).unwrap();
    assert!(
        !text.contains("203.0.113.77") && !text.contains(CITY_RED_IND),
        "RED never leaves: {text}"
    );
    let of_type = |t: &str| {
        objects
            .iter()
            .filter(|o| o["type"] == t)
            .cloned()
            .collect::<Vec<_>>()
    };
    let identity = of_type("identity");
    assert_eq!(identity.len(), 1, "{text}");
    let indicators = of_type("indicator");
    assert_eq!(indicators.len(), 1, "{text}");
    assert_eq!(
        indicators[0]["pattern"],
        "[ipv4-addr:value = '203.0.113.66']"
    );
    let sightings = of_type("sighting");
    let mut sighted: Vec<&str> = sightings
        .iter()
        .map(|s| s["sighting_of_ref"].as_str().unwrap())
        .collect();
    sighted.sort();
    let mut want = vec![CITY_AMBER_IND, indicators[0]["id"].as_str().unwrap()];
    want.sort();
    assert_eq!(sighted, want, "{text}");
    for s in &sightings {
        assert_eq!(s["where_sighted_refs"], json!([identity[0]["id"]]));
        assert!(s["count"].as_u64().unwrap() >= 1);
        assert!(s["first_seen"].as_str().unwrap() <= s["last_seen"].as_str().unwrap());
    }
    for o in indicators.iter().chain(&sightings) {
        assert_eq!(o["object_marking_refs"], json!([tlp::TLP2_AMBER]), "{o}");
    }
    for (o, verdict) in objects.iter().zip(stix2_validate(&py, &objects)) {
        assert!(
            verdict["valid"] == true,
            "stix2-validator refused {o}: {verdict}"
        );
    }
    // The partner cleared only for GREEN gets the city's identity (CLEAR) and nothing else.
    let green = partner_pull(&py, &url, "isac", "isac-pass");
    let green_types: Vec<&str> = green["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(green_types, vec!["identity"]);

    // Confirming twice is refused and publishes nothing.
    let versions = pulled["versions"].clone();
    let (code, _) = api(
        "PATCH",
        &incident_url(&amber),
        &token,
        "application/json",
        Some(r#"{"state": "triaged"}"#),
    );
    assert_eq!(code, 409);
    assert_eq!(
        partner_pull(&py, &url, "utility", "utility-pass")["versions"],
        versions
    );

    // A restart, then new evidence from the same attacker: the same objects get new
    // versions; no object is duplicated.
    rt.block_on(platform.shutdown()).unwrap();
    let platform = rt.block_on(crate::Platform::start(config)).unwrap();
    let base = format!("http://{}", platform.http_addr());
    let url = format!("{base}/taxii2/");
    assert_eq!(
        partner_pull(&py, &url, "utility", "utility-pass")["versions"],
        versions,
        "a restart publishes nothing new"
    );
    wait_until("the indicators restored", || {
        api("GET", &format!("{base}/api/v1/detect"), &token, "", None).1["indicators"] == 2
    });
    std::thread::sleep(Duration::from_millis(5));
    send_flow(&base, &token, "203.0.113.66");
    wait_until("a new version", || {
        partner_pull(&py, &url, "utility", "utility-pass")["versions"]
            .as_array()
            .unwrap()
            .len()
            > versions.as_array().unwrap().len()
    });
    let after = partner_pull(&py, &url, "utility", "utility-pass");
    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&after),
        ids(&pulled),
        "the same objects, in new versions"
    );
    let text = serde_json::to_string(&after).unwrap();
    assert!(
        !text.contains("203.0.113.77") && !text.contains(CITY_RED_IND),
        "{text}"
    );
    rt.block_on(platform.shutdown()).unwrap();
}
