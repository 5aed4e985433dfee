//! Micro-benchmarks of the protocol hot path: request encoding and response parsing.
//!
//! `cargo bench --bench micro -- [--markdown] [--batch-ms N] [FILTER]`
//!
//! A plain binary (no benchmark framework): each case is calibrated so that one batch takes about
//! `--batch-ms` (default 50 ms), then 11 batches are timed; the table shows the median ns/op with
//! the fastest and slowest batch, so the spread shows how noisy the machine was. Throughput is in
//! bytes of input (the response bytes parsed, or the request bytes produced) per second.
//!
//! Allocations per op are counted by a global allocator that counts only while this thread has
//! switched counting on, after warm-up, with buffers reused as on the client's steady path.

use std::hint::black_box;
use std::time::{Duration, Instant};

use finwatch::__bench::{encode_request, read_response};
use finwatch::__bench_engine::EngineLoop;
use finwatch::{Limits, Request, Response};

// ---- allocation counting (shared with tests/zero_alloc.rs) ----

#[path = "support/proc_stat.rs"]
mod proc_stat;

use proc_stat::machine_busy_ticks;

#[path = "../tests/support/alloc_count.rs"]
mod alloc_count;

use alloc_count::count as count_allocs;

// ---- the cases ----

/// One benchmark: `run(n)` runs the operation `n` times; `bytes` is its input (or output) size.
struct Case {
    name: &'static str,
    bytes: usize,
    run: Box<dyn FnMut(u64)>,
}

/// The loop lives inside the closure, so it is compiled per case: no indirect call per op.
fn batched(mut op: impl FnMut() + 'static) -> Box<dyn FnMut(u64)> {
    Box::new(move |n| {
        for _ in 0..n {
            op();
        }
    })
}

fn encode_case(name: &'static str, req: Request) -> Case {
    let mut out = Vec::with_capacity(1024);
    encode_request(&req, &mut out);
    let bytes = out.len();
    Case {
        name,
        bytes,
        run: batched(move || {
            out.clear();
            encode_request(black_box(&req), &mut out);
            black_box(&out);
        }),
    }
}

/// Parses `wire` again and again into the same response buffers; checks the result once.
fn parse_case(name: &'static str, wire: Vec<u8>, expect_body: usize) -> Case {
    let limits = Limits::default();
    let first = read_response(&wire, limits, Response::default())
        .unwrap_or_else(|| panic!("{name}: the test response does not parse"));
    assert_eq!(first.status(), 200, "{name}");
    assert_eq!(first.body().len(), expect_body, "{name}");
    let mut spare = Some(first);
    Case {
        name,
        bytes: wire.len(),
        run: batched(move || {
            let buf = spare.take().unwrap_or_default();
            let resp = read_response(black_box(&wire), limits, buf);
            spare = black_box(resp);
        }),
    }
}

fn response_with_length(body: &[u8]) -> Vec<u8> {
    let mut w = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    w.extend_from_slice(body);
    w
}

fn response_chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut w =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for c in chunks {
        w.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        w.extend_from_slice(c);
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"0\r\n\r\n");
    w
}

