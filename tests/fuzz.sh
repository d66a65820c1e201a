#!/usr/bin/env bash
# Fuzzing, longer than CI runs it: `bash tests/fuzz.sh [N]` (N cases per property, default
# 10000). The properties (proptest: arbitrary and structure-aware inputs, a failing case shrunk
# and saved under proptest-regressions/) are the SMTP command parser, the DATA reader and the
# MIME path (mailhook/tests/fuzz.rs), the routes, percent-decoding, client address and Stripe
# signature check (proxy/tests/fuzz.rs), then N raw HTTP requests against a real proxy and
# database (tests/tests/fuzz_http.rs, through tests/run.sh). Prints the counts; exits non-zero
# on any panic, broken invariant, hang (a per-request timeout) or 500.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
N=${1:-10000}
start=$(date +%s)
PROPTEST_CASES=$N cargo test --release -p echovalue-mailhook -p echovalue-proxy --test fuzz 2>&1 |
    grep -E '^test |test result|panicked|minimal failing'
echo "fuzz: 6 properties x $N cases passed"
EV_FUZZ_CASES=$N EV_PARTS=cargo EV_CARGO_TEST_ARGS="--test fuzz_http -- --nocapture" \
    bash tests/run.sh 2>&1 | grep -E 'fuzz_http|test result|panicked|total:'
echo "fuzz: done in $(($(date +%s) - start)) s"
