//! A blocking TAXII 2.1 client over `ureq`: discovery, API roots, collections, objects
//! (with every filter and `next` paging), adding objects and waiting on their status,
//! manifest, versions and delete.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::types::{
    ApiRoot, Collections, Discovery, Envelope, ErrorMessage, Manifest, Status, Versions,
};
use crate::{MEDIA_TYPE_TAXII, server};

/// The page size [`Client::pull`] asks for (servers may lower it).
pub const PULL_PAGE: usize = 1000;

/// How the client authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status}: {title}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Http {
        status: u16,
        title: String,
        description: Option<String>,
    },
    #[error("failed to reach {url}: {message}")]
    Transport { url: String, message: String },
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    #[error("status {id} still pending after {waited_s} s")]
    Timeout { id: String, waited_s: u64 },
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// One page of a paged endpoint, with the `date_added` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub body: T,
    pub date_added_first: Option<String>,
    pub date_added_last: Option<String>,
}

/// A TAXII 2.1 client.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    auth: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Resolves a possibly relative URL (`/taxii2/city/`, `city/`) against `base`.
pub fn resolve(base: &str, url: &str) -> String {
    if url.starts_with("http://") || url.starts_with("https://") {
        return url.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    if url.starts_with('/') {
        format!("{}{url}", &base[..origin_end])
    } else {
        let dir = match base.rfind('/') {
            Some(i) if i >= origin_end => &base[..=i],
            _ => base,
        };
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{url}")
    }
}

fn with_slash(url: &str) -> String {
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

impl Client {
    /// A client with a 60 s timeout per request.
    pub fn new(auth: Auth) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let auth = match auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        };
        Client { agent, auth }
    }

    fn request(
        &self,
        method: &str,
        url: &str,
        params: &[(&str, String)],
        body: Option<String>,
    ) -> Result<(ureq::http::Response<ureq::Body>, String)> {
        let mut full = url.to_owned();
        for (i, (k, v)) in params.iter().enumerate() {
            full.push(if i == 0 { '?' } else { '&' });
            full.push_str(&encode(k));
            full.push('=');
            full.push_str(&encode(v));
        }
        let transport = |e: ureq::Error| ClientError::Transport {
            url: full.clone(),
            message: e.to_string(),
        };
        let mut response = match (method, body) {
            ("POST", Some(body)) => {
                let mut r = self
                    .agent
                    .post(&full)
                    .header("Accept", MEDIA_TYPE_TAXII)
                    .header("Content-Type", MEDIA_TYPE_TAXII);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.send(body.as_bytes()).map_err(transport)?
            }
            ("DELETE", _) => {
                let mut r = self.agent.delete(&full).header("Accept", MEDIA_TYPE_TAXII);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.call().map_err(transport)?
            }
            _ => {
                let mut r = self.agent.get(&full).header("Accept", MEDIA_TYPE_TAXII);
                if let Some(a) = &self.auth {
                    r = r.header("Authorization", a);
                }
                r.call().map_err(transport)?
            }
        };
        let text = response
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ClientError::Transport {
                url: full.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let err: Option<ErrorMessage> = serde_json::from_str(&text).ok();
            return Err(ClientError::Http {
                status,
                title: err
                    .as_ref()
                    .map(|e| e.title.clone())
                    .unwrap_or_else(|| "error".to_owned()),
                description: err
                    .and_then(|e| e.description)
                    .or_else(|| (!text.is_empty()).then(|| text.chars().take(200).collect())),
            });
        }
        Ok((response, text))
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        params: &[(&str, String)],
    ) -> Result<Page<T>> {
        let (response, text) = self.request("GET", url, params, None)?;
        let header = |n: &str| {
            response
                .headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body = if text.trim().is_empty() {
            serde_json::from_str("{}")
        } else {
            serde_json::from_str(&text)
        }
        .map_err(|e| ClientError::Decode {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Page {
            body,
            date_added_first: header(server::HEADER_FIRST),
            date_added_last: header(server::HEADER_LAST),
        })
    }

    /// `GET <discovery url>`.
    pub fn discover(&self, url: &str) -> Result<Discovery> {
        Ok(self.get_json(&with_slash(url), &[])?.body)
    }

    /// The absolute URLs of a server's API roots.
    pub fn api_root_urls(&self, discovery_url: &str) -> Result<Vec<String>> {
        let d = self.discover(discovery_url)?;
        let base = with_slash(discovery_url);
        Ok(d.api_roots
            .iter()
            .map(|r| with_slash(&resolve(&base, r)))
            .collect())
    }

    pub fn api_root(&self, root_url: &str) -> Result<ApiRoot> {
        Ok(self.get_json(&with_slash(root_url), &[])?.body)
    }

    pub fn collections(&self, root_url: &str) -> Result<Collections> {
        Ok(self
            .get_json(&format!("{}collections/", with_slash(root_url)), &[])?
            .body)
    }

    /// One page of objects; `params` are the filters as `(name, value)`, e.g.
    /// `("match[type]", "indicator")`.
    pub fn get_objects(
        &self,
        root_url: &str,
        collection: &str,
        params: &[(&str, String)],
    ) -> Result<Page<Envelope>> {
        self.get_json(
            &format!("{}collections/{collection}/objects/", with_slash(root_url)),
            params,
        )
    }

    pub fn get_object(
        &self,
        root_url: &str,
        collection: &str,
        id: &str,
        params: &[(&str, String)],
    ) -> Result<Page<Envelope>> {
        self.get_json(
            &format!(
                "{}collections/{collection}/objects/{id}/",
                with_slash(root_url)
            ),
            params,
        )
    }

    pub fn manifest(
        &self,
        root_url: &str,
        collection: &str,
        params: &[(&str, String)],
    ) -> Result<Page<Manifest>> {
        self.get_json(
            &format!("{}collections/{collection}/manifest/", with_slash(root_url)),
            params,
        )
    }

    pub fn versions(
        &self,
        root_url: &str,
        collection: &str,
        id: &str,
        params: &[(&str, String)],
    ) -> Result<Page<Versions>> {
        self.get_json(
            &format!(
                "{}collections/{collection}/objects/{id}/versions/",
                with_slash(root_url)
            ),
            params,
        )
    }

    pub fn delete_object(
        &self,
        root_url: &str,
        collection: &str,
        id: &str,
        params: &[(&str, String)],
    ) -> Result<()> {
        self.request(
            "DELETE",
            &format!(
                "{}collections/{collection}/objects/{id}/",
                with_slash(root_url)
            ),
            params,
            None,
        )?;
        Ok(())
    }

    /// Posts an envelope of objects; returns the status the server answered.
    pub fn add_objects(
        &self,
        root_url: &str,
        collection: &str,
        objects: &[Value],
    ) -> Result<Status> {
        let url = format!("{}collections/{collection}/objects/", with_slash(root_url));
        let body = serde_json::json!({ "objects": objects }).to_string();
        let (_, text) = self.request("POST", &url, &[], Some(body))?;
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    pub fn status(&self, root_url: &str, id: &str) -> Result<Status> {
        Ok(self
            .get_json(&format!("{}status/{id}/", with_slash(root_url)), &[])?
            .body)
    }

    /// Polls a status until it is `complete` or `timeout` passes.
    pub fn wait_status(&self, root_url: &str, status: Status, timeout: Duration) -> Result<Status> {
        let start = Instant::now();
        let mut s = status;
        let mut delay = Duration::from_millis(20);
        while s.status != "complete" {
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout {
                    id: s.id,
                    waited_s: timeout.as_secs(),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
            s = self.status(root_url, &s.id)?;
        }
        Ok(s)
    }

    /// Reads every page of objects added after `added_after`, calling `each` per page;
    /// returns the last `date_added` seen (the next poll's `added_after`), or the one
    /// passed in when nothing was new.
    pub fn pull(
        &self,
        root_url: &str,
        collection: &str,
        added_after: Option<String>,
        extra: &[(&str, String)],
        mut each: impl FnMut(&[Value]) -> std::result::Result<(), String>,
    ) -> Result<Option<String>> {
        let mut bookmark = added_after.clone();
        let mut next: Option<String> = None;
        loop {
            let mut params: Vec<(&str, String)> = extra.to_vec();
            // Some servers (medallion) need `limit` beside `next`.
            if !params.iter().any(|(k, _)| *k == "limit") {
                params.push(("limit", PULL_PAGE.to_string()));
            }
            if let Some(a) = &added_after {
                params.push(("added_after", a.clone()));
            }
            if let Some(n) = &next {
                params.push(("next", n.clone()));
            }
            let page = self.get_objects(root_url, collection, &params)?;
            each(&page.body.objects).map_err(|message| ClientError::Decode {
                url: root_url.to_owned(),
                message,
            })?;
            if let Some(last) = page.date_added_last {
                bookmark = Some(last);
            }
            match (page.body.more, page.body.next) {
                (Some(true), Some(n)) => next = Some(n),
                _ => return Ok(bookmark),
            }
        }
    }
}
