//! The rules of CAP 1.2 (OASIS Standard, 1 July 2010, section 3.2) that the XSD does not
//! express, checked on every document we write and every document we read:
//!
//! 1. `identifier` and `sender` are non-empty and hold no spaces, commas, `<` or `&`
//!    (3.2.1); the same for the sender and identifier inside each reference.
//! 2. `restriction` is required when `scope` is `Restricted`; `addresses` when `scope` is
//!    `Private` (3.2.1).
//! 3. `references` is required for `Update`, `Cancel`, `Ack` and `Error` messages (3.2.1:
//!    they act on "the earlier message(s) identified in `<references>`"), and a message does
//!    not reference itself.
//! 4. `addresses` and `incidents` entries are non-empty and hold no double quote (they are
//!    space-separated, quoted when they contain a space).
//! 5. Info blocks have at least one category (the schema says so too), a non-empty event,
//!    and an `xs:language` tag when a language is given.
//! 6. Polygons have at least four points, first equal to last; circles a finite radius
//!    >= 0; all points within WGS 84 ranges (3.2.4).
//! 7. `ceiling` only with `altitude`, and not below it (3.2.4).
//! 8. `web` and a resource's `uri` are absolute URIs; `derefUri` is base64; `digest` is a
//!    SHA-1 in hex (3.2.3).
//! 9. `expires` is not before `effective` or `onset` when both are given.
//! 10. Every text is representable in XML 1.0 (no control characters other than tab, line
//!     feed and carriage return).

use crate::read::is_language;
use crate::{Alert, Area, Error, Info, MsgType, Resource, Scope};

pub(crate) fn check(alert: &Alert) -> Result<(), Error> {
    id_like(&alert.identifier, "alert/identifier")?;
    id_like(&alert.sender, "alert/sender")?;
    text(alert.source.as_deref(), "alert/source")?;
    text(alert.restriction.as_deref(), "alert/restriction")?;
    text(alert.note.as_deref(), "alert/note")?;
    if alert.scope == Scope::Restricted && alert.restriction.is_none() {
        return Err(Error::rule(
            "alert/restriction",
            "required when scope is Restricted",
        ));
    }
    if alert.scope == Scope::Private && alert.addresses.is_empty() {
        return Err(Error::rule(
            "alert/addresses",
            "required when scope is Private",
        ));
    }
    list(&alert.addresses, "alert/addresses")?;
    list(&alert.incidents, "alert/incidents")?;
    for (i, code) in alert.codes.iter().enumerate() {
        text(Some(code), &format!("alert/code[{i}]"))?;
    }
    let needs_references = matches!(
        alert.msg_type,
        MsgType::Update | MsgType::Cancel | MsgType::Ack | MsgType::Error
    );
    if needs_references && alert.references.is_empty() {
        return Err(Error::rule(
            "alert/references",
            format!(
                "{} messages must reference the earlier message(s) they act on",
                alert.msg_type
            ),
        ));
    }
    for reference in &alert.references {
        id_like(&reference.sender, "alert/references")?;
        id_like(&reference.identifier, "alert/references")?;
        if reference.sender == alert.sender && reference.identifier == alert.identifier {
            return Err(Error::rule(
                "alert/references",
                "a message must not reference itself",
            ));
        }
    }
    for (i, info) in alert.info.iter().enumerate() {
        check_info(info, &format!("alert/info[{i}]"))?;
    }
    Ok(())
}

fn check_info(info: &Info, path: &str) -> Result<(), Error> {
    if let Some(language) = &info.language
        && !is_language(language)
    {
        return Err(Error::rule(
            format!("{path}/language"),
            format!("{language:?} is not a language tag such as en-US"),
        ));
    }
    if info.categories.is_empty() {
        return Err(Error::rule(
            format!("{path}/category"),
            "at least one category is required",
        ));
    }
    if info.event.trim().is_empty() {
        return Err(Error::rule(format!("{path}/event"), "must not be empty"));
    }
    for (name, value) in [
        ("event", Some(info.event.as_str())),
        ("audience", info.audience.as_deref()),
        ("senderName", info.sender_name.as_deref()),
        ("headline", info.headline.as_deref()),
        ("description", info.description.as_deref()),
        ("instruction", info.instruction.as_deref()),
        ("contact", info.contact.as_deref()),
    ] {
        text(value, &format!("{path}/{name}"))?;
    }
    for (name, values) in [
        ("eventCode", &info.event_codes),
        ("parameter", &info.parameters),
    ] {
        for nv in values {
            text(Some(&nv.name), &format!("{path}/{name}/valueName"))?;
            text(Some(&nv.value), &format!("{path}/{name}/value"))?;
        }
    }
    if let Some(web) = &info.web {
        absolute_uri(web, &format!("{path}/web"))?;
    }
    if let Some(expires) = info.expires {
        for (name, start) in [("effective", info.effective), ("onset", info.onset)] {
            if let Some(start) = start
                && expires.unix() < start.unix()
            {
                return Err(Error::rule(
                    format!("{path}/expires"),
                    format!("expires {expires} is before {name} {start}"),
                ));
            }
        }
    }
    for (i, resource) in info.resources.iter().enumerate() {
        check_resource(resource, &format!("{path}/resource[{i}]"))?;
    }
    for (i, area) in info.areas.iter().enumerate() {
        check_area(area, &format!("{path}/area[{i}]"))?;
    }
    Ok(())
}

