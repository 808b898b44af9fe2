//! Writes an [`Alert`] as CAP 1.2 XML, elements in schema order, text escaped so that
//! reading it back yields the same value (`\r` and tabs as character references, since XML
//! readers normalise line ends).

use std::fmt::Write as _;

use crate::geo::Num;
use crate::{Alert, Area, Info, NAMESPACE, NamedValue, Resource};

pub(crate) fn alert(alert: &Alert) -> String {
    let mut w = Writer {
        out: String::with_capacity(2048),
        depth: 0,
    };
    w.out
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(w.out, "<alert xmlns=\"{NAMESPACE}\">");
    w.depth = 1;
    w.leaf("identifier", &alert.identifier);
    w.leaf("sender", &alert.sender);
    w.leaf("sent", &alert.sent.to_string());
    w.leaf("status", alert.status.as_str());
    w.leaf("msgType", alert.msg_type.as_str());
    w.opt("source", alert.source.as_deref());
    w.leaf("scope", alert.scope.as_str());
    w.opt("restriction", alert.restriction.as_deref());
    if !alert.addresses.is_empty() {
        w.leaf("addresses", &join_quoted(&alert.addresses));
    }
    for code in &alert.codes {
        w.leaf("code", code);
    }
    w.opt("note", alert.note.as_deref());
    if !alert.references.is_empty() {
        let refs = alert
            .references
            .iter()
            .map(|r| format!("{},{},{}", r.sender, r.identifier, r.sent))
            .collect::<Vec<_>>()
            .join(" ");
        w.leaf("references", &refs);
    }
    if !alert.incidents.is_empty() {
        w.leaf("incidents", &join_quoted(&alert.incidents));
    }
    for info in &alert.info {
        w.info(info);
    }
    w.out.push_str("</alert>\n");
    w.out
}

/// Space-separated, with entries containing whitespace in double quotes.
pub(crate) fn join_quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|item| {
            if item.chars().any(char::is_whitespace) {
                format!("\"{item}\"")
            } else {
                item.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn leaf(&mut self, name: &str, text: &str) {
        self.indent();
        let _ = write!(self.out, "<{name}>");
        escape_into(&mut self.out, text);
        let _ = writeln!(self.out, "</{name}>");
    }

    fn opt(&mut self, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    fn open(&mut self, name: &str) {
        self.indent();
        let _ = writeln!(self.out, "<{name}>");
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.indent();
        let _ = writeln!(self.out, "</{name}>");
    }

    fn named(&mut self, element: &str, nv: &NamedValue) {
        self.open(element);
        self.leaf("valueName", &nv.name);
        self.leaf("value", &nv.value);
        self.close(element);
    }

    fn info(&mut self, info: &Info) {
        self.open("info");
        self.opt("language", info.language.as_deref());
        for category in &info.categories {
            self.leaf("category", category.as_str());
        }
        self.leaf("event", &info.event);
        for response in &info.response_types {
            self.leaf("responseType", response.as_str());
        }
        self.leaf("urgency", info.urgency.as_str());
        self.leaf("severity", info.severity.as_str());
        self.leaf("certainty", info.certainty.as_str());
        self.opt("audience", info.audience.as_deref());
        for code in &info.event_codes {
            self.named("eventCode", code);
        }
        for (name, value) in [
            ("effective", info.effective),
            ("onset", info.onset),
            ("expires", info.expires),
        ] {
            if let Some(value) = value {
                self.leaf(name, &value.to_string());
            }
        }
        self.opt("senderName", info.sender_name.as_deref());
        self.opt("headline", info.headline.as_deref());
        self.opt("description", info.description.as_deref());
        self.opt("instruction", info.instruction.as_deref());
        self.opt("web", info.web.as_deref());
        self.opt("contact", info.contact.as_deref());
        for parameter in &info.parameters {
            self.named("parameter", parameter);
        }
        for resource in &info.resources {
            self.resource(resource);
        }
        for area in &info.areas {
            self.area(area);
        }
        self.close("info");
    }

    fn resource(&mut self, resource: &Resource) {
        self.open("resource");
        self.leaf("resourceDesc", &resource.description);
        self.leaf("mimeType", &resource.mime_type);
        if let Some(size) = resource.size {
            self.leaf("size", &size.to_string());
        }
        self.opt("uri", resource.uri.as_deref());
        self.opt("derefUri", resource.deref_uri.as_deref());
        self.opt("digest", resource.digest.as_deref());
        self.close("resource");
    }

    fn area(&mut self, area: &Area) {
        self.open("area");
        self.leaf("areaDesc", &area.description);
        for polygon in &area.polygons {
            self.leaf("polygon", &polygon.to_string());
        }
        for circle in &area.circles {
            self.leaf("circle", &circle.to_string());
        }
        for geocode in &area.geocodes {
            self.named("geocode", geocode);
        }
        if let Some(altitude) = area.altitude {
            self.leaf("altitude", &Num(altitude).to_string());
        }
        if let Some(ceiling) = area.ceiling {
            self.leaf("ceiling", &Num(ceiling).to_string());
        }
        self.close("area");
    }
}

/// Escapes text content (and, with [`escape`], attribute values) so a reader gets the same
/// characters back.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            _ => out.push(c),
        }
    }
}

/// Escapes text for content or a double-quoted attribute value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out.replace('"', "&quot;").replace('\n', "&#10;")
}
