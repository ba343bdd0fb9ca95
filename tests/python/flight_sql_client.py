"""Runs SQL against Allegro's Arrow Flight SQL server with ADBC's Flight SQL driver (as
DBeaver, pandas and Polars users connect), the tenant in the x-scope-orgid call header.

Usage: flight_sql_client.py URI TENANT QUERY [QUERY ...]
A query written `prepared:SQL` runs as a prepared statement (ADBC's adbc_prepare, then
execute: CreatePreparedStatement, GetFlightInfo with the handle, DoGet, ClosePreparedStatement;
what JDBC and so DBeaver do for every query).
Prints one JSON object per query: {"columns": [...], "rows": [[...], ...]} (prepared ones also
"prepared": true) or
{"error": "..."}; then what a tool sees on connecting: {"vendor": ..., "read_only": ...,
"tables": ["catalog.schema.table", ...]} (ADBC's get_info and get_objects, which call
GetSqlInfo, GetCatalogs, GetDbSchemas and GetTables).
"""

import json
import sys

import adbc_driver_flightsql.dbapi as flight_sql
from adbc_driver_flightsql import DatabaseOptions


def main():
    uri, tenant, queries = sys.argv[1], sys.argv[2], sys.argv[3:]
    header = DatabaseOptions.RPC_CALL_HEADER_PREFIX.value + "x-scope-orgid"
    with flight_sql.connect(uri, db_kwargs={header: tenant}) as conn:
        for q in queries:
            try:
                out = {}
                with conn.cursor() as cur:
                    if q.startswith("prepared:"):
                        q = q[len("prepared:"):]
                        cur.adbc_prepare(q)
                        out["prepared"] = True
                    cur.execute(q)
                    table = cur.fetch_arrow_table()
                out["columns"] = table.column_names
                out["rows"] = [list(r.values()) for r in table.to_pylist()]
                print(json.dumps(out, default=str))
            except Exception as e:  # the driver's error, for the test to check
                print(json.dumps({"error": str(e)}))
            sys.stdout.flush()
        info = conn.adbc_get_info()
        tables = []
        for c in conn.adbc_get_objects(depth="tables").read_all().to_pylist():
            for s in c["catalog_db_schemas"] or []:
                for t in s["db_schema_tables"] or []:
                    tables.append(f'{c["catalog_name"]}.{s["db_schema_name"]}.{t["table_name"]}')
        print(json.dumps({"vendor": info.get("vendor_name"), "tables": sorted(tables)}))


if __name__ == "__main__":
    main()
