//! Recursive-descent parser for STIX 2.1 patterns, accepting exactly the language of the
//! OASIS grammar, plus the extra rules of the OASIS validator (stix2-patterns 2.x):
//! the pattern must start with `[` after any `(`s, a qualifier type may not repeat directly
//! on one `[...]`, and `hashes.<ALGO>` comparisons must compare with a well-formed hash.

use thiserror::Error;

use super::lex::{Kind, Token, tokenize};
use super::{CmpExpr, Literal, Number, ObjectPath, ObsExpr, Op, PathStep, Pattern, PropTest};
use crate::time::Timestamp;

/// Deepest nesting of parentheses/brackets accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1 << 20;
/// Longest single literal accepted, in bytes.
pub const MAX_LITERAL_LEN: usize = 64 * 1024;

/// Why a pattern was rejected. `position` is a character offset (0-based) into the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("at {position}: expected {expected}, found {found}")]
    Syntax {
        position: usize,
        expected: String,
        found: String,
    },
    #[error("at 0: input is missing square brackets")]
    MissingBrackets,
    #[error("at {position}: duplicate qualifier type {qualifier}")]
    DuplicateQualifier { position: usize, qualifier: String },
    #[error("at {position}: '{value}' is not a valid {algorithm} hash")]
    InvalidHash {
        position: usize,
        value: String,
        algorithm: String,
    },
    #[error("at {position}: {what} exceeds the limit of {limit}")]
    TooLarge {
        position: usize,
        what: &'static str,
        limit: usize,
    },
    #[error("at {position}: invalid literal: {reason}")]
    InvalidLiteral { position: usize, reason: String },
}

impl ParseError {
    /// Character offset of the error.
    pub fn position(&self) -> usize {
        match self {
            ParseError::MissingBrackets => 0,
            ParseError::Syntax { position, .. }
            | ParseError::DuplicateQualifier { position, .. }
            | ParseError::InvalidHash { position, .. }
            | ParseError::TooLarge { position, .. }
            | ParseError::InvalidLiteral { position, .. } => *position,
        }
    }
}

/// Parses and validates a STIX 2.1 pattern.
pub fn parse(src: &str) -> Result<Pattern, ParseError> {
    if src.len() > MAX_PATTERN_LEN {
        return Err(ParseError::TooLarge {
            position: 0,
            what: "pattern length",
            limit: MAX_PATTERN_LEN,
        });
    }
    let tokens = tokenize(src);
    let mut p = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
        hashes: Vec::new(),
    };
    let root = p.obs_exprs()?;
    p.expect(Kind::Eof, "end of pattern")?;
    // brackets check of the OASIS validator: only '(' and whitespace may precede '['
    let first = src.chars().find(|&c| c != '(' && !py_isspace(c));
    if first != Some('[') {
        return Err(ParseError::MissingBrackets);
    }
    for (pos, path, value_text) in &p.hashes {
        check_hash(src, *pos, path, value_text)?;
    }
    Ok(Pattern { root })
}

fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn char_pos(src: &str, byte: usize) -> usize {
    src[..byte.min(src.len())].chars().count()
}

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    /// (position, path components, literal text) of comparisons on `hashes` paths
    hashes: Vec<(usize, Vec<PathStep>, String)>,
}

type R<T> = Result<T, ParseError>;

