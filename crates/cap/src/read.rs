//! Reads CAP 1.2 XML: a bounded, namespace-aware element tree built with quick-xml, then a
//! walk that enforces the schema (element names and namespace, sequence order, occurrence
//! counts, enumerations, date, number and language forms) and builds the [`Alert`].
//!
//! Refused outright: DTDs (so no entity expansion), undefined entities, characters XML 1.0
//! does not allow, text outside the root, unknown attributes on CAP elements, and input
//! beyond the [`Limits`]. XML-DSig elements after the last `<info>` are allowed (the schema
//! lets an enveloped signature sit there) and skipped.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::geo::{Circle, Polygon, decimal};
use crate::{
    Alert, Area, Category, Certainty, DateTime, Error, Info, MsgType, NAMESPACE, NamedValue,
    Reference, Resource, ResponseType, Scope, Severity, Status, Urgency, XMLDSIG_NAMESPACE,
};

/// Bounds on what the reader accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting (a CAP alert needs 5; an enveloped signature a few more).
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: 2 * 1024 * 1024,
            max_depth: 16,
            max_elements: 50_000,
        }
    }
}

/// One element of the tree.
#[derive(Debug)]
pub(crate) struct El {
    ns: Option<String>,
    name: String,
    children: Vec<El>,
    text: String,
}

