//! The compiled matcher: a [`Pattern`](crate::pattern::Pattern) is compiled once (regexes
//! included) into a [`CompiledPattern`]; observed-data is prepared once into
//! [`Observation`]s; evaluation follows stix2-matcher's binding semantics.

mod bind;
mod value;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use crate::pattern::{CmpExpr, Literal, ObsExpr, Op, PathStep, Pattern, PropTest};
use crate::time::Timestamp;
pub use bind::{Binding, MAX_INSTANCES};
use value::{Lit, Net, Scalar, Val};

/// Largest compiled regex program accepted, in bytes.
pub const MAX_REGEX_SIZE: usize = 1 << 20;

/// Why a parsed pattern cannot be matched.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompileError {
    #[error("invalid WITHIN value (must be positive): {0}")]
    Within(String),
    #[error("invalid repetition count: {0}")]
    Repeats(u64),
    #[error("invalid timestamp: {0}")]
    Timestamp(String),
    #[error("nonhomogenous set: {0}")]
    Set(String),
    #[error("invalid regular expression {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("{0}")]
    Parse(#[from] crate::pattern::ParseError),
}

/// Why observed-data cannot be prepared.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObservationError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn obs_err(path: impl Into<String>, reason: impl Into<String>) -> ObservationError {
    ObservationError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// One observed-data object with the cyber-observable objects it references.
#[derive(Debug, Clone)]
pub struct Observation {
    id: String,
    first: i64,
    last: i64,
    number_observed: u32,
    /// referenced objects (root objects), unique by id, in `object_refs` order
    objects: Vec<Arc<Value>>,
    types: Vec<String>,
    index: HashMap<String, usize>,
}

impl Observation {
    /// Builds an observation from its time range and the objects it references.
    /// Objects without a string `id` are dropped; `first_us`/`last_us` are microseconds
    /// since the epoch.
    pub fn new(
        id: impl Into<String>,
        first_us: i64,
        last_us: i64,
        number_observed: u32,
        objects: Vec<Arc<Value>>,
    ) -> Observation {
        let mut uniq: Vec<Arc<Value>> = Vec::with_capacity(objects.len());
        let mut index = HashMap::with_capacity(objects.len());
        for o in objects {
            let Some(oid) = o.get("id").and_then(Value::as_str) else {
                continue;
            };
            match index.get(oid) {
                Some(&i) => uniq[i] = o.clone(),
                None => {
                    index.insert(oid.to_owned(), uniq.len());
                    uniq.push(o.clone());
                }
            }
        }
        let types = uniq
            .iter()
            .map(|o| {
                o.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        Observation {
            id: id.into(),
            first: first_us,
            last: last_us.max(first_us),
            number_observed: number_observed.max(1),
            objects: uniq,
            types,
            index,
        }
    }

    /// The observed-data id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `first_observed` in microseconds.
    pub fn first_observed_us(&self) -> i64 {
        self.first
    }
    /// `last_observed` in microseconds.
    pub fn last_observed_us(&self) -> i64 {
        self.last
    }
    /// `number_observed`.
    pub fn number_observed(&self) -> u32 {
        self.number_observed
    }
    /// The referenced objects.
    pub fn objects(&self) -> &[Arc<Value>] {
        &self.objects
    }

    fn deref(&self, id: &str) -> Option<&Value> {
        self.index.get(id).map(|&i| &*self.objects[i])
    }
}

/// Prepares the observed-data in a STIX document: a bundle, a JSON array of bundles,
/// or a JSON array of objects (observed-data and the objects they reference).
/// Mirrors stix2-matcher: objects are pooled, each observed-data is paired with the
/// objects its `object_refs` name, in order.
pub fn observations_from_json(doc: &Value) -> Result<Vec<Observation>, ObservationError> {
    let mut pool: Vec<(String, &Value)> = Vec::new();
    fn push_objects<'v>(
        objs: &'v Value,
        path: String,
        pool: &mut Vec<(String, &'v Value)>,
    ) -> Result<(), ObservationError> {
        match objs.as_array() {
            Some(a) => {
                for (i, o) in a.iter().enumerate() {
                    pool.push((format!("{path}[{i}]"), o));
                }
                Ok(())
            }
            None => Err(obs_err(path, "expected an array of objects")),
        }
    }
    match doc {
        Value::Object(m) => match m.get("objects") {
            Some(objs) => push_objects(objs, "$.objects".into(), &mut pool)?,
            None => return Err(obs_err("$", "bundle has no 'objects'")),
        },
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                if item.get("type").and_then(Value::as_str) == Some("bundle") {
                    match item.get("objects") {
                        Some(objs) => push_objects(objs, format!("$[{i}].objects"), &mut pool)?,
                        None => return Err(obs_err(format!("$[{i}]"), "bundle has no 'objects'")),
                    }
                } else {
                    pool.push((format!("$[{i}]"), item));
                }
            }
        }
        _ => return Err(obs_err("$", "expected a bundle or an array")),
    }
    let pool: Vec<(String, Arc<Value>)> = pool
        .into_iter()
        .map(|(p, v)| (p, Arc::new(v.clone())))
        .collect();
    let mut by_id: HashMap<&str, &Arc<Value>> = HashMap::new();
    for (_, o) in &pool {
        if o.get("type").and_then(Value::as_str) != Some("observed-data") {
            if let Some(id) = o.get("id").and_then(Value::as_str) {
                by_id.insert(id, o);
            }
        }
    }
    let mut out = Vec::new();
    for (path, o) in &pool {
        if o.get("type").and_then(Value::as_str) != Some("observed-data") {
            continue;
        }
        let id = o.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
        let ts = |k: &str| -> Result<i64, ObservationError> {
            let s = o
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| obs_err(format!("{path}.{k}"), "missing or not a string"))?;
            Timestamp::parse(s)
                .and_then(|t| t.micros())
                .ok_or_else(|| obs_err(format!("{path}.{k}"), format!("invalid timestamp '{s}'")))
        };
        let first = ts("first_observed")?;
        let last = ts("last_observed")?;
        let n = o
            .get("number_observed")
            .and_then(Value::as_u64)
            .filter(|n| *n >= 1)
            .ok_or_else(|| obs_err(format!("{path}.number_observed"), "must be an integer >= 1"))?;
        let refs = o
            .get("object_refs")
            .and_then(Value::as_array)
            .ok_or_else(|| obs_err(format!("{path}.object_refs"), "missing or not an array"))?;
        let objects = refs
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|r| by_id.get(r).map(|v| Arc::clone(v)))
            .collect();
        out.push(Observation::new(
            id,
            first,
            last,
            u32::try_from(n).unwrap_or(u32::MAX),
            objects,
        ));
    }
    Ok(out)
}

