//! Token values: string unquoting (Go's rules, as Tempo's lexer), attribute names, durations.

/// Unquotes a double-quoted literal body with Go's escapes (`\n`, `\x41`, `\101`, `\u00e9`...).
pub fn unquote_go(body: &str) -> Result<String, String> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c == '\n' {
            return Err("newline in string literal (use \\n or a `raw string`)".into());
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some((_, e)) = chars.next() else {
            return Err("string ends in a lone backslash".into());
        };
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let mut take = |n: usize, radix: u32| -> Result<u32, String> {
            let mut v = 0u32;
            for _ in 0..n {
                let d = chars
                    .next()
                    .and_then(|(_, c)| c.to_digit(radix))
                    .ok_or_else(|| format!("invalid escape sequence \\{e}"))?;
                v = v * radix + d;
            }
            Ok(v)
        };
        match e {
            'x' => out.push(take(2, 16)? as u8),
            '0'..='7' => {
                let rest = take(2, 8)?;
                let v = (e as u32 - '0' as u32) * 64 + rest;
                if v > 255 {
                    return Err(format!("octal escape \\{e}.. is above \\377"));
                }
                out.push(v as u8);
            }
            'u' | 'U' => {
                let v = take(if e == 'u' { 4 } else { 8 }, 16)?;
                let c = char::from_u32(v)
                    .ok_or_else(|| format!("escape \\{e}{v:x} is not a Unicode scalar value"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            other => return Err(format!("invalid escape sequence \\{other}")),
        }
    }
    String::from_utf8(out).map_err(|_| "string literal is not valid UTF-8".into())
}

/// An attribute name as written (`foo.bar`, `"foo bar"`, `a."b \" c".d`) without its quotes.
pub fn attribute_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (_, '"') => quoted = !quoted,
            (true, '\\') => {
                // The grammar admits only \" and \\ here.
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            (_, c) => out.push(c),
        }
    }
    out
}

/// Characters that end an unquoted attribute name (Tempo's lexer).
pub fn is_attribute_terminator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"'
        )
}

const NS: u128 = 1;
const US: u128 = 1_000;
const MS: u128 = 1_000_000;
const S: u128 = 1_000_000_000;
const M: u128 = 60 * S;
const H: u128 = 60 * M;
const D: u128 = 24 * H;
const W: u128 = 7 * D;
const Y: u128 = 365 * D;

/// Parses a duration literal as Tempo's lexer does: Prometheus syntax (`1d2h`, whole numbers,
/// units `y w d h m s ms` in decreasing order) or else Go syntax (`1.5s`, `1h15m30.9s`, units
/// `h m s ms us µs ns`). Returns nanoseconds.
pub fn duration(text: &str) -> Result<i64, String> {
    let parts = split_duration(text)?;
    let prometheus = {
        let mut last = u128::MAX;
        parts.iter().all(|(int, frac, unit)| {
            let ok = frac.is_none()
                && !int.is_empty()
                && matches!(*unit, "y" | "w" | "d" | "h" | "m" | "s" | "ms")
                && unit_ns(unit) < last;
            last = unit_ns(unit);
            ok
        })
    };
    let go = parts
        .iter()
        .all(|(_, _, unit)| !matches!(*unit, "y" | "w" | "d"));
    if !prometheus && !go {
        return Err(format!(
            "invalid duration {text}: days, weeks and years take whole numbers in decreasing \
             order (1y2w3d4h); fractions and us/ns need h/m/s units (1.5h, 2ms300us)"
        ));
    }
    let mut total: u128 = 0;
    for (int, frac, unit) in &parts {
        let unit = unit_ns(unit);
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse::<u128>()
                .map_err(|_| format!("duration {text} is too long"))?
        };
        let mut v = whole
            .checked_mul(unit)
            .ok_or_else(|| format!("duration {text} is too long"))?;
        if let Some(frac) = frac {
            // Go truncates the fraction to whole nanoseconds.
            let digits = &frac[..frac.len().min(18)];
            if !digits.is_empty() {
                let f: u128 = digits.parse().unwrap_or(0);
                v += f * unit / 10u128.pow(digits.len() as u32);
            }
        }
        total = total
            .checked_add(v)
            .ok_or_else(|| format!("duration {text} is too long"))?;
    }
    i64::try_from(total).map_err(|_| format!("duration {text} does not fit in 64 bits"))
}

fn unit_ns(unit: &str) -> u128 {
    match unit {
        "ns" => NS,
        "us" | "µs" => US,
        "ms" => MS,
        "s" => S,
        "m" => M,
        "h" => H,
        "d" => D,
        "w" => W,
        _ => Y,
    }
}

type Part<'a> = (&'a str, Option<&'a str>, &'a str);

fn split_duration(text: &str) -> Result<Vec<Part<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let int_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int = &rest[..int_end];
        rest = &rest[int_end..];
        let frac = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            rest = &r[end..];
            Some(&r[..end])
        } else {
            None
        };
        if int.is_empty() && frac.is_none_or(str::is_empty) {
            return Err(format!("invalid duration {text}"));
        }
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
            .ok_or_else(|| format!("invalid duration {text}: missing unit"))?;
        rest = &rest[unit.len()..];
        parts.push((int, frac, unit));
    }
    Ok(parts)
}

