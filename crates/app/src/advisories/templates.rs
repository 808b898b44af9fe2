//! The templates of advisories drafted from an incident, kept as data: the built-in
//! `config/advisory-templates.toml` (which documents the format) or the file
//! `[advisories] templates` names. Every template is checked when the platform starts (CAP
//! values, a text for every language of `[advisories] languages`, known placeholders), so a
//! draft from an incident cannot fail on its template.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, bail};
use model::DeviceClass;
use serde::Deserialize;

use crate::advisories::AdvisoryConfig;

/// The built-in templates.
pub const DEFAULT_TEMPLATES: &str = include_str!("../../../../config/advisory-templates.toml");

/// The placeholders a text may use.
pub const PLACEHOLDERS: &[&str] = &["time", "date", "devices"];

const MAX_TEMPLATES: usize = 1_000;
const MAX_HEADLINE: usize = 160;
const MAX_TEXT: usize = 2_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    template: Vec<Template>,
}

/// One template.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub id: String,
    #[serde(default)]
    pub classes: Vec<DeviceClass>,
    #[serde(default)]
    pub rules: Vec<String>,
    pub event: String,
    pub categories: Vec<String>,
    pub urgency: String,
    pub severity: String,
    pub certainty: String,
    #[serde(default)]
    pub response_types: Vec<String>,
    pub expires_h: u32,
    /// By language tag.
    pub texts: BTreeMap<String, TemplateText>,
}

/// A template's texts in one language.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateText {
    pub headline: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub instruction: String,
    pub area: String,
}

impl Template {
    /// Whether it fits an incident about devices of `classes` with alerts of `rules`.
    pub fn fits(&self, classes: &[DeviceClass], rules: &[&str]) -> bool {
        (self.classes.is_empty() || self.classes.iter().any(|c| classes.contains(c)))
            && (self.rules.is_empty() || self.rules.iter().any(|r| rules.contains(&r.as_str())))
    }

    fn is_generic(&self) -> bool {
        self.classes.is_empty() && self.rules.is_empty()
    }
}

/// The checked templates, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    pub templates: Vec<Template>,
    /// The languages every draft is written in (`[advisories] languages`).
    pub languages: Vec<String>,
}

impl Templates {
    /// The first template that fits.
    pub fn select(&self, classes: &[DeviceClass], rules: &[&str]) -> &Template {
        self.templates
            .iter()
            .find(|t| t.fits(classes, rules))
            .or_else(|| self.templates.iter().find(|t| t.is_generic()))
            .expect("checked at load: a generic template exists")
    }

    pub fn get(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.templates.iter().map(|t| t.id.as_str()).collect()
    }
}

