//! Binding search over many observations, reproducing stix2-matcher's lazy generators so
//! that bindings come out in the same order: observation `AND`/`FOLLOWEDBY` are
//! interleaved cached joins, `OR` alternates sides, `REPEATS` takes disjoint combinations,
//! `WITHIN` and `START`/`STOP` filter on `first_observed`..`last_observed`.

use std::rc::Rc;

use super::{Cmp, Node, Observation, eval_root};

/// (observation index, instance index below `number_observed`)
type Inst = (u32, u32);
type Raw = Vec<Option<Inst>>;
type It<'a> = Box<dyn Iterator<Item = Raw> + 'a>;
type ComboIter = Box<dyn Iterator<Item = Vec<Raw>>>;

/// At most this many instances of one observation (`number_observed`) take part in a
/// binding search, so a forged `number_observed` cannot make a search run for hours.
pub const MAX_INSTANCES: u32 = 4_096;

/// One reported binding: per observation expression, the observation index bound to it.
pub type Binding = Vec<Option<usize>>;

/// Maps instance ids to what the reference matcher reports: the observation index for
/// instance 0, `None` otherwise.
pub(super) fn report(raw: Raw) -> Binding {
    raw.into_iter()
        .map(|x| match x {
            Some((o, 0)) => Some(o as usize),
            _ => None,
        })
        .collect()
}

struct Ctx<'a> {
    obs: &'a [&'a Observation],
}

impl Ctx<'_> {
    fn first(&self, i: Inst) -> i64 {
        self.obs[i.0 as usize].first
    }
    fn last(&self, i: Inst) -> i64 {
        self.obs[i.0 as usize].last
    }
    fn latest_first(&self, b: &Raw) -> i64 {
        b.iter()
            .flatten()
            .map(|&i| self.first(i))
            .max()
            .unwrap_or(i64::MIN)
    }
    fn earliest_last(&self, b: &Raw) -> i64 {
        b.iter()
            .flatten()
            .map(|&i| self.last(i))
            .min()
            .unwrap_or(i64::MAX)
    }
}

fn disjoint(a: &Raw, b: &Raw) -> bool {
    a.iter()
        .flatten()
        .all(|x| !b.iter().flatten().any(|y| x == y))
}

/// Observation indices satisfying `c`, in the order the reference matcher's dicts keep them.
fn order(c: &Cmp, obs: &[&Observation]) -> Vec<u32> {
    let any_root = |c: &Cmp, o: &Observation| (0..o.objects.len()).any(|r| eval_root(c, o, r));
    match c {
        Cmp::Test(_) => (0..obs.len() as u32)
            .filter(|&i| any_root(c, obs[i as usize]))
            .collect(),
        Cmp::And(a, _) => order(a, obs)
            .into_iter()
            .filter(|&i| any_root(c, obs[i as usize]))
            .collect(),
        Cmp::Or(a, b) => {
            let mut la = order(a, obs);
            let mut seen = vec![false; obs.len()];
            for &i in &la {
                seen[i as usize] = true;
            }
            la.extend(order(b, obs).into_iter().filter(|&i| !seen[i as usize]));
            la
        }
    }
}

fn expected_size(n: &Node) -> usize {
    match n {
        Node::Simple(_) => 1,
        Node::And(a, b) | Node::Or(a, b) | Node::FollowedBy(a, b) => {
            expected_size(a) + expected_size(b)
        }
        Node::Within(e, _) | Node::StartStop(e, _, _) => expected_size(e),
        Node::Repeats(e, k) => expected_size(e).saturating_mul(*k),
    }
}

/// All bindings of `n`, lazily, in stix2-matcher's order.
pub(super) fn bindings<'a>(n: &'a Node, obs: &'a [&'a Observation]) -> It<'a> {
    let ctx = Rc::new(Ctx { obs });
    build(n, &ctx, None)
}

/// The same set of bindings, in a different order: `START`/`STOP` windows are applied to
/// the observations before joining instead of to the joined bindings. Only for deciding
/// whether any binding exists.
pub(super) fn bindings_unordered<'a>(n: &'a Node, obs: &'a [&'a Observation]) -> It<'a> {
    let ctx = Rc::new(Ctx { obs });
    build(n, &ctx, Some((i64::MIN, i64::MAX)))
}

