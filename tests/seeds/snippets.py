"""The seeds' client snippets, as text: found in the seed documents (001 and 002 lay them out
differently), re-flowed where a document lost their line breaks, and the preludes that make
every HTTP status they get visible to run_snippets.py. Nothing here runs a snippet."""

from __future__ import annotations

import re
from dataclasses import dataclass

STATUS_MARK = "__ev_status__"

# Statement starters per language. A newline goes before one of these when it stands at
# bracket depth 0 and does not continue an expression (see `reflow`).
STARTERS = {
    "python": ("import ", "response = ", "requests.", "print(", "#"),
    "js": ("fetch(", "const ", "let ", "console.", "//"),
}
COMMENT = {"python": "#", "js": "//"}
CONTINUES = set("=,([{.:+-*/|&<>!?")

# Prepended to each snippet (the snippet itself is not changed): records every HTTP status on
# stderr so snippets that print nothing can still be checked.
PY_PRELUDE = f"""\
import sys as _ev_sys
import requests as _ev_requests
_ev_send = _ev_requests.Session.send
def _ev_recording_send(self, request, **kwargs):
    response = _ev_send(self, request, **kwargs)
    print("{STATUS_MARK}", response.status_code, file=_ev_sys.stderr)
    return response
_ev_requests.Session.send = _ev_recording_send
"""
JS_PRELUDE = f"""\
const _evFetch = globalThis.fetch;
globalThis.fetch = (...args) => _evFetch(...args).then((response) => {{
  process.stderr.write("{STATUS_MARK} " + response.status + "\\n");
  return response;
}});
process.on("unhandledRejection", (err) => {{
  const cause = err && err.cause ? ` (cause: ${{err.cause}})` : "";
  console.error(`unhandled rejection: ${{err}}${{cause}}`);
  process.exitCode = 1;
}});
"""


def reflow(code: str, lang: str) -> str:
    """Puts a flattened snippet back on separate statement lines."""
    starters = STARTERS[lang]
    comment = COMMENT[lang]
    out: list[str] = []
    depth = 0
    quote: str | None = None
    in_comment = False
    i = 0
    n = len(code)

    def last_significant() -> str:
        for chunk in reversed(out):
            stripped = chunk.rstrip()
            if stripped:
                return stripped[-1]
        return ""

    while i < n:
        c = code[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(code[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        at_word_start = i == 0 or code[i - 1].isspace() or code[i - 1] in ";)}"
        if depth == 0 and at_word_start:
            starter = next((s for s in starters if code.startswith(s, i)), None)
            if starter is not None and (in_comment or starter == comment or last_significant() not in CONTINUES):
                if out and not "".join(out[-1:]).endswith("\n"):
                    out.append("\n")
                in_comment = starter == comment
                out.append(starter)
                i += len(starter)
                continue
        if not in_comment:
            if c in "'\"`":
                quote = c
            elif c in "([{":
                depth += 1
            elif c in ")]}":
                depth = max(0, depth - 1)
        out.append(c)
        i += 1
    text = "".join(out)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip()) + "\n"


@dataclass
class Snippet:
    seed: str
    section: str
    lang: str
    code: str


def sections_002(text: str) -> dict[str, str]:
    """Seed 002 is one line: `# Title > summary …` starts each page."""
    marks = list(re.finditer(r"(?:^|\s)# ([A-Z][A-Za-z0-9 -]{0,40}?) > ", text))
    out = {}
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        out[m.group(1)] = text[m.end() : end]
    return out


def snippets_002(text: str) -> list[Snippet]:
    found = []
    for section, body in sections_002(text).items():
        for m in re.finditer(r"\* (Python|JavaScript) ```(python|js) (.*?)```", body, re.S):
            found.append(Snippet("002", section, m.group(2), m.group(3)))
    return found


def snippets_001(text: str) -> list[Snippet]:
    """Seed 001 runs the languages together: JS ends at `);` right before `import requests`,
    Python runs from `import requests` to the PHP block."""
    found = []
    for m in re.finditer(r"(fetch\(.*?\);)(?=import requests)", text, re.S):
        found.append(Snippet("001", "Token Management", "js", m.group(1)))
    for m in re.finditer(r"(import requests\n.*?)(?=<\?php)", text, re.S):
        found.append(Snippet("001", "Token Management", "python", m.group(1)))
    return found
