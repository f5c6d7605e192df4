#!/usr/bin/env python3
"""Independent check of Tidal's preference export (run by tidal/tests/export.rs).

Reads each Parquet file with pyarrow and each JSON Lines file with json, and checks:
- the columns (names, order, Parquet types) of the format named by the file name
  (dpo.*, kto.*, reward.*);
- the row counts given by --expect, and that the Parquet and JSONL files of a format hold
  exactly the same rows;
- the hard-negative rules on the hand-built history of export.rs: `flip` (disliked, later
  liked) is never rejected, `n4` (impression answered by dwell) is never rejected, `old-neg`
  is `explicit` in alice's session s0 and `history` in s1 and s2, `n2`, `c1` and `c2` are
  `implicit` in their own sessions, no rejected item is chosen in the same context, and
  every rejected item of a user is a hard negative of that user;
- the split (train/test, one per (user, session)), margins > 0, provenance values.

Usage: export_check.py --expect dpo=20,kto=24,reward=20 --exported-at-ms MS FILE...
Exits 0 and prints "checked N files" on success, non-zero with a message otherwise.
"""

import argparse
import json
import os
import sys

try:
    import pyarrow
    import pyarrow.parquet as pq
except ImportError as e:  # the Rust test checks first; this is for manual runs
    print(f"pyarrow is missing ({e}): run scripts/test-all.sh or python3 -m pip install pyarrow")
    sys.exit(3)

PROVENANCE = ["split", "user", "session", "context", "shard", "first_seq", "last_seq", "hlc_min",
              "hlc_max", "negative_source", "exported_at_ms", "format"]
COLUMNS = {
    "dpo": ["prompt", "chosen", "rejected", "chosen_id", "rejected_id"] + PROVENANCE,
    "kto": ["prompt", "completion", "label", "item_id"] + PROVENANCE,
    "reward": ["prompt", "chosen", "rejected", "margin", "chosen_id", "rejected_id"] + PROVENANCE,
}
TYPES = {
    "label": pyarrow.bool_(), "margin": pyarrow.float64(), "shard": pyarrow.uint32(),
    "first_seq": pyarrow.uint64(), "last_seq": pyarrow.uint64(), "hlc_min": pyarrow.uint64(),
    "hlc_max": pyarrow.uint64(), "exported_at_ms": pyarrow.uint64(),
}
# Hard negatives of each user in the hand-built history (after add-wins).
HARD = {"alice": {"old-neg", "n2", "d1", "d2"}, "bob": {"b2", "b3"}, "carol": {"c1", "c2"}}
SOURCES = {"explicit", "implicit", "history", "mined"}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def read(path):
    if path.endswith(".parquet"):
        table = pq.read_table(path)
        for name, want in TYPES.items():
            if name in table.schema.names:
                got = table.schema.field(name).type
                check(got == want, f"{path}: column {name} is {got}, want {want}")
        for name in table.schema.names:
            if name not in TYPES:
                got = table.schema.field(name).type
                check(got == pyarrow.string(), f"{path}: column {name} is {got}, want string")
        return table.schema.names, table.to_pylist()
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    names = list(json.loads(first).keys()) if first.strip() else []
    for row in rows:
        check(list(row.keys()) == names, f"{path}: a row's keys differ from the first row's")
    return names, rows


def context_key(row):
    return (row["user"], row["session"], row["context"], row["first_seq"])


def check_rules(path, fmt, rows, exported_at_ms):
    split_of = {}
    chosen_in = {}
    pairs = fmt in ("dpo", "reward")
    for row in rows:
        if pairs:
            chosen_in.setdefault(context_key(row), set()).add(row["chosen_id"])
        elif row["label"]:
            chosen_in.setdefault(context_key(row), set()).add(row["item_id"])
    for row in rows:
        where = f"{path}: {row['user']}/{row['session']}"
        check(row["format"] == fmt, f"{where}: format {row['format']}")
        check(row["exported_at_ms"] == exported_at_ms, f"{where}: exported_at_ms {row['exported_at_ms']}")
        check(row["split"] in ("train", "test"), f"{where}: split {row['split']}")
        check(split_of.setdefault((row["user"], row["session"]), row["split"]) == row["split"],
              f"{where}: one session in two splits")
        check(row["first_seq"] <= row["last_seq"] and row["hlc_min"] <= row["hlc_max"], f"{where}: bad extent")
        if pairs:
            rejected, source = row["rejected_id"], row["negative_source"]
        elif row["label"]:
            check(row["negative_source"] is None, f"{where}: a chosen KTO row has a negative_source")
            continue
        else:
            rejected, source = row["item_id"], row["negative_source"]
        check(source in SOURCES, f"{where}: negative_source {source}")
        check(rejected not in ("flip", "n4"), f"{where}: {rejected} must never be rejected")
        check(rejected in HARD.get(row["user"], set()), f"{where}: {rejected} is not a hard negative")
        check(rejected not in chosen_in.get(context_key(row), set()), f"{where}: {rejected} is also chosen")
        if fmt == "reward":
            check(row["margin"] > 0, f"{where}: margin {row['margin']}")
        expected_source = {
            ("alice", "s0", "old-neg"): "explicit", ("alice", "s1", "old-neg"): "history",
            ("alice", "s2", "old-neg"): "history", ("alice", "s1", "n2"): "implicit",
            ("alice", "s1", "d2"): "explicit", ("carol", "s1", "c1"): "implicit",
            ("carol", "s1", "c2"): "implicit", ("bob", "-", "b3"): "history",
        }.get((row["user"], row["session"], rejected))
        if expected_source:
            check(source == expected_source, f"{where}: {rejected} has source {source}, want {expected_source}")
    seen = {(r["user"], r["session"], r.get("rejected_id") or r.get("item_id")) for r in rows}
    for must in [("alice", "s1", "old-neg"), ("alice", "s2", "old-neg"), ("alice", "s1", "n2")]:
        check(must in seen, f"{path}: no row for {must}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", required=True, help="format=rows,... e.g. dpo=20,kto=24")
    parser.add_argument("--exported-at-ms", type=int, required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    expect = {k: int(v) for k, v in (part.split("=") for part in args.expect.split(","))}
    by_format = {}
    for path in args.files:
        fmt = os.path.basename(path).split(".")[0]
        if fmt not in COLUMNS:
            failures.append(f"{path}: cannot tell the format from the name")
            continue
        names, rows = read(path)
        check(names == COLUMNS[fmt], f"{path}: columns {names}, want {COLUMNS[fmt]}")
        check(len(rows) == expect.get(fmt), f"{path}: {len(rows)} rows, want {expect.get(fmt)}")
        check_rules(path, fmt, rows, args.exported_at_ms)
        by_format.setdefault(fmt, []).append((path, rows))
    for fmt, outputs in by_format.items():
        for (path, rows) in outputs[1:]:
            check(rows == outputs[0][1], f"{path} and {outputs[0][0]} hold different rows")
    if failures:
        for failure in failures:
            print("FAIL", failure)
        sys.exit(1)
    print(f"checked {len(args.files)} files")


if __name__ == "__main__":
    main()
