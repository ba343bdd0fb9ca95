//! `traceql_spansets(program, left, right, parent, span_id, leaf..., value..., key...)`: the
//! per-trace evaluation of a TraceQL search as an aggregate grouped by `trace_id`.
//!
//! The planner filters spans by the OR of every leaf condition next to the scan, so this UDAF
//! only ever sees the spans that matched something, never whole traces. It returns the trace's
//! spansets as Arrow data ([`typed`]), or NULL when the trace has none. Search runs the same
//! evaluation ([`evaluate`]) in its own newest-first operator; metrics use this aggregate.

pub mod eval;
pub mod key;
pub mod program;
pub mod typed;

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray, FixedSizeBinaryArray,
    Float64Array, Int32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use parking_lot::Mutex;

use self::eval::SpanRow;
use self::program::Program;
use self::typed::{Encoder, FoundSet};

/// The UDAF's name.
pub const NAME: &str = "traceql_spansets";
/// Arguments before the leaves: program, then the [`SPAN_ARGS`] span columns.
const FIXED_ARGS: usize = 1 + SPAN_ARGS;
/// Span columns before the leaves: left, right, parent, span_id.
const SPAN_ARGS: usize = 4;
/// Most leaves a query may have (one bit each).
pub const MAX_LEAVES: usize = 64;

/// The per-trace TraceQL evaluator; see the module docs.
#[derive(Debug)]
pub struct TraceqlSpansets {
    signature: Signature,
    /// Parsing the program per group would dominate: keep the last one.
    parsed: Mutex<Option<(String, Arc<Program>)>>,
}

impl PartialEq for TraceqlSpansets {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TraceqlSpansets {}
impl std::hash::Hash for TraceqlSpansets {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        NAME.hash(state)
    }
}

impl Default for TraceqlSpansets {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
            parsed: Mutex::new(None),
        }
    }
}

impl TraceqlSpansets {
    fn program(&self, text: &str) -> Result<Arc<Program>> {
        let mut cache = self.parsed.lock();
        if let Some((t, p)) = cache.as_ref()
            && t == text
        {
            return Ok(p.clone());
        }
        let p: Program = match serde_json::from_str(text) {
            Ok(p) => p,
            Err(e) => return plan_err!("{NAME}: bad program: {e}"),
        };
        if p.leaves > MAX_LEAVES {
            return plan_err!(
                "a TraceQL query may have at most {MAX_LEAVES} spanset filters, this one has {}",
                p.leaves
            );
        }
        let p = Arc::new(p);
        *cache = Some((text.to_string(), p.clone()));
        Ok(p)
    }
}

impl AggregateUDFImpl for TraceqlSpansets {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(typed::data_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[rows]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SpansetsAccumulator {
            program: self.checked_program(&args)?,
            rows: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SpansetsGroups {
            program: self.checked_program(&args)?,
            groups: Vec::new(),
            held: 0,
        }))
    }
}

impl TraceqlSpansets {
    /// The program of the first (literal) argument, checked against the argument count.
    fn checked_program(&self, args: &AccumulatorArgs) -> Result<Arc<Program>> {
        let text = args
            .exprs
            .first()
            .and_then(|e| e.downcast_ref::<Literal>())
            .and_then(|l| match l.value() {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
                _ => None,
            });
        let Some(text) = text else {
            return plan_err!("{NAME}: the first argument must be a literal program");
        };
        let program = self.program(&text)?;
        let want = FIXED_ARGS + program.leaves + program.values + program.keys;
        if args.exprs.len() != want {
            return plan_err!(
                "{NAME}: expected {want} arguments, got {}",
                args.exprs.len()
            );
        }
        Ok(program)
    }
}

#[derive(Debug)]
struct SpansetsAccumulator {
    program: Arc<Program>,
    rows: Vec<SpanRow>,
}

fn downcast<'a, T: 'static>(a: &'a ArrayRef, what: &str) -> Result<&'a T> {
    match a.as_any().downcast_ref::<T>() {
        Some(t) => Ok(t),
        None => exec_err!("{NAME}: {what} has type {}", a.data_type()),
    }
}

impl Accumulator for SpansetsAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let cols = SpanColumns::new(&values[1..], &self.program)?;
        self.rows.extend((0..cols.len()).map(|i| cols.row(i)));
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut e = Encoder::default();
        e.append(evaluate_df(&self.program, &mut self.rows)?.as_deref());
        ScalarValue::try_from_array(&e.finish()?, 0)
    }

    fn size(&self) -> usize {
        size_of::<Self>() + rows_size(&self.rows)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(encode_state(&self.rows)))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(bin) = states.first() else {
            return Ok(());
        };
        let bin = downcast::<BinaryArray>(bin, "state")?;
        for b in bin.iter().flatten() {
            if decode_rows(b, &self.program, &mut self.rows).is_none() {
                return exec_err!("{NAME}: corrupt partial state");
            }
        }
        Ok(())
    }
}