/// Nanoseconds as Go's `time.Duration.String()` writes them (`1.5s`, `100ms`, `1m30s`,
/// `1h0m0s`, `2.5µs`, `0s`): how Tempo shows a duration value in an answer.
pub fn go_duration(ns: i64) -> String {
    let u = ns.unsigned_abs();
    // The integer part of u / 10^prec and its fraction as ".ddd", trailing zeros dropped.
    let frac = |v: u64, prec: u32| -> (u64, String) {
        let p = 10u64.pow(prec);
        match v % p {
            0 => (v / p, String::new()),
            f => {
                let digits = format!("{f:0width$}", width = prec as usize);
                (v / p, format!(".{}", digits.trim_end_matches('0')))
            }
        }
    };
    let body = if u < S as u64 {
        match u {
            0 => "0s".to_string(),
            u if u < US as u64 => format!("{u}ns"),
            u if u < MS as u64 => {
                let (i, f) = frac(u, 3);
                format!("{i}{f}µs")
            }
            u => {
                let (i, f) = frac(u, 6);
                format!("{i}{f}ms")
            }
        }
    } else {
        let (secs, f) = frac(u, 9);
        let (s, minutes) = (secs % 60, secs / 60);
        let (m, h) = (minutes % 60, minutes / 60);
        match (h, minutes) {
            (_, 0) => format!("{s}{f}s"),
            (0, _) => format!("{m}m{s}{f}s"),
            _ => format!("{h}h{m}m{s}{f}s"),
        }
    };
    if ns < 0 { format!("-{body}") } else { body }
}

/// Formats nanoseconds as the shortest Go-compatible duration (`1h30m`, `1s500ms`, `0s`), which
/// both Tempo and Allegro read back.
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    if ns < 0 {
        out.push('-');
    }
    let mut rest = ns.unsigned_abs() as u128;
    for (unit, name) in [
        (H, "h"),
        (M, "m"),
        (S, "s"),
        (MS, "ms"),
        (US, "us"),
        (NS, "ns"),
    ] {
        let n = rest / unit;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(name);
            rest -= n * unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_strings_as_go_writes_them() {
        for (ns, want) in [
            (0, "0s"),
            (42, "42ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_234_567, "1.234567ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (-1_500_000_000, "-1.5s"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn go_escapes() {
        assert_eq!(unquote_go(r#"a\"b\\c\n\t"#).unwrap(), "a\"b\\c\n\t");
        assert_eq!(unquote_go(r"\x41\101\u00e9\U0001F600").unwrap(), "AAé😀");
        assert!(unquote_go(r"\q").unwrap_err().contains("invalid escape"));
        assert!(unquote_go(r"\xff").unwrap_err().contains("UTF-8"));
        assert!(unquote_go(r"\'").is_err());
        assert!(unquote_go("a\nb").is_err());
    }

    #[test]
    fn attribute_names_unquote_segments() {
        assert_eq!(attribute_name(r#"foo."bar \" baz".x"#), "foo.bar \" baz.x");
        assert_eq!(attribute_name(r#""a\\b""#), "a\\b");
    }

    #[test]
    fn durations_follow_prometheus_then_go() {
        let s = 1_000_000_000i64;
        assert_eq!(duration("1d").unwrap(), 86_400 * s);
        assert_eq!(duration("1w").unwrap(), 7 * 86_400 * s);
        assert_eq!(duration("1y").unwrap(), 365 * 86_400 * s);
        assert_eq!(duration("1y2w3d4h5m6s7ms").unwrap(), {
            (365 + 14 + 3) * 86_400 * s + 4 * 3600 * s + 5 * 60 * s + 6 * s + 7_000_000
        });
        assert_eq!(duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(duration(".5s").unwrap(), 500_000_000);
        assert_eq!(
            duration("1h15m30.918273645s").unwrap(),
            4530 * s + 918_273_645
        );
        assert_eq!(duration("10µs").unwrap(), 10_000);
        assert_eq!(duration("10us").unwrap(), 10_000);
        assert_eq!(duration("3ns").unwrap(), 3);
        assert_eq!(duration("1s1h").unwrap(), 3601 * s, "Go accepts any order");
        assert!(duration("1.5d").is_err());
        assert!(duration("1s1d").is_err());
        assert!(duration("1d1ns").is_err());
        assert!(duration("300y").is_err(), "over i64 nanoseconds");
    }

    #[test]
    fn durations_print_back() {
        for ns in [
            0i64,
            1,
            1_500_000_000,
            5_400_000_000_000,
            86_400_000_000_000,
            -2_000,
        ] {
            assert_eq!(
                duration(&format_duration(ns).replace('-', "")).unwrap(),
                ns.abs()
            );
        }
        assert_eq!(format_duration(5_400_000_000_000), "1h30m");
        assert_eq!(format_duration(1_500_000_000), "1s500ms");
    }
}
