#!/usr/bin/env python3
"""Builds sql/echovalue--0.1.0--0.2.0.sql from the sources; run it from the repository root after
any change to extension/src/sql or the Rust functions, until 0.2.0 is released:

    (cd extension && cargo pgrx schema pg15 -o /tmp/echovalue--0.2.0.sql)
    python3 sql/build/upgrade.py /tmp/echovalue--0.2.0.sql

The script is: the hand-written head (sql/build/0.1.0--0.2.0.head.sql: changes to the tables
0.1.0 had), the Rust functions new since 0.1.0 as cargo pgrx generates them, every SQL function
of the files 0.1.0 had as `create or replace`, the files new in 0.2.0 as they are, and
grants.sql. tests/run.sh checks the result: 0.1.0 updated with it must have the catalog of a
fresh install.
"""
import re, sys
cur_install = sys.argv[1]
head_path = "sql/build/0.1.0--0.2.0.head.sql"
old_install = "sql/echovalue--0.1.0.sql"
out_path = "sql/echovalue--0.1.0--0.2.0.sql"
OLD_FILES = ["internals", "token", "kv", "logs", "recharge", "refuse", "maintenance"]
NEW_FILES = ["keys", "stripe", "webhook", "mail", "delivery"]  # lib.rs order
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
parts.append("-- Rust functions new in 0.2.0 (as cargo pgrx generates them).\n\n" + "\n".join(new_rust))
funcs = []
for f in OLD_FILES:
    for block in sql_functions(open(f"extension/src/sql/{f}.sql").read()):
        funcs.append(re.sub(r"^create function", "create or replace function", block, count=1, flags=re.M))
parts.append("-- The functions of the files 0.1.0 had, replaced in place.\n\n" + "\n".join(funcs))
for f in NEW_FILES:
    parts.append(f"-- extension/src/sql/{f}.sql, new in 0.2.0.\n\n" + open(f"extension/src/sql/{f}.sql").read())
parts.append("-- Privileges, as in a fresh install (extension/src/sql/grants.sql).\n\n" + open("extension/src/sql/grants.sql").read())
open(out_path, "w").write("\n".join(p.rstrip() + "\n" for p in parts))
print(f"{len(new_rust)} new Rust functions, {len(funcs)} replaced SQL functions", file=sys.stderr)