fn unescape(s: &str) -> String {
    // s is the token text including the quotes; only \' and \\ escapes exist
    let inner = &s[1..s.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token {
        self.tokens[self.pos.min(self.tokens.len() - 1)]
    }
    fn peek2(&self) -> Kind {
        self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].kind
    }
    fn text(&self, t: Token) -> &'a str {
        &self.src[t.start..t.end]
    }
    fn bump(&mut self) -> Token {
        let t = self.peek();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }
    fn at(&self, k: Kind) -> bool {
        self.peek().kind == k
    }
    fn err<T>(&self, expected: &str) -> R<T> {
        let t = self.peek();
        let found = if t.kind == Kind::Eof {
            "end of pattern".to_owned()
        } else {
            let mut s: String = self.text(t).chars().take(40).collect();
            if s.len() < self.text(t).len() {
                s.push_str("...");
            }
            format!("'{s}'")
        };
        Err(ParseError::Syntax {
            position: char_pos(self.src, t.start),
            expected: expected.to_owned(),
            found,
        })
    }
    fn expect(&mut self, k: Kind, expected: &str) -> R<Token> {
        if self.at(k) {
            Ok(self.bump())
        } else {
            self.err(expected)
        }
    }
    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::TooLarge {
                position: char_pos(self.src, self.peek().start),
                what: "nesting depth",
                limit: MAX_DEPTH,
            });
        }
        Ok(())
    }

    fn obs_exprs(&mut self) -> R<ObsExpr> {
        let mut lhs = self.obs_or()?;
        while self.at(Kind::FollowedBy) {
            self.bump();
            let rhs = self.obs_or()?;
            lhs = ObsExpr::FollowedBy(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn obs_or(&mut self) -> R<ObsExpr> {
        let mut lhs = self.obs_and()?;
        while self.at(Kind::Or) {
            self.bump();
            let rhs = self.obs_and()?;
            lhs = ObsExpr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn obs_and(&mut self) -> R<ObsExpr> {
        let mut lhs = self.obs_expr()?;
        while self.at(Kind::And) {
            self.bump();
            let rhs = self.obs_expr()?;
            lhs = ObsExpr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn obs_expr(&mut self) -> R<ObsExpr> {
        self.enter()?;
        let (mut e, simple) = match self.peek().kind {
            Kind::LBrack => {
                self.bump();
                let c = self.cmp_expr()?;
                self.expect(Kind::RBrack, "']' or a comparison operator")?;
                (ObsExpr::Simple(c), true)
            }
            Kind::LParen => {
                self.bump();
                let inner = self.obs_exprs()?;
                self.expect(Kind::RParen, "')' or an observation operator")?;
                (ObsExpr::Group(Box::new(inner)), false)
            }
            _ => return self.err("'[' or '('"),
        };
        let mut seen: Vec<&'static str> = Vec::new();
        loop {
            let start = self.peek();
            let name = match start.kind {
                Kind::Within => {
                    self.bump();
                    let t = self.peek();
                    let n = match t.kind {
                        Kind::IntPos => Number::Int(self.int_pos(t)?),
                        Kind::FloatPos => Number::Float(self.float(t)?),
                        _ => return self.err("a positive number"),
                    };
                    self.bump();
                    self.expect(Kind::Seconds, "SECONDS")?;
                    e = ObsExpr::Within(Box::new(e), n);
                    "WITHIN"
                }
                Kind::Repeats => {
                    self.bump();
                    let t = self.expect(Kind::IntPos, "a positive integer")?;
                    let n = self.int_pos(t)?;
                    self.expect(Kind::Times, "TIMES")?;
                    e = ObsExpr::Repeats(Box::new(e), n);
                    "REPEATS"
                }
                Kind::Start => {
                    self.bump();
                    let a = self.expect(Kind::Timestamp, "a timestamp literal")?;
                    self.expect(Kind::Stop, "STOP")?;
                    let b = self.expect(Kind::Timestamp, "a timestamp literal")?;
                    let ta = self.timestamp(a)?;
                    let tb = self.timestamp(b)?;
                    e = ObsExpr::StartStop(Box::new(e), ta, tb);
                    "STARTSTOP"
                }
                _ => break,
            };
            if simple {
                if seen.contains(&name) {
                    return Err(ParseError::DuplicateQualifier {
                        position: char_pos(self.src, start.start),
                        qualifier: name.to_owned(),
                    });
                }
                seen.push(name);
            }
        }
        self.depth -= 1;
        Ok(e)
    }

    fn cmp_expr(&mut self) -> R<CmpExpr> {
        let mut lhs = self.cmp_and()?;
        while self.at(Kind::Or) {
            self.bump();
            let rhs = self.cmp_and()?;
            lhs = CmpExpr::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn cmp_and(&mut self) -> R<CmpExpr> {
        let mut lhs = self.prop_test()?;
        while self.at(Kind::And) {
            self.bump();
            let rhs = self.prop_test()?;
            lhs = CmpExpr::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }
    fn prop_test(&mut self) -> R<CmpExpr> {
        match self.peek().kind {
            Kind::LParen => {
                self.enter()?;
                self.bump();
                let e = self.cmp_expr()?;
                self.expect(Kind::RParen, "')' or AND/OR")?;
                self.depth -= 1;
                return Ok(CmpExpr::Group(Box::new(e)));
            }
            Kind::Exists => {
                self.bump();
                let path = self.object_path()?;
                return Ok(CmpExpr::Test(PropTest {
                    path,
                    negated: false,
                    op: Op::Exists,
                }));
            }
            Kind::Not if self.peek2() == Kind::Exists => {
                self.bump();
                self.bump();
                let path = self.object_path()?;
                return Ok(CmpExpr::Test(PropTest {
                    path,
                    negated: true,
                    op: Op::Exists,
                }));
            }
            Kind::IdentNoHyphen | Kind::IdentHyphen => {}
            _ => return self.err("an object path, '(' or EXISTS"),
        }
        let path = self.object_path()?;
        let negated = if self.at(Kind::Not) {
            self.bump();
            true
        } else {
            false
        };
        let op_tok = self.peek();
        let lit_start = self.tokens.get(self.pos + 1).map_or(0, |t| t.start);
        let op = match op_tok.kind {
            Kind::Eq | Kind::Neq => {
                self.bump();
                let l = self.literal(true)?;
                if op_tok.kind == Kind::Eq {
                    Op::Eq(l)
                } else {
                    Op::Neq(l)
                }
            }
            Kind::Lt | Kind::Le | Kind::Gt | Kind::Ge => {
                self.bump();
                let l = self.literal(false)?;
                match op_tok.kind {
                    Kind::Lt => Op::Lt(l),
                    Kind::Le => Op::Le(l),
                    Kind::Gt => Op::Gt(l),
                    _ => Op::Ge(l),
                }
            }
            Kind::In => {
                self.bump();
                self.expect(Kind::LParen, "'(' starting a set")?;
                let mut set = Vec::new();
                if !self.at(Kind::RParen) {
                    set.push(self.literal(true)?);
                    while self.at(Kind::Comma) {
                        self.bump();
                        set.push(self.literal(true)?);
                    }
                }
                self.expect(Kind::RParen, "',' or ')'")?;
                Op::In(set)
            }
            Kind::Like | Kind::Matches | Kind::IsSubset | Kind::IsSuperset => {
                self.bump();
                let t = self.expect(Kind::Str, "a string literal")?;
                let s = self.string(t)?;
                match op_tok.kind {
                    Kind::Like => Op::Like(s),
                    Kind::Matches => Op::Matches(s),
                    Kind::IsSubset => Op::IsSubset(s),
                    _ => Op::IsSuperset(s),
                }
            }
            _ => {
                return self.err(if negated {
                    "a comparison operator"
                } else {
                    "a comparison operator or NOT"
                });
            }
        };
        if path
            .steps
            .iter()
            .any(|s| matches!(s, PathStep::Key(k) if k == "hashes"))
        {
            let end = self.tokens[self.pos.saturating_sub(1)].end;
            let text: String = self.tokens[..self.pos]
                .iter()
                .filter(|t| t.start >= lit_start && t.end <= end)
                .map(|t| self.text(*t))
                .collect();
            self.hashes
                .push((char_pos(self.src, lit_start), path.steps.clone(), text));
        }
        Ok(CmpExpr::Test(PropTest { path, negated, op }))
    }

    fn object_path(&mut self) -> R<ObjectPath> {
        let t = self.peek();
        if !matches!(t.kind, Kind::IdentNoHyphen | Kind::IdentHyphen) {
            return self.err("an object type");
        }
        self.bump();
        let object_type = self.text(t).to_owned();
        self.expect(Kind::Colon, "':'")?;
        let mut steps = Vec::new();
        let f = self.peek();
        match f.kind {
            Kind::IdentNoHyphen => {
                self.bump();
                steps.push(PathStep::Key(self.text(f).to_owned()));
            }
            Kind::Str => {
                self.bump();
                steps.push(PathStep::Key(self.string(f)?));
            }
            _ => return self.err("a property name"),
        }
        loop {
            match self.peek().kind {
                Kind::Dot => {
                    self.bump();
                    let k = self.peek();
                    match k.kind {
                        Kind::IdentNoHyphen => {
                            self.bump();
                            steps.push(PathStep::Key(self.text(k).to_owned()));
                        }
                        Kind::Str => {
                            self.bump();
                            steps.push(PathStep::Key(self.string(k)?));
                        }
                        _ => return self.err("a property name"),
                    }
                }
                Kind::LBrack => {
                    self.bump();
                    let i = self.peek();
                    match i.kind {
                        Kind::Asterisk => steps.push(PathStep::AnyIndex),
                        Kind::IntPos | Kind::IntNeg => {
                            let n = self.int_any(i)?;
                            steps.push(PathStep::Index(n));
                        }
                        _ => return self.err("a list index or '*'"),
                    }
                    self.bump();
                    self.expect(Kind::RBrack, "']'")?;
                }
                _ => break,
            }
        }
        Ok(ObjectPath { object_type, steps })
    }

    fn check_len(&self, t: Token) -> R<()> {
        if t.end - t.start > MAX_LITERAL_LEN {
            return Err(ParseError::TooLarge {
                position: char_pos(self.src, t.start),
                what: "literal length",
                limit: MAX_LITERAL_LEN,
            });
        }
        Ok(())
    }
    fn bad_literal<T>(&self, t: Token, reason: &str) -> R<T> {
        Err(ParseError::InvalidLiteral {
            position: char_pos(self.src, t.start),
            reason: reason.to_owned(),
        })
    }
    fn string(&self, t: Token) -> R<String> {
        self.check_len(t)?;
        Ok(unescape(self.text(t)))
    }
    fn int_any(&self, t: Token) -> R<i64> {
        self.check_len(t)?;
        match self.text(t).trim_start_matches('+').parse::<i64>() {
            Ok(v) => Ok(v),
            Err(_) => self.bad_literal(t, "integer out of range"),
        }
    }
    fn int_pos(&self, t: Token) -> R<u64> {
        self.check_len(t)?;
        match self.text(t).trim_start_matches('+').parse::<u64>() {
            Ok(v) => Ok(v),
            Err(_) => self.bad_literal(t, "integer out of range"),
        }
    }
    fn float(&self, t: Token) -> R<f64> {
        self.check_len(t)?;
        match self.text(t).trim_start_matches('+').parse::<f64>() {
            Ok(v) => Ok(v),
            Err(_) => self.bad_literal(t, "malformed float"),
        }
    }
    fn timestamp(&self, t: Token) -> R<Timestamp> {
        let text = self.text(t);
        match Timestamp::parse(&text[2..text.len() - 1]) {
            Some(ts) => Ok(ts),
            None => self.bad_literal(t, "malformed timestamp"),
        }
    }
    fn literal(&mut self, allow_bool: bool) -> R<Literal> {
        let t = self.peek();
        let text = self.text(t);
        let lit = match t.kind {
            Kind::IntPos | Kind::IntNeg => Literal::Int(self.int_any(t)?),
            Kind::FloatPos | Kind::FloatNeg => Literal::Float(self.float(t)?),
            Kind::Str => Literal::Str(self.string(t)?),
            Kind::Bool if allow_bool => Literal::Bool(text == "true"),
            Kind::Timestamp => Literal::Timestamp(self.timestamp(t)?),
            Kind::Hex => {
                self.check_len(t)?;
                match crate::codec::hex_decode(&text[2..text.len() - 1]) {
                    Some(b) => Literal::Hex(b),
                    None => return self.bad_literal(t, "malformed hex"),
                }
            }
            Kind::Binary => {
                self.check_len(t)?;
                match crate::codec::base64_decode(&text[2..text.len() - 1]) {
                    Some(b) => Literal::Binary(b),
                    None => return self.bad_literal(t, "malformed base64"),
                }
            }
            _ => {
                return self.err(if allow_bool {
                    "a literal value"
                } else {
                    "an orderable literal (not a boolean)"
                });
            }
        };
        self.bump();
        Ok(lit)
    }
}

fn hash_ok(algo: &str, v: &str) -> Option<bool> {
    // Python's re.match with a `$` anchor: a single trailing newline is allowed
    let v = v.strip_suffix('\n').unwrap_or(v);
    let hex_len = |n: &[usize]| n.contains(&v.len()) && v.bytes().all(|c| c.is_ascii_hexdigit());
    Some(match algo {
        "MD5" => hex_len(&[32]),
        "MD6" => {
            // the validator's MD6 expression only anchors its first alternative at the
            // start and its last at the end; `re.match` anchors everything at the start
            let raw = v;
            let pre = |n: usize| raw.len() >= n && raw[..n].bytes().all(|c| c.is_ascii_hexdigit());
            pre(32) || pre(40) || pre(56)
        }
        "RIPEMD160" | "SHA1" => hex_len(&[40]),
        "SHA224" | "SHA3224" => hex_len(&[56]),
        "SHA256" | "SHA3256" => hex_len(&[64]),
        "SHA384" | "SHA3384" => hex_len(&[96]),
        "SHA512" | "SHA3512" | "WHIRLPOOL" => hex_len(&[128]),
        "SSDEEP" => {
            (1..=128).contains(&v.chars().count())
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"/+:.".contains(&c))
        }
        _ => return None,
    })
}

fn check_hash(src: &str, pos: usize, path: &[PathStep], value_text: &str) -> R<()> {
    let _ = src;
    let selector = match path.last() {
        Some(PathStep::Key(k)) => k,
        _ => return Ok(()),
    };
    let algo = selector.to_uppercase().replace(['-', '\''], "");
    let value = value_text.replace('\'', "");
    match hash_ok(&algo, &value) {
        Some(false) => Err(ParseError::InvalidHash {
            position: pos,
            value,
            algorithm: selector.clone(),
        }),
        _ => Ok(()),
    }
}
