//! Firmware version order: dot/dash separated parts, numbers compared as numbers, other
//! parts as text (`1.10.0` is newer than `1.9.2`, `2.0.0-rc1` newer than `1.99`).

use std::cmp::Ordering;

fn parts(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
}

fn compare(a: &str, b: &str) -> Ordering {
    let mut pa = parts(a);
    let mut pb = parts(b);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return a.cmp(b),
            (Some(_), None) => return Ordering::Greater,
            (None, Some(_)) => return Ordering::Less,
            (Some(x), Some(y)) => {
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Greater,
                    (Err(_), Ok(_)) => Ordering::Less,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Whether `a` is a newer version than `b`.
pub(crate) fn newer(a: &str, b: &str) -> bool {
    compare(a, b) == Ordering::Greater
}

#[cfg(test)]
mod tests {
    #[test]
    fn order() {
        for (a, b) in [
            ("1.10.0", "1.9.2"),
            ("2.0", "1.99.99"),
            ("1.0.1", "1.0"),
            ("3.2.0b", "3.2.0a"),
        ] {
            assert!(super::newer(a, b), "{a} > {b}");
            assert!(!super::newer(b, a), "{b} < {a}");
        }
        assert!(!super::newer("1.0", "1.0"));
    }
}
