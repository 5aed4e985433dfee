//! Records the toolchain and the locked versions of the clients under test, for the report.

use std::process::Command;

/// The crates whose versions the report names.
const CRATES: &[&str] = &[
    "finwatch",
    "mio",
    "reqwest",
    "ureq",
    "hyper",
    "hyper-util",
    "tokio",
    "curl",
    "curl-sys",
    "rustls",
    "hyper-rustls",
    "minreq",
    "attohttpc",
];

fn main() {
    let lock_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    println!("cargo:rerun-if-changed={lock_path}");
    println!("cargo:rerun-if-changed=build.rs");
    // A report that names no versions is worse than no report: fail the build instead.
    let lock = std::fs::read_to_string(lock_path)
        .unwrap_or_else(|e| panic!("compare/build.rs: cannot read {lock_path}: {e}"));
    let mut found: Vec<(String, String)> = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|r| r.trim().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(name), Some(version)) = (field("name "), field("version "))
            && CRATES.contains(&name.as_str())
        {
            found.push((name, version));
        }
    }
    found.sort_by_key(|(n, _)| CRATES.iter().position(|c| c == n));
    let missing: Vec<&str> = CRATES.iter().copied().filter(|c| !found.iter().any(|(n, _)| n == c)).collect();
    assert!(missing.is_empty(), "compare/build.rs: {lock_path} does not name {missing:?}");
    let crates: Vec<String> = found.iter().map(|(n, v)| format!("{n} {v}")).collect();
    println!("cargo:rustc-env=COMPARE_CRATES={}", crates.join(", "));
    let rustls = found.iter().find(|(n, _)| n == "rustls").map_or("?", |(_, v)| v.as_str());
    println!("cargo:rustc-env=COMPARE_RUSTLS={rustls}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=COMPARE_RUSTC={version}");
}
