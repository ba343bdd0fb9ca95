//! A join with one small side collects that side into every task on the cluster, as one
//! process does, instead of shuffling and sorting both.
//!
//! Ballista turns DataFusion's `prefer_hash_join` off (a hash join cannot spill), so the
//! physical planner makes every equi-join a sort-merge join, and neither DataFusion's
//! `JoinSelection` nor Ballista's broadcast promotion looks at a sort-merge join: both only
//! collect the small side of a *hash* join. So on the cluster, joining a `traceql()` call's
//! 42k matches (4 MB) with 10M spans hashed and sorted both sides across the executors, 5–110
//! MB shuffled: 8.4 s against 0.57 s in one process (docs/benchmarks.md, "Queries on a
//! Ballista cluster"). Raising the collect thresholds changed nothing, for that reason.
//!
//! [`BroadcastSmallJoinSides`] runs just before `JoinSelection`: a sort-merge join one of whose
//! sides has an exact row count under the thresholds DataFusion collects by (Ballista sets
//! them to its broadcast thresholds, 128 MiB), and whose join type stays correct with that
//! side collected (probe driven: Ballista's rule), becomes a hash join whose mode
//! `JoinSelection` chooses. It then collects the small side, swapping the inputs when the
//! small side is the right, and Ballista writes the collected side once as a broadcast stage
//! every probe task reads. A join of two big sides, or of sides whose sizes are only
//! estimates, stays a sort-merge join, which spills.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};

/// Makes a sort-merge join with a small side a hash join for `JoinSelection` to collect; see
/// the module docs.
#[derive(Debug, Default)]
pub struct BroadcastSmallJoinSides;

impl BroadcastSmallJoinSides {
    /// DataFusion's physical optimizer rules with this one placed just before
    /// `JoinSelection`. Without that rule (renamed in a later DataFusion) the list is left as
    /// it is: placed after the rules that fix distribution and sorting, a hash join of
    /// undecided mode would run unplanned.
    pub fn in_default_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
        let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
        match rules.iter().position(|r| r.name() == "join_selection") {
            Some(at) => rules.insert(at, Arc::new(Self)),
            None => tracing::warn!(
                "no join_selection rule in DataFusion's optimizer: joins' small sides are not \
                 collected on the cluster"
            ),
        }
        rules
    }
}

/// Whether `plan`'s rows are counted exactly and its statistics put it under the thresholds
/// `JoinSelection` collects by (bytes when known, else rows).
///
/// Only an exact count: a side whose size is an estimate (a filtered scan of blocks, a
/// selectivity guessed) may be far bigger than estimated, and every task would hold it whole
/// where a sort-merge join spills. In-memory rows (a `traceql()` call's matches, the live
/// head, `VALUES`) are counted exactly.
fn small(plan: &dyn ExecutionPlan, config: &ConfigOptions) -> bool {
    let Ok(stats) = StatisticsContext::new().compute(plan, &StatisticsArgs::new()) else {
        return false;
    };
    let Precision::Exact(rows) = stats.num_rows else {
        return false;
    };
    let o = &config.optimizer;
    match stats.total_byte_size.get_value() {
        Some(bytes) => *bytes < o.hash_join_single_partition_threshold,
        None => rows < o.hash_join_single_partition_threshold_rows,
    }
}

/// Whether a hash join of `join_type` emits nothing on behalf of its left (build) side, so
/// every probe task can hold the whole left side (Ballista's rule for broadcasting).
fn collected_left_is_safe(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Right
            | JoinType::RightSemi
            | JoinType::RightAnti
            | JoinType::RightMark
    )
}