/// Typed views of the per-span columns the evaluation reads: left, right, parent, span ID,
/// then the leaves, the aggregate inputs and the `by()` keys (Utf8), in the program's counts.
pub struct SpanColumns<'a> {
    left: &'a Int32Array,
    right: &'a Int32Array,
    parent: &'a Int32Array,
    ids: &'a FixedSizeBinaryArray,
    leaves: Vec<&'a BooleanArray>,
    nums: Vec<&'a Float64Array>,
    keys: Vec<&'a datafusion::arrow::array::StringArray>,
}

impl<'a> SpanColumns<'a> {
    /// Views `values` (left first) as the columns of program `p`.
    pub fn new(values: &'a [ArrayRef], p: &Program) -> Result<Self> {
        if values.len() != SPAN_ARGS + p.leaves + p.values + p.keys {
            return exec_err!(
                "{NAME}: expected {} span columns, got {}",
                SPAN_ARGS + p.leaves + p.values + p.keys,
                values.len()
            );
        }
        let mut at = SPAN_ARGS;
        let leaves = values[at..at + p.leaves]
            .iter()
            .map(|a| downcast::<BooleanArray>(a, "a leaf"))
            .collect::<Result<_>>()?;
        at += p.leaves;
        let nums = values[at..at + p.values]
            .iter()
            .map(|a| downcast::<Float64Array>(a, "a value"))
            .collect::<Result<_>>()?;
        at += p.values;
        let keys = values[at..at + p.keys]
            .iter()
            .map(|a| a.as_string_opt::<i32>())
            .collect::<Option<Vec<_>>>()
            .map_or_else(|| exec_err!("{NAME}: keys must be Utf8"), Ok)?;
        Ok(Self {
            left: downcast::<Int32Array>(&values[0], "left")?,
            right: downcast::<Int32Array>(&values[1], "right")?,
            parent: downcast::<Int32Array>(&values[2], "parent")?,
            ids: downcast::<FixedSizeBinaryArray>(&values[3], "span_id")?,
            leaves,
            nums,
            keys,
        })
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.left.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> SpanRow {
        let mut bits = 0u64;
        for (b, l) in self.leaves.iter().enumerate() {
            if l.is_valid(i) && l.value(i) {
                bits |= 1 << b;
            }
        }
        let mut span_id = [0u8; 8];
        if self.ids.is_valid(i) && self.ids.value(i).len() == 8 {
            span_id.copy_from_slice(self.ids.value(i));
        }
        SpanRow {
            left: self.left.value(i),
            right: self.right.value(i),
            parent: self.parent.value(i),
            span_id,
            leaves: bits,
            values: self
                .nums
                .iter()
                .map(|a| a.is_valid(i).then(|| a.value(i)))
                .collect(),
            keys: self
                .keys
                .iter()
                .map(|a| a.is_valid(i).then(|| a.value(i).to_string()))
                .collect(),
        }
    }
}

/// A TraceQL error raised while evaluating a trace (Tempo answers it as a 400); it travels
/// through DataFusion as an external error.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalError(pub String);

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EvalError {}

impl EvalError {
    /// The evaluation error somewhere in `e`'s chain of causes.
    pub fn find(e: &datafusion::error::DataFusionError) -> Option<&EvalError> {
        let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = at {
            if let Some(found) = err.downcast_ref::<EvalError>() {
                return Some(found);
            }
            if let Some(datafusion::error::DataFusionError::External(inner)) =
                err.downcast_ref::<datafusion::error::DataFusionError>()
                && let Some(found) = inner.downcast_ref::<EvalError>()
            {
                return Some(found);
            }
            at = err.source();
        }
        None
    }
}

/// Runs `program` over one trace's rows (the spans that matched a leaf): its spansets, or
/// `None` when it has none. The same span may arrive twice (a block and the head); exact
/// repeats count once.
pub fn evaluate(
    program: &Program,
    rows: &mut Vec<SpanRow>,
) -> std::result::Result<Option<Vec<FoundSet>>, EvalError> {
    rows.sort_by(|a, b| {
        (a.left, a.span_id, a.right, a.parent).cmp(&(b.left, b.span_id, b.right, b.parent))
    });
    rows.dedup_by(|a, b| {
        a.left == b.left && a.span_id == b.span_id && a.right == b.right && a.parent == b.parent
    });
    let sets = eval::run(program, rows).map_err(EvalError)?;
    Ok((!sets.is_empty()).then(|| FoundSet::of(&sets, rows)))
}

fn evaluate_df(program: &Program, rows: &mut Vec<SpanRow>) -> Result<Option<Vec<FoundSet>>> {
    evaluate(program, rows).map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
}

fn rows_size(rows: &[SpanRow]) -> usize {
    rows.iter().map(row_size).sum()
}

/// Bytes one held row takes, its values and keys included.
fn row_size(r: &SpanRow) -> usize {
    size_of::<SpanRow>()
        + r.values.capacity() * 16
        + r.keys.iter().flatten().map(|k| k.len() + 24).sum::<usize>()
}

fn encode_state(rows: &[SpanRow]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 40 + 4);
    out.extend((rows.len() as u32).to_le_bytes());
    for r in rows {
        encode_row(r, &mut out);
    }
    out
}

