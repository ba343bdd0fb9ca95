#!/usr/bin/env python3
"""DuckDB answering a benchmark's hand-written SQL on the same Parquet blocks Allegro reads
(`allegro-bench search` and `allegro-bench sql` start this and talk to it, so the two engines
alternate query by query on the same machine).

Protocol: one JSON object per line on stdin, `{"sql": "..."}`; one per line on stdout,
`{"ms": <wall ms>, "rows": [[...], ...]}` or `{"error": "..."}`. Values: bytes as lowercase
hex (trace IDs), numbers as numbers, anything else (timestamps, lists) as its text. `spans` is
a view over every block's `data.parquet`.

SQL may name attributes as `{span.KEY}` / `{resource.KEY}` (string values; `{span_int.KEY}`
for integers): a block keeps a
frequent key in a column of its own and the rest in a map, so they expand to the column where
some block has one, falling back to the map (`map_extract_value`).
"""

import argparse
import decimal
import json
import re
import sys
import time

import duckdb


def value(v):
    """A DuckDB value as JSON."""
    if isinstance(v, float) and v != v:
        return None
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, decimal.Decimal):
        return float(v)
    return str(v)


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
        scope, ty, key = m.group(1), m.group(2) or "_str", m.group(3)
        mapped = f"map_extract_value({scope}_attrs{ty}, '{key}')"
        col = f"{scope}.{key}"
        if col in cols:
            return f'coalesce("{col}", {mapped})'
        return mapped

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sql = re.sub(r"\{(span|resource)(_int)?\.([A-Za-z0-9_.]+)\}", attr, req["sql"])
        try:
            t0 = time.perf_counter()
            rows = con.execute(sql).fetchall()
            ms = (time.perf_counter() - t0) * 1e3
            out = {"ms": ms, "rows": [[value(v) for v in r] for r in rows]}
        except duckdb.Error as e:
            out = {"error": str(e), "sql": sql}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
