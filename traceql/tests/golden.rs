//! Golden files pin the front end's behaviour: `tests/golden/*.tql` hold blocks of
//!
//! ```text
//! query: { .a * .b + .c }
//! canonical: { (.a * .b) + .c }
//! rewritten: ...
//! error: validate 1:3: ...
//! ```
//!
//! separated by blank lines (`#` starts a comment). `canonical` is the printed AST, which must
//! also parse back to the same AST; `rewritten` the query after the default rewrites; `error`
//! the kind, position and message of the first error. A block checks only the lines it has.
//! Add a block with just `query:` and run `UPDATE_GOLDEN=1 cargo test -p allegro-traceql --test
//! golden` to fill in what the front end does now, then check the result by hand.

use std::fmt::Write;

use allegro_traceql::{RewriteOptions, parse, rewrite, validate};

fn run(query: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match parse(query) {
        Err(e) => out.push(("error".into(), describe(&e))),
        Ok(ast) => {
            let canonical = ast.to_string();
            let again = parse(&canonical).unwrap_or_else(|e| panic!("{canonical}: {e}"));
            assert_eq!(again, ast, "canonical form of {query} parses differently");
            out.push(("canonical".into(), canonical));
            match validate(query, &ast) {
                Err(e) => out.push(("error".into(), describe(&e))),
                Ok(()) => {
                    let r = rewrite(&ast, RewriteOptions::from_hints(&ast));
                    out.push(("rewritten".into(), r.to_string()));
                }
            }
        }
    }
    out
}

fn describe(e: &allegro_traceql::Error) -> String {
    assert!(e.rendered.contains('^'), "no caret: {e}");
    format!("{} {}:{}: {}", e.kind.as_str(), e.line, e.column, e.message)
}

#[test]
fn golden_files() {
    let dir = allegro_traceql::fuzzing::crate_dir().join("tests/golden");
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let mut failures = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tql"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("read");
        let mut rewritten = String::new();
        let mut checked = 0;
        for block in text.split("\n\n") {
            let mut query = None;
            let mut expected = Vec::new();
            for line in block.lines() {
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                let (key, value) = line
                    .split_once(": ")
                    .or_else(|| line.split_once(':'))
                    .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
                if key == "query" {
                    query = Some(value.to_string());
                } else {
                    expected.push((key.to_string(), value.to_string()));
                }
            }
            let Some(query) = query else {
                rewritten.push_str(block);
                rewritten.push_str("\n\n");
                continue;
            };
            checked += 1;
            let actual = run(&query);
            for (key, want) in &expected {
                let got = actual
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str());
                if got != Some(want.as_str()) {
                    failures.push(format!(
                        "{}: {query}\n  {key}: want {want}\n  {key}:  got {}",
                        path.display(),
                        got.unwrap_or("(none)")
                    ));
                }
            }
            for line in block.lines().filter(|l| l.starts_with('#')) {
                let _ = writeln!(rewritten, "{line}");
            }
            let _ = writeln!(rewritten, "query: {query}");
            for (k, v) in &actual {
                let _ = writeln!(rewritten, "{k}: {v}");
            }
            rewritten.push('\n');
        }
        assert!(checked > 0, "{} has no queries", path.display());
        if update {
            std::fs::write(&path, rewritten.trim_end().to_string() + "\n").expect("write");
        }
    }
    assert!(failures.is_empty() || update, "{}", failures.join("\n"));
}
