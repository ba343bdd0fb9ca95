//! Runs a [`Program`] over the matching spans of one trace.
//!
//! Structure is a property of nested-set numbers, so every relation is a range or equality
//! test between two lists of spans; each is answered in O((|L| + |R|) log |L|) with sorted
//! lefts, prefix maxima and hash sets, never by walking the trace.

use std::collections::{HashMap, HashSet};

use super::key::KeyType;
use super::program::*;

/// The columns of one span that the per-trace evaluation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRow {
    /// Nested-set left (0 = unknown).
    pub left: i32,
    /// Nested-set right.
    pub right: i32,
    /// Parent's left; −1 for a root.
    pub parent: i32,
    /// The span ID.
    pub span_id: [u8; 8],
    /// Bit `i` set when leaf `i` matched.
    pub leaves: u64,
    /// Aggregate inputs (`None` = nil).
    pub values: Vec<Option<f64>>,
    /// `by()` keys (`None` = nil).
    pub keys: Vec<Option<String>>,
}

impl SpanRow {
    fn leaf(&self, i: usize) -> bool {
        self.leaves & (1u64 << i) != 0
    }

    fn numbered(&self) -> bool {
        self.left != 0 && self.right != 0 && self.parent != 0
    }
}

/// A set of spans of one trace (indexes into the rows), with the attributes stages gave it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Spanset {
    /// Row indexes, ascending, no duplicates.
    pub spans: Vec<usize>,
    /// `by(...)` labels and their typed keys.
    pub attrs: Vec<(String, Option<String>)>,
}

/// The one error TraceQL raises per trace at run time.
pub const MULTIPLE_SPANSETS: &str = "spanset operators are not supported for multiple spansets \
     per trace. consider using coalesce()";

#[derive(Clone, Copy)]
enum Rel {
    /// target.parent == source.left
    Child,
    /// target.left == source.parent
    Parent,
    /// source strictly contains target
    Descendant,
    /// target strictly contains source
    Ancestor,
    /// same parent, different span
    Sibling,
}

impl Rel {
    fn inverse(self) -> Rel {
        match self {
            Rel::Child => Rel::Parent,
            Rel::Parent => Rel::Child,
            Rel::Descendant => Rel::Ancestor,
            Rel::Ancestor => Rel::Descendant,
            Rel::Sibling => Rel::Sibling,
        }
    }
}

enum Form {
    Plain,
    Not,
    Union,
}

fn structural(op: SetOp) -> Option<(Rel, Form)> {
    use SetOp::*;
    Some(match op {
        Child => (Rel::Child, Form::Plain),
        Parent => (Rel::Parent, Form::Plain),
        Descendant => (Rel::Descendant, Form::Plain),
        Ancestor => (Rel::Ancestor, Form::Plain),
        Sibling => (Rel::Sibling, Form::Plain),
        NotChild => (Rel::Child, Form::Not),
        NotParent => (Rel::Parent, Form::Not),
        NotDescendant => (Rel::Descendant, Form::Not),
        NotAncestor => (Rel::Ancestor, Form::Not),
        NotSibling => (Rel::Sibling, Form::Not),
        UnionChild => (Rel::Child, Form::Union),
        UnionParent => (Rel::Parent, Form::Union),
        UnionDescendant => (Rel::Descendant, Form::Union),
        UnionAncestor => (Rel::Ancestor, Form::Union),
        UnionSibling => (Rel::Sibling, Form::Union),
        And | Union => return None,
    })
}

/// Evaluates `program` over `rows` (the trace's spans that matched at least one leaf).
pub fn run(program: &Program, rows: &[SpanRow]) -> Result<Vec<Spanset>, String> {
    let all = Spanset {
        spans: (0..rows.len()).collect(),
        attrs: Vec::new(),
    };
    Eval { rows }.pipeline(&program.pipeline, vec![all])
}

struct Eval<'a> {
    rows: &'a [SpanRow],
}

