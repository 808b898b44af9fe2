//! `citysec stix ...`: validate STIX documents, check patterns, match a pattern against
//! observed-data. The logic lives in `stix::tool`; this module only handles argv, files,
//! stdout and exit codes (0 success/valid/matched, 1 invalid/no match, 2 unusable input).

use std::path::PathBuf;

use anyhow::Context;

/// `citysec stix` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StixCommand {
    /// Validate STIX 2.1 documents (bundles, objects or arrays of objects).
    Validate {
        /// Files to validate.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Work with STIX patterns.
    Pattern {
        #[command(subcommand)]
        cmd: PatternCommand,
    },
    /// Match a pattern against a bundle or a JSON array of observed-data.
    Match {
        /// The STIX pattern.
        #[arg(long)]
        pattern: String,
        /// A bundle, or a JSON array of observed-data and the objects they reference.
        file: PathBuf,
        /// Print `{"matched": bool, "matches": [[ids...], ...]}`.
        #[arg(long)]
        json: bool,
        /// Report at most this many bindings.
        #[arg(long, default_value_t = ::stix::tool::DEFAULT_MAX_MATCHES)]
        max_matches: usize,
    },
}

/// `citysec stix pattern` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PatternCommand {
    /// Check that a pattern is valid STIX 2.1 patterning.
    Check {
        /// The pattern.
        pattern: String,
    },
}

/// Runs a `stix` subcommand and returns the process exit code.
pub fn run(cmd: StixCommand) -> anyhow::Result<i32> {
    match cmd {
        StixCommand::Validate { files, json } => {
            let mut all_valid = true;
            let mut results = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("failed to read {}", f.display()))?;
                let issues = match ::stix::tool::validate_text(&text) {
                    Ok(issues) => issues
                        .into_iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>(),
                    Err(e) => vec![format!("$: {e}")],
                };
                all_valid &= issues.is_empty();
                if json {
                    results.push(serde_json::json!({
                        "file": f.display().to_string(),
                        "valid": issues.is_empty(),
                        "issues": issues,
                    }));
                } else if issues.is_empty() {
                    println!("{}: valid", f.display());
                } else {
                    for i in &issues {
                        println!("{}: {i}", f.display());
                    }
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(results));
            }
            Ok(if all_valid { 0 } else { 1 })
        }
        StixCommand::Pattern {
            cmd: PatternCommand::Check { pattern },
        } => match ::stix::tool::check_pattern(&pattern) {
            Ok(()) => {
                println!("valid");
                Ok(0)
            }
            Err(e) => {
                println!("invalid: {e}");
                println!("  {pattern}");
                println!("  {}^", " ".repeat(e.position()));
                Ok(1)
            }
        },
        StixCommand::Match {
            pattern,
            file,
            json,
            max_matches,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("failed to read {}", file.display()))?;
            let report = match ::stix::tool::match_text(&pattern, &text, max_matches) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(2);
                }
            };
            if json {
                println!("{}", report.to_json());
            } else if report.matched {
                for m in &report.matches {
                    println!("match: {}", m.join(" "));
                }
            } else {
                println!("no match");
            }
            Ok(if report.matched { 0 } else { 1 })
        }
    }
}