fn check_resource(resource: &Resource, path: &str) -> Result<(), Error> {
    text(Some(&resource.description), &format!("{path}/resourceDesc"))?;
    if resource.mime_type.trim().is_empty() || !resource.mime_type.contains('/') {
        return Err(Error::rule(
            format!("{path}/mimeType"),
            format!("{:?} is not a MIME type", resource.mime_type),
        ));
    }
    text(Some(&resource.mime_type), &format!("{path}/mimeType"))?;
    if let Some(uri) = &resource.uri {
        absolute_uri(uri, &format!("{path}/uri"))?;
    }
    if let Some(data) = &resource.deref_uri {
        let ok = data.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=') || c.is_ascii_whitespace()
        });
        if !ok {
            return Err(Error::rule(
                format!("{path}/derefUri"),
                "must be base64 data",
            ));
        }
    }
    if let Some(digest) = &resource.digest
        && !(digest.len() == 40 && digest.bytes().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(Error::rule(
            format!("{path}/digest"),
            "must be a SHA-1 hash in hex (40 digits)",
        ));
    }
    Ok(())
}

fn check_area(area: &Area, path: &str) -> Result<(), Error> {
    text(Some(&area.description), &format!("{path}/areaDesc"))?;
    for (i, polygon) in area.polygons.iter().enumerate() {
        polygon
            .check()
            .map_err(|m| Error::rule(format!("{path}/polygon[{i}]"), m))?;
    }
    for (i, circle) in area.circles.iter().enumerate() {
        circle
            .check()
            .map_err(|m| Error::rule(format!("{path}/circle[{i}]"), m))?;
    }
    for geocode in &area.geocodes {
        text(Some(&geocode.name), &format!("{path}/geocode/valueName"))?;
        text(Some(&geocode.value), &format!("{path}/geocode/value"))?;
    }
    for (name, value) in [("altitude", area.altitude), ("ceiling", area.ceiling)] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(Error::rule(
                format!("{path}/{name}"),
                "must be a finite number",
            ));
        }
    }
    match (area.altitude, area.ceiling) {
        (None, Some(_)) => Err(Error::rule(
            format!("{path}/ceiling"),
            "ceiling may only be given with altitude",
        )),
        (Some(altitude), Some(ceiling)) if ceiling < altitude => Err(Error::rule(
            format!("{path}/ceiling"),
            "ceiling is below altitude",
        )),
        _ => Ok(()),
    }
}

fn id_like(value: &str, path: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::rule(path, "must not be empty"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&'))
    {
        return Err(Error::rule(
            path,
            format!("must not contain spaces, commas, '<' or '&' (found {c:?})"),
        ));
    }
    text(Some(value), path)
}

fn list(items: &[String], path: &str) -> Result<(), Error> {
    for item in items {
        if item.is_empty() {
            return Err(Error::rule(path, "entries must not be empty"));
        }
        if item.contains('"') {
            return Err(Error::rule(path, "entries must not contain a double quote"));
        }
        text(Some(item), path)?;
    }
    Ok(())
}

fn absolute_uri(uri: &str, path: &str) -> Result<(), Error> {
    let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or("");
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let chars_ok = !uri.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`')
    });
    if !scheme_ok || !chars_ok {
        return Err(Error::rule(path, format!("{uri:?} is not an absolute URI")));
    }
    Ok(())
}

fn text(value: Option<&str>, path: &str) -> Result<(), Error> {
    if let Some(c) = value.and_then(|v| {
        v.chars()
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    }) {
        return Err(Error::rule(
            path,
            format!("character {c:?} cannot be written in XML"),
        ));
    }
    if let Some(c) = value.and_then(|v| v.chars().find(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}'))) {
        return Err(Error::rule(
            path,
            format!("character {c:?} cannot be written in XML"),
        ));
    }
    Ok(())
}