fn xml_err(offset: u64, message: impl Into<String>) -> Error {
    Error::Xml {
        offset,
        message: message.into(),
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Builds the element tree of a document.
pub(crate) fn tree(text: &str, limits: &Limits) -> Result<El, Error> {
    if text.len() > limits.max_bytes {
        return Err(Error::TooLarge(format!(
            "{} bytes, the limit is {}",
            text.len(),
            limits.max_bytes
        )));
    }
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<El> = Vec::new();
    let mut root: Option<El> = None;
    let mut elements = 0usize;
    loop {
        let offset = reader.buffer_position();
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| xml_err(offset, e.to_string()))?;
        let ns = match &resolved {
            ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return Err(xml_err(
                    offset,
                    format!("undeclared namespace prefix {prefix:?}"),
                ));
            }
        };
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                elements += 1;
                if elements > limits.max_elements {
                    return Err(Error::TooLarge(format!(
                        "more than {} elements",
                        limits.max_elements
                    )));
                }
                if stack.len() + 1 > limits.max_depth {
                    return Err(Error::TooLarge(format!(
                        "elements nested deeper than {}",
                        limits.max_depth
                    )));
                }
                if root.is_some() {
                    return Err(xml_err(offset, "content after the root element"));
                }
                let in_cap = ns.as_deref() == Some(NAMESPACE);
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| xml_err(offset, e.to_string()))?;
                    let key = attr.key.0;
                    let allowed = key == "xmlns"
                        || key.starts_with("xmlns:")
                        || key.starts_with("xsi:")
                        || !in_cap;
                    if !allowed {
                        return Err(Error::schema(
                            start.local_name().as_ref(),
                            format!("attribute {key:?} is not allowed"),
                        ));
                    }
                    if let Some(c) = attr.value.chars().find(|c| !is_xml_char(*c)) {
                        return Err(xml_err(
                            offset,
                            format!("character {c:?} is not allowed in XML"),
                        ));
                    }
                }
                let el = El {
                    ns,
                    name: start.local_name().as_ref().to_owned(),
                    children: Vec::new(),
                    text: String::new(),
                };
                if empty {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let Some(mut el) = stack.pop() else {
                    return Err(xml_err(offset, "unexpected end tag"));
                };
                el.children.shrink_to_fit();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                push_text(&mut stack, &content, offset)?;
            }
            Event::CData(c) => {
                let content = c.xml10_content();
                push_text(&mut stack, &content, offset)?;
            }
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        "lt" => '<',
                        "gt" => '>',
                        "amp" => '&',
                        "apos" => '\'',
                        "quot" => '"',
                        other => {
                            return Err(xml_err(offset, format!("undefined entity &{other};")));
                        }
                    },
                    Err(e) => return Err(xml_err(offset, e.to_string())),
                };
                let mut buf = [0u8; 4];
                push_text(&mut stack, c.encode_utf8(&mut buf), offset)?;
            }
            Event::DocType(_) => {
                return Err(xml_err(
                    offset,
                    "document type declarations are not accepted",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(xml_err(
            reader.buffer_position(),
            format!("element <{}> is not closed", open.name),
        ));
    }
    root.ok_or_else(|| xml_err(0, "no root element"))
}

fn push_text(stack: &mut [El], content: &str, offset: u64) -> Result<(), Error> {
    if let Some(c) = content.chars().find(|c| !is_xml_char(*c)) {
        return Err(xml_err(
            offset,
            format!("character {c:?} is not allowed in XML"),
        ));
    }
    match stack.last_mut() {
        Some(el) => el.text.push_str(content),
        None if content.trim_matches(is_xml_space).is_empty() => {}
        None => return Err(xml_err(offset, "text outside the root element")),
    }
    Ok(())
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Reads one alert.
pub(crate) fn alert(text: &str, limits: &Limits) -> Result<Alert, Error> {
    let root = tree(text, limits)?;
    if root.ns.as_deref() != Some(NAMESPACE) || root.name != "alert" {
        return Err(Error::schema(
            "/",
            format!(
                "the root element must be <alert> in {NAMESPACE}, found <{}> in {}",
                root.name,
                root.ns.as_deref().unwrap_or("no namespace")
            ),
        ));
    }
    alert_from(&root)
}

/// One element of a schema sequence: name, least and most occurrences.
type Slot = (&'static str, usize, usize);
const MANY: usize = usize::MAX;

/// The children of a complex element, checked against its sequence and grouped by slot.
struct Kids<'a> {
    path: String,
    slots: Vec<Vec<&'a El>>,
    names: &'static [Slot],
}

impl<'a> Kids<'a> {
    fn of(
        el: &'a El,
        path: &str,
        seq: &'static [Slot],
        dsig_tail: bool,
    ) -> Result<Kids<'a>, Error> {
        if !el.text.trim_matches(is_xml_space).is_empty() {
            return Err(Error::schema(
                path,
                "text is not allowed here, only elements",
            ));
        }
        let mut slots: Vec<Vec<&El>> = vec![Vec::new(); seq.len()];
        let mut cursor = 0usize;
        let mut in_dsig = false;
        for child in &el.children {
            if dsig_tail && child.ns.as_deref() == Some(XMLDSIG_NAMESPACE) {
                in_dsig = true;
                continue;
            }
            let child_path = format!("{path}/{}", child.name);
            if child.ns.as_deref() != Some(NAMESPACE) {
                return Err(Error::schema(
                    child_path,
                    format!(
                        "element in namespace {} is not allowed here",
                        child.ns.as_deref().unwrap_or("(none)")
                    ),
                ));
            }
            if in_dsig {
                return Err(Error::schema(
                    child_path,
                    "CAP elements must come before the signature",
                ));
            }
            match seq.iter().position(|(name, _, _)| *name == child.name) {
                Some(i) if i >= cursor => {
                    if slots[i].len() >= seq[i].2 {
                        return Err(Error::schema(
                            child_path,
                            "this element may appear only once",
                        ));
                    }
                    slots[i].push(child);
                    cursor = i;
                }
                Some(i) => {
                    return Err(Error::schema(
                        child_path,
                        format!("<{}> must come before <{}>", seq[i].0, seq[cursor].0),
                    ));
                }
                None => return Err(Error::schema(child_path, "unexpected element")),
            }
        }
        for (i, (name, min, _)) in seq.iter().enumerate() {
            if slots[i].len() < *min {
                return Err(Error::schema(
                    path,
                    format!("missing required element <{name}>"),
                ));
            }
            let _ = i;
        }
        Ok(Kids {
            path: path.to_owned(),
            slots,
            names: seq,
        })
    }

    fn all(&self, name: &str) -> &[&'a El] {
        let i = self
            .names
            .iter()
            .position(|(n, _, _)| *n == name)
            .expect("slot name is in the sequence");
        &self.slots[i]
    }

    fn path_of(&self, name: &str, index: usize) -> String {
        if self.all(name).len() > 1 {
            format!("{}/{name}[{index}]", self.path)
        } else {
            format!("{}/{name}", self.path)
        }
    }

    /// The text of the single element `name`, if present.
    fn text(&self, name: &str) -> Result<Option<String>, Error> {
        match self.all(name).first() {
            Some(el) => Ok(Some(leaf_text(el, &self.path_of(name, 0))?.to_owned())),
            None => Ok(None),
        }
    }

    fn required(&self, name: &str) -> Result<String, Error> {
        Ok(self.text(name)?.expect("required slots were checked"))
    }

    fn texts(&self, name: &str) -> Result<Vec<(String, String)>, Error> {
        self.all(name)
            .iter()
            .enumerate()
            .map(|(i, el)| {
                let path = self.path_of(name, i);
                Ok((leaf_text(el, &path)?.to_owned(), path))
            })
            .collect()
    }

    fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<Option<T>, Error> {
        match self.text(name)? {
            Some(text) => parse(&text).map(Some).ok_or_else(|| {
                Error::schema(self.path_of(name, 0), format!("{text:?} is not {what}"))
            }),
            None => Ok(None),
        }
    }

    fn date(&self, name: &str) -> Result<Option<DateTime>, Error> {
        self.parsed(
            name,
            |t| DateTime::parse(t.trim_matches(is_xml_space)),
            "a CAP date-time (YYYY-MM-DDThh:mm:ss+hh:mm, no Z, no fraction)",
        )
    }
}

fn leaf_text<'e>(el: &'e El, path: &str) -> Result<&'e str, Error> {
    if let Some(child) = el.children.first() {
        return Err(Error::schema(
            format!("{path}/{}", child.name),
            "this element holds text only",
        ));
    }
    Ok(&el.text)
}

