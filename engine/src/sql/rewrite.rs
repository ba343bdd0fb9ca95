//! The SQL text before DataFusion plans it: one read-only statement, and the attribute
//! functions (`span_attr('http.route')`, `resource_attr_int('k')`, …) turned into columns of the
//! per-query `spans` view, which [`super::tables`] fills per block group from the hot column or
//! the overflow map that holds the attribute there, so the scan's pushdown still applies.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Statement, Value, ValueWithSpan,
    visit_expressions_mut,
};

use crate::error::{EngineError, Result};
use crate::schema::AttrScope;

/// The type an attribute function reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrType {
    /// Any value as text (`span_attr`).
    Text,
    /// Integers (`span_attr_int`).
    Int,
    /// Floats (`span_attr_float`).
    Float,
    /// Booleans (`span_attr_bool`).
    Bool,
}

/// One attribute a query reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrRef {
    /// Resource, span or instrumentation scope.
    pub scope: AttrScope,
    /// The attribute key.
    pub key: String,
    /// The type read.
    pub ty: AttrType,
}

impl AttrRef {
    /// The column of the `spans` view that holds it.
    pub fn column(&self) -> String {
        let f = match self.scope {
            AttrScope::Span => "span_attr",
            AttrScope::Resource => "resource_attr",
            AttrScope::Instrumentation => "scope_attr",
        };
        let t = match self.ty {
            AttrType::Text => "",
            AttrType::Int => "_int",
            AttrType::Float => "_float",
            AttrType::Bool => "_bool",
        };
        format!("{f}{t}({})", self.key)
    }
}

fn attr_function(name: &str) -> Option<(AttrScope, AttrType)> {
    let (scope, rest) = if let Some(r) = name.strip_prefix("span_attr") {
        (AttrScope::Span, r)
    } else if let Some(r) = name.strip_prefix("resource_attr") {
        (AttrScope::Resource, r)
    } else if let Some(r) = name.strip_prefix("scope_attr") {
        (AttrScope::Instrumentation, r)
    } else {
        return None;
    };
    let ty = match rest {
        "" => AttrType::Text,
        "_int" => AttrType::Int,
        "_float" => AttrType::Float,
        "_bool" => AttrType::Bool,
        _ => return None,
    };
    Some((scope, ty))
}

/// Refuses anything but one query (`SELECT`, `WITH`, `VALUES`, or `EXPLAIN` of one), and
/// rewrites the attribute functions into `spans` columns; returns the SQL to plan and the
/// attributes it reads.
pub fn prepare(sql: &str) -> Result<(String, Vec<AttrRef>)> {
    // DataFusion's parser, so its own statements (CREATE EXTERNAL TABLE, COPY) are recognised
    // and refused by name rather than as syntax errors.
    let mut statements = DFParser::parse_sql(sql)
        .map_err(|e| EngineError::InvalidInput(format!("SQL syntax: {e}")))?;
    if statements.len() != 1 {
        return Err(EngineError::InvalidInput(format!(
            "one SQL statement at a time, got {}",
            statements.len()
        )));
    }
    let refused = || {
        EngineError::InvalidInput(
            "the SQL interface is read-only: only queries (SELECT, WITH, VALUES) and EXPLAIN of \
             a query run; DDL, DML, COPY, external tables and SET are refused"
                .into(),
        )
    };
    let Some(mut top) = statements.pop_front() else {
        return Err(refused());
    };
    // The query itself, alone or under EXPLAIN.
    let st = match &mut top {
        DfStatement::Statement(st) => st.as_mut(),
        DfStatement::Explain(ex) => match ex.statement.as_mut() {
            DfStatement::Statement(st) => st.as_mut(),
            _ => return Err(refused()),
        },
        _ => return Err(refused()),
    };
    if !matches!(st, Statement::Query(_)) {
        return Err(refused());
    }
    let mut attrs = Vec::new();
    let mut bad = None;
    let _ = visit_expressions_mut(st, |e| {
        let Expr::Function(f) = e else {
            return std::ops::ControlFlow::<()>::Continue(());
        };
        let name = f.name.to_string().to_ascii_lowercase();
        let Some((scope, ty)) = attr_function(&name) else {
            return std::ops::ControlFlow::Continue(());
        };
        let key = match &f.args {
            FunctionArguments::List(l) if l.args.len() == 1 => match &l.args[0] {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(k),
                    ..
                }))) => Some(k.clone()),
                _ => None,
            },
            _ => None,
        };
        let Some(key) = key else {
            bad = Some(format!(
                "{name}() takes one string literal, the attribute key, e.g. {name}('http.route')"
            ));
            return std::ops::ControlFlow::Break(());
        };
        let a = AttrRef { scope, key, ty };
        *e = Expr::Identifier(Ident::with_quote('"', a.column()));
        attrs.push(a);
        std::ops::ControlFlow::Continue(())
    });
    if let Some(m) = bad {
        return Err(EngineError::InvalidInput(m));
    }
    attrs.sort();
    attrs.dedup();
    Ok((top.to_string(), attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_functions_become_view_columns() {
        let (sql, attrs) = prepare(
            "SELECT span_attr('http.route'), count(*) FROM spans \
             WHERE resource_attr_int('k8s.pod.restarts') > 2 GROUP BY 1",
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT \"span_attr(http.route)\", count(*) FROM spans \
             WHERE \"resource_attr_int(k8s.pod.restarts)\" > 2 GROUP BY 1"
        );
        assert_eq!(attrs.len(), 2);
    }

    #[test]
    fn only_queries_run() {
        for sql in [
            "DROP TABLE spans",
            "INSERT INTO spans VALUES (1)",
            "COPY spans TO '/tmp/x.parquet'",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
            "SET datafusion.execution.batch_size = 1",
            "SELECT 1; SELECT 2",
        ] {
            assert!(
                matches!(prepare(sql), Err(EngineError::InvalidInput(_))),
                "{sql}"
            );
        }
        let e = prepare("SELEC 1").unwrap_err().to_string();
        assert!(e.contains("SQL syntax"), "{e}");
        let e = prepare("SELECT span_attr(name) FROM spans")
            .unwrap_err()
            .to_string();
        assert!(e.contains("one string literal"), "{e}");
        assert!(prepare("EXPLAIN SELECT 1").is_ok());
    }
}
