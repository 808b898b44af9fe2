//! An Atom 1.0 (RFC 4287) index of CAP alerts, the form alerting networks poll: one entry
//! per alert, with a link to the document, optional related links (for example a detached
//! signature) and the alert itself embedded as `application/cap+xml` content.

use std::fmt::Write as _;

use crate::write::{alert as write_alert, escape};
use crate::{Alert, DateTime, Error};

/// The Atom namespace.
pub const ATOM_NAMESPACE: &str = "http://www.w3.org/2005/Atom";

/// An Atom feed of alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    /// A permanent IRI naming the feed.
    pub id: String,
    pub title: String,
    pub updated: DateTime,
    pub author: String,
    /// The feed's own URL.
    pub self_link: String,
    pub entries: Vec<Entry>,
}

/// One alert in a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// A permanent IRI naming the entry.
    pub id: String,
    pub title: String,
    pub updated: DateTime,
    /// Where the CAP document is served.
    pub link: String,
    /// Further links: `(rel, media type, href)`.
    pub related: Vec<(String, String, String)>,
    pub summary: Option<String>,
    /// The alert, embedded as the entry's content.
    pub alert: Alert,
}

impl Feed {
    /// Writes the feed; fails if an embedded alert breaks a CAP rule.
    pub fn to_xml(&self) -> Result<String, Error> {
        let mut out = String::with_capacity(1024 + 2048 * self.entries.len());
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(out, "<feed xmlns=\"{ATOM_NAMESPACE}\">");
        let _ = writeln!(out, "  <id>{}</id>", escape(&self.id));
        let _ = writeln!(out, "  <title>{}</title>", escape(&self.title));
        let _ = writeln!(out, "  <updated>{}</updated>", self.updated);
        let _ = writeln!(
            out,
            "  <author><name>{}</name></author>",
            escape(&self.author)
        );
        let _ = writeln!(
            out,
            "  <link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>",
            escape(&self.self_link)
        );
        for entry in &self.entries {
            entry.alert.validate()?;
            out.push_str("  <entry>\n");
            let _ = writeln!(out, "    <id>{}</id>", escape(&entry.id));
            let _ = writeln!(out, "    <title>{}</title>", escape(&entry.title));
            let _ = writeln!(out, "    <updated>{}</updated>", entry.updated);
            let _ = writeln!(
                out,
                "    <link rel=\"alternate\" type=\"application/cap+xml\" href=\"{}\"/>",
                escape(&entry.link)
            );
            for (rel, media_type, href) in &entry.related {
                let _ = writeln!(
                    out,
                    "    <link rel=\"{}\" type=\"{}\" href=\"{}\"/>",
                    escape(rel),
                    escape(media_type),
                    escape(href)
                );
            }
            if let Some(summary) = &entry.summary {
                let _ = writeln!(out, "    <summary>{}</summary>", escape(summary));
            }
            out.push_str("    <content type=\"application/cap+xml\">\n");
            let document = write_alert(&entry.alert);
            let body = document
                .split_once('\n')
                .map_or(document.as_str(), |(_, rest)| rest);
            out.push_str(body);
            out.push_str("    </content>\n");
            out.push_str("  </entry>\n");
        }
        out.push_str("</feed>\n");
        Ok(out)
    }
}