/// `window`: when set, only observations with `first < stop && start <= last` for the
/// enclosing `START`/`STOP` qualifiers take part.
fn build<'a>(n: &'a Node, ctx: &Rc<Ctx<'a>>, window: Option<(i64, i64)>) -> It<'a> {
    match n {
        Node::Simple(c) => {
            let mut ord = order(c, ctx.obs);
            if let Some((start, stop)) = window {
                ord.retain(|&o| {
                    let o = ctx.obs[o as usize];
                    o.first < stop && start <= o.last
                });
            }
            let counts: Vec<u32> = ord
                .iter()
                .map(|&o| ctx.obs[o as usize].number_observed.min(MAX_INSTANCES))
                .collect();
            Box::new(
                ord.into_iter()
                    .zip(counts)
                    .flat_map(|(o, k)| (0..k).map(move |i| vec![Some((o, i))])),
            )
        }
        Node::Or(a, b) => {
            let mut l = build(a, ctx, window);
            let mut r = build(b, ctx, window);
            let fl = l.next();
            let fr = r.next();
            let lpad = fl.as_ref().map_or_else(|| expected_size(a), Vec::len);
            let rpad = fr.as_ref().map_or_else(|| expected_size(b), Vec::len);
            Box::new(OrIter {
                l,
                r,
                nl: fl,
                nr: fr,
                lpad,
                rpad,
                pending: None,
            })
        }
        Node::And(a, b) => Box::new(Join::new(
            build(a, ctx, window),
            build(b, ctx, window),
            None,
        )),
        Node::FollowedBy(a, b) => Box::new(Join::new(
            build(a, ctx, window),
            build(b, ctx, window),
            Some(Rc::clone(ctx)),
        )),
        Node::Within(e, us) => {
            let us = *us;
            let c = Rc::clone(ctx);
            Box::new(build(e, ctx, window).filter(move |b| {
                let earliest_last = c.earliest_last(b);
                let limit = earliest_last.saturating_add(us);
                b.iter().flatten().all(|&i| c.first(i) <= limit)
            }))
        }
        Node::StartStop(e, start, stop) => {
            let (start, stop) = (*start, *stop);
            if start >= stop {
                return Box::new(std::iter::empty());
            }
            let c = Rc::clone(ctx);
            let inner = window.map(|(s0, s1)| (s0.max(start), s1.min(stop)));
            Box::new(build(e, ctx, inner).filter(move |b| {
                b.iter()
                    .flatten()
                    .all(|&i| c.first(i) < stop && start <= c.last(i))
            }))
        }
        Node::Repeats(e, k) => {
            let inner = build(e, ctx, window);
            if *k == 1 {
                inner
            } else {
                Box::new(Combos {
                    src: inner,
                    k: *k,
                    generated: Vec::new(),
                    current: None,
                    primed: false,
                })
            }
        }
    }
}

struct OrIter<'a> {
    l: It<'a>,
    r: It<'a>,
    nl: Option<Raw>,
    nr: Option<Raw>,
    lpad: usize,
    rpad: usize,
    pending: Option<Raw>,
}

impl Iterator for OrIter<'_> {
    type Item = Raw;
    fn next(&mut self) -> Option<Raw> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        loop {
            if self.nl.is_none() && self.nr.is_none() {
                return None;
            }
            let mut out = None;
            if let Some(mut lb) = self.nl.take() {
                lb.extend(std::iter::repeat_n(None, self.rpad));
                out = Some(lb);
                self.nl = self.l.next();
            }
            if let Some(rb) = self.nr.take() {
                let mut b: Raw = vec![None; self.lpad];
                b.extend(rb);
                self.nr = self.r.next();
                if out.is_none() {
                    out = Some(b);
                } else {
                    self.pending = Some(b);
                }
            }
            if out.is_some() {
                return out;
            }
        }
    }
}

/// The interleaved cached cross product of stix2-matcher's observation `AND` and
/// `FOLLOWEDBY` (with `ctx` set: timestamps must allow left before right).
struct Join<'a> {
    l: It<'a>,
    r: It<'a>,
    nl: Option<Raw>,
    nr: Option<Raw>,
    lcache: Vec<Raw>,
    rcache: Vec<Raw>,
    started: bool,
    /// output produced by the current step, drained in order
    queue: std::collections::VecDeque<Raw>,
    followed_by: Option<Rc<Ctx<'a>>>,
}