/// Replaces `{name}` placeholders with their values.
pub fn fill(text: &str, values: &[(&str, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The longest values the placeholders take.
fn widest_values() -> Vec<(&'static str, String)> {
    vec![
        ("time", "00:00 UTC".to_owned()),
        ("date", "2026-12-31".to_owned()),
        ("devices", "100000".to_owned()),
    ]
}

/// Every `{...}` in `text` must be a known placeholder.
fn check_placeholders(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("a '}' without its '{'".into());
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err("a '{' without its '}'".into());
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} (known: {})",
                PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn check_enum<T>(
    parse: fn(&str) -> Option<T>,
    all: &[T],
    value: &str,
    what: &str,
) -> Result<(), String>
where
    T: std::fmt::Display,
{
    match parse(value) {
        Some(_) => Ok(()),
        None => Err(format!(
            "{what} {value:?} is not one of {}",
            all.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn check_template(t: &Template, languages: &[String]) -> Result<(), String> {
    if t.event.trim().is_empty() {
        return Err("event is empty".into());
    }
    if t.categories.is_empty() {
        return Err("needs at least one category".into());
    }
    for c in &t.categories {
        check_enum(cap::Category::parse, cap::Category::ALL, c, "category")?;
    }
    for r in &t.response_types {
        check_enum(
            cap::ResponseType::parse,
            cap::ResponseType::ALL,
            r,
            "response type",
        )?;
    }
    check_enum(
        cap::Urgency::parse,
        cap::Urgency::ALL,
        &t.urgency,
        "urgency",
    )?;
    check_enum(
        cap::Severity::parse,
        cap::Severity::ALL,
        &t.severity,
        "severity",
    )?;
    check_enum(
        cap::Certainty::parse,
        cap::Certainty::ALL,
        &t.certainty,
        "certainty",
    )?;
    if !(1..=720).contains(&t.expires_h) {
        return Err("expires_h must be 1 to 720".into());
    }
    for language in languages {
        let Some(text) = t.texts.get(language) else {
            return Err(format!(
                "has no text in {language} (a language of [advisories] languages)"
            ));
        };
        if text.headline.trim().is_empty() || text.area.trim().is_empty() {
            return Err(format!(
                "the {language} headline and area must not be empty"
            ));
        }
        let widest = fill(&text.headline, &widest_values());
        if widest.chars().count() > MAX_HEADLINE {
            return Err(format!(
                "the {language} headline is longer than {MAX_HEADLINE} characters once filled in"
            ));
        }
        for (field, value) in [
            ("headline", &text.headline),
            ("description", &text.description),
            ("instruction", &text.instruction),
            ("area", &text.area),
        ] {
            if value.chars().count() > MAX_TEXT {
                return Err(format!(
                    "the {language} {field} is longer than {MAX_TEXT} characters"
                ));
            }
            check_placeholders(value).map_err(|e| format!("the {language} {field}: {e}"))?;
        }
    }
    Ok(())
}

fn check_language(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 35
        && tag.split('-').all(|part| {
            !part.is_empty() && part.len() <= 8 && part.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Parses and checks templates for the given languages.
pub fn parse(text: &str, languages: &[String]) -> anyhow::Result<Templates> {
    if languages.is_empty() {
        bail!("[advisories] languages must name at least one language");
    }
    let mut seen_languages = HashSet::new();
    for tag in languages {
        if !check_language(tag) || !seen_languages.insert(tag) {
            bail!("[advisories] languages: {tag:?} is not an RFC 3066 language tag, or repeats");
        }
    }
    let file: File = toml::from_str(text).context("invalid advisory templates")?;
    if file.version != 1 {
        bail!(
            "unsupported advisory templates version {}; this citysec reads version 1",
            file.version
        );
    }
    if file.template.len() > MAX_TEMPLATES {
        bail!("at most {MAX_TEMPLATES} templates");
    }
    let mut ids = HashSet::new();
    for (i, t) in file.template.iter().enumerate() {
        let ok_id = !t.id.is_empty()
            && t.id.len() <= 64
            && t.id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_id {
            bail!(
                "template {} ({:?}): id must be 1 to 64 letters, digits, _ or -",
                i + 1,
                t.id
            );
        }
        if !ids.insert(t.id.as_str()) {
            bail!(
                "template {} ({}): id repeats an earlier template",
                i + 1,
                t.id
            );
        }
        check_template(t, languages)
            .map_err(|e| anyhow::anyhow!("template {} ({}): {e}", i + 1, t.id))?;
    }
    if !file.template.iter().any(Template::is_generic) {
        bail!(
            "no generic template (one without classes and rules) for incidents no other template fits"
        );
    }
    Ok(Templates {
        templates: file.template,
        languages: languages.to_vec(),
    })
}

/// The templates `[advisories]` names (or the built-in ones), checked.
pub fn load(config: &AdvisoryConfig) -> anyhow::Result<Templates> {
    match &config.templates {
        None => parse(DEFAULT_TEMPLATES, &config.languages)
            .context("in the built-in advisory templates"),
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("failed to read the advisory templates {}", path.display())
            })?;
            parse(&text, &config.languages).with_context(|| format!("in {}", path.display()))
        }
    }
}
