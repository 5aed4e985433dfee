#!/usr/bin/env bash
# Does the simulator find the faults issue's bugs? Each fuzz/mutants/<name>.patch reverts one fix
# (see fuzz/README.md, "Mutants"). For each patch (or those named on the command line), this:
#
#   1. copies the committed tree (`git archive HEAD`) to $CARGO_TARGET_DIR/mutant-tree (its own
#      throwaway git repo: the checkout you run this from is never modified);
#   2. applies the patch there with `git apply`;
#   3. runs `cargo test --test sim --test regressions` there, bounded by `timeout`;
#   4. runs a probe (written into the copy only) that puts every file of fuzz/seeds/sim and
#      fuzz/regressions/sim through `finwatch::__sim::check` and prints the invariant each breaks.
#
# A mutant is caught when a test fails; it survives when every test passes. The report names the
# failing tests, the pseudo-random seeds, the corpus files and the invariants. Exit status: 0 when
# every mutant is caught (and the unmodified tree passes), 1 otherwise.
#
#   fuzz/mutants/run.sh                 # the baseline (no patch), then every mutant
#   fuzz/mutants/run.sh 2 6             # only these (and the baseline)
#   MUTANTS_NO_BASELINE=1 fuzz/mutants/run.sh 3
#   MUTANTS_TIMEOUT=1800 fuzz/mutants/run.sh      # seconds per mutant (default 1200)
#   MUTANTS_TREE=worktree fuzz/mutants/run.sh     # copy the working tree (tracked and untracked,
#                                                 # not ignored) instead of HEAD: try a new
#                                                 # regression file before committing it
#
# CARGO_TARGET_DIR defaults to <repo>/target/mutants, shared by every mutant (dependencies build
# once). Every mutant is built at the same path, after `cargo clean -p finwatch`: cargo's dep-info
# names the sources by path, so a copy per mutant at its own path could reuse another mutant's
# build. Hence one mutant at a time per target dir. Logs: $CARGO_TARGET_DIR/mutant-logs/<name>.log
# and <name>.probe.log.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel)
cd "$repo"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target/mutants}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$repo/$CARGO_TARGET_DIR ;; esac
limit=${MUTANTS_TIMEOUT:-1200}
tree=$CARGO_TARGET_DIR/mutant-tree
logs=$CARGO_TARGET_DIR/mutant-logs
mkdir -p "$logs"

