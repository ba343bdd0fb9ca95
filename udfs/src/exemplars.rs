//! `traceql_exemplars(trace_id, span_id, start, value, k)`: up to `k` exemplar candidates
//! per group, for TraceQL metrics. The metrics plan groups by (interval, series), so each
//! interval of each series keeps a few spans; the final stage applies Tempo's per-series
//! limits (time slices, one exemplar per trace).
//!
//! The result (and the partial state) is a Binary of packed 40-byte records:
//! trace id (16), span id (8), start ns (u64 LE), value (f64 LE). Candidates are the first
//! `k` seen: blocks are sorted by random trace IDs, so that is a uniform pick.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, FixedSizeBinaryArray, Float64Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// The UDAF's name.
pub const NAME: &str = "traceql_exemplars";
/// Bytes per packed candidate.
pub const RECORD: usize = 40;

/// One exemplar candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Trace ID.
    pub trace_id: [u8; 16],
    /// Span ID.
    pub span_id: [u8; 8],
    /// Span start, unix nanoseconds.
    pub start: u64,
    /// The metric's value for the span (NaN when the function has none).
    pub value: f64,
}

impl Candidate {
    fn pack(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.trace_id);
        out.extend_from_slice(&self.span_id);
        out.extend_from_slice(&self.start.to_le_bytes());
        out.extend_from_slice(&self.value.to_le_bytes());
    }
}

/// Unpacks a result or state value; `None` if it is not a whole number of records.
pub fn unpack(b: &[u8]) -> Option<Vec<Candidate>> {
    if !b.len().is_multiple_of(RECORD) {
        return None;
    }
    b.chunks_exact(RECORD)
        .map(|r| {
            Some(Candidate {
                trace_id: r[..16].try_into().ok()?,
                span_id: r[16..24].try_into().ok()?,
                start: u64::from_le_bytes(r[24..32].try_into().ok()?),
                value: f64::from_le_bytes(r[32..40].try_into().ok()?),
            })
        })
        .collect()
}

/// The exemplar-candidate aggregate; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TraceqlExemplars {
    signature: Signature,
}

impl Default for TraceqlExemplars {
    fn default() -> Self {
        Self {
            signature: Signature::any(5, Volatility::Immutable),
        }
    }
}

fn k_of(args: &AccumulatorArgs) -> Result<usize> {
    let k = args
        .exprs
        .get(4)
        .and_then(|e| e.downcast_ref::<Literal>())
        .and_then(|l| match l.value() {
            ScalarValue::Int64(Some(k)) => Some(*k),
            _ => None,
        });
    match k {
        Some(k) if k > 0 => Ok(k as usize),
        _ => exec_err!("{NAME}: the fifth argument must be a positive Int64 literal"),
    }
}

impl AggregateUDFImpl for TraceqlExemplars {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[candidates]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(One {
            k: k_of(&args)?,
            picks: Vec::new(),
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Groups {
            k: k_of(&args)?,
            groups: Vec::new(),
        }))
    }
}

/// Typed views of the input columns.
struct Inputs<'a> {
    trace: &'a FixedSizeBinaryArray,
    span: &'a FixedSizeBinaryArray,
    start: &'a UInt64Array,
    value: &'a Float64Array,
}

impl<'a> Inputs<'a> {
    fn new(values: &'a [ArrayRef]) -> Result<Self> {
        fn get<T: 'static>(values: &[ArrayRef], i: usize) -> Result<&T> {
            match values.get(i).and_then(|a| a.as_any().downcast_ref::<T>()) {
                Some(t) => Ok(t),
                None => exec_err!(
                    "{NAME}: argument {i} must be (FixedSizeBinary(16), FixedSizeBinary(8), \
                     UInt64, Float64)"
                ),
            }
        }
        Ok(Self {
            trace: get(values, 0)?,
            span: get(values, 1)?,
            start: get(values, 2)?,
            value: get(values, 3)?,
        })
    }

    fn get(&self, i: usize) -> Option<Candidate> {
        if self.trace.is_null(i) || self.span.is_null(i) || self.start.is_null(i) {
            return None;
        }
        Some(Candidate {
            trace_id: self.trace.value(i).try_into().ok()?,
            span_id: self.span.value(i).try_into().ok()?,
            start: self.start.value(i),
            value: if self.value.is_null(i) {
                f64::NAN
            } else {
                self.value.value(i)
            },
        })
    }
}

