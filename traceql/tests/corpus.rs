//! Tempo's own TraceQL corpus (`shared/conformance/traceql/test_examples.yaml`) against the
//! grammar. The grammar decides only "parses or not": `valid`, `validate_fails`, `unsupported`
//! and `dump` queries must parse, `parse_fails` must not. Until the front end is complete the
//! test ratchets: it fails if fewer queries behave than the recorded baseline, and prints every
//! miss so the next change can fix them.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn corpus() -> Option<BTreeMap<String, Vec<String>>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/traceql/test_examples.yaml");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_yaml::from_str(&text).expect("corpus is valid YAML")),
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

/// Queries of each section that behave today. Raise these as the front end grows; never lower.
/// (The grammar alone reaches every section in full; validation is what remains.)
const BASELINE: &[(&str, usize)] = &[
    ("valid", 284),
    ("parse_fails", 87),
    ("validate_fails", 70),
    ("unsupported", 22),
];

#[test]
fn tempo_corpus_parses_as_tempo_does() {
    let Some(corpus) = corpus() else { return };
    let mut report = Vec::new();
    for (section, queries) in &corpus {
        let should_parse = section != "parse_fails";
        let mut ok = 0;
        for q in queries {
            let parsed = allegro_traceql::parse_tree(q).is_ok();
            if parsed == should_parse {
                ok += 1;
            } else {
                eprintln!(
                    "[{section}] {} {q}",
                    if should_parse {
                        "does not parse:"
                    } else {
                        "parses but must not:"
                    }
                );
            }
        }
        eprintln!("{section}: {ok}/{}", queries.len());
        report.push((section.clone(), ok, queries.len()));
    }
    for (section, min) in BASELINE {
        let (_, ok, total) = report
            .iter()
            .find(|(s, _, _)| s == section)
            .cloned()
            .unwrap_or_default();
        assert!(ok >= *min, "{section}: {ok}/{total} behave, baseline {min}");
    }
}
