//! Hostile sizes are errors, never crashes. Tests run on threads with the 8 MiB stack the
//! server gives its workers, in a debug build (whose frames are several times larger than a
//! release build's), so recursion that could overflow there fails here.

use allegro_traceql::fuzzing::on_server_stack;
use allegro_traceql::{ErrorKind, compile, parse, validate};

#[test]
fn deep_nesting_is_a_parse_error() {
    on_server_stack(|| {
        let q = format!("{{ {}.a{} }}", "(".repeat(10_000), ")".repeat(10_000));
        let e = parse(&q).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Parse);
        assert!(e.message.contains("nested more than 64"), "{e}");
        assert_eq!((e.line, e.column), (1, 66), "{e}");

        let ok = format!("{{ {}.a = 1{} }}", "(".repeat(60), ")".repeat(60));
        let ast = parse(&ok).expect("60 levels parse");
        validate(&ok, &ast).expect("and validate");
        assert_eq!(parse(&ast.to_string()).unwrap(), ast);
    });
}

#[test]
fn brackets_inside_strings_do_not_count() {
    on_server_stack(|| {
        let q = format!("{{ .a = \"{}\" }}", "(".repeat(500));
        compile(&q).expect("brackets in a string are text");
    });
}

#[test]
fn long_or_chains_work_up_to_the_limit() {
    on_server_stack(|| {
        let terms: Vec<String> = (0..512).map(|i| format!(".a = {i}")).collect();
        let q = format!("{{ {} }}", terms.join(" || "));
        let ast = parse(&q).expect("512 terms parse");
        validate(&q, &ast).expect("and validate");
        assert_eq!(parse(&ast.to_string()).unwrap(), ast, "and round-trip");
        let rewritten = compile(&q).unwrap().to_string();
        assert!(
            rewritten.starts_with("{ .a IN [0, 1, 2,"),
            "{rewritten:.60}"
        );
        assert!(rewritten.ends_with(", 511] }"), "one list of all 512");

        let terms: Vec<String> = (0..600).map(|i| format!(".a = {i}")).collect();
        let q = format!("{{ {} }}", terms.join(" || "));
        let e = parse(&q).unwrap_err();
        assert!(e.message.contains("too long"), "{e}");
    });
}

#[test]
fn long_prefix_and_power_chains_do_not_overflow() {
    on_server_stack(|| {
        for q in [
            format!("{{ {}true }}", "!".repeat(1024)),
            format!("{{ {}.a > 1 }}", "-".repeat(1023)),
            format!("{{ .a = {} }}", vec!["2"; 1024].join(" ^ ")),
            format!("{{ {}true }}", "!".repeat(100_000)),
            "{ .a = 1 } && ".repeat(5000) + "{ .a = 1 }",
        ] {
            // Either outcome is fine; crashing is not.
            if let Ok(ast) = parse(&q) {
                let _ = validate(&q, &ast);
                let _ = ast.to_string();
                let _ = compile(&q);
            }
        }
    });
}

#[test]
fn a_regex_too_complex_to_match_cheaply_is_refused_where_it_was_written() {
    on_server_stack(|| {
        // The query that froze a server: `.*` 3,000 times. It parses; validation refuses it.
        let q = format!("{{ name =~ \"{}x\" }}", ".*".repeat(3000));
        let ast = parse(&q).expect("a long regex is still syntax");
        let e = validate(&q, &ast).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validate, "{e}");
        assert!(
            e.message.contains("regex too complex") && e.message.contains("1024 KiB"),
            "{e}"
        );
        assert_eq!((e.line, e.column), (1, 11), "{e}");
        // Real-world shapes stay well inside: Grafana's multi-value variables become
        // alternations of every selected value.
        let services: Vec<String> = (0..100).map(|i| format!("service-number-{i}")).collect();
        compile(&format!(
            "{{ resource.service.name =~ \"{}\" }}",
            services.join("|")
        ))
        .expect("a 100-way alternation is fine");
        compile(&format!("{{ name =~ \"{}x\" }}", ".*".repeat(30))).expect("30 wildcards are fine");
    });
}

#[test]
fn pipelines_and_selects_are_bounded() {
    on_server_stack(|| {
        let stages = |n: usize| format!("{{ }}{}", " | count() > 0".repeat(n - 1));
        compile(&stages(32)).expect("32 stages");
        let e = compile(&stages(33)).unwrap_err();
        assert!(
            e.message
                .contains("pipeline too long: 33 stages, at most 32"),
            "{e}"
        );
        let fields = |n: usize| {
            let f: Vec<String> = (0..n).map(|i| format!(".a{i}")).collect();
            format!("{{ }} | select({})", f.join(", "))
        };
        compile(&fields(64)).expect("64 fields");
        let e = compile(&fields(65)).unwrap_err();
        assert!(
            e.message.contains("select() has 65 fields, at most 64"),
            "{e}"
        );
    });
}