fn response_20_headers() -> Vec<u8> {
    let body = br#"{"ioId":25602,"value":1}"#;
    let mut w = String::from("HTTP/1.1 200 OK\r\n");
    let fixed = [
        ("Server", "uNICO-embedded/4.2.1"),
        ("Date", "Tue, 25 Nov 2025 13:44:00 GMT"),
        ("Content-Type", "application/json; charset=utf-8"),
        ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"),
        ("Expires", "0"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5, max=1000"),
        ("Access-Control-Allow-Origin", "*"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("X-Request-Id", "7f3e9c2a-11d4-4b8e-9a53-0c2f6d81e4b7"),
        ("X-Device-Serial", "FW-0042-1187-3310"),
        ("X-Firmware", "4.2.1-rc3+build.5521"),
        ("ETag", "\"5f2b-1a9c\""),
        ("Vary", "Accept-Encoding"),
        ("Strict-Transport-Security", "max-age=0"),
        ("X-Uptime-Ms", "918273645"),
        ("X-Io-Revision", "1187"),
    ];
    for (n, v) in fixed {
        w.push_str(&format!("{n}: {v}\r\n"));
    }
    w.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut w = w.into_bytes();
    w.extend_from_slice(body);
    w
}

fn cases() -> Vec<Case> {
    let put = Request::put("http://10.0.0.5/unico/v1/interface/io", r#"{"ioId":25602,"on":true}"#)
        .build()
        .expect("valid PUT");
    let get = Request::get("http://10.0.0.5:8080/unico/v1/interface/io-state?ioId=25602")
        .header("Accept", "application/json")
        .header("User-Agent", "finwatch-bench/0.1")
        .header("Authorization", "Bearer 3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c1e")
        .header("X-Request-Id", "7f3e9c2a-11d4-4b8e-9a53-0c2f6d81e4b7")
        .build()
        .expect("valid GET");

    let small_body = br#"{"ioId":25602,"value":1,"ts":1732542240123456}"#; // 48 B
    let big: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let four_k: Vec<&[u8]> = big.chunks(4096).collect();

    vec![
        encode_case("encode PUT json (24 B body)", put),
        encode_case("encode GET + 4 headers", get),
        parse_case("parse CL small (48 B body)", response_with_length(small_body), small_body.len()),
        parse_case("parse CL 64 KiB", response_with_length(&big), big.len()),
        parse_case("parse chunked small (1x48 B)", response_chunked(&[small_body]), small_body.len()),
        parse_case("parse chunked 64 KiB (16x4 KiB)", response_chunked(&four_k), big.len()),
        parse_case("parse 20 headers (24 B body)", response_20_headers(), 24),
        engine_case("engine: one command, reused conn", small_body),
    ]
}

/// What the engine itself costs per command on a reused connection (submit, dispatch, the
/// peek's answer, the write, the response, the completion), no syscall: the client's share of a
/// command's turnaround apart from the peek, the write and the read.
fn engine_case(name: &'static str, body: &[u8]) -> Case {
    let req =
        Request::get("http://10.0.0.5/unico/v1/interface/io-state?ioId=25602").build().expect("valid GET");
    let wire = response_with_length(body);
    let mut l = EngineLoop::new(&req, &wire);
    assert_eq!(l.command(&req), 200, "{name}");
    Case {
        name,
        bytes: wire.len(),
        run: batched(move || {
            black_box(l.command(black_box(&req)));
        }),
    }
}

// ---- measurement ----

struct Measured {
    name: &'static str,
    bytes: usize,
    iters: u64,
    median_ns: f64,
    min_ns: f64,
    max_ns: f64,
    allocs_per_op: f64,
}

const BATCHES: usize = 11;

fn time_batch(run: &mut dyn FnMut(u64), iters: u64) -> Duration {
    let start = Instant::now();
    run(iters);
    start.elapsed()
}

/// Iterations for one batch of about `target`: doubles until a batch takes a tenth of it, then
/// times three batches of that size and scales by the fastest (a descheduling during
/// calibration would otherwise make every batch too short).
fn calibrate(run: &mut dyn FnMut(u64), target: Duration) -> u64 {
    let mut iters = 1u64;
    while time_batch(run, iters) < target / 10 && iters < 1 << 40 {
        iters *= 2;
    }
    let best = (0..3).map(|_| time_batch(run, iters)).min().unwrap_or(target);
    let per_op = best.as_secs_f64() / iters as f64;
    ((target.as_secs_f64() / per_op) as u64).max(1)
}

/// Measures every case. Batches are interleaved (batch 1 of every case, then batch 2, …), so a
/// burst of load from other processes slows one batch of several cases instead of every batch of
/// one case: the medians stay comparable with each other.
fn measure(cases: &mut [Case], target: Duration) -> Vec<Measured> {
    let mut prepared: Vec<(u64, u64, Vec<f64>)> = cases
        .iter_mut()
        .map(|case| {
            let run = &mut *case.run;
            // Warm-up: buffers grow to their steady size, caches and branch predictors settle.
            run(1000);
            let allocs = count_allocs(|| run(1000));
            (calibrate(run, target), allocs, Vec::with_capacity(BATCHES))
        })
        .collect();
    for _ in 0..BATCHES {
        for (case, (iters, _, per_op)) in cases.iter_mut().zip(&mut prepared) {
            per_op.push(time_batch(&mut *case.run, *iters).as_nanos() as f64 / *iters as f64);
        }
    }
    cases
        .iter()
        .zip(prepared)
        .map(|(case, (iters, allocs, mut per_op))| {
            per_op.sort_by(f64::total_cmp);
            Measured {
                name: case.name,
                bytes: case.bytes,
                iters,
                median_ns: per_op[BATCHES / 2],
                min_ns: per_op[0],
                max_ns: per_op[BATCHES - 1],
                allocs_per_op: allocs as f64 / 1000.0,
            }
        })
        .collect()
}

// ---- output ----

fn fmt_rate(per_sec: f64) -> String {
    if per_sec >= 1e6 { format!("{:.2} M", per_sec / 1e6) } else { format!("{:.1} k", per_sec / 1e3) }
}

fn print_table(rows: &[Measured], markdown: bool) {
    let header =
        ["case", "bytes/op", "median ns/op", "min", "max", "MB/s", "ops/s", "allocs/op", "iters/batch"];
    let lines: Vec<[String; 9]> = rows
        .iter()
        .map(|m| {
            let mbps = m.bytes as f64 * 1e3 / m.median_ns; // bytes/ns * 1e3 = MB/s (1e6 B)
            [
                m.name.to_string(),
                m.bytes.to_string(),
                format!("{:.1}", m.median_ns),
                format!("{:.1}", m.min_ns),
                format!("{:.1}", m.max_ns),
                format!("{mbps:.0}"),
                fmt_rate(1e9 / m.median_ns),
                format!("{:.2}", m.allocs_per_op),
                m.iters.to_string(),
            ]
        })
        .collect();
    if markdown {
        println!("| {} |", header.join(" | "));
        println!("|:---|{}", "---:|".repeat(header.len() - 1));
        for l in &lines {
            println!("| {} |", l.join(" | "));
        }
        return;
    }
    let mut widths = header.map(str::len);
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let row = |cells: &[String]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        println!("{s}");
    };
    row(&header.map(String::from));
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for l in &lines {
        row(l);
    }
}

/// This process's user + system clock ticks, from `/proc/self/stat`.
fn process_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let mut markdown = false;
    let mut batch_ms = 50u64;
    let mut filter: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--markdown" => markdown = true,
            "--batch-ms" => {
                batch_ms = args.next().and_then(|v| v.parse().ok()).expect("--batch-ms takes a number")
            }
            "--help" | "-h" => {
                println!("usage: cargo bench --bench micro -- [--markdown] [--batch-ms N] [FILTER]");
                return;
            }
            // `cargo bench` passes `--bench`; ignore it and any other flag meant for libtest.
            s if s.starts_with('-') => {}
            s => filter = Some(s.to_string()),
        }
    }
    let target = Duration::from_millis(batch_ms.max(1));
    let load_before = loadavg();
    let started = Instant::now();
    let (busy0, mine0) = (machine_busy_ticks(), process_ticks());
    let mut cases: Vec<Case> =
        cases().into_iter().filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f))).collect();
    let rows = measure(&mut cases, target);
    // CPU used by other processes meanwhile, in % of the machine (ticks of 10 ms, all cores).
    let others =
        machine_busy_ticks().saturating_sub(busy0) as f64 - process_ticks().saturating_sub(mine0) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let others_pct = (others / (started.elapsed().as_secs_f64() * 100.0 * cores) * 100.0).max(0.0);
    println!(
        "finwatch micro-benchmarks: {BATCHES} batches of ~{batch_ms} ms per case, interleaved across \
         cases; median [min, max] of the batches; MB/s = 10^6 bytes of input per second (request \
         bytes produced, for encoding)"
    );
    println!(
        "load average before: {load_before}, after: {}; other processes used {others_pct:.0}% of the \
         {cores} cores meanwhile (read max-min as noise)",
        loadavg()
    );
    print_table(&rows, markdown);
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
