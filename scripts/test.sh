#!/usr/bin/env bash
# Sets up the machine, builds Anvil and runs every test (GoogleTest, fuzzers for a bounded time, pytest e2e).
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_model.sh
bash scripts/build.sh
# NOTE: passive OpenMP waiting keeps parallel tests from spinning against each other on small machines.
OMP_WAIT_POLICY=PASSIVE ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 900
