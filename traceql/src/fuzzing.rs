//! Random ASTs and a mutation fuzzer, shared by the property tests and `examples/fuzz.rs`.
//!
//! [`Gen`] builds ASTs of the shapes the parser produces (so `parse(print(ast)) == ast` must
//! hold for every one); [`fuzz`] throws random text, mutated seed queries and printed random
//! ASTs at the front end and reports any panic or round-trip failure.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use crate::ast::*;

/// This crate's directory: at run time when cargo provides it (the compile-time path goes stale
/// when a target directory built in another checkout is reused).
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("src/traceql.pest").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where Tempo's corpus lives: `shared/` next to the project folder.
pub fn corpus_path() -> PathBuf {
    crate_dir().join("../../shared/conformance/traceql/test_examples.yaml")
}

/// Runs `f` on a thread with the 8 MiB stack the server gives its workers.
pub fn on_server_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::Builder::new().stack_size(8 << 20).spawn(f) {
        Ok(h) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(e) => panic!("cannot start a thread: {e}"),
    }
}

/// SplitMix64: small, seedable, good enough to drive generators.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NAME_CHARS: &[char] = &[
    'a', 'b', 'z', '_', '.', '-', '+', '0', '7', ' ', '"', '\\', '/', '*', '(', '}', '=', '~', '!',
    '&', '|', '^', ',', '<', 'é', 'µ', '\u{a0}', '\t', ':', '`', '#',
];
const STRING_CHARS: &[char] = &[
    'a', 'Z', ' ', '"', '\\', '\n', '\t', '\r', '\0', '\u{7f}', 'é', '😀', '`', '{', '*', '/',
];

/// Builds random ASTs in the shapes the parser produces.
pub struct Gen {
    /// The random source.
    pub rng: Rng,
}

