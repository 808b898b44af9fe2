//! `citysec cap ...`: check CAP 1.2 files offline, and draft (by hand, from a CAP file, from
//! a siren alert or from an incident), approve, issue, cancel and list public advisories
//! through the running platform's API (`/api/v1/advisories`,
//! `/api/v1/incidents/{id}/advisory`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::device::{Target, api, api_raw, encode};

#[derive(Debug, Subcommand)]
pub enum CapCommand {
    /// Check CAP 1.2 documents: exit 0 when all are valid, 1 with each reason otherwise.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List advisories, newest draft first.
    List {
        /// Only this state (draft, approved, issued, cancelled, superseded, withdrawn).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Draft an advisory from a JSON file (the body of POST /api/v1/advisories).
    Draft {
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Draft an advisory from a CAP 1.2 document (checked by the platform as by `validate`).
    Import {
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Draft an advisory from a siren alert ("the sirens you heard were not a real warning").
    FromAlert {
        alert_id: String,
        /// Actual, Exercise or Test.
        #[arg(long)]
        status: String,
        /// Radius of the area around the siren, in kilometres.
        #[arg(long)]
        radius_km: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
    /// Draft an advisory from an incident, with the template that fits what it is about
    /// (or `--template`) and an area around its devices.
    FromIncident {
        incident_id: String,
        /// Actual, Exercise or Test.
        #[arg(long)]
        status: String,
        /// A template id (see `[advisories] templates`); by default the first that fits.
        #[arg(long)]
        template: Option<String>,
        /// How far around each device the area reaches, in kilometres.
        #[arg(long)]
        radius_km: Option<f64>,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a draft (someone other than its drafter).
    Approve {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Issue: sign and publish the CAP document (Actual warnings must be approved first).
    Issue {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// Issue the prepared cancel of an issued advisory.
    Cancel {
        id: String,
        /// Why it is cancelled (shown as the CAP note).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: CapCommand) -> anyhow::Result<u8> {
    match cmd {
        CapCommand::Validate { files } => {
            let mut failed = 0;
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("failed to read {}", file.display()))?;
                match cap::Alert::from_xml(&text) {
                    Ok(alert) => println!(
                        "{}: ok ({} {} {}, {} info block(s))",
                        file.display(),
                        alert.status,
                        alert.msg_type,
                        alert.identifier,
                        alert.info.len()
                    ),
                    Err(err) => {
                        failed += 1;
                        println!("{}: {err}", file.display());
                    }
                }
            }
            Ok(u8::from(failed > 0))
        }
        CapCommand::List { state, target } => {
            let query = state
                .map(|s| format!("?state={}", encode(&s)))
                .unwrap_or_default();
            let list = api(&target, "GET", &format!("/api/v1/advisories{query}"), None)?;
            if target.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            println!(
                "{:<34} {:<10} {:<9} {:<7} HEADLINE",
                "ID", "STATE", "STATUS", "TYPE"
            );
            for a in list.as_array().into_iter().flatten() {
                println!(
                    "{:<34} {:<10} {:<9} {:<7} {}",
                    str_of(a, "id"),
                    str_of(a, "state"),
                    str_of(a, "status"),
                    str_of(a, "msg_type"),
                    a["content"]["texts"][0]["headline"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        CapCommand::Draft { file, target } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            show(
                &target,
                api(&target, "POST", "/api/v1/advisories", Some(body))?,
            )
        }
        CapCommand::Import { file, target } => {
            let body = std::fs::read(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let advisory = api_raw(
                &target,
                "/api/v1/advisories/import",
                "application/cap+xml",
                body,
            )?;
            show(&target, advisory)
        }
        CapCommand::FromAlert {
            alert_id,
            status,
            radius_km,
            target,
        } => {
            let mut body = json!({ "status": status });
            if let Some(r) = radius_km {
                body["radius_km"] = json!(r);
            }
            let path = format!("/api/v1/advisories/from-alert/{}", encode(&alert_id));
            show(&target, api(&target, "POST", &path, Some(body))?)
        }
        CapCommand::FromIncident {
            incident_id,
            status,
            template,
            radius_km,
            target,
        } => {
            let mut body = json!({ "status": status });
            if let Some(t) = template {
                body["template"] = json!(t);
            }
            if let Some(r) = radius_km {
                body["radius_km"] = json!(r);
            }
            let path = format!("/api/v1/incidents/{}/advisory", encode(&incident_id));
            show(&target, api(&target, "POST", &path, Some(body))?)
        }
        CapCommand::Approve { id, target } => {
            let path = format!("/api/v1/advisories/{}/approve", encode(&id));
            show(&target, api(&target, "POST", &path, None)?)
        }
        CapCommand::Issue { id, target } => {
            let path = format!("/api/v1/advisories/{}/issue", encode(&id));
            show(&target, api(&target, "POST", &path, None)?)
        }
        CapCommand::Cancel { id, note, target } => {
            let path = format!("/api/v1/advisories/{}/cancel", encode(&id));
            let body = note.map(|n| json!({ "note": n }));
            show(&target, api(&target, "POST", &path, body)?)
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("-")
}

fn show(target: &Target, advisory: Value) -> anyhow::Result<u8> {
    if target.json {
        println!("{}", serde_json::to_string_pretty(&advisory)?);
    } else {
        println!(
            "{} {} ({} {})",
            str_of(&advisory, "id"),
            str_of(&advisory, "state"),
            str_of(&advisory, "status"),
            str_of(&advisory, "msg_type")
        );
        if let Some(cancel) = advisory["cancel_id"].as_str() {
            println!("ready cancel: {cancel}");
        }
        if advisory["state"] == "issued" {
            println!(
                "public: {}/cap/alerts/{} (signature: .../signature, key: /cap/key.pem)",
                target.url.trim_end_matches('/'),
                str_of(&advisory, "id")
            );
        }
    }
    Ok(0)
}
