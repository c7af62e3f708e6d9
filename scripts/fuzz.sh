#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time, starting
# from its committed corpus (fuzz/corpus/TARGET). New inputs the fuzzer
# finds go to a scratch folder, so the checkout is left as it was; a crash
# fails the run and leaves its input in fuzz/artifacts/TARGET.
#   scripts/fuzz.sh            # 30 s a target
#   FUZZ_SECONDS=600 scripts/fuzz.sh sync_path
# Needs the nightly toolchain (on this machine) and cargo-fuzz, installed
# here into ~/.cargo/bin if missing (about 2 minutes once).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-30}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "FATAL: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install, once)" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked ||
    { echo "FATAL: could not install cargo-fuzz" >&2; exit 1; }
fi

targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <(cargo fuzz list)
cargo +nightly fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "== fuzz $t for ${seconds}s (corpus: $(ls "corpus/$t" | wc -l) inputs)" >&2
  log="$scratch/$t.log"
  if ! cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "FATAL: fuzz target $t failed; its input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  grep -E "^(Done|stat::peak_rss_mb)" "$log" >&2 || true
done
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no failures" >&2
