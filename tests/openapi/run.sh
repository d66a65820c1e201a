#!/usr/bin/env bash
# OpenAPI conformance: schemathesis runs against a live proxy with the proxy's own
# /openapi.json, on a funded wallet's root token, and fails on any finding of the checks the
# document promises (no 5xx, documented status codes and content types, bodies that match the
# schemas, and input the schema forbids refused with a 4xx).
#
#   bash tests/openapi/run.sh BASE_URL      (tests/run.sh's "openapi" part calls it)
#
# Env: EV_ADMIN_URL, a superuser libpq URL of the proxy's database (to fund the wallet);
# EV_OPENAPI_EXAMPLES, test cases per operation (default 40); EV_OPENAPI_SEED (default 1).
# Prints "openapi: N passed, N failed" (operations) as its last line.
set -euo pipefail

base=${1:?usage: run.sh BASE_URL}
examples=${EV_OPENAPI_EXAMPLES:-40}
seed=${EV_OPENAPI_SEED:-1}
report=$(mktemp -d)
trap 'rm -rf "$report"' EXIT

token=$(curl -sS --fail -d token=new "$base/token")
# Enough credits that no generated call meets a 402 it did not cause itself.
psql "${EV_ADMIN_URL:?EV_ADMIN_URL is not set}" -qtAc \
    "update echovalue.wallets set balance = 1000000000 where hash = encode(sha256(convert_to('$token', 'UTF8')), 'hex')" >/dev/null

# Payment links, as an operator sets them: unconfigured, /recharge answers 501, a 5xx.
psql "$EV_ADMIN_URL" -qtAc \
    "update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_' || amount where link is null" >/dev/null

rc=0
# --output-sanitize keeps the token out of the output. One worker: the machine is small and
# the run stays reproducible with its seed. From the temp dir: schemathesis keeps a cache
# (.schemathesis/) in its working directory.
cd "$report"
schemathesis run "$base/openapi.json" --url "$base" \
    --header "x-token: $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" --seed "$seed" --workers 1 \
    --request-timeout 15 --output-sanitize true --no-color \
    --report junit --report-junit-path "$report/junit.xml" || rc=$?

read -r passed failed < <(python3 - "$report/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
except (OSError, ET.ParseError):
    print(0, 0)
    sys.exit()
bad = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
print(len(cases) - bad, bad)
PY
)
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo "openapi: $passed passed, $failed failed"
exit "$rc"
