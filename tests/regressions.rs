//! The fuzz corpus as a test: every committed seed (`fuzz/seeds/<target>/`) and every input a
//! fuzzer once crashed on (`fuzz/regressions/<target>/`) goes through the same entry point the
//! fuzz target calls (`finwatch::__fuzz::response` / `engine`), which panics on a violated
//! invariant. Every file in those directories is an input (dotfiles excepted); the directories are
//! read at test time, so a crash saved there becomes a test without editing this file.
//!
//! Each input runs under `catch_unwind`, so one failing test lists every failing file by name.
//!
//! The directories are read through `tests/corpus/seeds` and `tests/corpus/regressions`, links to
//! `fuzz/seeds` and `fuzz/regressions`: `cargo package` leaves out `fuzz/` (a directory with a
//! `Cargo.toml` of its own is another package) but follows the links, so the published crate's
//! tests run on the same corpus. Every directory must hold inputs: an absent corpus fails.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/` (through `tests/corpus/<kind>`), sorted; empty if the
/// directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus").join(kind).join(target);
    let Ok(entries) = fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

/// Runs every input of `fuzz/<kind>/<target>/` through `entry`; fails listing those that panic.
/// Returns how many inputs ran.
fn run_all(kind: &str, target: &str, entry: fn(&[u8])) -> usize {
    let files = inputs(kind, target);
    let mut failed = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
            failed.push(path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs in fuzz/{kind}/{target} violate an invariant (panic messages above); \
         reproduce one with `fuzz/run.sh {target} 0 <file>`:\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
    files.len()
}

#[test]
fn response_seeds() {
    let n = run_all("seeds", "response", finwatch::__fuzz::response);
    assert!(n >= 10, "only {n} response seeds found: is fuzz/seeds/response there?");
}

#[test]
fn engine_seeds() {
    let n = run_all("seeds", "engine", finwatch::__fuzz::engine);
    assert!(n >= 10, "only {n} engine seeds found: is fuzz/seeds/engine there?");
}

#[test]
fn response_regressions() {
    let n = run_all("regressions", "response", finwatch::__fuzz::response);
    assert!(n >= 5, "only {n} response regressions found: is fuzz/regressions/response there?");
}

#[test]
fn engine_regressions() {
    let n = run_all("regressions", "engine", finwatch::__fuzz::engine);
    assert!(n >= 2, "only {n} engine regressions found: is fuzz/regressions/engine there?");
}

#[test]
fn sim_seeds() {
    let n = run_all("seeds", "sim", |d| {
        finwatch::__sim::run(d);
    });
    assert!(n >= 4, "only {n} sim seeds found: is fuzz/seeds/sim there?");
}

/// `fuzz/regressions/sim-pending/` holds inputs that fail on the current code (pending fixes):
/// not run here; they move to `fuzz/regressions/sim/` once fixed.
#[test]
fn sim_regressions() {
    let n = run_all("regressions", "sim", |d| {
        finwatch::__sim::run(d);
    });
    assert!(n >= 9, "only {n} sim regressions found: is fuzz/regressions/sim there?");
}
