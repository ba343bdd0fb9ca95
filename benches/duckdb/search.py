#!/usr/bin/env python3
"""DuckDB answering the search benchmark's queries with hand-written SQL on the same Parquet
blocks Allegro reads (`allegro-bench search` starts this and talks to it, so the two engines
alternate query by query on the same machine).

Protocol: one JSON object per line on stdin, `{"sql": "..."}`; one per line on stdout,
`{"ms": <wall ms>, "rows": [["<trace id hex>", <start ns>], ...]}` or `{"error": "..."}`.

SQL may name attributes as `{span.KEY}` / `{resource.KEY}` (string values): a block keeps a
frequent key in a column of its own and the rest in a map, so they expand to the column where
some block has one, falling back to the map (`map_extract_value`).
"""

import argparse
import json
import re
import sys
import time

import duckdb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="benchmark dataset directory")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    # Footers of every file are read again by each query otherwise.
    try:
        con.execute("SET parquet_metadata_cache = true")
    except duckdb.Error:
        pass
    glob = f"{a.data}/bench/*/data.parquet"
    con.execute(
        f"CREATE VIEW spans AS SELECT * FROM read_parquet('{glob}', union_by_name = true)"
    )
    cols = {r[0] for r in con.execute("DESCRIBE spans").fetchall()}

    def attr(m):
        scope, key = m.group(1), m.group(2)
        mapped = f"map_extract_value({scope}_attrs_str, '{key}')"
        col = f"{scope}.{key}"
        if col in cols:
            return f'coalesce("{col}", {mapped})'
        return mapped

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sql = re.sub(r"\{(span|resource)\.([A-Za-z0-9_.]+)\}", attr, req["sql"])
        try:
            t0 = time.perf_counter()
            rows = con.execute(sql).fetchall()
            ms = (time.perf_counter() - t0) * 1e3
            out = {"ms": ms, "rows": [[bytes(r[0]).hex(), int(r[1])] for r in rows]}
        except duckdb.Error as e:
            out = {"error": str(e), "sql": sql}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
