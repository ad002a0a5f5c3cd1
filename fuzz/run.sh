#!/bin/sh
# Runs one fuzz target for a while with its seeds and dictionary.
#
#   fuzz/run.sh <target> [seconds] [more libFuzzer options...]
#
# New inputs go to fuzz/work/<target>/ (ignored by git), so the committed
# seeds in fuzz/corpus/<target>/ stay small; crashes land in
# fuzz/artifacts/<target>/. The run itself happens in a fresh network
# namespace when `unshare` allows it: the config target resolves `listen:`
# host names, and fuzzed names must fail at once, not query a DNS server.
set -eu
target=${1:?usage: fuzz/run.sh <target> [seconds] [libFuzzer options...]}
seconds=${2:-300}
[ $# -ge 2 ] && shift 2 || shift $#
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
export RUSTC_BOOTSTRAP=1
cargo fuzz build "$target"
mkdir -p "fuzz/work/$target"
netns=""
if unshare -rn true 2>/dev/null; then
    netns="unshare -rn"
fi
exec $netns cargo fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
    -dict="fuzz/dict/$target.dict" -max_total_time="$seconds" -print_final_stats=1 "$@"
