//! `citysec device ...`: the device registry, through the running platform's API (so the
//! broker sees changes at once), or with `--offline` directly on a data directory whose
//! platform is stopped (to load an inventory before the first start).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use model::{Device, DeviceClass, DeviceId, DeviceStatus, Location, Sector};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct Target {
    /// The platform's API.
    #[arg(
        long,
        env = "CITYSEC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) url: String,
    /// An API token (prefer --token-file or the environment over the command line).
    #[arg(long, env = "CITYSEC_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// A file holding the API token.
    #[arg(
        long,
        env = "CITYSEC_TOKEN_FILE",
        default_value = "./citysec-data/admin.token",
        global = true
    )]
    pub(crate) token_file: PathBuf,
    /// Work on the data directory's store directly (the platform must be stopped).
    #[arg(long, global = true)]
    pub(crate) offline: bool,
    /// The data directory for --offline.
    #[arg(long, default_value = "./citysec-data", global = true)]
    pub(crate) data_dir: PathBuf,
    /// Print JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device. Without --secret or --cert-sha256 a secret is generated and
    /// printed once.
    Add {
        id: String,
        #[arg(long)]
        class: DeviceClass,
        #[arg(long)]
        zone: String,
        #[arg(long)]
        owner: String,
        #[arg(long, default_value = "")]
        vendor: String,
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value = "")]
        firmware: String,
        #[arg(long, requires = "lon")]
        lat: Option<f64>,
        #[arg(long, requires = "lat")]
        lon: Option<f64>,
        /// A secret of your choosing (at least 16 characters); read from the environment
        /// variable CITYSEC_DEVICE_SECRET if set.
        #[arg(long, env = "CITYSEC_DEVICE_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// The SHA-256 fingerprint of the device's client certificate (`citysec pki device`
        /// prints it).
        #[arg(long)]
        cert_sha256: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List devices.
    List {
        #[arg(long)]
        sector: Option<Sector>,
        #[arg(long)]
        class: Option<DeviceClass>,
        #[arg(long)]
        zone: Option<String>,
        /// `active` or `revoked`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// List devices after this id (paging).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show one device.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a device's credentials and drop its sessions.
    Revoke {
        id: String,
        #[arg(long, default_value = "revoked by operator")]
        reason: String,
        #[command(flatten)]
        target: Target,
    },
    /// Import an inventory (JSON, or CSV by extension or --format).
    Import {
        file: PathBuf,
        /// `json` or `csv` (default: from the file extension).
        #[arg(long)]
        format: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: DeviceCommand) -> anyhow::Result<u8> {
    match cmd {
        DeviceCommand::Add {
            id,
            class,
            zone,
            owner,
            vendor,
            model,
            firmware,
            lat,
            lon,
            secret,
            cert_sha256,
            target,
        } => {
            let location = lat.zip(lon).map(|(lat, lon)| Location { lat, lon });
            let generate_secret = secret.is_none() && cert_sha256.is_none();
            let body = json!({
                "id": id, "class": class, "zone": zone, "owner": owner, "vendor": vendor,
                "model": model, "firmware": firmware, "location": location, "secret": secret,
                "generate_secret": generate_secret, "cert_sha256": cert_sha256,
            });
            let reply = if target.offline {
                offline(&target, |store| async move {
                    let (device, secret) =
                        app::platform::device_from_request(body, model::Timestamp::now())
                            .map_err(|e| anyhow::anyhow!(e))?;
                    store.insert_device(&device).await?;
                    Ok(json!({"device": redact(&device), "secret": secret}))
                })?
            } else {
                api(&target, "POST", "/api/v1/devices", Some(body))?
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                let device = reply.get("device").unwrap_or(&reply);
                println!("registered {}", device["id"].as_str().unwrap_or("?"));
                if let Some(secret) = reply.get("secret").and_then(Value::as_str) {
                    println!("secret (shown once, store it in the device): {secret}");
                }
            }
            Ok(0)
        }
        DeviceCommand::List {
            sector,
            class,
            zone,
            status,
            limit,
            after,
            target,
        } => {
            let status = status
                .map(|s| match s.as_str() {
                    "active" => Ok(DeviceStatus::Active),
                    "revoked" => Ok(DeviceStatus::Revoked),
                    other => Err(anyhow::anyhow!(
                        "unknown status {other:?} (active or revoked)"
                    )),
                })
                .transpose()?;
            let items: Vec<Value> = if target.offline {
                let query = store::DeviceQuery {
                    sector,
                    class,
                    zone,
                    status,
                    after: after.map(DeviceId::new).transpose()?,
                    limit,
                };
                offline(&target, |store| async move {
                    Ok(store
                        .list_devices(&query)
                        .await?
                        .iter()
                        .map(redact)
                        .collect())
                })?
            } else {
                let mut query = vec![format!("limit={limit}")];
                if let Some(s) = sector {
                    query.push(format!("sector={s}"));
                }
                if let Some(c) = class {
                    query.push(format!("class={c}"));
                }
                if let Some(z) = zone {
                    query.push(format!("zone={}", encode(&z)));
                }
                if let Some(s) = status {
                    query.push(format!("status={}", s.as_str()));
                }
                if let Some(a) = after {
                    query.push(format!("after={}", encode(&a)));
                }
                let reply = api(
                    &target,
                    "GET",
                    &format!("/api/v1/devices?{}", query.join("&")),
                    None,
                )?;
                reply["items"].as_array().cloned().unwrap_or_default()
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<16} {:<18} {:<8}",
                    "ID", "SECTOR", "CLASS", "ZONE", "STATUS"
                );
                for d in &items {
                    println!(
                        "{:<24} {:<16} {:<16} {:<18} {:<8}",
                        d["id"].as_str().unwrap_or(""),
                        d["sector"].as_str().unwrap_or(""),
                        d["class"].as_str().unwrap_or(""),
                        d["zone"].as_str().unwrap_or(""),
                        d["status"].as_str().unwrap_or(""),
                    );
                }
            }
            Ok(0)
        }
        DeviceCommand::Show { id, target } => {
            let id = DeviceId::new(id)?;
            let device = if target.offline {
                let id = id.clone();
                offline(&target, |store| async move {
                    store
                        .get_device(&id)
                        .await?
                        .map(|d| redact(&d))
                        .with_context(|| format!("device {id} not found"))
                })?
            } else {
                api(&target, "GET", &format!("/api/v1/devices/{id}"), None)?
            };
            println!("{}", serde_json::to_string_pretty(&device)?);
            Ok(0)
        }
        DeviceCommand::Revoke { id, reason, target } => {
            let id = DeviceId::new(id)?;
            if target.offline {
                let id = id.clone();
                offline(&target, |store| async move {
                    store.set_device_status(&id, DeviceStatus::Revoked).await?;
                    Ok(())
                })?;
            } else {
                api(
                    &target,
                    "POST",
                    &format!("/api/v1/devices/{id}/revoke"),
                    Some(json!({"reason": reason})),
                )?;
            }
            println!("revoked {id}");
            Ok(0)
        }
        DeviceCommand::Import {
            file,
            format,
            target,
        } => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let format = match format.as_deref() {
                Some("json") => app::inventory::Format::Json,
                Some("csv") => app::inventory::Format::Csv,
                Some(other) => bail!("unknown format {other:?} (json or csv)"),
                None => app::inventory::Format::from_path(&file),
            };
            let report = if target.offline {
                offline(&target, |store| async move {
                    let (devices, errors) = tokio::task::spawn_blocking(move || {
                        app::inventory::parse(&bytes, format, model::Timestamp::now())
                    })
                    .await?
                    .map_err(|e| anyhow::anyhow!(e))?;
                    for chunk in devices.chunks(5_000) {
                        store.upsert_devices(chunk).await?;
                    }
                    Ok(json!({"imported": devices.len(), "errors": errors}))
                })?
            } else {
                let content_type = match format {
                    app::inventory::Format::Json => "application/json",
                    app::inventory::Format::Csv => "text/csv",
                };
                api_raw(&target, "/api/v1/devices/import", content_type, bytes)?
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("imported {} devices", report["imported"]);
                for err in report["errors"].as_array().into_iter().flatten() {
                    println!(
                        "  row {}: {}",
                        err["row"],
                        err["message"].as_str().unwrap_or("")
                    );
                }
            }
            let refused = report["errors"].as_array().is_some_and(|e| !e.is_empty());
            Ok(u8::from(refused))
        }
    }
}