fn packed(picks: &[Candidate]) -> Vec<u8> {
    let mut out = Vec::with_capacity(picks.len() * RECORD);
    for p in picks {
        p.pack(&mut out);
    }
    out
}

fn merge_into(k: usize, picks: &mut Vec<Candidate>, state: &[u8]) -> Result<()> {
    let Some(more) = unpack(state) else {
        return exec_err!("{NAME}: corrupt partial state");
    };
    let room = k.saturating_sub(picks.len());
    picks.extend(more.into_iter().take(room));
    Ok(())
}

#[derive(Debug)]
struct One {
    k: usize,
    picks: Vec<Candidate>,
}

impl Accumulator for One {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let inputs = Inputs::new(values)?;
        for i in 0..inputs.trace.len() {
            if self.picks.len() >= self.k {
                break;
            }
            self.picks.extend(inputs.get(i));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(packed(&self.picks))))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.picks.capacity() * size_of::<Candidate>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(bin) = states
            .first()
            .and_then(|a| a.as_any().downcast_ref::<BinaryArray>())
        else {
            return exec_err!("{NAME}: state must be Binary");
        };
        for b in bin.iter().flatten() {
            merge_into(self.k, &mut self.picks, b)?;
        }
        Ok(())
    }
}

/// All groups at once: a few candidates each, no boxed accumulator per group.
struct Groups {
    k: usize,
    groups: Vec<Vec<Candidate>>,
}

impl Groups {
    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let mut out = BinaryBuilder::new();
        for picks in emit_to.take_needed(&mut self.groups) {
            out.append_value(packed(&picks));
        }
        Arc::new(out.finish())
    }
}

impl GroupsAccumulator for Groups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let inputs = Inputs::new(values)?;
        for (i, &g) in group_indices.iter().enumerate() {
            if self.groups[g].len() >= self.k
                || opt_filter.is_some_and(|f| !(f.is_valid(i) && f.value(i)))
            {
                continue;
            }
            if let Some(c) = inputs.get(i) {
                self.groups[g].push(c);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Vec::new);
        let Some(bin) = values
            .first()
            .and_then(|a| a.as_any().downcast_ref::<BinaryArray>())
        else {
            return exec_err!("{NAME}: state must be Binary");
        };
        for (i, &g) in group_indices.iter().enumerate() {
            if bin.is_valid(i) {
                merge_into(self.k, &mut self.groups[g], bin.value(i))?;
            }
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let inputs = Inputs::new(values)?;
        let mut out = BinaryBuilder::new();
        for i in 0..inputs.trace.len() {
            let keep = opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
            let picks: Vec<Candidate> = inputs.get(i).filter(|_| keep).into_iter().collect();
            out.append_value(packed(&picks));
        }
        Ok(vec![Arc::new(out.finish())])
    }

    fn size(&self) -> usize {
        size_of::<Self>()
            + self
                .groups
                .iter()
                .map(|g| size_of::<Vec<Candidate>>() + g.capacity() * size_of::<Candidate>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        let c = Candidate {
            trace_id: [7; 16],
            span_id: [3; 8],
            start: 1_700_000_000_123_456_789,
            value: 0.25,
        };
        let b = packed(&[c, c]);
        assert_eq!(b.len(), 2 * RECORD);
        assert_eq!(unpack(&b), Some(vec![c, c]));
        assert_eq!(unpack(&b[..39]), None);
    }

    #[test]
    fn merging_keeps_at_most_k() {
        let c = |n: u8| Candidate {
            trace_id: [n; 16],
            span_id: [n; 8],
            start: n as u64,
            value: f64::NAN,
        };
        let mut picks = vec![c(1)];
        merge_into(2, &mut picks, &packed(&[c(2), c(3)])).unwrap();
        assert_eq!(
            picks.iter().map(|p| p.start).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
}