/// The STIX 2.1 object types that are not cyber-observables: a pattern naming one never matches.
pub const NON_SCO_TYPES: &[&str] = &[
    "attack-pattern",
    "bundle",
    "campaign",
    "course-of-action",
    "extension-definition",
    "grouping",
    "identity",
    "incident",
    "indicator",
    "infrastructure",
    "intrusion-set",
    "language-content",
    "location",
    "malware",
    "malware-analysis",
    "marking-definition",
    "note",
    "observed-data",
    "opinion",
    "relationship",
    "report",
    "threat-actor",
    "tool",
    "sighting",
    "vulnerability",
];

#[derive(Debug, Clone)]
enum Step {
    Key { name: String, kind: KeyKind },
    Index(i64),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Plain,
    Hex,
    Bin,
    Ref,
    Refs,
}

#[derive(Debug, Clone)]
enum Pred {
    Eq { lit: Lit, neq: bool },
    Order { lit: Lit, op: OrdOp },
    In { set: Vec<Lit>, ts: bool },
    Like(regex::Regex),
    Matches(regex::Regex, Option<regex::bytes::Regex>),
    Subset(Option<Net>),
    Superset(Option<Net>),
    Exists,
}

#[derive(Debug, Clone, Copy)]
enum OrdOp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
struct Test {
    object_type: String,
    /// the type is an SDO/SRO type: never matches
    never: bool,
    steps: Vec<Step>,
    /// all steps are plain keys: walk without allocating
    simple_path: bool,
    pred: Pred,
    negated: bool,
}

#[derive(Debug, Clone)]
enum Cmp {
    And(Box<Cmp>, Box<Cmp>),
    Or(Box<Cmp>, Box<Cmp>),
    Test(Box<Test>),
}

#[derive(Debug, Clone)]
enum Node {
    Simple(Cmp),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    FollowedBy(Box<Node>, Box<Node>),
    Within(Box<Node>, i64),
    StartStop(Box<Node>, i64, i64),
    Repeats(Box<Node>, usize),
}

