//! Tempo's own TraceQL corpus (`shared/conformance/traceql/test_examples.yaml`), required at
//! 100%: `valid` parses and validates, `parse_fails` fails to parse, `validate_fails` parses and
//! fails validation with an ordinary error, `unsupported` parses and fails with the distinct
//! unsupported error. Valid and unsupported queries also round-trip through the printer, as
//! Tempo's `TestStringer` requires, and every error shows its position and a caret.

use std::collections::BTreeMap;

use allegro_traceql::{Error, ErrorKind, parse, validate};

fn corpus() -> Option<BTreeMap<String, Vec<String>>> {
    let path = allegro_traceql::fuzzing::corpus_path();
    match allegro_traceql::fuzzing::corpus() {
        Ok(sections) => Some(sections),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            panic!("corpus {} is not valid YAML: {e}", path.display())
        }
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "corpus missing under CI: {}: {e}",
                path.display()
            );
            eprintln!("skipping: corpus not found at {} ({e})", path.display());
            None
        }
    }
}

/// What our front end does with a query: `Ok` or the kind of error.
fn outcome(q: &str) -> Result<(), Error> {
    let ast = parse(q)?;
    validate(q, &ast)
}

fn assert_well_rendered(q: &str, e: &Error) {
    let pos = format!("--> {}:{}", e.line, e.column);
    assert!(
        e.rendered.contains(&pos) && e.rendered.contains('^'),
        "error for {q:?} lacks position or caret:\n{e}"
    );
}

fn assert_round_trips(q: &str) {
    let ast = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    let printed = ast.to_string();
    let again = parse(&printed).unwrap_or_else(|e| panic!("{q} printed as {printed}: {e}"));
    assert_eq!(again, ast, "{q} printed as {printed} parses differently");
    assert_eq!(
        again.to_string(),
        printed,
        "printing is not idempotent for {q}"
    );
}

#[test]
fn tempo_corpus_behaves_exactly_as_tempo() {
    let Some(corpus) = corpus() else { return };
    let mut misses = Vec::new();
    let mut total = 0;
    for (section, queries) in &corpus {
        let want = match section.as_str() {
            "valid" => None,
            "parse_fails" => Some(ErrorKind::Parse),
            "validate_fails" => Some(ErrorKind::Validate),
            "unsupported" => Some(ErrorKind::Unsupported),
            "dump" => continue,
            other => panic!("unknown corpus section {other}"),
        };
        for q in queries {
            total += 1;
            let got = outcome(q);
            if let Err(e) = &got {
                assert_well_rendered(q, e);
            }
            let got_kind = got.as_ref().err().map(|e| e.kind);
            if got_kind != want {
                misses.push(format!("[{section}] {q}\n    got {got:?}"));
            }
            if matches!(want, None | Some(ErrorKind::Unsupported)) {
                assert_round_trips(q);
            }
        }
    }
    assert!(total > 400, "corpus looks truncated: {total} queries");
    assert!(
        misses.is_empty(),
        "{} of {total} corpus queries misbehave:\n{}",
        misses.len(),
        misses.join("\n")
    );
}
