#!/usr/bin/env bash
# Coverage-guided fuzzing of the wire decoders on a STABLE toolchain, without
# cargo-fuzz: builds the targets with the SanitizerCoverage flags cargo-fuzz
# would pass (minus AddressSanitizer, which needs nightly; the decoders are
# safe Rust, so a panic is what we look for) and runs libFuzzer directly.
#
#   overlay/fuzz/fuzz-stable.sh [SECONDS] [TARGET...]
#
# Default: 15 seconds per target, all targets. Corpora live in
# overlay/fuzz/corpus/<target> (git-ignored); crashes in overlay/fuzz/artifacts.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
secs="${1:-15}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' "$here/Cargo.toml" | grep -v '^overlay-fuzz$'))
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$here/target/sancov"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps RUSTFLAGS off build scripts and proc macros.
cargo build --release --target "$triple" --manifest-path "$here/Cargo.toml"
mkdir -p "$here/artifacts"
for t in "${targets[@]}"; do
    mkdir -p "$here/corpus/$t"
    echo "== $t (${secs}s)"
    "$CARGO_TARGET_DIR/$triple/release/$t" -max_total_time="$secs" -max_len=2048 \
        -artifact_prefix="$here/artifacts/$t-" "$here/corpus/$t"
done