impl Gen {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
        }
    }

    fn text(&mut self, alphabet: &[char], max: usize) -> String {
        let n = self.rng.below(max + 1);
        (0..n).map(|_| *self.rng.pick(alphabet)).collect()
    }

    fn number(&mut self, negative_ok: bool) -> Static {
        let sign = if negative_ok && self.rng.one_in(3) {
            -1
        } else {
            1
        };
        match self.rng.below(4) {
            0 => Static::Int(sign * (self.rng.next_u64() >> self.rng.below(64).max(1)) as i64),
            1 => Static::Int(sign * self.rng.below(100) as i64),
            2 => {
                let f = f64::from_bits(self.rng.next_u64() >> 2).abs();
                Static::Float(sign as f64 * if f.is_finite() { f } else { 0.5 })
            }
            _ => Static::Float(sign as f64 * self.rng.below(1000) as f64 / 8.0),
        }
    }

    fn duration(&mut self, negative_ok: bool) -> Static {
        let d = (self.rng.next_u64() >> self.rng.below(64).max(1)) as i64;
        Static::Duration(if negative_ok && self.rng.one_in(3) {
            -d
        } else {
            d
        })
    }

    /// A literal as it can appear inside `{ }` (never negative: `-` is an operator there).
    pub fn static_value(&mut self) -> Static {
        match self.rng.below(10) {
            0 => Static::Nil,
            1 => Static::Bool(self.rng.one_in(2)),
            2 => self.number(false),
            3 => self.duration(false),
            4 => Static::Status(*self.rng.pick(&[Status::Error, Status::Ok, Status::Unset])),
            5 => Static::Kind(*self.rng.pick(&[
                Kind::Unspecified,
                Kind::Internal,
                Kind::Client,
                Kind::Server,
                Kind::Producer,
                Kind::Consumer,
            ])),
            6 => Static::Int(*self.rng.pick(&[i64::MIN, i64::MAX, 0])),
            _ => Static::Str(self.text(STRING_CHARS, 6)),
        }
    }

    /// An intrinsic or attribute.
    pub fn field_ref(&mut self) -> FieldRef {
        if self.rng.one_in(3) {
            return FieldRef::Intrinsic(*self.rng.pick(&Intrinsic::ALL));
        }
        let scope = *self.rng.pick(&[
            Scope::None,
            Scope::Span,
            Scope::Resource,
            Scope::Event,
            Scope::Link,
            Scope::Instrumentation,
        ]);
        let parent =
            matches!(scope, Scope::None | Scope::Span | Scope::Resource) && self.rng.one_in(5);
        let mut name = self.text(NAME_CHARS, 8);
        if self.rng.one_in(6) {
            name = format!(
                "{}.{name}",
                self.rng.pick(&["span", "resource", "parent", "3"])
            );
        }
        FieldRef::Attribute(Attribute {
            scope,
            parent,
            name,
        })
    }

    /// A field expression of at most `depth` levels.
    pub fn field(&mut self, depth: usize) -> FieldExpr {
        let kind = if depth == 0 || self.rng.one_in(3) {
            if self.rng.one_in(2) {
                FieldKind::Static(self.static_value())
            } else {
                FieldKind::Ref(self.field_ref())
            }
        } else if self.rng.one_in(5) {
            FieldKind::Unary {
                op: *self.rng.pick(&[UnaryOp::Neg, UnaryOp::Not]),
                expr: Box::new(self.field(depth - 1)),
            }
        } else {
            use BinaryOp::*;
            FieldKind::Binary {
                op: *self.rng.pick(&[
                    And, Or, Eq, Neq, Lt, Lte, Gt, Gte, Regex, NotRegex, Add, Sub, Mul, Div, Mod,
                    Pow,
                ]),
                lhs: Box::new(self.field(depth - 1)),
                rhs: Box::new(self.field(depth - 1)),
            }
        };
        FieldExpr {
            kind,
            span: Span::default(),
        }
    }

    fn filter(&mut self) -> SpansetFilter {
        SpansetFilter {
            expr: (!self.rng.one_in(4)).then(|| self.field(3)),
            span: Span::default(),
        }
    }

    fn spanset(&mut self, depth: usize, pipelines: bool) -> SpansetExpr {
        if depth == 0 || self.rng.one_in(3) {
            if pipelines && self.rng.one_in(2) {
                let mut p = self.pipeline(2);
                if p.stages.len() == 1 && matches!(p.stages[0], Stage::Spanset(_)) {
                    p.stages.push(Stage::Coalesce);
                }
                return SpansetExpr::Pipeline(Box::new(p));
            }
            return SpansetExpr::Filter(self.filter());
        }
        SpansetExpr::Op {
            op: *self.rng.pick(&SpansetOp::ALL),
            lhs: Box::new(self.spanset(depth - 1, pipelines)),
            rhs: Box::new(self.spanset(depth - 1, pipelines)),
        }
    }

    fn aggregate(&mut self) -> Aggregate {
        let op = *self.rng.pick(&[
            AggregateOp::Count,
            AggregateOp::Avg,
            AggregateOp::Max,
            AggregateOp::Min,
            AggregateOp::Sum,
        ]);
        Aggregate {
            op,
            expr: (op != AggregateOp::Count).then(|| self.field(2)),
            span: Span::default(),
        }
    }

    fn scalar_static(&mut self) -> Static {
        let v = if self.rng.one_in(3) {
            self.duration(true)
        } else {
            self.number(true)
        };
        match v {
            Static::Int(i64::MIN) => Static::Int(0),
            v => v,
        }
    }

    /// Scalar arithmetic; `aggregate` forces one aggregate into it.
    fn scalar(&mut self, depth: usize, aggregate: bool) -> ScalarExpr {
        if depth == 0 || self.rng.one_in(3) {
            return if aggregate || self.rng.one_in(2) {
                ScalarExpr::Aggregate(self.aggregate())
            } else {
                ScalarExpr::Static(self.scalar_static(), Span::default())
            };
        }
        let left = self.rng.one_in(2);
        ScalarExpr::Binary {
            op: self.arith(),
            lhs: Box::new(self.scalar(depth - 1, aggregate && left)),
            rhs: Box::new(self.scalar(depth - 1, aggregate && !left)),
        }
    }

    fn arith(&mut self) -> BinaryOp {
        use BinaryOp::*;
        *self.rng.pick(&[Add, Sub, Mul, Div, Mod, Pow])
    }

    fn comparison(&mut self) -> BinaryOp {
        use BinaryOp::*;
        *self.rng.pick(&[Eq, Neq, Lt, Lte, Gt, Gte])
    }

    fn stage(&mut self, first: bool) -> Stage {
        match self.rng.below(if first { 4 } else { 5 }) {
            0 => Stage::Spanset(self.spanset(2, false)),
            1 => Stage::ScalarFilter(ScalarFilter {
                op: self.comparison(),
                lhs: self.scalar(2, true),
                rhs: self.scalar(2, false),
                span: Span::default(),
            }),
            2 => Stage::By(self.field(2)),
            3 => Stage::Select(
                (0..1 + self.rng.below(3))
                    .map(|_| self.field_ref())
                    .collect(),
                Span::default(),
            ),
            _ => Stage::Coalesce,
        }
    }

    /// A pipeline of up to `max` stages.
    pub fn pipeline(&mut self, max: usize) -> Pipeline {
        let n = 1 + self.rng.below(max);
        Pipeline {
            stages: (0..n).map(|i| self.stage(i == 0)).collect(),
            span: Span::default(),
        }
    }

    fn metrics_fn(&mut self) -> MetricsFn {
        match self.rng.below(9) {
            0 => MetricsFn::Rate,
            1 => MetricsFn::CountOverTime,
            2 => MetricsFn::MinOverTime(self.field_ref()),
            3 => MetricsFn::MaxOverTime(self.field_ref()),
            4 => MetricsFn::SumOverTime(self.field_ref()),
            5 => MetricsFn::AvgOverTime(self.field_ref()),
            6 => MetricsFn::HistogramOverTime(self.field_ref()),
            7 => MetricsFn::QuantileOverTime(
                self.field_ref(),
                (0..1 + self.rng.below(3))
                    .map(|_| self.rng.below(1001) as f64 / 1000.0)
                    .collect(),
            ),
            _ => MetricsFn::Compare {
                filter: self.filter(),
                top_n: self.rng.below(2000) as i64,
                window: self.rng.one_in(2).then(|| {
                    (
                        self.rng.below(1 << 30) as i64,
                        self.rng.below(1 << 30) as i64,
                    )
                }),
            },
        }
    }

    fn second_stage(&mut self) -> SecondStage {
        match self.rng.below(3) {
            0 => SecondStage::TopK(self.rng.below(20) as i64, Span::default()),
            1 => SecondStage::BottomK(self.rng.below(20) as i64, Span::default()),
            _ => {
                let v = match self.number(true) {
                    Static::Int(i) => i as f64,
                    Static::Float(f) => f,
                    _ => 0.0,
                };
                SecondStage::Filter(self.comparison(), v)
            }
        }
    }

    fn metrics_query(&mut self) -> MetricsQuery {
        MetricsQuery {
            pipeline: self.pipeline(2),
            function: self.metrics_fn(),
            by: (0..self.rng.below(3)).map(|_| self.field_ref()).collect(),
            stages: (0..self.rng.below(3))
                .map(|_| self.second_stage())
                .collect(),
            span: Span::default(),
        }
    }

    /// Metrics arithmetic that contains at least one query when `query` is set.
    fn metrics(&mut self, depth: usize, query: bool) -> MetricsExpr {
        if depth == 0 || self.rng.one_in(3) {
            if query || self.rng.one_in(2) {
                return MetricsExpr::Query(Box::new(self.metrics_query()));
            }
            let n = match self.number(true) {
                Static::Int(i64::MIN) => Static::Int(1),
                n => n,
            };
            return MetricsExpr::Number(n);
        }
        let left = self.rng.one_in(2);
        let binary = MetricsExpr::Binary {
            op: *self
                .rng
                .pick(&[BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div]),
            lhs: Box::new(self.metrics(depth - 1, query && left)),
            rhs: Box::new(self.metrics(depth - 1, query && !left)),
        };
        if query && self.rng.one_in(3) {
            MetricsExpr::Staged {
                expr: Box::new(binary),
                stages: (0..1 + self.rng.below(2))
                    .map(|_| self.second_stage())
                    .collect(),
            }
        } else {
            binary
        }
    }

    fn scalar_pipeline_expr(&mut self, depth: usize) -> ScalarExpr {
        if depth == 0 || self.rng.one_in(2) {
            return ScalarExpr::Pipeline(Box::new(self.pipeline(2)), self.aggregate());
        }
        ScalarExpr::Binary {
            op: self.arith(),
            lhs: Box::new(self.scalar_pipeline_expr(depth - 1)),
            rhs: Box::new(self.scalar_pipeline_expr(depth - 1)),
        }
    }

    fn hint(&mut self) -> Hint {
        let value = match self.rng.below(3) {
            0 => self.number(true),
            1 => self.duration(true),
            _ => self.static_value(),
        };
        Hint {
            name: self
                .rng
                .pick(&["sample", "most_recent", "_x9", "skip_ast_transformations"])
                .to_string(),
            value,
        }
    }

    /// A whole query of any root form.
    pub fn query(&mut self) -> Query {
        let body = match self.rng.below(5) {
            0 | 1 => QueryBody::Spans(self.pipeline(4)),
            2 => {
                // `(pipeline) OP (pipeline)` needs an operator and a pipeline operand.
                let mut e = self.spanset(3, true);
                if !matches!(e, SpansetExpr::Op { .. }) {
                    e = SpansetExpr::Op {
                        op: *self.rng.pick(&SpansetOp::ALL),
                        lhs: Box::new(e),
                        rhs: Box::new(SpansetExpr::Pipeline(Box::new(Pipeline {
                            stages: vec![Stage::By(self.field(1)), Stage::Coalesce],
                            span: Span::default(),
                        }))),
                    };
                }
                QueryBody::Spans(Pipeline {
                    stages: vec![Stage::Spanset(e)],
                    span: Span::default(),
                })
            }
            3 => QueryBody::Metrics(self.metrics(3, true)),
            _ => QueryBody::ScalarPipelines(ScalarFilter {
                op: self.comparison(),
                lhs: self.scalar_pipeline_expr(2),
                rhs: if self.rng.one_in(2) {
                    self.scalar_pipeline_expr(2)
                } else {
                    let v = match self.static_value() {
                        Static::Int(i64::MIN) => Static::Int(-1),
                        v => v,
                    };
                    ScalarExpr::Static(v, Span::default())
                },
                span: Span::default(),
            }),
        };
        Query {
            body,
            hints: (0..self.rng.below(3)).map(|_| self.hint()).collect(),
        }
    }
}

