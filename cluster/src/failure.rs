//! What a query's failure on the cluster means, for the status its caller gets.
//!
//! Every failure reaches the serving process as one `DataFusionError::Execution` holding text:
//! Ballista's client reports a failed job as `Job J failed: <task error>`, and a task's error
//! is the executor's error in Debug form (`Task failed due to runtime execution error:
//! DataFusionError(ArrowError(CastError("…"), None))`). A query that fails on its own data —
//! a cast or arithmetic its rows do not allow — is the user's mistake, as it is in one process
//! (`engine::sql`'s mapping); everything else (an executor lost, a shuffle fetch that failed
//! past its retries, the scheduler or an executor unreachable, a block gone) is the cluster's,
//! a 503 that asking again may cure. Nothing here ever turns a failure into a partial answer.

use allegro_engine::error::EngineError;
use datafusion::error::DataFusionError;

/// How Ballista's task errors name a failure of the plan itself on its rows.
const RUNTIME_ERROR: &str = "Task failed due to runtime execution error: ";

/// Debug forms of the errors a query's own expressions raise on data they do not accept,
/// wherever they sit in the task error's chain (`DataFusionError(Shared(External(ArrowError(
/// CastError(…)))))` as seen from a join's build side).
const QUERY_MISTAKES: [&str; 6] = [
    "ArrowError(CastError(",
    "ArrowError(DivideByZero",
    "ArrowError(ArithmeticOverflow(",
    "ArrowError(ComputeError(",
    "ArrowError(ParseError(",
    "DataFusionError(Execution(",
];

/// The meaning of `e`, an error from running a plan on the cluster (see the module docs).
pub fn classify(e: DataFusionError) -> EngineError {
    let text = match e.find_root() {
        DataFusionError::Execution(m) => m.clone(),
        other => other.to_string(),
    };
    match text.split_once(RUNTIME_ERROR) {
        Some((_, task)) if QUERY_MISTAKES.iter().any(|m| task.contains(m)) => {
            EngineError::InvalidInput(format!("the query failed on its data: {}", readable(task)))
        }
        _ => EngineError::Unavailable(text),
    }
}

/// The message inside a task error's Debug form, as one process words it: `division by zero`,
/// a cast's or an expression's own text; the whole form when none is found.
fn readable(task: &str) -> String {
    if task.contains("DivideByZero") {
        return "division by zero".into();
    }
    for marker in QUERY_MISTAKES {
        let Some((_, after)) = task.split_once(marker) else {
            continue;
        };
        let Some(quoted) = after.strip_prefix('"') else {
            continue;
        };
        // Up to the closing quote; Debug escapes quotes and backslashes inside.
        let (mut out, mut chars) = (String::new(), quoted.chars());
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => return out,
                c => out.push(c),
            }
        }
    }
    task.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_read_as_one_process_words_them() {
        let task = "DataFusionError(Shared(External(DataFusionError(ParquetError(External(ComputeError(\"Error evaluating filter predicate: ArrowError(DivideByZero, Some(\\\"\\\"))\")))))))";
        assert_eq!(readable(task), "division by zero");
        assert_eq!(
            readable(
                "DataFusionError(ArrowError(CastError(\"Cannot cast string 'GET' to value of Int32 type\"), None))"
            ),
            "Cannot cast string 'GET' to value of Int32 type"
        );
        assert_eq!(
            readable("DataFusionError(Execution(\"a \\\"quoted\\\" name\"))"),
            "a \"quoted\" name"
        );
        assert_eq!(readable("something else"), "something else");
    }

    fn job_failed(task: &str) -> DataFusionError {
        DataFusionError::Execution(format!("Job 3kQ failed: {task}"))
    }

    #[test]
    fn a_cast_its_rows_do_not_allow_is_the_users_mistake() {
        for task in [
            "Task failed due to runtime execution error: DataFusionError(ArrowError(CastError(\"Cannot cast string 'GET' to value of Int32 type\"), None))",
            // As a shuffle stage reports it (seen in server/tests/cluster.rs).
            "Job failed due to stage 2 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(ArrowError(CastError(\"Cannot cast string 'GET' to value of Int32 type\")))))",
        ] {
            let e = classify(job_failed(task));
            assert!(
                matches!(&e, EngineError::InvalidInput(m) if m.contains("Cannot cast string 'GET'")),
                "{e}"
            );
        }
    }

    #[test]
    fn lost_executors_and_failed_fetches_are_the_clusters() {
        for text in [
            "Task 0 in Stage 2 failed 4 times, fail the stage, most recent failure reason: \"Task failed due to IO error: …\"",
            "FetchPartitionError in parent stage",
            "Task failed due to runtime execution error: DataFusionError(ObjectStore(NotFound { path: \"t/b/data.parquet\" }))",
        ] {
            let e = classify(job_failed(text));
            assert!(matches!(e, EngineError::Unavailable(_)), "{text}: {e}");
        }
        let unreachable = classify(DataFusionError::Execution(
            "Error connecting to Ballista scheduler at df://127.0.0.1:1: transport error".into(),
        ));
        assert!(matches!(unreachable, EngineError::Unavailable(_)));
    }
}
