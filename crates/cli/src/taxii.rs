//! `citysec taxii ...`: a TAXII 2.1 client against any server (discover, collections,
//! pull, push), and `hash-password` for `[[taxii.partners]] password_hash`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use taxii::client::{Auth, Client};

/// How to authenticate to the server.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// HTTP Basic user (the password comes from --password or CITYSEC_TAXII_PASSWORD).
    #[arg(long, global = true)]
    user: Option<String>,
    #[arg(
        long,
        global = true,
        env = "CITYSEC_TAXII_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Bearer token (or CITYSEC_TAXII_TOKEN).
    #[arg(
        long,
        global = true,
        env = "CITYSEC_TAXII_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TaxiiCommand {
    /// Show a server's discovery resource and its API roots.
    Discover { url: String },
    /// List the collections of an API root.
    Collections { api_root: String },
    /// Print every object of a collection (all pages) as a STIX bundle.
    Pull {
        api_root: String,
        collection: String,
        /// Only objects added after this timestamp.
        #[arg(long)]
        added_after: Option<String>,
        /// Only objects of these types (comma-separated).
        #[arg(long = "type")]
        types: Option<String>,
        /// Write the bundle here instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Add the objects of a file (a bundle, an envelope or a JSON array) and wait for the
    /// status.
    Push {
        api_root: String,
        collection: String,
        file: PathBuf,
    },
    /// Read a password on stdin and print its argon2id hash for the config.
    HashPassword,
}

fn client(auth: &AuthArgs) -> anyhow::Result<Client> {
    Ok(Client::new(
        match (&auth.user, &auth.password, &auth.token) {
            (Some(user), Some(password), _) => Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            (Some(_), None, _) => bail!("--user needs --password (or CITYSEC_TAXII_PASSWORD)"),
            (None, _, Some(token)) => Auth::Bearer(token.clone()),
            _ => Auth::None,
        },
    ))
}

fn print(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// The objects of a bundle, an envelope, or a JSON array.
pub fn objects_of(doc: Value) -> anyhow::Result<Vec<Value>> {
    match doc {
        Value::Array(a) => Ok(a),
        Value::Object(mut m) => match m.remove("objects") {
            Some(Value::Array(a)) => Ok(a),
            _ if m.contains_key("type") => Ok(vec![Value::Object(m)]),
            _ => bail!("expected a bundle, an envelope or a list of objects"),
        },
        _ => bail!("expected a bundle, an envelope or a list of objects"),
    }
}

pub fn run(cmd: TaxiiCommand, auth: AuthArgs) -> anyhow::Result<u8> {
    match cmd {
        TaxiiCommand::Discover { url } => {
            let c = client(&auth)?;
            let d = c.discover(&url)?;
            let roots = c.api_root_urls(&url)?;
            print(&json!({ "discovery": d, "api_root_urls": roots }))?;
        }
        TaxiiCommand::Collections { api_root } => print(&client(&auth)?.collections(&api_root)?)?,
        TaxiiCommand::Pull {
            api_root,
            collection,
            added_after,
            types,
            out,
        } => {
            let c = client(&auth)?;
            let mut extra = Vec::new();
            if let Some(t) = types {
                extra.push(("match[type]", t));
            }
            let mut objects = Vec::new();
            let last = c.pull(&api_root, &collection, added_after, &extra, |page| {
                objects.extend_from_slice(page);
                Ok(())
            })?;
            let bundle = json!({
                "type": "bundle",
                "id": format!("bundle--{}", taxii::server::uuid_v4()),
                "objects": objects,
            });
            match out {
                Some(path) => std::fs::write(&path, serde_json::to_vec_pretty(&bundle)?)
                    .with_context(|| format!("failed to write {}", path.display()))?,
                None => print(&bundle)?,
            }
            if let Some(last) = last {
                eprintln!("{} objects; next --added-after {last}", objects.len());
            }
        }
        TaxiiCommand::Push {
            api_root,
            collection,
            file,
        } => {
            let text = std::fs::read(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let doc: Value = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let objects = objects_of(doc)?;
            let c = client(&auth)?;
            let status = c.add_objects(&api_root, &collection, &objects)?;
            let status = c.wait_status(&api_root, status, Duration::from_secs(120))?;
            print(&status)?;
            return Ok(if status.failure_count == 0 { 0 } else { 1 });
        }
        TaxiiCommand::HashPassword => {
            let mut pw = String::new();
            std::io::stdin().read_to_string(&mut pw)?;
            let pw = pw.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                bail!("no password on stdin");
            }
            println!("{}", app::intel::hash_password(pw));
        }
    }
    Ok(0)
}
