//! Split traces read whole by the aggregation, for what only the whole trace knows.
//!
//! A trace whose parts lie in several blocks (or blocks and the head) has, in each part, the
//! `rootName`, `rootServiceName`, `traceDuration` and nested-set numbers of that part alone; a
//! part without its root has an empty root name. The first stage's selection already runs
//! over joined traces when it needs the whole trace (`matched_spans`); but `by(rootName)`,
//! `avg_over_time(traceDuration)` and compare's trace-level attributes read the values of the
//! rows they aggregate. For those, each source is read without the split traces, and the split
//! traces' rows joined whole (`split_traces::patch`: numbers and trace-level columns of the
//! whole trace, spans received twice kept once) are read alongside. Only split traces are read
//! twice; a query over unsplit data pays one look at the blocks' cached incomplete-trace lists.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::query::QueryEngine;
use crate::query::sources::{Source, Sources};
use crate::query::split_traces;
use crate::tempopb::SearchMetrics;

/// The split traces of a source set, joined whole.
pub(super) struct Whole {
    /// Keeps every row but those of the split traces.
    except: Expr,
    /// Per source (same order), its parts of the split traces, joined.
    patched: Vec<Option<Arc<dyn TableProvider>>>,
}

impl QueryEngine {
    /// The split traces of `src` joined whole, or `None` when no trace is split.
    pub(super) async fn whole(
        &self,
        ctx: &SessionContext,
        src: &Sources,
        cost: &mut SearchMetrics,
    ) -> Result<Option<Whole>> {
        let split = split_traces::split_traces(&self.catalog, src).await?;
        if split.ids.is_empty() {
            return Ok(None);
        }
        // Every column: the rows feed whichever pass the aggregation runs.
        let patched = split_traces::patch(ctx, src, &split.ids, None, &|_| Ok(None)).await?;
        cost.inspected_bytes += patched.bytes;
        Ok(Some(Whole {
            except: split_traces::of_traces(&split.ids, true),
            patched: patched.tables,
        }))
    }
}

/// The plans `rows` makes of source `i` of a set, read through `table`: with `whole`, one over
/// `table` without the split traces and one over the source's joined parts of them; without,
/// one over `table`.
pub(super) fn plans(
    whole: Option<&Whole>,
    i: usize,
    s: &Source,
    table: Arc<dyn TableProvider>,
    rows: impl Fn(&Source, Arc<dyn TableProvider>, Option<&Expr>) -> Result<LogicalPlan>,
) -> Result<Vec<LogicalPlan>> {
    let Some(w) = whole else {
        return Ok(vec![rows(s, table, None)?]);
    };
    let mut out = vec![rows(s, table, Some(&w.except))?];
    if let Some(joined) = w.patched.get(i).cloned().flatten() {
        out.push(rows(&s.with_table(joined.clone()), joined, None)?);
    }
    Ok(out)
}
