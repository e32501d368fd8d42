#!/usr/bin/env bash
# Static check of the bundled Julia package (no Julia runtime is needed): the linter `fatou` (PyPI)
# with the rules selected in julia/fatou.toml (undefined-name, call-arity). Exits non-zero on any
# finding, or when fatou is missing, or when it could not analyse a file completely.
#   usage: .ci/lint-julia.sh [julia-dir]      (default: julia/ next to this script's parent)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/julia}"
if ! command -v fatou >/dev/null 2>&1; then
  echo "lint-julia: fatou not found; install it with: pip install fatou" >&2
  exit 2
fi
cd "$dir"
# json output: every finding (warning or info such as analysis-incomplete) is a failure
out="$(fatou lint --config fatou.toml --output json . 2>&1)" || true
count="$(python3 - "$out" <<'PY'
import json, sys
text = sys.argv[1]
start = text.find("[")
try:
    findings = json.loads(text[start:text.rindex("]") + 1]) if start >= 0 else None
except ValueError:
    findings = None
if findings is None:
    print(-1)
else:
    for f in findings:
        r = f.get("range", {})
        print(f"{f.get('path')}: {f.get('severity')}[{f.get('rule')}] {f.get('message', {}).get('body')} "
              f"(bytes {r.get('start')}-{r.get('end')})", file=sys.stderr)
    print(len(findings))
PY
)"
if [ "$count" = "-1" ]; then
  echo "lint-julia: could not parse fatou's output:" >&2
  echo "$out" >&2
  exit 2
fi
if [ "$count" != "0" ]; then
  echo "lint-julia: fatou reported $count finding(s) in $dir" >&2
  fatou lint --config fatou.toml --output concise . >&2 || true
  exit 1
fi
echo "lint-julia: fatou clean on $dir ($(find . -name '*.jl' | wc -l) .jl files; rules: undefined-name, call-arity)"
