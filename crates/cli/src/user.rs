//! `citysec user ...`: operator accounts, through the running platform's API (admin token),
//! or with `--offline` directly on a stopped platform's data directory (how the first
//! admin account is made: `citysec user add NAME --role admin --offline` prints a generated
//! password; there is no default password).

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::device::{Target, api, encode, offline};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. Without --password-env a password is generated and printed once.
    Add {
        name: String,
        /// viewer, analyst, operator, supervisor or admin.
        #[arg(long)]
        role: String,
        /// Read the password from this environment variable instead of generating one.
        #[arg(long)]
        password_env: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Disable an account: its sessions and tokens stop working at once.
    Disable {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Enable a disabled account again.
    Enable {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a new password (generated and printed once without --password-env); ends the
    /// account's sessions.
    Passwd {
        name: String,
        #[arg(long)]
        password_env: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

fn password_from(var: Option<String>) -> anyhow::Result<Option<String>> {
    match var {
        None => Ok(None),
        Some(var) => match std::env::var(&var) {
            Ok(p) if !p.is_empty() => Ok(Some(p)),
            _ => bail!("environment variable {var} is not set"),
        },
    }
}

fn user_json(user: &store::User) -> Value {
    json!({
        "name": user.name, "role": user.role, "disabled": user.disabled,
        "created_at": user.created_at, "updated_at": user.updated_at,
    })
}

pub fn run(cmd: UserCommand) -> anyhow::Result<u8> {
    match cmd {
        UserCommand::Add {
            name,
            role,
            password_env,
            target,
        } => {
            let password = password_from(password_env)?;
            let reply = if target.offline {
                offline(&target, |store| async move {
                    let (user, generated) =
                        app::users::add(store.as_ref(), &name, &role, password).await?;
                    Ok(json!({"user": user_json(&user), "password": generated}))
                })?
            } else {
                let mut body = json!({"name": name, "role": role});
                if let Some(password) = password {
                    body["password"] = Value::String(password);
                }
                api(&target, "POST", "/api/v1/users", Some(body))?
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                println!(
                    "created {} ({})",
                    reply["user"]["name"].as_str().unwrap_or("?"),
                    reply["user"]["role"].as_str().unwrap_or("?")
                );
                if let Some(password) = reply["password"].as_str() {
                    println!("password (shown once): {password}");
                }
            }
            Ok(0)
        }
        UserCommand::List { target } => {
            let items: Vec<Value> = if target.offline {
                offline(&target, |store| async move {
                    Ok(store.list_users().await?.iter().map(user_json).collect())
                })?
            } else {
                api(&target, "GET", "/api/v1/users", None)?["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            };
            if target.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                println!("{:<24} {:<12} {:<8}", "NAME", "ROLE", "STATUS");
                for u in &items {
                    println!(
                        "{:<24} {:<12} {:<8}",
                        u["name"].as_str().unwrap_or(""),
                        u["role"].as_str().unwrap_or(""),
                        if u["disabled"] == true {
                            "disabled"
                        } else {
                            "active"
                        }
                    );
                }
            }
            Ok(0)
        }
        UserCommand::Disable { name, target } => set_disabled(name, true, target),
        UserCommand::Enable { name, target } => set_disabled(name, false, target),
        UserCommand::Passwd {
            name,
            password_env,
            target,
        } => {
            let password = password_from(password_env)?;
            let generated = if target.offline {
                let name = name.clone();
                offline(&target, |store| async move {
                    app::users::set_password(store.as_ref(), &name, password).await
                })?
            } else {
                let (password, generated) = match password {
                    Some(p) => (p, None),
                    None => {
                        let p = app::users::generate_password()?;
                        (p.clone(), Some(p))
                    }
                };
                api(
                    &target,
                    "PATCH",
                    &format!("/api/v1/users/{}", encode(&name)),
                    Some(json!({"password": password})),
                )?;
                generated
            };
            println!("password of {name} changed; its sessions ended");
            if let Some(password) = generated {
                println!("password (shown once): {password}");
            }
            Ok(0)
        }
    }
}

fn set_disabled(name: String, disabled: bool, target: Target) -> anyhow::Result<u8> {
    if target.offline {
        let name = name.clone();
        offline(&target, |store| async move {
            app::users::set_disabled(store.as_ref(), &name, disabled).await
        })?;
    } else {
        api(
            &target,
            "PATCH",
            &format!("/api/v1/users/{}", encode(&name)),
            Some(json!({"disabled": disabled})),
        )?;
    }
    println!("{} {name}", if disabled { "disabled" } else { "enabled" });
    Ok(0)
}
