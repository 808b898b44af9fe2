//! `citysec readiness [--json|--csv]`: the readiness index from the running platform
//! (`GET /api/v1/readiness`), as a table, JSON or CSV (one row per scope and indicator).

use clap::Args;
use serde_json::Value;

use crate::device::{Target, api};

#[derive(Debug, Args)]
pub struct ReadinessArgs {
    /// Print CSV: scope,indicator,score,detail,no_data (scores 0-100).
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    #[command(flatten)]
    target: Target,
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn score(v: &Value) -> String {
    v.as_f64()
        .map(|s| format!("{s:.1}"))
        .unwrap_or_else(|| "no data".into())
}

pub fn run(args: ReadinessArgs) -> anyhow::Result<u8> {
    let index = api(&args.target, "GET", "/api/v1/readiness", None)?;
    let mut scopes = vec![("city".to_owned(), index["city"].clone())];
    for sector in index["sectors"].as_array().into_iter().flatten() {
        scopes.push((
            sector["sector"].as_str().unwrap_or("?").to_owned(),
            sector.clone(),
        ));
    }
    if args.target.json {
        println!("{}", serde_json::to_string_pretty(&index)?);
    } else if args.csv {
        println!("scope,indicator,score,detail,no_data");
        for (name, card) in &scopes {
            for v in card["values"].as_array().into_iter().flatten() {
                let s = v["score"]
                    .as_f64()
                    .map(|s| format!("{:.1}", s * 100.0))
                    .unwrap_or_default();
                println!(
                    "{},{},{s},{},{}",
                    csv_field(name),
                    v["id"].as_str().unwrap_or(""),
                    csv_field(v["detail"].as_str().unwrap_or("")),
                    csv_field(v["no_data"].as_str().unwrap_or(""))
                );
            }
            let s = card["score"]
                .as_f64()
                .map(|s| format!("{s:.1}"))
                .unwrap_or_default();
            println!("{},score,{s},,", csv_field(name));
        }
    } else {
        println!(
            "readiness index (0-100), computed {}",
            index["computed_at"].as_str().unwrap_or("?")
        );
        for (name, card) in &scopes {
            println!("  {name:<14} {}", score(&card["score"]));
        }
        println!("\ncity indicators:");
        for v in index["city"]["values"].as_array().into_iter().flatten() {
            let s = v["score"]
                .as_f64()
                .map(|s| format!("{:5.1}", s * 100.0))
                .unwrap_or_else(|| "  -  ".into());
            let detail = v["no_data"]
                .as_str()
                .map(|w| format!("no data: {w}"))
                .unwrap_or_else(|| v["detail"].as_str().unwrap_or("").to_owned());
            println!("  {:<26} {s}  {detail}", v["id"].as_str().unwrap_or(""));
        }
        println!("\nwhat would raise it most:");
        for i in index["improvements"].as_array().into_iter().flatten() {
            println!(
                "  +{:.1} {}",
                i["gain"].as_f64().unwrap_or(0.0),
                i["change"].as_str().unwrap_or("")
            );
        }
        if let Some(delta) = index["trend"]["delta"].as_f64() {
            println!(
                "\ntrend: {delta:+.1} since {}",
                index["trend"]["since"].as_str().unwrap_or("?")
            );
        }
        println!(
            "\nsources and formulas: GET /api/v1/readiness (indicators), crates/readiness/src/docs/indicators.md"
        );
    }
    Ok(0)
}
