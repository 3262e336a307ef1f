#!/usr/bin/env bash
# Runs the cargo-fuzz targets one after another, each for a bounded time, and fails if any of them
# crashes (panic, failed assertion, sanitizer report, timeout or out-of-memory).
#
#   fuzz/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 180 s, every target)
#
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them. New corpus entries go to fuzz/corpus/<target> (git-ignored), read together with the
# committed seeds in fuzz/seeds/<target>; crashing inputs go to fuzz/artifacts/<target>.
# Logs: fuzz/target/logs/<target>.log. Extra libFuzzer flags: FUZZ_ARGS="-max_len=256 ...".
#
# A target stops at its first crash. With FUZZ_KEEP_GOING=1 it runs in libFuzzer's fork mode
# instead (-fork=1 -ignore_crashes=1): it keeps fuzzing for the whole time after a crash and saves
# every crashing input it meets (slower, since each job is a fresh process); the run still fails
# if any crash, timeout or out-of-memory input was saved.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${1:-180}"
shift || true
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: the time per target must be a whole number of seconds, not '$seconds'" >&2
    exit 2
fi
all_targets=(phone_number event_payload money)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

logs="$root/fuzz/target/logs"
mkdir -p "$logs"

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$target"
    seeds="$root/fuzz/seeds/$target"
    dict="$root/fuzz/dicts/$target.dict"
    mkdir -p "$corpus" "$seeds" "$root/fuzz/artifacts/$target"
    args=(
        "-max_total_time=$seconds"
        -timeout=10
        -rss_limit_mb=2048
        -print_final_stats=1
        "-artifact_prefix=$root/fuzz/artifacts/$target/"
    )
    [ -f "$dict" ] && args+=("-dict=$dict")
    [ "${FUZZ_KEEP_GOING:-0}" = 1 ] && args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    # shellcheck disable=SC2206 # FUZZ_ARGS is a list of flags
    args+=(${FUZZ_ARGS:-})
    log="$logs/$target.log"
    marker="$(mktemp)"
    echo "fuzz: $target for ${seconds}s (log: ${log#"$root"/})" >&2
    set +e
    cargo fuzz run "$target" "$corpus" "$seeds" -- "${args[@]}" 2>&1 | tee "$log" |
        grep --line-buffered -vE '^#[0-9]+\s+(NEW|REDUCE|RELOAD)\s' >&2
    status="${PIPESTATUS[0]}"
    set -e

    # Failing inputs this run saved (older ones in the directory do not count).
    saved="$(find "$root/fuzz/artifacts/$target" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)"
    rm -f "$marker"

    # Figures: the last status line ("#N DONE cov: .. ft: .. corp: a/b .." or, in fork mode,
    # "#N: cov: .. ft: .. corp: a .."), and the final stats where libFuzzer prints them.
    last="$(grep -E '^#[0-9]+:?\s' "$log" | tail -n 1 || true)"
    runs="$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)"
    [ -n "$runs" ] || runs="$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")"
    speed="$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+).*/\1/p' "$log" | tail -n 1)"
    [ -n "$speed" ] || [ -z "$runs" ] || speed=$((runs / seconds))
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    corp="$(sed -nE 's/.* corp: ([0-9]+(\/[0-9]+[a-zA-Z]*)?).*/\1/p' <<<"$last")"
    if [ "$status" -eq 0 ] && [ "$saved" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status, $saved input(s) saved)"
        failed+=("$target")
    fi
    summary+=("$(printf '%-14s runs=%-10s exec/s=%-7s cov=%-5s ft=%-6s corpus=%-12s %s' \
        "$target" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

echo >&2
printf '%s\n' "${summary[@]}" >&2
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]}; inputs in fuzz/artifacts/<target>/, logs in fuzz/target/logs/" >&2
    echo "fuzz: reproduce with: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
