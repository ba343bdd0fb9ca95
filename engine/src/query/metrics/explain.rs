//! `explain` for TraceQL metrics queries: for each first stage of the expression, what it
//! reads (blocks in range, the head), how spans are chosen (in the Parquet scan, or by the
//! search program per trace), whether it samples, and the DataFusion plans of its aggregation,
//! built exactly as the query builds them but not run. When nothing is read, it says why.

use std::sync::Arc;

use super::compile::{FirstStage, Node, compile_metrics};
use super::grid::Grid;
use super::plan::{self, Needs};
use super::{MetricsLimits, MetricsRequest, read_volume, roots_only, sampling};
use crate::error::Result;
use crate::query::spans_table::SpansTable;
use crate::query::{QueryEngine, df_err};

/// One first stage, explained.
#[derive(Debug, Clone)]
pub struct StageExplained {
    /// The function and its grouping, e.g. `rate() by (resource.service.name)`.
    pub function: String,
    /// How the stage's spans are chosen.
    pub selection: String,
    /// What it reads, and what was left out and why.
    pub reads: String,
    /// Sampling: off, or the share of spans read.
    pub sampling: String,
    /// The aggregation's logical plan, optimised (empty when nothing is read).
    pub logical: String,
    /// Its physical plan.
    pub physical: String,
}

/// A metrics query, explained stage by stage.
#[derive(Debug, Clone)]
pub struct MetricsExplained {
    /// The grid: start, end, step and intervals.
    pub grid: String,
    /// Each first stage in the order written.
    pub stages: Vec<StageExplained>,
}

fn first_stages<'a>(node: &'a Node, out: &mut Vec<&'a FirstStage>) {
    match node {
        Node::Query(st) => out.push(st),
        Node::Number(_) => {}
        Node::Binary { lhs, rhs, .. } => {
            first_stages(lhs, out);
            first_stages(rhs, out);
        }
        Node::Staged { node, .. } => first_stages(node, out),
    }
}

impl QueryEngine {
    /// Explains `req` over `tenant`'s data without running it.
    pub async fn explain_metrics(
        &self,
        tenant: &str,
        req: &MetricsRequest,
        limits: &MetricsLimits,
    ) -> Result<MetricsExplained> {
        let (q, node) = compile_metrics(&req.query)?;
        let grid = Self::range_grid(req, limits)?;
        let mut stages = Vec::new();
        first_stages(&node, &mut stages);
        let mut out = MetricsExplained {
            grid: format!(
                "{} intervals of {}s from {} to {} (unix ns)",
                grid.intervals(),
                grid.step as f64 / 1e9,
                grid.start,
                grid.end
            ),
            stages: Vec::new(),
        };
        let all = self.catalog.blocks(tenant).await?.len();
        for st in stages {
            out.stages.push(
                self.explain_stage(tenant, &q, st, &grid, req, limits, all)
                    .await?,
            );
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn explain_stage(
        &self,
        tenant: &str,
        q: &allegro_traceql::Query,
        st: &FirstStage,
        grid: &Grid,
        req: &MetricsRequest,
        limits: &MetricsLimits,
        all_blocks: usize,
    ) -> Result<StageExplained> {
        let src = self.metric_sources(tenant, grid, req.mode, limits).await?;
        let by = st
            .by
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let function = if by.is_empty() {
            format!("{}()", st.name)
        } else {
            format!("{}() by ({by})", st.name)
        };
        let selection = match &st.simple {
            Some(_) => "one spanset filter: spans are chosen in the Parquet scan".to_string(),
            None => "spanset or structural operators: the search program runs per trace \
                     (traceql_spansets), and the matching (trace_id, span_id) pairs are joined \
                     with the rows below before aggregating"
                .to_string(),
        };
        let whole = if st.reads_whole_trace() {
            "; traces split across blocks are read joined whole (the stage reads trace-level values)"
        } else {
            ""
        };
        let rollups = match super::rollup::applies(st, grid) {
            true => format!(
                "; {} of them count from their span counts per minute (rollup.parquet) instead \
                 of their spans",
                super::rollup::qualifying(st, &src.blocks)
            ),
            false => String::new(),
        };
        let reads = format!(
            "{} of the tenant's {all_blocks} block(s) overlap the range{}{}{whole}{rollups}",
            src.blocks.len(),
            match req.mode {
                super::Mode::Recent => " and are recent",
                _ => "",
            },
            if src.live_spans > 0 {
                format!(", and {} live span(s) in the head", src.live_spans)
            } else {
                String::new()
            },
        );
        let roots = matches!(&st.simple, Some(Some(c)) if roots_only(c));
        let smp = sampling(
            q,
            st,
            read_volume(std::slice::from_ref(&src), grid, roots),
            limits,
        );
        let sampling_text = match smp {
            None => "off: every span in range is read".to_string(),
            Some(s) => format!(
                "about {:.3}% of spans, each weighted by the inverse (with(sample=...) or the \
                 sample_target_spans budget)",
                s.rate() * 100.0
            ),
        };
        let mut e = StageExplained {
            function,
            selection,
            reads,
            sampling: sampling_text,
            logical: String::new(),
            physical: String::new(),
        };
        if src.tables.is_empty() {
            e.logical = format!(
                "EmptyRelation: nothing to read ({} block(s) in range, no live spans)",
                src.blocks.len()
            );
            e.physical = "EmptyExec".into();
            return Ok(e);
        }
        let needs = Needs {
            ids: st.simple.is_none(),
            sampling: smp,
            counted: false,
        };
        let inputs = src
            .tables
            .iter()
            .map(|s| plan::rows(s, s.table.clone(), st, grid, needs, None))
            .collect::<Result<Vec<_>>>()?;
        let ctx = self.session();
        let state = ctx.state();
        let table = Arc::new(SpansTable::try_new(&state, &inputs).await?);
        let logical = plan::aggregate(table, None, st, grid, needs, None)?;
        let optimised = state.optimize(&logical).map_err(df_err)?;
        let physical = state
            .create_physical_plan(&optimised)
            .await
            .map_err(df_err)?;
        e.logical = optimised.display_indent().to_string();
        for (i, input) in inputs.iter().enumerate() {
            let o = state.optimize(input).map_err(df_err)?;
            e.logical.push_str(&format!(
                "\n-- span rows of source {i} --\n{}",
                o.display_indent()
            ));
        }
        e.physical = datafusion::physical_plan::displayable(physical.as_ref())
            .indent(true)
            .to_string();
        Ok(e)
    }
}
