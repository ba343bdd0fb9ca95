#!/usr/bin/env python3
"""DuckDB running SQL equivalent to Traces Drilldown's TraceQL metrics queries, on the same
Parquet blocks Allegro reads (`allegro-bench metrics` calls this and puts the numbers side by
side). Prints {"<query>": {"p50_ms", "p99_ms", "rows"}} as JSON.

Equivalence: the same span filter and time window, the same grouping (interval index, label,
log2 bucket); quantiles are DuckDB's exact `quantile_cont` (Allegro interpolates log2 buckets,
as Tempo does). `compare()` counts every intrinsic, hot column and overflow-map attribute per
(selection, value) with one GROUP BY per attribute source.
"""

import argparse
import json
import statistics
import time

import duckdb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="benchmark dataset directory")
    ap.add_argument("--start", type=int, required=True, help="range start, unix ns")
    ap.add_argument("--end", type=int, required=True, help="range end, unix ns")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated query names (default: all)")
    a = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    glob = f"{a.data}/bench/*/data.parquet"
    con.execute(
        f"CREATE VIEW spans AS SELECT * FROM read_parquet('{glob}', union_by_name = true)"
    )
    cols = [r[0] for r in con.execute("DESCRIBE spans").fetchall()]
    hot = [c for c in cols if c.startswith("span.") or c.startswith("resource.")]

    rng = a.end - a.start

    def window(div):
        step = max(rng // 1_000_000_000 // div, 1) * 1_000_000_000
        return (
            f"(start_time_unix_nano - {a.start} - 1) // {step}",
            f"start_time_unix_nano > {a.start} AND start_time_unix_nano <= {a.end}",
        )

    def simple(filt, div, group="", agg="count(*)"):
        i, w = window(div)
        g = f", {group}" if group else ""
        return f"SELECT {i} AS i{g}, {agg} FROM spans WHERE {w} AND {filt} GROUP BY ALL"

    root = "nested_set_parent < 0"
    err = "status_code = 2"
    i1, w1 = window(1)
    base = f"SELECT *, {err} AS sel, {i1} AS i FROM spans WHERE {w1} AND {root}"
    parts = [
        f"SELECT i, sel, '{c}' AS k, CAST(\"{c}\" AS VARCHAR) AS v, count(*) AS n FROM b "
        f"WHERE \"{c}\" IS NOT NULL GROUP BY ALL"
        for c in ["name", "status_code", "kind", "trace_root_name", "trace_root_service", "service_name"]
        + hot
    ]
    for scope in ["resource", "span"]:
        for kind in ["str", "int", "float", "bool"]:
            parts.append(
                f"SELECT i, sel, '{scope}.' || e.key AS k, CAST(e.value AS VARCHAR) AS v, count(*) AS n "
                f"FROM (SELECT i, sel, unnest(map_entries({scope}_attrs_{kind})) AS e FROM b) GROUP BY ALL"
            )
    compare = f"WITH b AS ({base}) " + " UNION ALL ".join(parts)

    queries = {
        "red-rate": simple(root, 64),
        "red-rate-all": simple("true", 64),
        "red-errors": simple(f"{root} AND {err}", 64),
        "heatmap": simple(
            f"{root} AND duration_nano >= 2",
            24,
            "CAST(pow(2, ceil(log2(duration_nano))) AS BIGINT)",
        ),
        "breakdown-rate": simple(f"{root} AND service_name IS NOT NULL", 64, "service_name"),
        "breakdown-errors": simple(
            f"{root} AND service_name IS NOT NULL AND {err}", 64, "service_name"
        ),
        "breakdown-p90": simple(
            f"{root} AND service_name IS NOT NULL",
            64,
            "service_name",
            "quantile_cont(duration_nano, 0.9)",
        ),
        "compare": compare,
        "all-spans-rate": simple("true", 64, "service_name"),
    }
    out = {}
    only = set(filter(None, a.only.split(",")))
    for name, sql in queries.items():
        if only and name not in only:
            continue
        con.execute(sql).fetchall()  # warm-up
        times = []
        rows = 0
        for _ in range(a.reps):
            t0 = time.perf_counter()
            rows = len(con.execute(sql).fetchall())
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        out[name] = {
            "p50_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "rows": rows,
            "sql": sql,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
