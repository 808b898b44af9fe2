//! Human durations on the command line: `90s`, `10m`, `2h`, `1h30m`, or plain seconds.

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("invalid duration {text:?} (use e.g. 90s, 10m, 2h)")),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !number.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: a number needs a unit (s, m, h, d)"
        ));
    }
    if text.is_empty() {
        return Err("empty duration".to_owned());
    }
    Ok(Duration::from_secs(total))
}
