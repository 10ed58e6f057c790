#!/usr/bin/env bash
# Client CPU-seconds per request at 1 and 2 client threads (load.client_threads), against the zero endpoint on
# this machine, open and closed loop, the same schedule at each thread count. Writes bench/client-threads.md.
# Not a timed test: the figures depend on the machine's cores and load, which the report states.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench --bench client_threads
cat bench/client-threads.md
