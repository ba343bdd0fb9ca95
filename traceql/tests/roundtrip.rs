//! Property tests: random ASTs print to text that parses back to the same AST, and a short
//! fuzz run finds no panic (the long run is `examples/fuzz.rs`, see docs/traceql.md).

use allegro_traceql::fuzzing::{Gen, check_one, fuzz, on_server_stack};
use allegro_traceql::parse;

#[test]
fn printed_random_asts_parse_back_equal() {
    on_server_stack(|| {
        let mut g = Gen::new(7);
        for i in 0..5_000 {
            let ast = g.query();
            let text = ast.to_string();
            match parse(&text) {
                Ok(back) => assert_eq!(back, ast, "case {i}: {text}"),
                Err(e) => panic!("case {i}: {text}\ndoes not parse:\n{e}"),
            }
        }
    });
}

#[test]
fn a_short_fuzz_run_is_clean() {
    on_server_stack(|| {
        let seeds = vec![
            "{ .a = 1 && span.b =~ \"x.*\" } >> { kind = server } | count() > 2".to_string(),
            "{} | quantile_over_time(duration, .5, .99) by (resource.service.name) | topk(5)"
                .to_string(),
            "({ .a } | by(.b) | coalesce()) ~ ({ .c }) with(sample=0.1)".to_string(),
        ];
        let r = fuzz(&seeds, 30_000, 1);
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert_eq!(r.inputs, 30_000);
        // The mix must reach past the parser, or the run proves little.
        assert!(r.parsed > 8_000 && r.valid > 1_000, "{r:?}");
    });
}

#[test]
fn the_checker_catches_what_it_should() {
    assert_eq!(check_one("{ .a = 1 }"), Ok((true, true)));
    assert_eq!(check_one("{ .a == 1 }"), Ok((false, false)));
    assert_eq!(check_one("{ 1 = \"x\" }"), Ok((true, false)));
}

#[test]
fn a_float_literal_past_f64_is_an_error_not_infinity() {
    // Found by `cargo fuzz run traceql_parse`: the literal overflowed to +Inf, which printed
    // as `+Inf`, text no query can parse back. Go's ParseFloat refuses it as out of range.
    let q = "{ 188888888888888888888e88888888888888 > ok }";
    assert_eq!(check_one(q), Ok((false, false)));
    let e = parse(q).unwrap_err().to_string();
    assert!(e.contains("out of range") && e.contains("1:3"), "{e}");
    assert!(parse("{ 1.5e308 > ok }").is_ok());
}