impl<'a> Join<'a> {
    fn new(l: It<'a>, r: It<'a>, followed_by: Option<Rc<Ctx<'a>>>) -> Join<'a> {
        Join {
            l,
            r,
            nl: None,
            nr: None,
            lcache: Vec::new(),
            rcache: Vec::new(),
            started: false,
            queue: Default::default(),
            followed_by,
        }
    }
    fn ok(&self, lhs: &Raw, rhs: &Raw) -> bool {
        if !disjoint(lhs, rhs) {
            return false;
        }
        match &self.followed_by {
            None => true,
            Some(c) => c.latest_first(lhs) <= c.earliest_last(rhs),
        }
    }
}

impl Iterator for Join<'_> {
    type Item = Raw;
    fn next(&mut self) -> Option<Raw> {
        if !self.started {
            self.started = true;
            self.nr = self.r.next();
            self.nl = self.l.next();
            if self.nr.is_none() || self.nl.is_none() {
                self.nr = None;
                self.nl = None;
            }
        }
        loop {
            if let Some(b) = self.queue.pop_front() {
                return Some(b);
            }
            if self.nr.is_none() && self.nl.is_none() {
                return None;
            }
            if let Some(rb) = self.nr.take() {
                for lb in &self.lcache {
                    if self.ok(lb, &rb) {
                        let mut b = lb.clone();
                        b.extend_from_slice(&rb);
                        self.queue.push_back(b);
                    }
                }
                self.rcache.push(rb);
                self.nr = self.r.next();
            }
            if let Some(lb) = self.nl.take() {
                for rb in &self.rcache {
                    if self.ok(&lb, rb) {
                        let mut b = lb.clone();
                        b.extend_from_slice(rb);
                        self.queue.push_back(b);
                    }
                }
                self.lcache.push(lb);
                self.nl = self.l.next();
            }
        }
    }
}

/// Upper bound on the size of a disjoint combination (stix2-matcher's
/// `_bound_largest_combination`), used to prune hopeless searches.
fn bound_largest(values: &[Raw]) -> usize {
    if values.is_empty() {
        return 0;
    }
    let size = |v: &Raw| v.iter().flatten().count();
    let max = values.iter().map(size).max().unwrap_or(0);
    if max == 0 {
        return 0;
    }
    let mut by_size: Vec<std::collections::HashSet<Inst>> = vec![Default::default(); max + 1];
    for v in values {
        by_size[size(v)].extend(v.iter().flatten().copied());
    }
    let mut consumed: std::collections::HashSet<Inst> = Default::default();
    let mut total = 0;
    for (i, set) in by_size.iter().enumerate().take(max).skip(1) {
        let avail: Vec<Inst> = set.difference(&consumed).copied().collect();
        total += avail.len().div_ceil(i);
        consumed.extend(avail);
    }
    total + by_size[max].difference(&consumed).count() / max
}

/// Disjoint `k`-combinations of a list, in `_filtered_combinations_from_list` order.
fn combos_from_list(list: Rc<Vec<Raw>>, k: usize) -> Box<dyn Iterator<Item = Vec<Raw>>> {
    if k == 1 {
        let n = list.len();
        return Box::new((0..n).map(move |i| vec![list[i].clone()]));
    }
    if bound_largest(&list) < k || list.len() < k {
        return Box::new(std::iter::empty());
    }
    let n = list.len();
    Box::new((0..n + 1 - k).flat_map(move |i| {
        let head = list[i].clone();
        let filtered: Vec<Raw> = list[i + 1..]
            .iter()
            .filter(|c| disjoint(&head, c))
            .cloned()
            .collect();
        combos_from_list(Rc::new(filtered), k - 1).map(move |mut sub| {
            sub.insert(0, head.clone());
            sub
        })
    }))
}

/// `_filtered_combinations` over a lazy source, flattened into one binding per combination.
struct Combos<'a> {
    src: It<'a>,
    k: usize,
    generated: Vec<Raw>,
    current: Option<(ComboIter, Raw)>,
    primed: bool,
}

impl Iterator for Combos<'_> {
    type Item = Raw;
    fn next(&mut self) -> Option<Raw> {
        if !self.primed {
            self.primed = true;
            while self.generated.len() < self.k - 1 {
                match self.src.next() {
                    Some(v) => self.generated.push(v),
                    None => break,
                }
            }
        }
        loop {
            if let Some((it, next_value)) = &mut self.current {
                if let Some(sub) = it.next() {
                    let mut b: Raw = sub.into_iter().flatten().collect();
                    b.extend_from_slice(next_value);
                    return Some(b);
                }
                let (_, nv) = self.current.take()?;
                self.generated.push(nv);
            }
            let next_value = self.src.next()?;
            let filtered: Vec<Raw> = self
                .generated
                .iter()
                .filter(|c| disjoint(c, &next_value))
                .cloned()
                .collect();
            let it = combos_from_list(Rc::new(filtered), self.k - 1);
            self.current = Some((it, next_value));
        }
    }
}
