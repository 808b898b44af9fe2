//! `citysec incident ...`: work incidents through the running platform's API, as the person
//! whose token is used (log in with `POST /api/v1/auth/login` or make a personal token).
//! `list` and `show` also work `--offline` on a stopped platform's data directory.

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::device::{Target, api, encode, offline};

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// List incidents, newest first.
    List {
        /// new, triaged, contained, resolved or closed.
        #[arg(long)]
        state: Option<String>,
        /// The least severity: info, low, medium, high, critical.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        device: Option<String>,
        /// Incidents older than this one (paging).
        #[arg(long)]
        before: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Show one incident with its alerts, actions, timeline and response times.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Acknowledge (triage) an incident; you become its owner if it has none.
    Ack {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Mark an incident contained.
    Contain {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Mark an incident resolved.
    Resolve {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Close an incident.
    Close {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Add a note to the timeline.
    Note {
        id: String,
        text: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set the TLP 2.0 level of what the incident shares once confirmed (clear, green,
    /// amber, amber+strict or red; TLP:RED never leaves the city).
    Tlp {
        id: String,
        level: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give the incident an owner.
    Assign {
        id: String,
        owner: String,
        #[command(flatten)]
        target: Target,
    },
    /// Ask for a response action (quarantine, revoke_credentials, rotate_credentials,
    /// rate_limit, lift_rate_limit, silence_siren, release); supervisors' requests run at
    /// once, others wait.
    Action {
        id: String,
        action: String,
        /// Default: the incident's first device.
        #[arg(long)]
        device: Option<String>,
        /// For rate_limit: messages per second the device may publish (default 1).
        #[arg(long)]
        messages_per_s: Option<f64>,
        /// For rate_limit: the burst it may send at once (default 10).
        #[arg(long)]
        burst: Option<u32>,
        /// For rate_limit: how long the limit holds, e.g. 30m or 2h (default 1h).
        #[arg(long, value_parser = crate::duration::parse)]
        duration: Option<std::time::Duration>,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a pending action (supervisor).
    Approve {
        id: String,
        action_id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Reject a pending action (supervisor).
    Reject {
        id: String,
        action_id: String,
        #[command(flatten)]
        target: Target,
    },
}

fn print_incident(target: &Target, incident: &Value) -> anyhow::Result<()> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(incident)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!(
        "{} [{}] {} tlp={} owner={}\n  {}",
        s(&incident["id"]),
        s(&incident["state"]),
        s(&incident["severity"]),
        s(&incident["tlp"]),
        s(&incident["owner"]),
        s(&incident["title"])
    );
    let d = &incident["durations"];
    let ms = |v: &Value| {
        v.as_i64()
            .map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
    };
    println!(
        "  time to detect {}, acknowledge {}, contain {}, resolve {}",
        ms(&d["time_to_detect_ms"]),
        ms(&d["time_to_acknowledge_ms"]),
        ms(&d["time_to_contain_ms"]),
        ms(&d["time_to_resolve_ms"])
    );
    for action in incident["actions"].as_array().into_iter().flatten() {
        println!(
            "  action {} {} {} {} {}",
            s(&action["id"]),
            s(&action["kind"]),
            s(&action["device_id"]),
            s(&action["status"]),
            action["outcome"].as_str().unwrap_or("")
        );
    }
    println!("  timeline:");
    for entry in incident["timeline"].as_array().into_iter().flatten() {
        let mut rest = entry.clone();
        if let Some(obj) = rest.as_object_mut() {
            for key in ["ts", "actor", "type"] {
                obj.remove(key);
            }
        }
        println!(
            "    {} {:<22} {:<16} {}",
            s(&entry["ts"]),
            s(&entry["actor"]),
            s(&entry["type"]),
            rest
        );
    }
    if let Some(secret) = incident["secret"].as_str() {
        println!("new device secret (shown once, store it in the device): {secret}");
    }
    Ok(())
}

fn online(target: &Target) -> anyhow::Result<()> {
    if target.offline {
        bail!("changing an incident needs the running platform (drop --offline)");
    }
    Ok(())
}

fn patch(target: &Target, id: &str, body: Value) -> anyhow::Result<u8> {
    online(target)?;
    let reply = api(
        target,
        "PATCH",
        &format!("/api/v1/incidents/{}", encode(id)),
        Some(body),
    )?;
    print_incident(target, &reply)?;
    Ok(0)
}

fn post(target: &Target, path: String, body: Option<Value>) -> anyhow::Result<u8> {
    online(target)?;
    let reply = api(target, "POST", &path, body.or_else(|| Some(json!({}))))?;
    print_incident(target, &reply)?;
    Ok(0)
}

pub fn run(cmd: IncidentCommand) -> anyhow::Result<u8> {
    match cmd {
        IncidentCommand::List {
            state,
            severity,
            owner,
            device,
            before,
            limit,
            target,
        } => {
            let items: Vec<Value> = if target.offline {
                let query = store::IncidentQuery {
                    state: state
                        .map(|s| s.parse::<model::IncidentState>())
                        .transpose()
                        .map_err(anyhow::Error::msg)?,
                    min_severity: severity
                        .map(|s| serde_json::from_value(Value::String(s)))
                        .transpose()?,
                    owner,
                    device_id: device.map(model::DeviceId::new).transpose()?,
                    before_seq: before
                        .map(|b| {
                            model::IncidentId(b.clone())
                                .seq()
                                .ok_or_else(|| anyhow::anyhow!("{b:?} is not an incident id"))
                        })
                        .transpose()?,
                    limit,
                };
                offline(&target, |store| async move {
                    Ok(store
                        .list_incidents(&query)
                        .await?
                        .iter()
                        .map(|i| {
                            let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
                            v["alerts"] = json!(i.alerts.len());
                            v
                        })
                        .collect())
                })?
            } else {
                let mut query = vec![format!("limit={limit}")];
                for (key, value) in [
                    ("state", state),
                    ("severity", severity),
                    ("owner", owner),
                    ("device_id", device),
                    ("before", before),
                ] {
                    if let Some(value) = value {
                        query.push(format!("{key}={}", encode(&value)));
                    }
                }
                api(
                    &target,
                    "GET",
                    &format!("/api/v1/incidents?{}", query.join("&")),
                    None,
                )?["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!(
                    "{:<12} {:<10} {:<9} {:<12} {:>6}  TITLE",
                    "ID", "STATE", "SEVERITY", "OWNER", "ALERTS"
                );
                for i in &items {
                    println!(
                        "{:<12} {:<10} {:<9} {:<12} {:>6}  {}",
                        i["id"].as_str().unwrap_or(""),
                        i["state"].as_str().unwrap_or(""),
                        i["severity"].as_str().unwrap_or(""),
                        i["owner"].as_str().unwrap_or("-"),
                        i["alerts"],
                        i["title"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        IncidentCommand::Show { id, target } => {
            let incident = if target.offline {
                let id = model::IncidentId(id.clone());
                offline(&target, |store| async move {
                    let incident = store
                        .get_incident(&id)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("incident {id} not found"))?;
                    let mut v = serde_json::to_value(&incident)?;
                    v["durations"] = serde_json::to_value(incident.durations())?;
                    Ok(v)
                })?
            } else {
                api(
                    &target,
                    "GET",
                    &format!("/api/v1/incidents/{}", encode(&id)),
                    None,
                )?
            };
            print_incident(&target, &incident)?;
            Ok(0)
        }
        IncidentCommand::Ack { id, target } => patch(&target, &id, json!({"state": "triaged"})),
        IncidentCommand::Tlp { id, level, target } => {
            let level: model::Tlp = level.parse().map_err(anyhow::Error::msg)?;
            patch(&target, &id, json!({"tlp": level.as_str()}))
        }
        IncidentCommand::Contain { id, target } => {
            patch(&target, &id, json!({"state": "contained"}))
        }
        IncidentCommand::Resolve { id, target } => {
            patch(&target, &id, json!({"state": "resolved"}))
        }
        IncidentCommand::Close { id, target } => patch(&target, &id, json!({"state": "closed"})),
        IncidentCommand::Assign { id, owner, target } => {
            patch(&target, &id, json!({"owner": owner}))
        }
        IncidentCommand::Note { id, text, target } => post(
            &target,
            format!("/api/v1/incidents/{}/notes", encode(&id)),
            Some(json!({"text": text})),
        ),
        IncidentCommand::Action {
            id,
            action,
            device,
            messages_per_s,
            burst,
            duration,
            target,
        } => {
            let mut body = json!({"action": action});
            if let Some(device) = device {
                body["device_id"] = Value::String(device);
            }
            if messages_per_s.is_some() || burst.is_some() || duration.is_some() {
                let default = model::RateLimitParams::default();
                body["rate_limit"] = json!({
                    "messages_per_s": messages_per_s.unwrap_or(default.messages_per_s),
                    "burst": burst.unwrap_or(default.burst),
                    "duration_s": duration.map_or(default.duration_s, |d| d.as_secs()),
                });
            }
            post(
                &target,
                format!("/api/v1/incidents/{}/actions", encode(&id)),
                Some(body),
            )
        }
        IncidentCommand::Approve {
            id,
            action_id,
            target,
        } => post(
            &target,
            format!(
                "/api/v1/incidents/{}/actions/{}/approve",
                encode(&id),
                encode(&action_id)
            ),
            None,
        ),
        IncidentCommand::Reject {
            id,
            action_id,
            target,
        } => post(
            &target,
            format!(
                "/api/v1/incidents/{}/actions/{}/reject",
                encode(&id),
                encode(&action_id)
            ),
            None,
        ),
    }
}