/// What a fuzz run found.
#[derive(Debug, Default)]
pub struct FuzzReport {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs that parsed.
    pub parsed: u64,
    /// Inputs that also validated.
    pub valid: u64,
    /// The first failure: the input and what went wrong.
    pub failure: Option<(String, String)>,
}

const TOKENS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    " ",
    ".",
    ",",
    "|",
    "&&",
    "||",
    "=",
    "!=",
    "=~",
    "!~",
    ">",
    ">=",
    "<",
    "<=",
    ">>",
    "<<",
    "~",
    "!>",
    "!<",
    "&>",
    "&<",
    "&>>",
    "&<<",
    "&~",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "!",
    "\"",
    "`",
    "\\",
    "1",
    "1.5",
    "10s",
    "1d2h",
    ".5",
    "µs",
    "nil",
    "true",
    "ok",
    "server",
    "span.",
    "resource.",
    "parent.",
    ".a",
    "name",
    "duration",
    "span:id",
    "trace:",
    "count()",
    "avg(",
    "by(",
    "select(",
    "coalesce()",
    "rate()",
    "quantile_over_time(",
    "compare(",
    "topk(",
    "with(",
    "sample=",
    "//",
    "/*",
    "*/",
    "\n",
    "minInt",
    "é",
];

/// Checks one input: no panic, and a query that parses prints to text that parses back to the
/// same AST. Returns (parsed, validated) or what went wrong.
pub fn check_one(input: &str) -> Result<(bool, bool), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(bool, bool), String> {
        let Ok(ast) = crate::parse(input) else {
            return Ok((false, false));
        };
        let printed = ast.to_string();
        match crate::parse(&printed) {
            Ok(again) if again == ast => {}
            Ok(_) => return Err(format!("printed as {printed:?}, which parses differently")),
            Err(e) => return Err(format!("printed as {printed:?}, which does not parse: {e}")),
        }
        let valid = crate::validate(input, &ast).is_ok();
        if valid {
            let _ = crate::compile(input);
        }
        Ok((true, valid))
    }));
    outcome.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("panicked: {msg}"))
    })
}

