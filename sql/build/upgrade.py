#!/usr/bin/env python3
"""Builds the upgrade script sql/echovalue--FROM--TO.sql: what changed between the install
script of FROM (kept in tests/upgrade/) and the current one, and nothing else. Run it from the
repository root after any change to extension/src/sql or the Rust functions, until TO is
released (released scripts are never edited):

    (cd extension && cargo pgrx schema pg15 -o /tmp/echovalue--cur.sql)
    python3 sql/build/upgrade.py 0.9.0 0.10.0 /tmp/echovalue--cur.sql

The script is:
1. the hand-written head, sql/build/FROM--TO.head.sql: changes to tables, types and data,
   and the drops those need (a type can only be dropped after the functions that use it);
2. `drop function if exists` for each function that is gone or whose arguments (types or
   names) or result changed (CREATE OR REPLACE cannot change those);
3. each function that is new or whose definition changed, in the install script's order
   (which is the dependency order of extension/src/lib.rs), as `create or replace`;
4. grants.sql as the install script has it, when a function was created (new functions must
   get exactly their grants) or the grants changed.

Functions are compared by their normalised definition: the text from `create function` to
its end, without the comments before it (they are not part of the catalog) and, for Rust
functions, without the source location cargo pgrx prints. Every other statement of the two
install scripts (tables, types, inserts) is compared too, and each one that differs is printed
on stderr: the head must cover it. tests/run.sh is the guard: FROM updated with the result
must have exactly the catalog of a fresh install (tests/upgrade/catalog.sql).
"""
import re
import sys

# (the body ends at the first `$$;`: a dollar-quoted body cannot hold `$$`)
SQL_FUNCTION = re.compile(r"^create (?:or replace )?function echovalue\.(\w+)\(.*?\$\$;\n",
                          re.M | re.S | re.I)
RUST_FUNCTION = re.compile(r'^CREATE +FUNCTION "(\w+)"\(.*?;\n', re.M | re.S)
GRANTS = re.compile(r"^-- Privileges, last:.*?^to echovalue_worker;\n", re.M | re.S)


def functions(text):
    """name -> (signature, normalised definition, definition as written) of every function."""
    found = {}
    for pattern, rust in ((SQL_FUNCTION, False), (RUST_FUNCTION, True)):
        for m in pattern.finditer(text):
            name, body = m.group(1), m.group(0)
            if re.search(r"^create (or replace )?function", body[1:], re.M | re.I):
                sys.exit(f"upgrade.py: function {name} runs into the next one: its body must end "
                         "with $$;")
            if name in found:
                sys.exit(f"upgrade.py: function {name} is defined twice; overloads are not handled")
            norm = re.sub(r"^create (or replace )?function", "create function", body, flags=re.I)
            args, rest = matching_paren(body)
            returns = re.match(r"\s*returns\s+(.*?)\s*(?:$|\blanguage\b|\bimmutable\b|\bstable\b|"
                               r"\bvolatile\b|\bstrict\b|/\*)", rest, re.S | re.I)
            ins, outs, names = arg_types(args)
            result = returns.group(1).lower() if returns else ""
            # names too: CREATE OR REPLACE cannot rename an argument either
            signature = (ins, f"{result} ({outs})" if outs else result, names)
            found[name] = (signature, norm, body)
    return found


def matching_paren(body):
    """The text inside the first parenthesis of body, and the text after it."""
    start = body.index("(")
    depth = 0
    for i in range(start, len(body)):
        depth += body[i] == "("
        depth -= body[i] == ")"
        if depth == 0:
            return body[start + 1:i], body[i + 1:]
    sys.exit("upgrade.py: unbalanced parentheses in " + body[:80])


def arg_types(args):
    """The argument types as DROP FUNCTION takes them (no names, defaults or OUT arguments),
    the types of the OUT arguments, which are part of the result, and every argument's name."""
    args = re.sub(r"/\*.*?\*/", "", args, flags=re.S)
    args = re.sub(r"--[^\n]*", "", args)
    types, outs, names = [], [], []
    for arg in split_top_level(args):
        arg = re.split(r"\s+default\s+|\s*=\s*", arg.strip(), maxsplit=1, flags=re.I)[0]
        if not arg:
            continue
        words = arg.split()
        mode = words[0].lower() if words[0].lower() in ("in", "out", "inout", "variadic") else ""
        words = words[1:] if mode else words
        kind = " ".join(words[1:] if len(words) > 1 else words).lower()
        names.append(words[0].strip('"').lower() if len(words) > 1 else "")
        (outs if mode == "out" else types).append(kind)
        if mode == "inout":
            outs.append(kind)
    return ", ".join(types), ", ".join(outs), ", ".join(names)


def split_top_level(text):
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch in "(["
        depth -= ch in ")]"
        cur += ch
    return parts + [cur]


def other_statements(text):
    """Every statement that is not a function, normalised (comments and layout dropped)."""
    text = SQL_FUNCTION.sub("", RUST_FUNCTION.sub("", text))
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"--[^\n]*", "", text)
    statements = re.findall(r"do \$\$.*?\$\$;|[^;]+;", text, re.S)
    return [" ".join(s.split()) for s in statements if s.strip(" \n;")]


def main():
    old, new, cur_path = sys.argv[1:4]
    old_text = open(f"tests/upgrade/echovalue--{old}.sql").read()
    cur_text = open(cur_path).read()
    old_fns, cur_fns = functions(old_text), functions(cur_text)

    drops, creates, created_new = [], [], False
    for name, (sig, _, _) in old_fns.items():
        if name not in cur_fns or cur_fns[name][0] != sig:
            drops.append(f"drop function if exists echovalue.{name}({sig[0]});\n")
    for name, (sig, norm, body) in cur_fns.items():
        if name in old_fns and old_fns[name][1] == norm:
            continue
        created_new |= name not in old_fns or old_fns[name][0] != sig
        creates.append(re.sub(r"^create function", "create or replace function", body,
                              count=1, flags=re.M | re.I))

    old_grants, cur_grants = GRANTS.search(old_text), GRANTS.search(cur_text)
    parts = [open(f"sql/build/{old}--{new}.head.sql").read()]
    if drops:
        parts.append("-- Functions gone, or whose arguments or result changed.\n\n" + "".join(drops))
    if creates:
        parts.append(f"-- Functions new or changed in {new}.\n\n" + "\n".join(creates))
    if created_new or old_grants.group(0) != cur_grants.group(0):
        parts.append("-- Privileges, as in a fresh install (extension/src/sql/grants.sql).\n\n"
                     + cur_grants.group(0))
    out_path = f"sql/echovalue--{old}--{new}.sql"
    open(out_path, "w").write("\n".join(p.rstrip() + "\n" for p in parts))

    # as sets: cargo pgrx orders the blocks by a dependency graph, not always the same way
    old_other = set(other_statements(GRANTS.sub("", old_text)))
    cur_other = set(other_statements(GRANTS.sub("", cur_text)))
    changed = [f"- {s}" for s in sorted(old_other - cur_other)]
    changed += [f"+ {s}" for s in sorted(cur_other - old_other)]
    print(f"{out_path}: {len(drops)} dropped, {len(creates)} created or replaced functions",
          file=sys.stderr)
    if changed:
        print("other statements that differ (the head must cover them):", file=sys.stderr)
        for line in changed:
            print("  " + line[:200], file=sys.stderr)


main()