fn enum_of<T>(parse: fn(&str) -> Option<T>, all: &[T], text: &str, path: &str) -> Result<T, Error>
where
    T: std::fmt::Display,
{
    parse(text).ok_or_else(|| {
        let allowed = all
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Error::schema(path, format!("{text:?} is not one of {allowed}"))
    })
}

const ALERT: &[Slot] = &[
    ("identifier", 1, 1),
    ("sender", 1, 1),
    ("sent", 1, 1),
    ("status", 1, 1),
    ("msgType", 1, 1),
    ("source", 0, 1),
    ("scope", 1, 1),
    ("restriction", 0, 1),
    ("addresses", 0, 1),
    ("code", 0, MANY),
    ("note", 0, 1),
    ("references", 0, 1),
    ("incidents", 0, 1),
    ("info", 0, MANY),
];

const INFO: &[Slot] = &[
    ("language", 0, 1),
    ("category", 1, MANY),
    ("event", 1, 1),
    ("responseType", 0, MANY),
    ("urgency", 1, 1),
    ("severity", 1, 1),
    ("certainty", 1, 1),
    ("audience", 0, 1),
    ("eventCode", 0, MANY),
    ("effective", 0, 1),
    ("onset", 0, 1),
    ("expires", 0, 1),
    ("senderName", 0, 1),
    ("headline", 0, 1),
    ("description", 0, 1),
    ("instruction", 0, 1),
    ("web", 0, 1),
    ("contact", 0, 1),
    ("parameter", 0, MANY),
    ("resource", 0, MANY),
    ("area", 0, MANY),
];

const RESOURCE: &[Slot] = &[
    ("resourceDesc", 1, 1),
    ("mimeType", 1, 1),
    ("size", 0, 1),
    ("uri", 0, 1),
    ("derefUri", 0, 1),
    ("digest", 0, 1),
];

const AREA: &[Slot] = &[
    ("areaDesc", 1, 1),
    ("polygon", 0, MANY),
    ("circle", 0, MANY),
    ("geocode", 0, MANY),
    ("altitude", 0, 1),
    ("ceiling", 0, 1),
];

const NAMED: &[Slot] = &[("valueName", 1, 1), ("value", 1, 1)];

