"""Checks tapwatch's SQL on current ClickHouse (26.x) in-process, with chdb-core.

    python chdb_check.py SCHEMA.sql QUERIES.sql DATA_DIR > answers.json

Runs every statement of `tapwatch schema print`, loads every file of the file store under
DATA_DIR (TabSeparatedWithNames, as `tapwatch load` would), then runs each query of
QUERIES.sql (`tapwatch query --print-sql`, one per statement). Prints JSON: the sums of
packets in the base table and in the rollups, and each query's rows. Any error exits non-zero.
"""
import glob
import json
import os
import sys

from chdb import session


def statements(path):
    text = "\n".join(l for l in open(path).read().splitlines() if not l.startswith("--"))
    return [s.strip().rstrip(";") for s in text.split(";\n") if s.strip()]


def main():
    schema, queries, store = sys.argv[1:4]
    s = session.Session()
    for st in statements(schema):
        s.query(st)
    loaded = 0
    for table_dir in sorted(glob.glob(os.path.join(store, "*"))):
        table = os.path.basename(table_dir)
        if table == "spool":
            continue
        for f in sorted(glob.glob(os.path.join(table_dir, "*.tsv"))):
            data = open(f, "rb").read().decode("utf-8", "surrogateescape")
            s.query(f"INSERT INTO tapwatch.{table} FORMAT TabSeparatedWithNames\n" + data)
            loaded += 1

    def scalar(q):
        return int(str(s.query(q, "TSV")).strip() or 0)

    out = {
        "version": str(s.query("SELECT version()", "TSV")).strip(),
        "files": loaded,
        "packets": scalar("SELECT sum(packets) FROM tapwatch.traffic"),
        "packets_1m": scalar("SELECT sumMerge(packets) FROM tapwatch.traffic_1m"),
        "packets_1h": scalar("SELECT sumMerge(packets) FROM tapwatch.traffic_1h"),
        "answers": [],
    }
    for q in statements(queries):
        text = str(s.query(q, "JSONEachRow"))
        out["answers"].append([json.loads(l) for l in text.splitlines() if l.strip()])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
