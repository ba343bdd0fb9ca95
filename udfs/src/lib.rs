//! DataFusion UDFs for TraceQL semantics, registered by name so plans stay serialisable.

#![warn(missing_docs)]

pub mod exemplars;
pub mod hex_id;
pub mod id_bytes;
pub mod log2_bucket;
pub mod metrics_group;
pub mod nested_set;
pub mod spansets;
pub mod traceql_match;
pub mod traceql_values;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::nested_set::{NestedSetPredicate, Relation};

/// Every UDF of this crate.
pub fn all_udfs() -> Vec<ScalarUDF> {
    [Relation::Descendant, Relation::Child, Relation::Sibling]
        .into_iter()
        .map(|r| ScalarUDF::from(NestedSetPredicate::new(r)))
        .chain([
            ScalarUDF::from(traceql_match::TraceqlMatch::default()),
            ScalarUDF::from(traceql_values::TraceqlValues::default()),
            ScalarUDF::from(log2_bucket::Log2Bucket::default()),
            ScalarUDF::from(metrics_group::MetricsGroup::default()),
            ScalarUDF::from(hex_id::HexId::default()),
            ScalarUDF::from(id_bytes::IdBytes::default()),
        ])
        .collect()
}

/// Every UDAF of this crate.
pub fn all_udafs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(spansets::TraceqlSpansets::default()),
        AggregateUDF::from(exemplars::TraceqlExemplars::default()),
    ]
}

/// Registers every UDF and UDAF with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    for f in all_udfs() {
        ctx.register_udf(f);
    }
    for f in all_udafs() {
        ctx.register_udaf(f);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, BooleanArray, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::DataType;

    use super::*;

    /// The tree of tempo-compat.md §7.4: A(1,8,-1) { B(2,5,1) { D(3,4,2) }, C(6,7,1) }, plus an
    /// orphan with unknown numbers.
    #[tokio::test]
    async fn structural_predicates_over_the_worked_example() {
        let ctx = SessionContext::new();
        register_all(&ctx);
        ctx.sql(
            "CREATE TABLE s (name VARCHAR, l INT, r INT, p INT) AS VALUES
             ('A', 1, 8, -1), ('B', 2, 5, 1), ('D', 3, 4, 2), ('C', 6, 7, 1), ('X', 0, 0, 0)",
        )
        .await
        .unwrap();
        let pairs = |sql: &str| {
            let ctx = ctx.clone();
            let sql = sql.to_string();
            async move {
                let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
                let mut out = Vec::new();
                for b in batches {
                    let text = |i: usize| {
                        let c = cast(b.column(i), &DataType::Utf8).unwrap();
                        c.as_any().downcast_ref::<StringArray>().unwrap().clone()
                    };
                    let (names, others) = (text(0), text(1));
                    for i in 0..b.num_rows() {
                        out.push(format!("{}<{}", names.value(i), others.value(i)));
                    }
                }
                out.sort();
                out
            }
        };
        let q = |f: &str| format!("SELECT a.name, b.name FROM s a, s b WHERE {f} ORDER BY 1, 2");
        assert_eq!(
            pairs(&q("nested_set_is_descendant(a.l, a.r, b.l, b.r)")).await,
            ["B<A", "C<A", "D<A", "D<B"]
        );
        assert_eq!(
            pairs(&q("nested_set_is_child(a.p, b.l)")).await,
            ["B<A", "C<A", "D<B"]
        );
        assert_eq!(
            pairs(&q("nested_set_is_sibling(a.p, a.l, b.p, b.l)")).await,
            ["B<C", "C<B"]
        );
        let nulls = ctx
            .sql("SELECT nested_set_is_child(CAST(NULL AS INT), CAST(1 AS INT))")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert!(
            nulls[0]
                .column(0)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .is_null(0)
        );
    }
}