/// A device as shown to people: secret hashes never leave the store.
fn redact(device: &Device) -> Value {
    let mut value = serde_json::to_value(device).unwrap_or(Value::Null);
    if let Some(creds) = value.get_mut("credentials").and_then(Value::as_array_mut) {
        for cred in creds {
            if let Some(obj) = cred.as_object_mut() {
                obj.remove("hash");
            }
        }
    }
    value
}

pub(crate) fn offline<F, Fut, T>(target: &Target, f: F) -> anyhow::Result<T>
where
    F: FnOnce(std::sync::Arc<dyn store::Store>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let path = target.data_dir.join("citysec.db");
    crate::runtime()?.block_on(async {
        std::fs::create_dir_all(&target.data_dir)
            .with_context(|| format!("failed to create {}", target.data_dir.display()))?;
        let store: std::sync::Arc<dyn store::Store> = std::sync::Arc::new(
            store::EmbeddedStore::open(&path)
                .with_context(|| format!("failed to open {}", path.display()))?,
        );
        let result = f(store.clone()).await;
        store.close().await?;
        result
    })
}

fn token(target: &Target) -> anyhow::Result<String> {
    if let Some(token) = &target.token {
        return Ok(token.clone());
    }
    read_token(&target.token_file)
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read the API token from {} (use --token-file or CITYSEC_TOKEN)",
            path.display()
        )
    })?;
    Ok(text.trim().to_owned())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into()
}

pub(crate) fn api(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", target.url.trim_end_matches('/'));
    let auth = format!("Bearer {}", token(target)?);
    let agent = agent();
    let response = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        ("PATCH", Some(body)) => agent
            .patch(&url)
            .header("Authorization", &auth)
            .send_json(body),
        (_, Some(body)) => agent.post(&url).header("Authorization", &auth).send_json(body),
        (_, None) => agent.post(&url).header("Authorization", &auth).send_empty(),
    }
    .with_context(|| format!("failed to reach {url} (is the platform running? use --offline to work on a stopped one)"))?;
    reply(response)
}

fn api_raw(
    target: &Target,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", target.url.trim_end_matches('/'));
    let response = agent()
        .post(&url)
        .header("Authorization", &format!("Bearer {}", token(target)?))
        .header("Content-Type", content_type)
        .send(&body[..])
        .with_context(|| format!("failed to reach {url}"))?;
    reply(response)
}

fn reply(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        bail!("{status}: {message}");
    }
    Ok(value)
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