if [ $# -gt 0 ]; then
    names=("$@")
else
    names=()
    for p in "$here"/*.patch; do
        n=$(basename "$p" .patch)
        names+=("$n")
    done
fi
for n in "${names[@]}"; do
    [ -f "$here/$n.patch" ] || { echo "no patch $here/$n.patch" >&2; exit 2; }
done
if [ "${MUTANTS_NO_BASELINE:-0}" != 1 ]; then
    names=(baseline "${names[@]}")
fi

# The probe: one line per corpus file that breaks an invariant (never fails itself).
probe='use std::path::Path;
#[test]
fn probe() {
    std::panic::set_hook(Box::new(|_| {}));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let (mut n, mut bad) = (0, 0);
    for dir in ["seeds/sim", "regressions/sim"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files.iter().filter(|f| f.is_file()) {
            if f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".")) {
                continue;
            }
            n += 1;
            let data = std::fs::read(f).unwrap();
            if let Err(v) = finwatch::__sim::check(&data) {
                bad += 1;
                let name = f.file_name().unwrap().to_string_lossy();
                let detail: String = v.detail.lines().next().unwrap_or("").chars().take(160).collect();
                println!("PROBE fuzz/{dir}/{name}: {}: {detail}", v.invariant);
            }
        }
    }
    println!("PROBE {bad} of {n} corpus files break an invariant");
}
'

survived=()
summary=()
for name in "${names[@]}"; do
    log=$logs/$name.log
    echo "=== $name"
    rm -rf "$tree"
    mkdir -p "$tree"
    # -m: files get the time of extraction, so cargo rebuilds the copy (an old mtime could make it
    # reuse the previous run's build of another mutant).
    if [ "${MUTANTS_TREE:-HEAD}" = worktree ]; then
        git ls-files -z --cached --others --exclude-standard | xargs -0 tar -c --ignore-failed-read 2>/dev/null \
            | tar -x -m -C "$tree"
    else
        git archive HEAD | tar -x -m -C "$tree"
    fi
    # Its own repository, so `git apply` patches the copy, not the checkout around it.
    git -C "$tree" init -q
    if [ "$name" != baseline ] && ! git -C "$tree" apply "$here/$name.patch"; then
        echo "$name: the patch does not apply"
        summary+=("$name: PATCH DOES NOT APPLY")
        survived+=("$name")
        continue
    fi
    (cd "$tree" && cargo clean -q -p finwatch) >/dev/null 2>&1
    start=$(date +%s)
    (cd "$tree" && RUST_BACKTRACE=0 timeout --kill-after=30 "$limit" \
        cargo test --test sim --test regressions --no-fail-fast) >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    # What failed: the tests, the seeds of the pseudo-random sweep, the corpus files.
    failed_tests=$(sed -n 's/^---- \([^ ]*\) stdout ----$/\1/p' "$log" | sort -u | tr '\n' ' ')
    seeds=$(grep -cE '^seed [0-9]+: ' "$log")
    if grep -q 'error: could not compile' "$log"; then
        verdict="BUILD FAILED"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        verdict="TIMEOUT after ${limit}s"
    elif [ $rc -ne 0 ] && [ -n "$failed_tests" ]; then
        verdict="caught"
    elif [ $rc -ne 0 ]; then
        verdict="cargo failed (rc $rc)"
    else
        verdict="survived"
    fi
    if [ "$name" = baseline ]; then
        [ "$verdict" = survived ] && verdict="passes (as it must)" || survived+=("$name")
    elif [ "$verdict" != caught ]; then
        survived+=("$name")
    fi
    echo "$name: $verdict (${secs}s, build included)"
    if [ -n "$failed_tests" ]; then
        echo "  failing tests: $failed_tests"
        # Each failing test's own message: the last panic in its output (a panic caught inside
        # the harness comes before it).
        awk '/^---- .* stdout ----$/ { t = $2; next }
             /^failures:$/ { if (t != "") print "  " t ": " m; t = ""; m = "" }
             /^---- .* stdout ----$|^failures:$/ { next }
             t != "" && /panicked at/ { getline m; m = substr(m, 1, 200) }' "$log"
        if [ "$seeds" -gt 0 ]; then
            echo "  pseudo_random_scenarios: $seeds of 2000 seeds fail; by invariant:"
            grep -E '^seed [0-9]+: ' "$log" | sed -E 's/^seed ([0-9]+): (\([a-f]\)[^:]*|panic|driver error):.*/\2/' \
                | sort | uniq -c | sed 's/^/   /'
            echo "  first: $(grep -m1 -E '^seed [0-9]+: ' "$log" | cut -c1-200)"
        fi
    fi
    # The probe, for which corpus file breaks which invariant (not needed for the verdict).
    if [ "$verdict" = caught ] || [ "$name" = baseline ]; then
        printf '%s' "$probe" >"$tree/tests/mutant_probe.rs"
        (cd "$tree" && RUST_BACKTRACE=0 timeout --kill-after=30 "$limit" \
            cargo test --test mutant_probe -- --nocapture) >"$logs/$name.probe.log" 2>&1
        grep '^PROBE ' "$logs/$name.probe.log" | sed 's/^PROBE /  /'
    fi
    summary+=("$name: $verdict${failed_tests:+ by $failed_tests}")
done

echo
echo "=== summary (logs in $logs)"
printf '%s\n' "${summary[@]}"
if [ ${#survived[@]} -gt 0 ]; then
    echo "not caught, or no verdict: ${survived[*]}"
    exit 1
fi
echo "every mutant caught"
