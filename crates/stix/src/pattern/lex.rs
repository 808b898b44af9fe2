//! Lexer for the STIX 2.1 patterning language, mirroring the ANTLR grammar `STIXPattern.g4`:
//! longest match wins, ties go to the rule defined first.

/// Kind of a lexical token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    IntNeg,
    IntPos,
    FloatNeg,
    FloatPos,
    Hex,
    Binary,
    Str,
    Bool,
    Timestamp,
    And,
    Or,
    Not,
    FollowedBy,
    Like,
    Matches,
    IsSuperset,
    IsSubset,
    Exists,
    Last,
    In,
    Start,
    Stop,
    Seconds,
    Within,
    Repeats,
    Times,
    IdentNoHyphen,
    IdentHyphen,
    Eq,
    Neq,
    Lt,
    Le,
    Gt,
    Ge,
    Quote,
    Colon,
    Dot,
    Comma,
    RParen,
    LParen,
    RBrack,
    LBrack,
    Plus,
    Hyphen,
    Power,
    Divide,
    Asterisk,
    Invalid,
    Eof,
}

/// One token: kind and byte span in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

const KEYWORDS: &[(&str, Kind)] = &[
    ("AND", Kind::And),
    ("OR", Kind::Or),
    ("NOT", Kind::Not),
    ("FOLLOWEDBY", Kind::FollowedBy),
    ("LIKE", Kind::Like),
    ("MATCHES", Kind::Matches),
    ("ISSUPERSET", Kind::IsSuperset),
    ("ISSUBSET", Kind::IsSubset),
    ("EXISTS", Kind::Exists),
    ("LAST", Kind::Last),
    ("IN", Kind::In),
    ("START", Kind::Start),
    ("STOP", Kind::Stop),
    ("SECONDS", Kind::Seconds),
    ("WITHIN", Kind::Within),
    ("REPEATS", Kind::Repeats),
    ("TIMES", Kind::Times),
];

fn is_ws(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t'
            | '\r'
            | '\n'
            | '\u{000B}'
            | '\u{000C}'
            | '\u{0085}'
            | '\u{00a0}'
            | '\u{1680}'
            | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    i
}

/// `'0' | [1-9][0-9]*` starting at i; returns end.
fn int_body(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i) {
        Some(b'0') => Some(i + 1),
        Some(c) if c.is_ascii_digit() => Some(digits(b, i + 1)),
        _ => None,
    }
}

fn float_body(b: &[u8], i: usize) -> Option<usize> {
    let j = digits(b, i);
    if b.get(j) != Some(&b'.') {
        return None;
    }
    let k = digits(b, j + 1);
    (k > j + 1).then_some(k)
}

fn string_body(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'\'') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\'' => return Some(j + 1),
            b'\\' => match b.get(j + 1)? {
                b'\'' | b'\\' => j += 2,
                _ => return None,
            },
            _ => j += 1,
        }
    }
}

fn hex_lit(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'h') || b.get(i + 1) != Some(&b'\'') {
        return None;
    }
    let mut j = i + 2;
    while j < b.len() && b[j].is_ascii_hexdigit() {
        j += 1;
    }
    let n = j - (i + 2);
    (n.is_multiple_of(2) && b.get(j) == Some(&b'\'')).then_some(j + 1)
}

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

fn binary_lit(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'b') || b.get(i + 1) != Some(&b'\'') {
        return None;
    }
    let mut j = i + 2;
    while j < b.len() && is_b64(b[j]) {
        j += 1;
    }
    let n = j - (i + 2);
    let mut pad = 0;
    while pad < 2 && b.get(j) == Some(&b'=') {
        j += 1;
        pad += 1;
    }
    let ok = match pad {
        0 => n >= 4 && n.is_multiple_of(4),
        1 => n % 4 == 3,
        _ => n % 4 == 2,
    };
    (ok && b.get(j) == Some(&b'\'')).then_some(j + 1)
}

