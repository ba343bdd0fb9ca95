//! Structural predicates over Tempo's nested-set numbers, callable from SQL:
//!
//! - `nested_set_is_descendant(left, right, ancestor_left, ancestor_right)`
//! - `nested_set_is_child(parent, parent_left)`
//! - `nested_set_is_sibling(parent, left, other_parent, other_left)`
//!
//! Unknown numbers (0, a span whose tree could not be built) never match, as in Tempo.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Which relation a [`NestedSetPredicate`] tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relation {
    /// The first span lies strictly inside the second's interval.
    Descendant,
    /// The first span's parent is the second span.
    Child,
    /// Same parent, different spans.
    Sibling,
}

impl Relation {
    fn name(self) -> &'static str {
        match self {
            Relation::Descendant => "nested_set_is_descendant",
            Relation::Child => "nested_set_is_child",
            Relation::Sibling => "nested_set_is_sibling",
        }
    }

    fn arity(self) -> usize {
        match self {
            Relation::Child => 2,
            _ => 4,
        }
    }

    /// The relation on plain numbers.
    pub fn holds(self, v: &[i32]) -> bool {
        match self {
            Relation::Descendant => v[2] > 0 && v[0] > v[2] && v[1] < v[3],
            Relation::Child => v[1] > 0 && v[0] == v[1],
            Relation::Sibling => v[0] > 0 && v[0] == v[2] && v[1] != v[3],
        }
    }
}

/// A nested-set predicate as a DataFusion scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NestedSetPredicate {
    relation: Relation,
    signature: Signature,
}

impl NestedSetPredicate {
    /// The UDF for `relation`.
    pub fn new(relation: Relation) -> Self {
        Self {
            relation,
            signature: Signature::uniform(
                relation.arity(),
                vec![DataType::Int32],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for NestedSetPredicate {
    fn name(&self) -> &str {
        self.relation.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let ints: Vec<&Int32Array> = arrays
            .iter()
            .map(|a| a.as_any().downcast_ref::<Int32Array>())
            .collect::<Option<_>>()
            .map_or_else(|| exec_err!("{} takes Int32 arguments", self.name()), Ok)?;
        let mut vals = vec![0i32; ints.len()];
        let out: BooleanArray = (0..args.number_rows)
            .map(|row| {
                for (v, a) in vals.iter_mut().zip(&ints) {
                    if a.is_null(row) {
                        return None;
                    }
                    *v = a.value(row);
                }
                Some(self.relation.holds(&vals))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}