/// A pattern compiled for matching.
#[derive(Debug, Clone)]
pub struct CompiledPattern {
    root: Node,
    source: String,
    /// the pattern is one `[...]` with no qualifier
    single: bool,
}

fn compile_lit(l: &Literal) -> Result<Lit, CompileError> {
    Ok(match l {
        Literal::Str(s) => Lit::Str(s.clone()),
        Literal::Int(i) => Lit::Int(*i),
        Literal::Float(f) => Lit::Float(*f),
        Literal::Bool(b) => Lit::Bool(*b),
        Literal::Timestamp(t) => Lit::Ts(
            t.micros()
                .ok_or_else(|| CompileError::Timestamp(t.text().to_owned()))?,
        ),
        Literal::Binary(b) | Literal::Hex(b) => Lit::Bytes(b.clone()),
    })
}

fn build_regex(re: &str) -> Result<regex::Regex, CompileError> {
    regex::RegexBuilder::new(re)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .nest_limit(64)
        .build()
        .map_err(|e| CompileError::Regex {
            pattern: re.chars().take(200).collect(),
            reason: e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_lowercase(),
        })
}

fn like_regex(like: &str) -> String {
    let mut re = String::from(r"\A(?:");
    for c in like.chars() {
        match c {
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    // Python's `$`: end of string or before a final newline
    re.push_str(r")\n?\z");
    re
}

fn compile_test(t: &PropTest) -> Result<Test, CompileError> {
    let steps: Vec<Step> = t
        .path
        .steps
        .iter()
        .map(|s| match s {
            PathStep::Key(k) => {
                let kind = if k.ends_with("_hex") {
                    KeyKind::Hex
                } else if k.ends_with("_bin") {
                    KeyKind::Bin
                } else if k.ends_with("_ref") {
                    KeyKind::Ref
                } else if k.ends_with("_refs") {
                    KeyKind::Refs
                } else {
                    KeyKind::Plain
                };
                Step::Key {
                    name: k.clone(),
                    kind,
                }
            }
            PathStep::Index(i) => Step::Index(*i),
            PathStep::AnyIndex => Step::Any,
        })
        .collect();
    let simple_path = steps.iter().all(|s| {
        matches!(
            s,
            Step::Key {
                kind: KeyKind::Plain,
                ..
            }
        )
    });
    let pred = match &t.op {
        Op::Eq(l) => Pred::Eq {
            lit: compile_lit(l)?,
            neq: false,
        },
        Op::Neq(l) => Pred::Eq {
            lit: compile_lit(l)?,
            neq: true,
        },
        Op::Lt(l) | Op::Le(l) | Op::Gt(l) | Op::Ge(l) => Pred::Order {
            lit: compile_lit(l)?,
            op: match t.op {
                Op::Lt(_) => OrdOp::Lt,
                Op::Le(_) => OrdOp::Le,
                Op::Gt(_) => OrdOp::Gt,
                _ => OrdOp::Ge,
            },
        },
        Op::In(set) => {
            let lits = set.iter().map(compile_lit).collect::<Result<Vec<_>, _>>()?;
            let kind = |l: &Lit| match l {
                Lit::Int(_) | Lit::Float(_) => 0,
                Lit::Str(_) => 1,
                Lit::Bool(_) => 2,
                Lit::Ts(_) => 3,
                Lit::Bytes(_) => 4,
            };
            if let Some(first) = lits.first() {
                if lits.iter().any(|l| kind(l) != kind(first)) {
                    return Err(CompileError::Set(t.to_string()));
                }
            }
            let ts = matches!(lits.first(), Some(Lit::Ts(_)));
            Pred::In { set: lits, ts }
        }
        Op::Like(s) => Pred::Like(build_regex(&like_regex(s))?),
        Op::Matches(s) => {
            let re = build_regex(s)?;
            let bin = if s.is_ascii() {
                regex::bytes::RegexBuilder::new(s)
                    .unicode(false)
                    .size_limit(MAX_REGEX_SIZE)
                    .dfa_size_limit(MAX_REGEX_SIZE)
                    .nest_limit(64)
                    .build()
                    .ok()
            } else {
                None
            };
            Pred::Matches(re, bin)
        }
        Op::IsSubset(s) => Pred::Subset(Net::parse(s, true)),
        Op::IsSuperset(s) => Pred::Superset(Net::parse(s, false)),
        Op::Exists => Pred::Exists,
    };
    Ok(Test {
        never: NON_SCO_TYPES.contains(&t.path.object_type.as_str()),
        object_type: t.path.object_type.clone(),
        steps,
        simple_path,
        pred,
        negated: t.negated,
    })
}

fn compile_cmp(c: &CmpExpr) -> Result<Cmp, CompileError> {
    Ok(match c {
        CmpExpr::And(a, b) => Cmp::And(Box::new(compile_cmp(a)?), Box::new(compile_cmp(b)?)),
        CmpExpr::Or(a, b) => Cmp::Or(Box::new(compile_cmp(a)?), Box::new(compile_cmp(b)?)),
        CmpExpr::Group(e) => compile_cmp(e)?,
        CmpExpr::Test(t) => Cmp::Test(Box::new(compile_test(t)?)),
    })
}

fn compile_obs(e: &ObsExpr) -> Result<Node, CompileError> {
    Ok(match e {
        ObsExpr::Simple(c) => Node::Simple(compile_cmp(c)?),
        ObsExpr::And(a, b) => Node::And(Box::new(compile_obs(a)?), Box::new(compile_obs(b)?)),
        ObsExpr::Or(a, b) => Node::Or(Box::new(compile_obs(a)?), Box::new(compile_obs(b)?)),
        ObsExpr::FollowedBy(a, b) => {
            Node::FollowedBy(Box::new(compile_obs(a)?), Box::new(compile_obs(b)?))
        }
        ObsExpr::Group(e) => compile_obs(e)?,
        ObsExpr::Within(e, n) => {
            let secs = n.as_f64();
            if secs.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !secs.is_finite() {
                return Err(CompileError::Within(secs.to_string()));
            }
            let us = (secs * 1e6).round();
            let us = if us >= i64::MAX as f64 {
                i64::MAX
            } else {
                us as i64
            };
            Node::Within(Box::new(compile_obs(e)?), us)
        }
        ObsExpr::Repeats(e, n) => {
            if *n < 1 {
                return Err(CompileError::Repeats(*n));
            }
            Node::Repeats(
                Box::new(compile_obs(e)?),
                usize::try_from(*n).unwrap_or(usize::MAX),
            )
        }
        ObsExpr::StartStop(e, a, b) => {
            let ta = a
                .micros()
                .ok_or_else(|| CompileError::Timestamp(a.text().to_owned()))?;
            let tb = b
                .micros()
                .ok_or_else(|| CompileError::Timestamp(b.text().to_owned()))?;
            Node::StartStop(Box::new(compile_obs(e)?), ta, tb)
        }
    })
}

impl CompiledPattern {
    /// Parses, validates and compiles a pattern.
    pub fn new(src: &str) -> Result<CompiledPattern, CompileError> {
        let p = Pattern::parse(src)?;
        CompiledPattern::compile(&p, src)
    }

    /// Compiles a parsed pattern; `source` is kept for display.
    pub fn compile(p: &Pattern, source: &str) -> Result<CompiledPattern, CompileError> {
        let root = compile_obs(&p.root)?;
        let single = matches!(root, Node::Simple(_));
        Ok(CompiledPattern {
            root,
            source: source.to_owned(),
            single,
        })
    }

    /// The pattern text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the pattern is a single `[...]` with no qualifier, so one observation decides it.
    pub fn is_single_observation(&self) -> bool {
        self.single
    }

    /// Whether one observation alone satisfies the pattern.
    pub fn matches_one(&self, obs: &Observation) -> bool {
        match &self.root {
            Node::Simple(c) => cmp_matches(c, obs),
            // an observation that satisfies no `[...]` of the pattern is in no binding
            _ if !self.any_leaf_matches(obs) => false,
            _ if obs.number_observed == 1 => one_instance(&self.root, obs),
            _ => bind::bindings_unordered(&self.root, &[obs])
                .next()
                .is_some(),
        }
    }

    /// Whether the observations satisfy the pattern (at least one binding exists).
    pub fn matches(&self, observations: &[Observation]) -> bool {
        if let Node::Simple(c) = &self.root {
            return observations.iter().any(|o| cmp_matches(c, o));
        }
        // only observations that satisfy some `[...]` can be bound; the others are left out
        let refs: Vec<&Observation> = observations
            .iter()
            .filter(|o| self.any_leaf_matches(o))
            .collect();
        !refs.is_empty() && bind::bindings_unordered(&self.root, &refs).next().is_some()
    }

    /// The first `limit` bindings, in the order stix2-matcher finds them. Each binding lists,
    /// per observation expression, the index of the observation bound to it; `None` where
    /// the reference matcher reports `None` (the other side of an `OR`, or a second
    /// instance of an observation with `number_observed > 1`).
    pub fn bindings(&self, observations: &[Observation], limit: usize) -> Vec<Binding> {
        let refs: Vec<&Observation> = observations.iter().collect();
        self.bindings_ref(&refs, limit)
    }

    /// As [`CompiledPattern::bindings`] over borrowed observations.
    pub fn bindings_ref(&self, observations: &[&Observation], limit: usize) -> Vec<Binding> {
        bind::bindings(&self.root, observations)
            .take(limit)
            .map(bind::report)
            .collect()
    }

    /// The first binding (scanning at most `max_scan`) that uses observation `must`,
    /// as the observation indices it binds, in pattern order.
    pub(crate) fn binding_with(
        &self,
        observations: &[&Observation],
        must: usize,
        max_scan: usize,
    ) -> Option<Vec<usize>> {
        bind::bindings(&self.root, observations)
            .take(max_scan)
            .find(|raw| raw.iter().flatten().any(|&(o, _)| o as usize == must))
            .map(|raw| {
                let mut v: Vec<usize> = Vec::new();
                for (o, _) in raw.into_iter().flatten() {
                    if !v.contains(&(o as usize)) {
                        v.push(o as usize);
                    }
                }
                v
            })
    }

    /// Calls `f` with every single-observation comparison (`[...]`) of the pattern; an
    /// observation that satisfies none of them can never be part of a binding.
    pub(crate) fn any_leaf_matches(&self, obs: &Observation) -> bool {
        fn walk(n: &Node, obs: &Observation) -> bool {
            match n {
                Node::Simple(c) => cmp_matches(c, obs),
                Node::And(a, b) | Node::Or(a, b) | Node::FollowedBy(a, b) => {
                    walk(a, obs) || walk(b, obs)
                }
                Node::Within(e, _) | Node::StartStop(e, _, _) | Node::Repeats(e, _) => walk(e, obs),
            }
        }
        walk(&self.root, obs)
    }

    /// The longest time span a `WITHIN` qualifier at the top allows, if any (microseconds).
    pub fn within_us(&self) -> Option<i64> {
        match &self.root {
            Node::Within(_, us) => Some(*us),
            _ => None,
        }
    }
}

/// Whether a binding exists over exactly one observation seen once: every binding of an
/// `AND`/`FOLLOWEDBY` needs two disjoint instances, `REPEATS k` needs k, so only `OR`,
/// `WITHIN` (always satisfiable by one interval) and `START`/`STOP` remain.
fn one_instance(n: &Node, obs: &Observation) -> bool {
    match n {
        Node::Simple(c) => cmp_matches(c, obs),
        Node::Or(a, b) => one_instance(a, obs) || one_instance(b, obs),
        Node::And(..) | Node::FollowedBy(..) => false,
        Node::Repeats(e, k) => *k == 1 && one_instance(e, obs),
        Node::Within(e, _) => one_instance(e, obs),
        Node::StartStop(e, start, stop) => {
            start < stop && obs.first < *stop && *start <= obs.last && one_instance(e, obs)
        }
    }
}

fn cmp_matches(c: &Cmp, obs: &Observation) -> bool {
    (0..obs.objects.len()).any(|r| eval_root(c, obs, r))
}

fn eval_root(c: &Cmp, obs: &Observation, root: usize) -> bool {
    match c {
        Cmp::And(a, b) => eval_root(a, obs, root) && eval_root(b, obs, root),
        Cmp::Or(a, b) => eval_root(a, obs, root) || eval_root(b, obs, root),
        Cmp::Test(t) => eval_test(t, obs, root),
    }
}

fn eval_test(t: &Test, obs: &Observation, root: usize) -> bool {
    if t.never || obs.types[root] != t.object_type {
        return false;
    }
    let obj: &Value = &obs.objects[root];
    if t.simple_path {
        let mut v = obj;
        for s in &t.steps {
            if let Step::Key { name, .. } = s {
                match v.get(name.as_str()) {
                    Some(n) if v.is_object() => v = n,
                    _ => return pred_missing(t),
                }
            }
        }
        return pred(t, &Val::Json(v));
    }
    let mut vals: Vec<Val<'_>> = vec![Val::Json(obj)];
    for s in &t.steps {
        vals = step(vals, s, obs);
        if vals.is_empty() {
            return pred_missing(t);
        }
    }
    vals.iter().any(|v| pred(t, v))
}

/// The path selected nothing: only `NOT EXISTS` holds.
fn pred_missing(t: &Test) -> bool {
    matches!(t.pred, Pred::Exists) && t.negated
}

fn step<'a>(vals: Vec<Val<'a>>, s: &Step, obs: &'a Observation) -> Vec<Val<'a>> {
    let mut out = Vec::new();
    match s {
        Step::Key { name, kind } => {
            for v in vals {
                let Val::Json(Value::Object(m)) = v else {
                    continue;
                };
                let Some(x) = m.get(name.as_str()) else {
                    continue;
                };
                match kind {
                    KeyKind::Plain => out.push(Val::Json(x)),
                    KeyKind::Hex => {
                        if let Some(b) = x.as_str().and_then(crate::codec::hex_decode) {
                            out.push(Val::Bytes(b));
                        }
                    }
                    KeyKind::Bin => {
                        if let Some(b) = x.as_str().and_then(crate::codec::base64_decode) {
                            out.push(Val::Bytes(b));
                        }
                    }
                    KeyKind::Ref => {
                        if let Some(o) = x.as_str().and_then(|id| obs.deref(id)) {
                            out.push(Val::Json(o));
                        }
                    }
                    KeyKind::Refs => {
                        if let Some(list) = x.as_array() {
                            let objs: Vec<&Value> = list
                                .iter()
                                .filter_map(|r| r.as_str().and_then(|id| obs.deref(id)))
                                .collect();
                            if !objs.is_empty() {
                                out.push(Val::Objs(objs));
                            }
                        }
                    }
                }
            }
        }
        Step::Index(i) => {
            for v in vals {
                let Ok(i) = usize::try_from(*i) else { continue };
                match v {
                    Val::Json(Value::Array(a)) => {
                        if let Some(x) = a.get(i) {
                            out.push(Val::Json(x));
                        }
                    }
                    Val::Objs(o) => {
                        if let Some(x) = o.get(i) {
                            out.push(Val::Json(x));
                        }
                    }
                    _ => {}
                }
            }
        }
        Step::Any => {
            for v in vals {
                match v {
                    Val::Json(Value::Array(a)) => out.extend(a.iter().map(Val::Json)),
                    Val::Objs(o) => out.extend(o.into_iter().map(Val::Json)),
                    _ => {}
                }
            }
        }
    }
    out
}

fn pred(t: &Test, v: &Val<'_>) -> bool {
    let r = match &t.pred {
        Pred::Exists => true,
        Pred::Eq { lit, neq } => {
            let sv = value::coerce_ts(v.scalar(), matches!(lit, Lit::Ts(_)));
            let eq = value::py_eq(sv, lit.scalar()).unwrap_or(false);
            eq != *neq
        }
        Pred::Order { lit, op } => {
            let sv = value::coerce_ts(v.scalar(), matches!(lit, Lit::Ts(_)));
            match value::py_cmp(sv, lit.scalar()) {
                Err(()) => return false,
                Ok(None) => false,
                Ok(Some(o)) => match op {
                    OrdOp::Lt => o.is_lt(),
                    OrdOp::Le => o.is_le(),
                    OrdOp::Gt => o.is_gt(),
                    OrdOp::Ge => o.is_ge(),
                },
            }
        }
        Pred::In { set, ts } => {
            let sv = value::coerce_ts(v.scalar(), *ts);
            set.iter().any(|l| value::py_set_eq(sv, l.scalar()))
        }
        Pred::Like(re) => match v.scalar() {
            Scalar::Str(s) => re.is_match(s),
            Scalar::Bytes(b) => std::str::from_utf8(b).is_ok_and(|s| re.is_match(s)),
            _ => false,
        },
        Pred::Matches(re, bin) => match v.scalar() {
            Scalar::Str(s) => re.is_match(s),
            Scalar::Bytes(b) => bin.as_ref().is_some_and(|r| r.is_match(b)),
            _ => false,
        },
        Pred::Subset(net) => match (v.scalar(), net) {
            (Scalar::Str(s), Some(n)) => Net::parse(s, false).is_some_and(|x| x.within(*n)),
            _ => false,
        },
        Pred::Superset(net) => match (v.scalar(), net) {
            (Scalar::Str(s), Some(n)) => Net::parse(s, true).is_some_and(|c| n.within(c)),
            _ => false,
        },
    };
    r != t.negated
}