fn timestamp_lit(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b't') || b.get(i + 1) != Some(&b'\'') {
        return None;
    }
    let d = |k: usize| b.get(k).copied().filter(u8::is_ascii_digit);
    let mut j = i + 2;
    for _ in 0..4 {
        d(j)?;
        j += 1;
    }
    let lit = |j: &mut usize, c: u8| -> Option<()> { (b.get(*j) == Some(&c)).then(|| *j += 1) };
    lit(&mut j, b'-')?;
    match (d(j)?, d(j + 1)?) {
        (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2') => {}
        _ => return None,
    }
    j += 2;
    lit(&mut j, b'-')?;
    match (d(j)?, d(j + 1)?) {
        (b'0', b'1'..=b'9') | (b'1' | b'2', _) | (b'3', b'0' | b'1') => {}
        _ => return None,
    }
    j += 2;
    lit(&mut j, b'T')?;
    match (d(j)?, d(j + 1)?) {
        (b'0' | b'1', _) | (b'2', b'0'..=b'3') => {}
        _ => return None,
    }
    j += 2;
    lit(&mut j, b':')?;
    match (d(j)?, d(j + 1)?) {
        (b'0'..=b'5', _) => {}
        _ => return None,
    }
    j += 2;
    lit(&mut j, b':')?;
    match (d(j)?, d(j + 1)?) {
        (b'0'..=b'5', _) | (b'6', b'0') => {}
        _ => return None,
    }
    j += 2;
    if b.get(j) == Some(&b'.') {
        let k = digits(b, j + 1);
        if k == j + 1 {
            return None;
        }
        j = k;
    }
    lit(&mut j, b'Z')?;
    lit(&mut j, b'\'')?;
    Some(j)
}

fn ident(b: &[u8], i: usize, hyphen: bool) -> Option<usize> {
    match b.get(i) {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return None,
    }
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || (hyphen && b[j] == b'-'))
    {
        j += 1;
    }
    Some(j)
}

/// Tokenizes `src`, skipping whitespace and comments. Never fails: unusable characters
/// become [`Kind::Invalid`] tokens. The last token is always [`Kind::Eof`].
pub fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // whitespace and comments
        let c = match src[i..].chars().next() {
            Some(c) => c,
            None => break,
        };
        if is_ws(c) {
            i += c.len_utf8();
            continue;
        }
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            if let Some(end) = src[i + 2..].find("*/") {
                i = i + 2 + end + 2;
                continue;
            }
        }
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            let mut j = i + 2;
            while j < b.len() && b[j] != b'\r' && b[j] != b'\n' {
                j += 1;
            }
            i = j;
            continue;
        }
        let mut best: Option<(usize, Kind)> = None;
        let mut consider = |end: Option<usize>, kind: Kind| {
            if let Some(end) = end {
                if best.is_none_or(|(e, _)| end > e) {
                    best = Some((end, kind));
                }
            }
        };
        let sign = |s: u8| if b[i] == s { i + 1 } else { i };
        consider(
            (b[i] == b'-').then(|| int_body(b, i + 1)).flatten(),
            Kind::IntNeg,
        );
        consider(int_body(b, sign(b'+')), Kind::IntPos);
        consider(
            (b[i] == b'-').then(|| float_body(b, i + 1)).flatten(),
            Kind::FloatNeg,
        );
        consider(float_body(b, sign(b'+')), Kind::FloatPos);
        consider(hex_lit(b, i), Kind::Hex);
        consider(binary_lit(b, i), Kind::Binary);
        consider(string_body(b, i), Kind::Str);
        for (word, kind) in [("true", Kind::Bool), ("false", Kind::Bool)]
            .iter()
            .chain(KEYWORDS.iter())
        {
            if b[i..].starts_with(word.as_bytes()) {
                consider(Some(i + word.len()), *kind);
            }
        }
        consider(timestamp_lit(b, i), Kind::Timestamp);
        consider(ident(b, i, false), Kind::IdentNoHyphen);
        consider(ident(b, i, true), Kind::IdentHyphen);
        let two = |s: &str| b[i..].starts_with(s.as_bytes()).then_some(i + 2);
        consider(two("=="), Kind::Eq);
        consider((b[i] == b'=').then_some(i + 1), Kind::Eq);
        consider(two("!="), Kind::Neq);
        consider(two("<>"), Kind::Neq);
        consider((b[i] == b'<').then_some(i + 1), Kind::Lt);
        consider(two("<="), Kind::Le);
        consider((b[i] == b'>').then_some(i + 1), Kind::Gt);
        consider(two(">="), Kind::Ge);
        let single = match b[i] {
            b'\'' => Some(Kind::Quote),
            b':' => Some(Kind::Colon),
            b'.' => Some(Kind::Dot),
            b',' => Some(Kind::Comma),
            b')' => Some(Kind::RParen),
            b'(' => Some(Kind::LParen),
            b']' => Some(Kind::RBrack),
            b'[' => Some(Kind::LBrack),
            b'+' => Some(Kind::Plus),
            b'-' => Some(Kind::Hyphen),
            b'^' => Some(Kind::Power),
            b'/' => Some(Kind::Divide),
            b'*' => Some(Kind::Asterisk),
            _ => None,
        };
        if let Some(k) = single {
            consider(Some(i + 1), k);
        }
        let (end, kind) = best.unwrap_or((i + c.len_utf8(), Kind::Invalid));
        out.push(Token {
            kind,
            start: i,
            end,
        });
        i = end;
    }
    out.push(Token {
        kind: Kind::Eof,
        start: src.len(),
        end: src.len(),
    });
    out
}