impl Eval<'_> {
    fn pipeline(&self, p: &Pipeline, mut sets: Vec<Spanset>) -> Result<Vec<Spanset>, String> {
        for stage in &p.stages {
            sets = match stage {
                Stage::Spanset(e) => {
                    let mut out = Vec::new();
                    for s in &sets {
                        out.extend(self.set_expr(e, s)?);
                    }
                    out
                }
                Stage::Scalar(f) => sets
                    .into_iter()
                    .filter_map(|mut s| {
                        let a = self.scalar(&f.lhs, &s)?;
                        if !f.op.holds(a, self.scalar(&f.rhs, &s)?) {
                            return None;
                        }
                        // An aggregate compared with a number joins the spanset's attributes,
                        // as Tempo's `count() > 2` shows `count()`.
                        if let (Scalar::Agg { op, value, shown }, Scalar::Num(_)) = (&f.lhs, &f.rhs)
                        {
                            let float = shown
                                .typed
                                .zip(*value)
                                .map(|(k, v)| self.float_shown(*op, v, k, &s));
                            let value = shown.key(*op, a, float);
                            merge_attrs(&mut s.attrs, vec![(shown.label.clone(), Some(value))]);
                        }
                        Some(s)
                    })
                    .collect(),
                Stage::By { key, label } => self.by(sets, *key, label),
                Stage::Coalesce => coalesce(sets),
            };
            if sets.is_empty() {
                break;
            }
        }
        Ok(sets)
    }

    fn set_expr(&self, e: &SetExpr, input: &Spanset) -> Result<Vec<Spanset>, String> {
        match e {
            SetExpr::Leaf(i) => {
                let spans: Vec<usize> = input
                    .spans
                    .iter()
                    .copied()
                    .filter(|&r| self.rows[r].leaf(*i))
                    .collect();
                Ok(non_empty(spans, input.attrs.clone()))
            }
            SetExpr::Pipeline(p) => self.pipeline(p, vec![input.clone()]),
            SetExpr::Op { op, lhs, rhs } => {
                let l = self.set_expr(lhs, input)?;
                let r = self.set_expr(rhs, input)?;
                match structural(*op) {
                    None => Ok(logical(*op, l, r)),
                    Some((rel, form)) => {
                        if l.len() > 1 || r.len() > 1 {
                            return Err(MULTIPLE_SPANSETS.to_string());
                        }
                        let (Some(r), l) = (r.into_iter().next(), l.into_iter().next()) else {
                            return Ok(Vec::new());
                        };
                        let l = l.unwrap_or_default();
                        Ok(self.relate(rel, form, &l, r))
                    }
                }
            }
        }
    }

    fn relate(&self, rel: Rel, form: Form, l: &Spanset, r: Spanset) -> Vec<Spanset> {
        match form {
            Form::Plain => {
                let hit = self.any_related(rel, &r.spans, &l.spans);
                non_empty(pick(&r.spans, &hit, true), r.attrs)
            }
            Form::Not => {
                let hit = self.any_related(rel, &r.spans, &l.spans);
                non_empty(pick(&r.spans, &hit, false), r.attrs)
            }
            Form::Union => {
                let r_hit = self.any_related(rel, &r.spans, &l.spans);
                let l_hit = self.any_related(rel.inverse(), &l.spans, &r.spans);
                let mut spans = pick(&r.spans, &r_hit, true);
                if spans.is_empty() {
                    return Vec::new();
                }
                spans.extend(pick(&l.spans, &l_hit, true));
                spans.sort_unstable();
                spans.dedup();
                let mut attrs = l.attrs.clone();
                merge_attrs(&mut attrs, r.attrs);
                vec![Spanset { spans, attrs }]
            }
        }
    }

    /// For each target, whether some source stands in `rel` to it ("target is REL of source").
    fn any_related(&self, rel: Rel, targets: &[usize], sources: &[usize]) -> Vec<bool> {
        let rows = self.rows;
        let src: Vec<&SpanRow> = sources
            .iter()
            .map(|&i| &rows[i])
            .filter(|s| s.numbered())
            .collect();
        let tgt = targets.iter().map(|&i| (i, &rows[i]));
        match rel {
            Rel::Child => {
                let lefts: HashSet<i32> = src.iter().map(|s| s.left).collect();
                tgt.map(|(_, t)| t.numbered() && lefts.contains(&t.parent))
                    .collect()
            }
            Rel::Parent => {
                let parents: HashSet<i32> = src.iter().map(|s| s.parent).collect();
                tgt.map(|(_, t)| t.numbered() && parents.contains(&t.left))
                    .collect()
            }
            Rel::Descendant => {
                // Sources sorted by left with the running maximum of right: some source that
                // starts before the target also ends after it iff that maximum exceeds it.
                let mut by_left: Vec<(i32, i32)> = src.iter().map(|s| (s.left, s.right)).collect();
                by_left.sort_unstable();
                let mut max_right = Vec::with_capacity(by_left.len());
                let mut m = i32::MIN;
                for &(_, r) in &by_left {
                    m = m.max(r);
                    max_right.push(m);
                }
                tgt.map(|(_, t)| {
                    let n = by_left.partition_point(|&(l, _)| l < t.left);
                    t.numbered() && n > 0 && max_right[n - 1] > t.right
                })
                .collect()
            }
            Rel::Ancestor => {
                // Intervals nest, so a source starting inside the target lies inside it.
                let mut lefts: Vec<i32> = src.iter().map(|s| s.left).collect();
                lefts.sort_unstable();
                tgt.map(|(_, t)| {
                    let n = lefts.partition_point(|&l| l <= t.left);
                    t.numbered() && n < lefts.len() && lefts[n] < t.right
                })
                .collect()
            }
            Rel::Sibling => {
                let mut by_parent: HashMap<i32, Vec<usize>> = HashMap::new();
                for (&i, s) in sources.iter().zip(sources.iter().map(|&i| &rows[i])) {
                    if s.numbered() {
                        by_parent.entry(s.parent).or_default().push(i);
                    }
                }
                tgt.map(|(i, t)| {
                    t.numbered()
                        && by_parent
                            .get(&t.parent)
                            .is_some_and(|v| v.iter().any(|&j| j != i))
                })
                .collect()
            }
        }
    }

    fn scalar(&self, s: &Scalar, set: &Spanset) -> Option<f64> {
        match s {
            Scalar::Num(n) => Some(*n),
            Scalar::Bin { op, lhs, rhs } => {
                Some(op.apply(self.scalar(lhs, set)?, self.scalar(rhs, set)?))
            }
            Scalar::Agg { op, value, .. } => {
                if *op == AggOp::Count {
                    return Some(set.spans.len() as f64);
                }
                let idx = (*value)?;
                let vals = set
                    .spans
                    .iter()
                    .filter_map(|&r| self.rows[r].values.get(idx).copied().flatten());
                let (mut n, mut sum, mut min, mut max) =
                    (0usize, 0.0, f64::INFINITY, f64::NEG_INFINITY);
                for v in vals {
                    n += 1;
                    sum += v;
                    min = min.min(v);
                    max = max.max(v);
                }
                if n == 0 {
                    return None;
                }
                Some(match op {
                    AggOp::Avg => sum / n as f64,
                    AggOp::Sum => sum,
                    AggOp::Min => min,
                    AggOp::Max => max,
                    AggOp::Count => n as f64,
                })
            }
        }
    }

    /// Whether aggregate `op` of value `value` over `set` is a float, by the types key `key`
    /// holds: a minimum or maximum has the type of the span that has it (the first, as Tempo
    /// keeps the first on ties), a sum is a float when any of its terms is.
    fn float_shown(&self, op: AggOp, value: usize, key: usize, set: &Spanset) -> bool {
        let float = |r: usize| {
            self.rows[r]
                .keys
                .get(key)
                .and_then(|k| k.as_deref())
                .is_some_and(|k| k.starts_with(KeyType::Float.tag()))
        };
        let mut valued = set
            .spans
            .iter()
            .filter_map(|&r| Some((r, self.rows[r].values.get(value).copied().flatten()?)));
        let better = |v: f64, best: f64| match op {
            AggOp::Min => v < best,
            _ => v > best,
        };
        match op {
            AggOp::Min | AggOp::Max => valued
                .fold(None, |best: Option<(usize, f64)>, (r, v)| match best {
                    Some((_, b)) if !better(v, b) => best,
                    _ => Some((r, v)),
                })
                .is_some_and(|(r, _)| float(r)),
            _ => valued.any(|(r, _)| float(r)),
        }
    }

    fn by(&self, sets: Vec<Spanset>, key: usize, label: &str) -> Vec<Spanset> {
        let mut out = Vec::new();
        for set in sets {
            let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
            for &r in &set.spans {
                let k = self.rows[r].keys.get(key).cloned().flatten();
                match groups.iter_mut().find(|(g, _)| *g == k) {
                    Some((_, v)) => v.push(r),
                    None => groups.push((k, vec![r])),
                }
            }
            for (k, spans) in groups {
                let mut attrs = set.attrs.clone();
                merge_attrs(&mut attrs, vec![(label.to_string(), k)]);
                out.push(Spanset { spans, attrs });
            }
        }
        out
    }
}