/// The per-trace evaluator over all traces of a batch at once (DataFusion's fast path for
/// many groups: no boxed accumulator per trace).
struct SpansetsGroups {
    program: Arc<Program>,
    groups: Vec<Vec<SpanRow>>,
    /// Bytes of the rows in `groups`, kept as rows come and go: DataFusion asks `size()` after
    /// every batch, and summing every group there made a 10M-span scan spend 40% of its time
    /// in `size()` (quadratic in the traces held).
    held: usize,
}

impl SpansetsGroups {
    /// Takes the groups `emit_to` names, forgetting their bytes.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<SpanRow>> {
        let taken = emit_to.take_needed(&mut self.groups);
        let bytes: usize = taken.iter().map(|g| rows_size(g)).sum();
        self.held = self.held.saturating_sub(bytes);
        taken
    }
}

impl GroupsAccumulator for SpansetsGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let cols = SpanColumns::new(&values[1..], &self.program)?;
        for (i, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !(f.is_valid(i) && f.value(i))) {
                continue;
            }
            let row = cols.row(i);
            self.held += row_size(&row);
            self.groups[g].push(row);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut out = Encoder::default();
        for mut rows in self.take(emit_to) {
            out.append(evaluate_df(&self.program, &mut rows)?.as_deref());
        }
        out.finish()
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut out = BinaryBuilder::new();
        for rows in self.take(emit_to) {
            out.append_value(encode_state(&rows));
        }
        Ok(vec![Arc::new(out.finish())])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let Some(bin) = values.first() else {
            return Ok(());
        };
        let bin = downcast::<BinaryArray>(bin, "state")?;
        for (i, &g) in group_indices.iter().enumerate() {
            let group = &mut self.groups[g];
            let before = group.len();
            if bin.is_valid(i) && decode_rows(bin.value(i), &self.program, group).is_none() {
                return exec_err!("{NAME}: corrupt partial state");
            }
            self.held += rows_size(&group[before..]);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let cols = SpanColumns::new(&values[1..], &self.program)?;
        let mut out = BinaryBuilder::new();
        for i in 0..cols.len() {
            let keep = opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
            let rows = if keep { vec![cols.row(i)] } else { Vec::new() };
            out.append_value(encode_state(&rows));
        }
        Ok(vec![Arc::new(out.finish())])
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.groups.capacity() * size_of::<Vec<SpanRow>>() + self.held
    }
}

/// Lower-case hex of `b` (span IDs in results, link IDs in comparisons).
pub(crate) fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

fn encode_row(r: &SpanRow, out: &mut Vec<u8>) {
    for n in [r.left, r.right, r.parent] {
        out.extend(n.to_le_bytes());
    }
    out.extend(r.span_id);
    out.extend(r.leaves.to_le_bytes());
    for v in &r.values {
        match v {
            Some(v) => {
                out.push(1);
                out.extend(v.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    for k in &r.keys {
        match k {
            Some(k) => {
                out.push(1);
                out.extend((k.len() as u32).to_le_bytes());
                out.extend(k.as_bytes());
            }
            None => out.push(0),
        }
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }

    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
}

fn decode_rows(b: &[u8], p: &Program, out: &mut Vec<SpanRow>) -> Option<()> {
    let mut c = Cursor(b);
    let n = u32::from_le_bytes(c.take()?);
    for _ in 0..n {
        let left = i32::from_le_bytes(c.take()?);
        let right = i32::from_le_bytes(c.take()?);
        let parent = i32::from_le_bytes(c.take()?);
        let span_id = c.take::<8>()?;
        let leaves = u64::from_le_bytes(c.take()?);
        let mut values = Vec::with_capacity(p.values);
        for _ in 0..p.values {
            values.push(match c.take::<1>()?[0] {
                0 => None,
                _ => Some(f64::from_le_bytes(c.take()?)),
            });
        }
        let mut keys = Vec::with_capacity(p.keys);
        for _ in 0..p.keys {
            keys.push(match c.take::<1>()?[0] {
                0 => None,
                _ => {
                    let len = u32::from_le_bytes(c.take()?) as usize;
                    Some(String::from_utf8(c.bytes(len)?.to_vec()).ok()?)
                }
            });
        }
        out.push(SpanRow {
            left,
            right,
            parent,
            span_id,
            leaves,
            values,
            keys,
        });
    }
    Some(())
}
