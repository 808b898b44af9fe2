//! `citysec command ...`: send, approve, list and show commands through the running
//! platform's command gateway (there is no offline mode: only the gateway reaches an
//! actuator). `approve` recomputes the payload hash from what it shows the approver, so the
//! approval is bound to the payload they saw.

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};

use crate::device::{Target, api, encode};

#[derive(Debug, Subcommand)]
pub enum CommandCommand {
    /// Send a command: safety-critical classes wait for a second person's approval.
    Send {
        /// A device to act on (repeat for several).
        #[arg(long = "device", required = true)]
        devices: Vec<String>,
        #[arg(long)]
        action: String,
        /// A parameter, `name=value`; the value is read as JSON when it parses (numbers,
        /// true/false), else as text. Repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
        /// The advisory (authorised public warning) a siren activation is issued under.
        #[arg(long)]
        advisory: Option<String>,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Approve a command waiting for a second person (not the requester).
    Approve {
        id: String,
        #[command(flatten)]
        target: Target,
    },
    /// List commands, newest first.
    List {
        /// pending_approval, approved, delivered, acked, refused, expired or timed_out.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        target: Target,
    },
    /// Show one command with its approvals and deliveries.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: CommandCommand) -> anyhow::Result<u8> {
    match cmd {
        CommandCommand::Send {
            devices,
            action,
            params,
            advisory,
            reason,
            target,
        } => {
            refuse_offline(&target)?;
            let mut map = Map::new();
            for param in &params {
                let (name, value) = param
                    .split_once('=')
                    .with_context(|| format!("--param {param:?} must be name=value"))?;
                let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                map.insert(name.to_owned(), value);
            }
            let mut body = json!({"devices": devices, "action": action, "params": map});
            if let Some(advisory) = advisory {
                body["advisory"] = json!(advisory);
            }
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            let command = api(&target, "POST", "/api/v1/commands", Some(body))?;
            print(&target, &command);
            Ok(0)
        }
        CommandCommand::Approve { id, target } => {
            refuse_offline(&target)?;
            let command = api(
                &target,
                "GET",
                &format!("/api/v1/commands/{}", encode(&id)),
                None,
            )?;
            let command: gateway::Command = serde_json::from_value(command)
                .context("the platform returned a command this citysec cannot read")?;
            let sha = command.compute_payload_sha256();
            if !target.json {
                eprintln!(
                    "approving for {} ({}):\n{}\npayload sha256 {sha}",
                    command.requested_by,
                    command.requested_role,
                    serde_json::to_string_pretty(&command.payload())?
                );
            }
            if sha != command.payload_sha256 {
                bail!(
                    "the command's payload hashes to {sha}, not the {} recorded at request time: not approving",
                    command.payload_sha256
                );
            }
            let done = api(
                &target,
                "POST",
                &format!("/api/v1/commands/{}/approve", encode(&id)),
                Some(json!({"payload_sha256": sha})),
            )?;
            print(&target, &done);
            Ok(0)
        }
        CommandCommand::List {
            state,
            limit,
            target,
        } => {
            refuse_offline(&target)?;
            let mut path = format!("/api/v1/commands?limit={limit}");
            if let Some(state) = state {
                path.push_str(&format!("&state={}", encode(&state)));
            }
            let page = api(&target, "GET", &path, None)?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if target.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                for c in &items {
                    println!("{}", line(c));
                }
            }
            Ok(0)
        }
        CommandCommand::Show { id, target } => {
            refuse_offline(&target)?;
            let command = api(
                &target,
                "GET",
                &format!("/api/v1/commands/{}", encode(&id)),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&command)?);
            Ok(0)
        }
    }
}

fn refuse_offline(target: &Target) -> anyhow::Result<()> {
    if target.offline {
        bail!("commands go through the running platform's gateway; --offline is not possible");
    }
    Ok(())
}

fn line(c: &Value) -> String {
    let devices: Vec<&str> = c["devices"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{}  {:<16} {:<10} {:<24} by {}{}",
        c["id"].as_str().unwrap_or("-"),
        c["state"].as_str().unwrap_or("-"),
        c["action"].as_str().unwrap_or("-"),
        devices.join(","),
        c["requested_by"].as_str().unwrap_or("-"),
        c["outcome"]
            .as_str()
            .map(|o| format!("  ({o})"))
            .unwrap_or_default()
    )
}

fn print(target: &Target, command: &Value) {
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(command).unwrap_or_default()
        );
    } else {
        println!("{}", line(command));
        if command["state"] == "pending_approval" {
            println!(
                "waiting for a second person: citysec command approve {}",
                command["id"].as_str().unwrap_or("-")
            );
        }
    }
}