fn non_empty(spans: Vec<usize>, attrs: Vec<(String, Option<String>)>) -> Vec<Spanset> {
    if spans.is_empty() {
        Vec::new()
    } else {
        vec![Spanset { spans, attrs }]
    }
}

fn pick(spans: &[usize], hit: &[bool], want: bool) -> Vec<usize> {
    spans
        .iter()
        .zip(hit)
        .filter(|(_, h)| **h == want)
        .map(|(s, _)| *s)
        .collect()
}

fn merge_attrs(into: &mut Vec<(String, Option<String>)>, more: Vec<(String, Option<String>)>) {
    for (k, v) in more {
        match into.iter_mut().find(|(x, _)| *x == k) {
            Some(slot) => slot.1 = v,
            None => into.push((k, v)),
        }
    }
}

fn union(a: &Spanset, b: &Spanset) -> Spanset {
    let mut spans = a.spans.clone();
    spans.extend(&b.spans);
    spans.sort_unstable();
    spans.dedup();
    let mut attrs = a.attrs.clone();
    merge_attrs(&mut attrs, b.attrs.clone());
    Spanset { spans, attrs }
}

fn logical(op: SetOp, l: Vec<Spanset>, r: Vec<Spanset>) -> Vec<Spanset> {
    match (l.is_empty(), r.is_empty()) {
        (true, true) => Vec::new(),
        (false, true) | (true, false) if op == SetOp::And => Vec::new(),
        (false, true) => l,
        (true, false) => r,
        (false, false) => {
            let mut out = Vec::new();
            for a in &l {
                for b in &r {
                    out.push(union(a, b));
                }
            }
            out
        }
    }
}

