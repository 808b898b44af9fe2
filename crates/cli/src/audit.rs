//! `citysec audit verify|export`: check the audit log's hash chain and write it out for an
//! auditor, through the running platform's API or `--offline` on a stopped platform's data
//! directory; `verify --file` checks an export without any platform.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use store::audit::{ChainReport, StoredAudit};

use crate::device::{Target, api, offline};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the chain; exit 0 when intact, 1 naming the first broken record.
    Verify {
        /// Check an export file (JSON lines) instead of the platform's log.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Write the log as JSON lines (`{"seq","prev_hash","hash","body"}`; `body` is the
    /// canonical JSON the hash covers).
    Export {
        /// Where to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: AuditCommand) -> anyhow::Result<u8> {
    match cmd {
        AuditCommand::Verify { file, target } => {
            let report = match file {
                Some(path) => {
                    let file = std::fs::File::open(&path)
                        .with_context(|| format!("failed to open {}", path.display()))?;
                    app::audit::verify_export(&mut std::io::BufReader::new(file))?
                }
                None if target.offline => offline(&target, |store| async move {
                    app::audit::verify(store.as_ref()).await
                })?,
                None => serde_json::from_value(api(&target, "GET", "/api/v1/audit/verify", None)?)
                    .context("unexpected answer from the platform")?,
            };
            Ok(show(&target, &report))
        }
        AuditCommand::Export { out, target } => {
            let mut writer: Box<dyn Write> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("failed to create {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let n = if target.offline {
                let mut buffer = Vec::new();
                let n = offline(&target, |store| async move {
                    let n = app::audit::export(store.as_ref(), &mut buffer).await?;
                    anyhow::Ok((n, buffer))
                })?;
                writer.write_all(&n.1)?;
                n.0
            } else {
                let mut after = 0u64;
                let mut n = 0u64;
                loop {
                    let page = api(
                        &target,
                        "GET",
                        &format!("/api/v1/audit?after={after}&limit=1000"),
                        None,
                    )?;
                    let rows: Vec<StoredAudit> = serde_json::from_value(page["items"].clone())
                        .context("unexpected answer from the platform")?;
                    for row in &rows {
                        serde_json::to_writer(&mut writer, row)?;
                        writer.write_all(b"\n")?;
                        n += 1;
                    }
                    match page["next_after"].as_u64() {
                        Some(next) => after = next,
                        None => break,
                    }
                }
                n
            };
            writer.flush()?;
            if out.is_some() {
                eprintln!("exported {n} audit records");
            }
            Ok(0)
        }
    }
}

fn show(target: &Target, report: &ChainReport) -> u8 {
    if target.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    }
    match &report.broken {
        None => {
            if !target.json {
                println!(
                    "audit log intact: {} records, last hash {}",
                    report.records, report.last_hash
                );
            }
            0
        }
        Some(broken) => {
            eprintln!(
                "audit log broken at record {}: {} ({} records before it verify)",
                broken.seq, broken.reason, report.records
            );
            1
        }
    }
}