fn alert_from(root: &El) -> Result<Alert, Error> {
    let path = "alert";
    let k = Kids::of(root, path, ALERT, true)?;
    let status = k.required("status")?;
    let msg_type = k.required("msgType")?;
    let scope = k.required("scope")?;
    let references = match k.text("references")? {
        Some(text) => parse_references(&text, &k.path_of("references", 0))?,
        None => Vec::new(),
    };
    let info = k
        .all("info")
        .iter()
        .enumerate()
        .map(|(i, el)| info_from(el, &k.path_of("info", i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Alert {
        identifier: k.required("identifier")?,
        sender: k.required("sender")?,
        sent: k.date("sent")?.expect("sent is required"),
        status: enum_of(Status::parse, Status::ALL, &status, "alert/status")?,
        msg_type: enum_of(MsgType::parse, MsgType::ALL, &msg_type, "alert/msgType")?,
        source: k.text("source")?,
        scope: enum_of(Scope::parse, Scope::ALL, &scope, "alert/scope")?,
        restriction: k.text("restriction")?,
        addresses: k
            .text("addresses")?
            .map(|t| split_quoted(&t, "alert/addresses"))
            .transpose()?
            .unwrap_or_default(),
        codes: k.texts("code")?.into_iter().map(|(t, _)| t).collect(),
        note: k.text("note")?,
        references,
        incidents: k
            .text("incidents")?
            .map(|t| split_quoted(&t, "alert/incidents"))
            .transpose()?
            .unwrap_or_default(),
        info,
    })
}

fn named_from(el: &El, path: &str) -> Result<NamedValue, Error> {
    let k = Kids::of(el, path, NAMED, false)?;
    Ok(NamedValue {
        name: k.required("valueName")?,
        value: k.required("value")?,
    })
}

fn named_all(k: &Kids<'_>, name: &str) -> Result<Vec<NamedValue>, Error> {
    k.all(name)
        .iter()
        .enumerate()
        .map(|(i, el)| named_from(el, &k.path_of(name, i)))
        .collect()
}

/// `xs:language`: `[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*`.
pub(crate) fn is_language(text: &str) -> bool {
    let mut parts = text.split('-');
    let first = parts.next().unwrap_or("");
    let ok_len = |p: &str| (1..=8).contains(&p.len());
    ok_len(first)
        && first.bytes().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| ok_len(p) && p.bytes().all(|c| c.is_ascii_alphanumeric()))
}

fn info_from(el: &El, path: &str) -> Result<Info, Error> {
    let k = Kids::of(el, path, INFO, false)?;
    let categories = k
        .texts("category")?
        .into_iter()
        .map(|(t, p)| enum_of(Category::parse, Category::ALL, &t, &p))
        .collect::<Result<Vec<_>, _>>()?;
    let response_types = k
        .texts("responseType")?
        .into_iter()
        .map(|(t, p)| enum_of(ResponseType::parse, ResponseType::ALL, &t, &p))
        .collect::<Result<Vec<_>, _>>()?;
    let urgency = k.required("urgency")?;
    let severity = k.required("severity")?;
    let certainty = k.required("certainty")?;
    let resources = k
        .all("resource")
        .iter()
        .enumerate()
        .map(|(i, el)| resource_from(el, &k.path_of("resource", i)))
        .collect::<Result<Vec<_>, _>>()?;
    let areas = k
        .all("area")
        .iter()
        .enumerate()
        .map(|(i, el)| area_from(el, &k.path_of("area", i)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Info {
        language: k.parsed(
            "language",
            |t| {
                let t = t.trim_matches(is_xml_space);
                is_language(t).then(|| t.to_owned())
            },
            "a language tag",
        )?,
        categories,
        event: k.required("event")?,
        response_types,
        urgency: enum_of(
            Urgency::parse,
            Urgency::ALL,
            &urgency,
            &format!("{path}/urgency"),
        )?,
        severity: enum_of(
            Severity::parse,
            Severity::ALL,
            &severity,
            &format!("{path}/severity"),
        )?,
        certainty: enum_of(
            Certainty::parse,
            Certainty::ALL,
            &certainty,
            &format!("{path}/certainty"),
        )?,
        audience: k.text("audience")?,
        event_codes: named_all(&k, "eventCode")?,
        effective: k.date("effective")?,
        onset: k.date("onset")?,
        expires: k.date("expires")?,
        sender_name: k.text("senderName")?,
        headline: k.text("headline")?,
        description: k.text("description")?,
        instruction: k.text("instruction")?,
        web: k
            .text("web")?
            .map(|t| t.trim_matches(is_xml_space).to_owned()),
        contact: k.text("contact")?,
        parameters: named_all(&k, "parameter")?,
        resources,
        areas,
    })
}

fn resource_from(el: &El, path: &str) -> Result<Resource, Error> {
    let k = Kids::of(el, path, RESOURCE, false)?;
    Ok(Resource {
        description: k.required("resourceDesc")?,
        mime_type: k.required("mimeType")?,
        size: match k.text("size")? {
            Some(t)
                if t.trim_matches(is_xml_space).starts_with('-')
                    && t.trim_matches(is_xml_space)[1..]
                        .bytes()
                        .all(|c| c.is_ascii_digit())
                    && t.trim_matches(is_xml_space).len() > 1 =>
            {
                return Err(Error::rule(
                    k.path_of("size", 0),
                    "a size in bytes must not be negative",
                ));
            }
            _ => k.parsed(
                "size",
                |t| {
                    let t = t.trim_matches(is_xml_space);
                    let t = t.strip_prefix('+').unwrap_or(t);
                    if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
                        return None;
                    }
                    t.parse::<u64>().ok()
                },
                "a non-negative integer number of bytes",
            )?,
        },
        uri: k
            .text("uri")?
            .map(|t| t.trim_matches(is_xml_space).to_owned()),
        deref_uri: k.text("derefUri")?,
        digest: k.text("digest")?,
    })
}

fn area_from(el: &El, path: &str) -> Result<Area, Error> {
    let k = Kids::of(el, path, AREA, false)?;
    let polygons = k
        .texts("polygon")?
        .into_iter()
        .map(|(t, p)| Polygon::parse(&t).map_err(|m| Error::rule(p, m)))
        .collect::<Result<Vec<_>, _>>()?;
    let circles = k
        .texts("circle")?
        .into_iter()
        .map(|(t, p)| Circle::parse(&t).map_err(|m| Error::rule(p, m)))
        .collect::<Result<Vec<_>, _>>()?;
    let number = |t: &str| decimal(t.trim_matches(is_xml_space));
    Ok(Area {
        description: k.required("areaDesc")?,
        polygons,
        circles,
        geocodes: named_all(&k, "geocode")?,
        altitude: k.parsed("altitude", number, "a decimal number")?,
        ceiling: k.parsed("ceiling", number, "a decimal number")?,
    })
}

/// `sender,identifier,sent` triples separated by whitespace.
fn parse_references(text: &str, path: &str) -> Result<Vec<Reference>, Error> {
    text.split_ascii_whitespace()
        .map(|triple| {
            let mut parts = triple.splitn(3, ',');
            let (Some(sender), Some(identifier), Some(sent)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::rule(
                    path,
                    format!("{triple:?} is not sender,identifier,sent"),
                ));
            };
            let sent = DateTime::parse(sent).ok_or_else(|| {
                Error::rule(
                    path,
                    format!("{sent:?} in {triple:?} is not a CAP date-time"),
                )
            })?;
            Ok(Reference {
                sender: sender.to_owned(),
                identifier: identifier.to_owned(),
                sent,
            })
        })
        .collect()
}

/// Space-separated entries, entries with spaces in double quotes.
fn split_quoted(text: &str, path: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        let mut item = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(Error::rule(path, "unterminated double quote")),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(Error::rule(
                    path,
                    "a quoted entry must be followed by a space",
                ));
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '"' {
                    return Err(Error::rule(path, "a double quote inside an unquoted entry"));
                }
                item.push(c);
            }
        }
        out.push(item);
    }
    Ok(out)
}