/// Runs `inputs` fuzz inputs from `seed`: a third random token soup, a third mutations of the
/// `seeds` queries, a third printed random ASTs. Stops at the first failure.
pub fn fuzz(seeds: &[String], inputs: u64, seed: u64) -> FuzzReport {
    let mut report = FuzzReport::default();
    for input in fuzz_inputs(seeds, inputs, seed) {
        report.inputs += 1;
        match check_one(&input) {
            Ok((p, v)) => {
                report.parsed += p as u64;
                report.valid += v as u64;
            }
            Err(why) => {
                report.failure = Some((input, why));
                break;
            }
        }
    }
    report
}

/// The fuzzer's inputs from `seed`, as [`fuzz`] tries them: also what the server is swept
/// with (every one must get an answer, never a 5xx).
pub fn fuzz_inputs(seeds: &[String], inputs: u64, seed: u64) -> impl Iterator<Item = String> {
    let mut g = Gen::new(seed);
    (0..inputs).map(move |i| match i % 3 {
        0 => (0..1 + g.rng.below(24))
            .map(|_| *g.rng.pick(TOKENS))
            .collect::<String>(),
        1 if !seeds.is_empty() => mutate(&mut g.rng, seeds),
        _ => g.query().to_string(),
    })
}

/// Tempo's corpus ([`corpus_path`]) by section (`valid`, `parse_fails`, ...). A section with
/// no entries (`dump:` alone) is empty.
pub fn corpus() -> std::io::Result<std::collections::BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(corpus_path())?;
    let sections: std::collections::BTreeMap<String, Option<Vec<String>>> =
        serde_yaml::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(sections
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// The queries of Tempo's corpus, every section; empty when it cannot be read.
pub fn corpus_queries() -> Vec<String> {
    corpus()
        .map(|m| m.into_values().flatten().collect())
        .unwrap_or_default()
}

fn mutate(rng: &mut Rng, seeds: &[String]) -> String {
    let mut s: Vec<char> = rng.pick(seeds).chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(s.len() + 1);
        match rng.below(4) {
            0 if at < s.len() => {
                s.remove(at);
            }
            1 => {
                for c in rng.pick(TOKENS).chars().rev() {
                    s.insert(at, c);
                }
            }
            2 => {
                // Splice a piece of another seed in.
                let other: Vec<char> = rng.pick(seeds).chars().collect();
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(12)).min(other.len());
                s.splice(at..at, other[from..to].iter().copied());
            }
            _ if at < s.len() => s[at] = *rng.pick(&['(', ')', '{', '}', '"', '|', ' ', '-', '!']),
            _ => {}
        }
    }
    s.into_iter().collect()
}
