#!/usr/bin/env python3
"""Builds the upgrade script sql/echovalue--FROM--TO.sql from the sources; run it from the
repository root after any change to extension/src/sql or the Rust functions, until TO is
released (only the newest script is rebuilt; released ones are never edited):

    (cd extension && cargo pgrx schema pg15 -o /tmp/echovalue--cur.sql)
    python3 sql/build/upgrade.py 0.2.0 0.3.0 /tmp/echovalue--cur.sql

The script is: the hand-written head (sql/build/FROM--TO.head.sql: changes to tables and types,
and drops), the Rust functions new since FROM as cargo pgrx generates them, every SQL function
of the files FROM had as `create or replace`, the files new in TO as they are, and grants.sql.
tests/run.sh checks the result: FROM updated with it must have the catalog of a fresh install.
"""
import re
import sys

# The files of extension/src/sql each version added, in lib.rs order.
FILES = {
    "0.1.0": ["internals", "token", "kv", "logs", "recharge", "refuse", "maintenance"],
    "0.2.0": ["keys", "stripe", "webhook", "mail", "delivery"],
    "0.3.0": [],
}
VERSIONS = list(FILES)

old, new, cur_install = sys.argv[1], sys.argv[2], sys.argv[3]
head_path = f"sql/build/{old}--{new}.head.sql"
old_install = f"sql/echovalue--{old}.sql"
out_path = f"sql/echovalue--{old}--{new}.sql"
old_files = [f for v in VERSIONS[: VERSIONS.index(old) + 1] for f in FILES[v]]
new_files = FILES[new]


def sql_functions(text):
    return re.findall(r"^(?:--[^\n]*\n)*create function .*?^\$\$;\n", text, re.M | re.S)


def rust_functions(text):
    return {m.group(1): m.group(0) for m in re.finditer(
        r'^/\* <begin connected objects> \*/\n-- [^\n]*\n(?:--[^\n]*\n)*CREATE  FUNCTION "([^"]+)".*?;\n/\* </end connected objects> \*/\n',
        text, re.M | re.S)}


old_rust = rust_functions(open(old_install).read())
cur_rust = rust_functions(open(cur_install).read())
parts = [open(head_path).read().rstrip() + "\n"]
new_rust = [body for name, body in cur_rust.items() if name not in old_rust]
parts.append(f"-- Rust functions new in {new} (as cargo pgrx generates them).\n\n" + "\n".join(new_rust))
funcs = []
for f in old_files:
    for block in sql_functions(open(f"extension/src/sql/{f}.sql").read()):
        funcs.append(re.sub(r"^create function", "create or replace function", block, count=1, flags=re.M))
parts.append(f"-- The functions of the files {old} had, replaced in place.\n\n" + "\n".join(funcs))
for f in new_files:
    parts.append(f"-- extension/src/sql/{f}.sql, new in {new}.\n\n" + open(f"extension/src/sql/{f}.sql").read())
parts.append("-- Privileges, as in a fresh install (extension/src/sql/grants.sql).\n\n" + open("extension/src/sql/grants.sql").read())
open(out_path, "w").write("\n".join(p.rstrip() + "\n" for p in parts))
print(f"{out_path}: {len(new_rust)} new Rust functions, {len(funcs)} replaced SQL functions", file=sys.stderr)
