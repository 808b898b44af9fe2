//! The STIX 2.1 patterning language (STIX 2.1 part 9): syntax tree, parser and the
//! checks that the OASIS pattern validator (stix2-patterns) applies on top of the grammar.

mod lex;
mod parse;

use std::fmt;

pub use parse::{ParseError, parse};

use crate::time::Timestamp;

/// A parsed pattern: one observation expression tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub root: ObsExpr,
}

impl Pattern {
    /// Parses and validates a pattern (see [`parse`]).
    pub fn parse(src: &str) -> Result<Pattern, ParseError> {
        parse(src)
    }
}

/// Observation expressions. Parentheses are implicit in the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsExpr {
    /// `[ comparison ]`
    Simple(CmpExpr),
    And(Box<ObsExpr>, Box<ObsExpr>),
    Or(Box<ObsExpr>, Box<ObsExpr>),
    FollowedBy(Box<ObsExpr>, Box<ObsExpr>),
    /// `WITHIN n SECONDS`; the literal text is kept (an int or a float).
    Within(Box<ObsExpr>, Number),
    /// `REPEATS n TIMES`
    Repeats(Box<ObsExpr>, u64),
    /// `START t'..' STOP t'..'`
    StartStop(Box<ObsExpr>, Timestamp, Timestamp),
    /// A parenthesised observation expression; kept so qualifier rules and display match.
    Group(Box<ObsExpr>),
}

/// A non-negative number in a `WITHIN` qualifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(u64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

/// Comparison expressions inside `[...]`.
#[derive(Debug, Clone, PartialEq)]
pub enum CmpExpr {
    And(Box<CmpExpr>, Box<CmpExpr>),
    Or(Box<CmpExpr>, Box<CmpExpr>),
    Test(PropTest),
    /// A parenthesised comparison expression.
    Group(Box<CmpExpr>),
}

/// One property test: `path [NOT] op value`, or `[NOT] EXISTS path`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropTest {
    pub path: ObjectPath,
    pub negated: bool,
    pub op: Op,
}

/// Comparison operators with their operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Literal),
    Neq(Literal),
    Lt(Literal),
    Le(Literal),
    Gt(Literal),
    Ge(Literal),
    In(Vec<Literal>),
    Like(String),
    Matches(String),
    IsSubset(String),
    IsSuperset(String),
    Exists,
}

/// `type:prop.sub[0].'quoted'[*]`
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectPath {
    pub object_type: String,
    pub steps: Vec<PathStep>,
}

/// One step of an object path (the first step is always a key).
#[derive(Debug, Clone, PartialEq)]
pub enum PathStep {
    Key(String),
    Index(i64),
    AnyIndex,
}

/// Literal values.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(Timestamp),
    Binary(Vec<u8>),
    Hex(Vec<u8>),
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn is_plain_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !matches!(
            s,
            "AND"
                | "OR"
                | "NOT"
                | "FOLLOWEDBY"
                | "LIKE"
                | "MATCHES"
                | "ISSUPERSET"
                | "ISSUBSET"
                | "EXISTS"
                | "LAST"
                | "IN"
                | "START"
                | "STOP"
                | "SECONDS"
                | "WITHIN"
                | "REPEATS"
                | "TIMES"
                | "true"
                | "false"
        )
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => f.write_str(&quote(s)),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => {
                let s = format!("{x:?}");
                // the grammar has no exponent form
                if s.contains('e') || s.contains("inf") || s.contains("NaN") {
                    write!(f, "{x:.17}")
                } else {
                    f.write_str(&s)
                }
            }
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Timestamp(t) => write!(f, "t'{}'", t.text()),
            Literal::Binary(b) => write!(f, "b'{}'", crate::codec::base64_encode(b)),
            Literal::Hex(b) => write!(f, "h'{}'", crate::codec::hex_encode(b)),
        }
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_plain_ident(k) {
                        f.write_str(k)?;
                    } else {
                        f.write_str(&quote(k))?;
                    }
                }
                PathStep::Index(n) => write!(f, "[{n}]")?,
                PathStep::AnyIndex => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for PropTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = if self.negated { "NOT " } else { "" };
        let p = &self.path;
        match &self.op {
            Op::Exists => write!(f, "{not}EXISTS {p}"),
            Op::Eq(l) => write!(f, "{p} {not}= {l}"),
            Op::Neq(l) => write!(f, "{p} {not}!= {l}"),
            Op::Lt(l) => write!(f, "{p} {not}< {l}"),
            Op::Le(l) => write!(f, "{p} {not}<= {l}"),
            Op::Gt(l) => write!(f, "{p} {not}> {l}"),
            Op::Ge(l) => write!(f, "{p} {not}>= {l}"),
            Op::In(set) => {
                write!(f, "{p} {not}IN (")?;
                for (i, l) in set.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{l}")?;
                }
                f.write_str(")")
            }
            Op::Like(s) => write!(f, "{p} {not}LIKE {}", quote(s)),
            Op::Matches(s) => write!(f, "{p} {not}MATCHES {}", quote(s)),
            Op::IsSubset(s) => write!(f, "{p} {not}ISSUBSET {}", quote(s)),
            Op::IsSuperset(s) => write!(f, "{p} {not}ISSUPERSET {}", quote(s)),
        }
    }
}

impl fmt::Display for CmpExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmpExpr::And(a, b) => write!(f, "{a} AND {b}"),
            CmpExpr::Or(a, b) => write!(f, "{a} OR {b}"),
            CmpExpr::Test(t) => write!(f, "{t}"),
            CmpExpr::Group(e) => write!(f, "({e})"),
        }
    }
}

impl fmt::Display for ObsExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObsExpr::Simple(c) => write!(f, "[{c}]"),
            ObsExpr::And(a, b) => write!(f, "{a} AND {b}"),
            ObsExpr::Or(a, b) => write!(f, "{a} OR {b}"),
            ObsExpr::FollowedBy(a, b) => write!(f, "{a} FOLLOWEDBY {b}"),
            ObsExpr::Within(e, n) => match n {
                Number::Int(i) => write!(f, "{e} WITHIN {i} SECONDS"),
                Number::Float(x) => write!(f, "{e} WITHIN {} SECONDS", Literal::Float(*x)),
            },
            ObsExpr::Repeats(e, n) => write!(f, "{e} REPEATS {n} TIMES"),
            ObsExpr::StartStop(e, a, b) => {
                write!(f, "{e} START t'{}' STOP t'{}'", a.text(), b.text())
            }
            ObsExpr::Group(e) => write!(f, "({e})"),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)
    }
}
