//! Repository automation, in Rust rather than shell: `cargo xtask tidy` checks the
//! architecture's dependency rule and the house style; `cargo test -p xtask` runs the same
//! checks as a test, so CI enforces them. `cargo xtask bench mqtt` measures the platform
//! against Mosquitto (see `bench.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

mod bench;

/// Which workspace crates each crate may depend on (normal dependencies), from
/// ARCHITECTURE.md's dependency rule. A crate missing here may not exist.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &[]),
    ("stix", &[]),
    ("cap", &[]),
    ("detect", &["model", "stix"]),
    ("incident", &["model"]),
    ("readiness", &["model"]),
    ("bus", &["model"]),
    ("store", &["model"]),
    ("pki", &["model"]),
    ("ingest", &["model"]),
    ("gateway", &["model"]),
    ("verifier", &[]),
    ("taxii", &["stix"]),
    ("web", &["model", "readiness", "store"]),
    (
        "app",
        &[
            "model",
            "stix",
            "cap",
            "detect",
            "incident",
            "readiness",
            "bus",
            "store",
            "ingest",
            "gateway",
            "taxii",
            "web",
            "pki",
        ],
    ),
    ("sim", &["model", "app", "verifier"]),
    (
        "cli",
        &[
            "app", "sim", "model", "store", "stix", "pki", "detect", "taxii", "gateway",
        ],
    ),
    ("test-support", &["model"]),
    ("xtask", &[]),
];

/// External crates the pure layers must never pull in, directly or not.
const ENGINE_FORBIDDEN: &[&str] = &["tokio", "axum", "rusqlite", "rumqttc", "ureq", "hyper"];
const PURE: &[&str] = &[
    "model",
    "stix",
    "cap",
    "detect",
    "incident",
    "readiness",
    "gateway",
    "verifier",
];

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("tidy") => {
            let problems = tidy(&workspace_root())?;
            if problems.is_empty() {
                println!("tidy: ok");
                Ok(())
            } else {
                for p in &problems {
                    eprintln!("tidy: {p}");
                }
                bail!("{} tidy problem(s)", problems.len())
            }
        }
        Some("bench") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            match args.first().map(String::as_str) {
                Some("mqtt") => bench::run(&workspace_root(), &args[1..]),
                _ => bail!("usage: cargo xtask bench mqtt [--quick]"),
            }
        }
        _ => {
            eprintln!("usage: cargo xtask tidy | cargo xtask bench mqtt [--quick]");
            std::process::exit(2)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs every check and returns the problems found.
fn tidy(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("failed to run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let members: BTreeSet<String> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .collect();
    let packages = meta["packages"]
        .as_array()
        .context("no packages in metadata")?;
    let local: BTreeSet<&str> = packages
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        let is_local = local.contains(name);
        for dep in package["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let kind = dep["kind"].as_str();
            if kind.is_some() {
                continue; // dev and build dependencies are not layering
            }
            graph
                .entry(name.to_owned())
                .or_default()
                .insert(dep_name.to_owned());
            if is_local && local.contains(dep_name) {
                match allowed.get(name) {
                    None => problems.push(format!(
                        "crate {name} is not in the dependency rule (xtask ALLOWED and ARCHITECTURE.md)"
                    )),
                    Some(ok) if !ok.contains(dep_name) => problems.push(format!(
                        "crate {name} must not depend on {dep_name} (dependency rule, ARCHITECTURE.md)"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    // `--no-deps` lists declared dependencies only: pure crates must not declare an IO crate
    // (CI's `cargo tree` guard covers what they might pull in indirectly).
    for pure in PURE.iter().filter(|p| local.contains(*p)) {
        for dep in graph.get(*pure).into_iter().flatten() {
            if ENGINE_FORBIDDEN.contains(&dep.as_str()) {
                problems.push(format!(
                    "{pure} depends on {dep}: engines and standards crates stay free of IO"
                ));
            }
        }
    }
    for dir in ["crates", "xtask"] {
        check_docs(&root.join(dir), root, &mut problems)?;
    }
    Ok(problems)
}

/// Every `.rs` file opens with a `//!` doc comment.
fn check_docs(dir: &Path, root: &Path, problems: &mut Vec<String>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                check_docs(&path, root, problems)?;
            }
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path)?;
            if !text.trim_start().starts_with("//!") {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                problems.push(format!(
                    "{} does not open with a //! doc comment",
                    rel.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tidy() {
        let problems = super::tidy(&super::workspace_root()).unwrap();
        assert!(
            problems.is_empty(),
            "tidy problems:\n{}",
            problems.join("\n")
        );
    }
}