impl PhysicalOptimizerRule for BroadcastSmallJoinSides {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<SortMergeJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let t = join.join_type();
            let left = collected_left_is_safe(t) && small(join.left().as_ref(), config);
            let right = config.optimizer.join_reordering
                && t.supports_swap()
                && collected_left_is_safe(t.swap())
                && small(join.right().as_ref(), config);
            if !left && !right {
                return Ok(Transformed::no(node));
            }
            let hash = HashJoinExec::try_new(
                join.left().clone(),
                join.right().clone(),
                join.on().to_vec(),
                join.filter().clone(),
                &t,
                None,
                PartitionMode::Auto,
                join.null_equality(),
                false,
            )?;
            Ok(Transformed::yes(Arc::new(hash) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "broadcast_small_join_sides"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use ballista_core::extension::SessionConfigExt;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// A table `name(k)` of `rows` rows in two partitions.
    fn table(rows: i64) -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let half = |from: i64, to: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(from..to))],
            )
            .expect("batch")
        };
        let parts = vec![vec![half(0, rows / 2)], vec![half(rows / 2, rows)]];
        Arc::new(MemTable::try_new(schema.clone(), parts).expect("table"))
    }

    /// The physical plan of `sql` over `small` (10 rows), `mid` (1,000) and `big` (10,000),
    /// planned as the scheduler plans (Ballista's session defaults; a side is small under
    /// 10 KB), with or without this rule.
    async fn plan(sql: &str, with_rule: bool) -> (String, Arc<dyn ExecutionPlan>) {
        let config = SessionConfig::new_with_ballista()
            .with_target_partitions(2)
            .set_u64(
                "datafusion.optimizer.hash_join_single_partition_threshold",
                10_000,
            )
            .set_u64(
                "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                1_000,
            );
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config);
        if with_rule {
            builder =
                builder.with_physical_optimizer_rules(BroadcastSmallJoinSides::in_default_rules());
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("small", table(10)).expect("register");
        ctx.register_table("big", table(10_000)).expect("register");
        ctx.register_table("mid", table(1_000)).expect("register");
        let df = ctx.sql(sql).await.expect("sql");
        let plan = df.create_physical_plan().await.expect("plan");
        let text = displayable(plan.as_ref()).indent(false).to_string();
        (text, plan)
    }

    /// The rows of the side `plan`'s hash join collects.
    fn collected_rows(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
        if let Some(j) = plan.downcast_ref::<HashJoinExec>() {
            let stats = StatisticsContext::new()
                .compute(j.left().as_ref(), &StatisticsArgs::new())
                .ok()?;
            return stats.num_rows.get_value().copied();
        }
        plan.children().into_iter().find_map(collected_rows)
    }

    #[tokio::test]
    async fn a_small_side_is_collected_and_two_big_sides_stay_a_sort_merge_join() {
        for sql in [
            "SELECT count(*) FROM small s JOIN big b ON s.k = b.k",
            "SELECT count(*) FROM big b JOIN small s ON s.k = b.k",
            // Left join with the small side on the right: collected once swapped (a right join).
            "SELECT count(*) FROM big b LEFT JOIN small s ON s.k = b.k",
        ] {
            let (without, _) = plan(sql, false).await;
            assert!(without.contains("SortMergeJoin"), "{sql}\n{without}");
            let (with, physical) = plan(sql, true).await;
            assert!(
                with.contains("HashJoinExec: mode=CollectLeft") && !with.contains("SortMergeJoin"),
                "{sql}\n{with}"
            );
            // The small table is the side collected, and nothing is hashed across partitions.
            assert_eq!(collected_rows(&physical), Some(10), "{sql}\n{with}");
            assert!(!with.contains("partitioning=Hash"), "{sql}\n{with}");
        }
        // Two big sides, a side small only by an estimate (a filter's guessed selectivity),
        // and a small side whose rows a collected join would emit from every task (a left
        // join keeping the small left side's unmatched rows): unchanged.
        for sql in [
            "SELECT count(*) FROM big a JOIN big b ON a.k = b.k",
            "SELECT count(*) FROM (SELECT k FROM mid WHERE k % 100 = 0) a JOIN big b ON a.k = b.k",
            "SELECT count(*) FROM small s LEFT JOIN big b ON s.k = b.k AND b.k > 5",
        ] {
            let (with, _) = plan(sql, true).await;
            assert!(with.contains("SortMergeJoin"), "{sql}\n{with}");
        }
    }
}
