#!/usr/bin/env bash
# ./run_local.sh        set up .venv if needed, run the main job on testdata against a local Woopra stub
# ./run_local.sh test   set up .venv if needed, run ruff and the whole test suite (extra args go to pytest)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
STAMP="$VENV/.installed-$(cat pyproject.toml setup.py | sha256sum | cut -c1-16)"

setup_venv() {
  if [ ! -f "$STAMP" ]; then
    echo "setting up $VENV (first run only) ..."
    python3 -m venv "$VENV"
    quietly "$VENV/bin/python" -m pip install --upgrade pip
    quietly "$VENV/bin/python" -m pip install -e ".[dev]"
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
  elif compiled_modules_are_stale; then
    echo "installing the mapping modules again (a transforms/core/ module changed) ..."
    quietly "$VENV/bin/python" -m pip install --no-deps -e .
  fi
  if [ -n "${WOOPRA_BEAM_PURE_PYTHON:-}" ]; then
    rm -f transforms/core/*.so ./*__mypyc.*.so
  fi
}

# Runs a command, showing its output only when it fails.
quietly() {
  local log="$VENV/install.log"
  if ! "$@" >"$log" 2>&1; then
    tail -40 "$log"
    echo "installing into $VENV failed (full log: $log)"
    exit 1
  fi
}

# setup.py compiles the mapping modules in place, and Python loads those over the sources:
# stale when one of them, or setup.py, is newer (tests/conftest.py stops when a module is).
compiled_modules_are_stale() {
  [ -z "${WOOPRA_BEAM_PURE_PYTHON:-}" ] || return 1
  local compiled
  for compiled in transforms/core/*.so; do
    [ -e "$compiled" ] || return 0 # none compiled yet
    if [ "${compiled%%.*}.py" -nt "$compiled" ] || [ setup.py -nt "$compiled" ]; then
      return 0
    fi
  done
  return 1
}

run_tests() {
  "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  "$VENV/bin/pytest" "$@"
}

run_main_job() {
  local output=out/sample
  rm -rf "$output"
  mkdir -p "$output"
  local stub_log="$output/stub.log"
  "$VENV/bin/woopra-stub" --port 0 --latency-ms 20 --record "$output/stub_requests.jsonl" \
    >"$stub_log" 2>&1 &
  STUB_PID=$!
  trap 'kill "$STUB_PID" 2>/dev/null || true; wait "$STUB_PID" 2>/dev/null || true' EXIT
  local url=""
  for _ in $(seq 1 100); do
    url=$(sed -n 's/^listening on //p' "$stub_log")
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "woopra-stub did not start:"; cat "$stub_log"; exit 1; }
  echo "woopra-stub listening on $url"
  "$VENV/bin/woopra-pipeline" \
    --input testdata/events.jsonl \
    --project_name demo.example.com \
    --consent_category C0004 \
    --deny_event "Internal Test" \
    --sink woopra \
    --woopra_base_url "$url" \
    --output "$output" \
    "$@"
  echo "requests received by the stub: $(wc -l <"$output/stub_requests.jsonl") (see $output/)"
}

setup_venv
case "${1:-}" in
  test) shift; run_tests "$@" ;;
  *) run_main_job "$@" ;;
esac