fn coalesce(sets: Vec<Spanset>) -> Vec<Spanset> {
    if sets.is_empty() {
        return sets;
    }
    let mut spans: Vec<usize> = sets.iter().flat_map(|s| s.spans.iter().copied()).collect();
    spans.sort_unstable();
    spans.dedup();
    vec![Spanset {
        spans,
        attrs: Vec::new(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tempo's worked example (tempo-compat.md §7.4): A(1,8,-1) { B(2,5,1) { D(3,4,2) },
    /// C(6,7,1) }. Leaves: bit 0 = "is A", 1 = "is B", 2 = "is C", 3 = "is D".
    fn tree() -> Vec<SpanRow> {
        let row = |left, right, parent, leaf: u64, id: u8| SpanRow {
            left,
            right,
            parent,
            span_id: [id; 8],
            leaves: 1 << leaf,
            values: vec![Some(f64::from(right - left))],
            keys: vec![Some(format!(
                "s:{}",
                if leaf == 1 || leaf == 3 { "x" } else { "y" }
            ))],
        };
        vec![
            row(1, 8, -1, 0, b'A'),
            row(2, 5, 1, 1, b'B'),
            row(6, 7, 1, 2, b'C'),
            row(3, 4, 2, 3, b'D'),
        ]
    }

    fn names(rows: &[SpanRow], sets: &[Spanset]) -> Vec<String> {
        sets.iter()
            .map(|s| {
                s.spans
                    .iter()
                    .map(|&i| rows[i].span_id[0] as char)
                    .collect()
            })
            .collect()
    }

    fn op(op: SetOp, l: usize, r: usize) -> Vec<String> {
        let rows = tree();
        let p = Program {
            pipeline: Pipeline {
                stages: vec![Stage::Spanset(SetExpr::Op {
                    op,
                    lhs: Box::new(SetExpr::Leaf(l)),
                    rhs: Box::new(SetExpr::Leaf(r)),
                })],
            },
            leaves: 4,
            values: 1,
            keys: 1,
        };
        names(&rows, &run(&p, &rows).unwrap())
    }

    #[test]
    fn structural_operators_follow_tempos_rules() {
        use SetOp::*;
        let (a, b, c, d) = (0, 1, 2, 3);
        assert_eq!(op(Child, a, b), ["B"]);
        assert!(op(Child, a, d).is_empty());
        assert_eq!(op(Descendant, a, d), ["D"]);
        assert_eq!(op(Parent, d, b), ["B"]);
        assert_eq!(op(Ancestor, d, a), ["A"]);
        assert!(op(Ancestor, c, b).is_empty());
        assert_eq!(op(Sibling, b, c), ["C"]);
        assert!(op(Sibling, b, b).is_empty());
        assert_eq!(op(NotChild, d, c), ["C"]);
        assert!(op(NotChild, a, c).is_empty());
        assert_eq!(op(NotDescendant, c, d), ["D"]);
        assert_eq!(op(UnionChild, a, b), ["AB"]);
        assert_eq!(op(UnionDescendant, b, d), ["BD"]);
        assert_eq!(op(UnionAncestor, d, a), ["AD"]);
        assert_eq!(op(UnionSibling, c, b), ["BC"]);
        assert_eq!(op(And, a, d), ["AD"]);
        assert_eq!(op(Union, a, d), ["AD"]);
    }

    #[test]
    fn pipelines_aggregate_split_and_merge() {
        let rows: Vec<SpanRow> = tree()
            .into_iter()
            .map(|mut r| {
                r.leaves |= 1 << 4;
                r
            })
            .collect();
        let every = Stage::Spanset(SetExpr::Leaf(4));
        let run_stages = |stages: Vec<Stage>| {
            let p = Program {
                pipeline: Pipeline { stages },
                leaves: 5,
                values: 1,
                keys: 1,
            };
            run(&p, &rows).unwrap()
        };
        let by = Stage::By {
            key: 0,
            label: "by(.k)".into(),
        };
        let sets = run_stages(vec![every.clone(), by.clone()]);
        assert_eq!(names(&rows, &sets), ["AC", "BD"]);
        assert_eq!(
            sets[1].attrs,
            [("by(.k)".to_string(), Some("s:x".to_string()))]
        );
        let count_gt = |n: f64| {
            Stage::Scalar(ScalarFilter {
                op: Cmp::Gt,
                lhs: Scalar::Agg {
                    op: AggOp::Count,
                    value: None,
                    shown: AggShown {
                        label: "count()".into(),
                        ty: AggType::Int,
                        typed: None,
                    },
                },
                rhs: Scalar::Num(n),
            })
        };
        assert_eq!(run_stages(vec![every.clone(), count_gt(3.0)]).len(), 1);
        assert!(run_stages(vec![every.clone(), count_gt(4.0)]).is_empty());
        // avg(right - left) over A(7), C(1) = 4; over B(3), D(1) = 2.
        let avg_gt = Stage::Scalar(ScalarFilter {
            op: Cmp::Gt,
            lhs: Scalar::Agg {
                op: AggOp::Avg,
                value: Some(0),
                shown: AggShown {
                    label: "avg(.w)".into(),
                    ty: AggType::Attribute,
                    typed: None,
                },
            },
            rhs: Scalar::Num(3.0),
        });
        let sets = run_stages(vec![every.clone(), by.clone(), avg_gt]);
        assert_eq!(names(&rows, &sets), ["AC"]);
        assert_eq!(
            sets[0].attrs,
            [
                ("by(.k)".to_string(), Some("s:y".to_string())),
                ("avg(.w)".to_string(), Some("f:4".to_string()))
            ]
        );
        let counted = run_stages(vec![every.clone(), count_gt(3.0)]);
        assert_eq!(
            counted[0].attrs,
            [("count()".to_string(), Some("i:4".to_string()))]
        );
        let sets = run_stages(vec![every, by, Stage::Coalesce]);
        assert_eq!(names(&rows, &sets), ["ABCD"]);
    }

    #[test]
    fn structure_over_several_spansets_is_an_error() {
        let rows = tree();
        let grouped = Pipeline {
            stages: vec![
                Stage::Spanset(SetExpr::Op {
                    op: SetOp::Union,
                    lhs: Box::new(SetExpr::Leaf(0)),
                    rhs: Box::new(SetExpr::Leaf(1)),
                }),
                Stage::By {
                    key: 0,
                    label: "by(.k)".into(),
                },
            ],
        };
        let p = Program {
            pipeline: Pipeline {
                stages: vec![Stage::Spanset(SetExpr::Op {
                    op: SetOp::Child,
                    lhs: Box::new(SetExpr::Pipeline(Box::new(grouped))),
                    rhs: Box::new(SetExpr::Leaf(2)),
                })],
            },
            leaves: 4,
            values: 1,
            keys: 1,
        };
        assert_eq!(run(&p, &rows).unwrap_err(), MULTIPLE_SPANSETS);
    }
}
