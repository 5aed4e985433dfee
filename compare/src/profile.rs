//! Figures that hold from machine to machine (issue 16): per command, what a client makes the
//! machine do, rather than how long the host took to wake it up. After a scenario's latency
//! rounds, each client's commands are run again in a child process (this executable with
//! [`CHILD_FLAG`]) against the parent's device, which stays in the parent: whatever the child
//! spends is the client's alone (and the harness's loop around it, which makes no syscall and
//! allocates nothing).
//!
//! Three children per client and scenario, each with the scenario's warm-up first:
//! - one measures a window of commands: `getrusage(RUSAGE_SELF)` (user and system time, all the
//!   child's threads) and `CLOCK_PROCESS_CPUTIME_ID` (their sum, exactly), and counts the heap
//!   allocations made in the window by any of its threads (a counting global allocator, idle
//!   outside the window and in the parent);
//! - two run under `strace -f -c`, one with commands and one without (the same start-up,
//!   warm-up and exit): the difference, divided by the number of commands, is the syscalls per
//!   command by kind. ptrace slows every syscall, so none of these runs is timed.
//!
//! In a child the pauses between commands (the scenario's gaps) sleep instead of spinning their
//! last 300 µs, so they burn no CPU; their sleeps are left out of the syscall figures. A client
//! that runs its loop in the pauses (finwatch's "poll in pauses") is charged for it.
//!
//! The results wait here until the report asks for them ([`section`]): kept out of
//! `ScenarioResult` so that nothing else in the harness changes shape.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::clients;
use crate::device::{self, Device};
use crate::{Config, Runner, Scenario};

/// The hidden first argument that makes this executable a profiling child:
/// `--profile-child CLIENT ADDR WARMUP N GAPS` (GAPS: µs, comma-separated, or `-`).
pub const CHILD_FLAG: &str = "--profile-child";

/// Syscalls that are the harness's own pause between commands (left out in gap scenarios).
const PAUSE_SYSCALLS: [&str; 2] = ["clock_nanosleep", "nanosleep"];

/// Syscalls that get a column of their own when any client makes them, in this order.
const MAIN_KINDS: [&str; 20] = [
    "socket",
    "connect",
    "setsockopt",
    "getsockopt",
    "getsockname",
    "getpeername",
    "sendto",
    "write",
    "writev",
    "sendmsg",
    "recvfrom",
    "read",
    "recvmsg",
    "poll",
    "ppoll",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "close",
    "futex",
];

/// The kinds in a row's `other` are listed under the table when they add up to this many.
const LIST_OTHER: f64 = 0.1;

/// The user/system split is shown for windows of at least this much CPU time. Most kernels
/// (tick-based CPU accounting) split `getrusage`'s exact total by where the scheduler ticks
/// (every 1–10 ms) found the threads: over a few ms of CPU that is noise; over 200 ms, 20 ticks
/// or more.
const MIN_SPLIT_CPU_NS: u64 = 200_000_000;

// ---------------------------------------------------------------------------------------------
// The counting allocator.

/// Counts allocations while [`COUNTING`] is set (a child's measured window); otherwise costs one
/// relaxed load per allocation.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Set in a profiling child: `crate::wait_until` sleeps the whole pause.
static PAUSES_SLEEP: AtomicBool = AtomicBool::new(false);

#[global_allocator]
static GLOBAL: Counting = Counting;

#[inline]
fn note(size: usize) {
    if COUNTING.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    /// Counted as an allocation of the new size (a growing buffer is one per growth).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Whether this process is a profiling child, whose pauses sleep instead of spinning.
pub fn pauses_sleep() -> bool {
    PAUSES_SLEEP.load(Relaxed)
}

// ---------------------------------------------------------------------------------------------
// The child.

/// What a child measured over its window of commands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// Commands sent, and those that returned the device's body.
    pub n: u64,
    pub ok: u64,
    /// CPU time of the child's threads (`CLOCK_PROCESS_CPUTIME_ID`), ns.
    pub cpu_ns: u64,
    /// The same split by `getrusage(RUSAGE_SELF)`, µs.
    pub user_us: u64,
    pub sys_us: u64,
    /// Allocations (alloc, alloc_zeroed, realloc) and the bytes they asked for.
    pub allocs: u64,
    pub bytes: u64,
}

const LINE_PREFIX: &str = "profile-child";

impl Window {
    fn to_line(&self) -> String {
        format!(
            "{LINE_PREFIX} n={} ok={} cpu_ns={} user_us={} sys_us={} allocs={} bytes={}",
            self.n, self.ok, self.cpu_ns, self.user_us, self.sys_us, self.allocs, self.bytes
        )
    }

    /// The last result line in a child's standard output.
    fn parse(stdout: &str) -> Option<Window> {
        let line = stdout.lines().rev().find_map(|l| l.strip_prefix(LINE_PREFIX))?;
        let mut w = Window::default();
        for field in line.split_whitespace() {
            let (k, v) = field.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "n" => w.n = v,
                "ok" => w.ok = v,
                "cpu_ns" => w.cpu_ns = v,
                "user_us" => w.user_us = v,
                "sys_us" => w.sys_us = v,
                "allocs" => w.allocs = v,
                "bytes" => w.bytes = v,
                _ => return None,
            }
        }
        Some(w)
    }
}

/// (user, system) time of the whole process, µs.
fn rusage_us() -> (u64, u64) {
    // SAFETY: zeroed is a valid rusage; the kernel fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// The child's `main`: `args` after [`CHILD_FLAG`]. Prints one [`Window`] line.
pub fn child(args: &[String]) -> ExitCode {
    match run_child(args) {
        Ok(w) => {
            println!("{}", w.to_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{CHILD_FLAG}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_child(args: &[String]) -> Result<Window, String> {
    let [key, addr, warmup, n, gaps] = args else {
        return Err(format!("expected CLIENT ADDR WARMUP N GAPS, got {args:?}"));
    };
    let kind = clients::find(key).ok_or(format!("unknown client {key:?}"))?;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    let warmup: usize = warmup.parse().map_err(|e| format!("warm-up {warmup:?}: {e}"))?;
    let n: usize = n.parse().map_err(|e| format!("count {n:?}: {e}"))?;
    let gaps: Vec<u64> = if gaps == "-" {
        Vec::new()
    } else {
        gaps.split(',').map(|g| g.parse().map_err(|e| format!("gap {g:?}: {e}"))).collect::<Result<_, _>>()?
    };
    PAUSES_SLEEP.store(true, Relaxed);
    // As in the parent (reqwest needs rustls's process default even for plain HTTP).
    crate::tls::install_default_provider();
    let client = (kind.make)(addr)?;
    let mut r = Runner {
        client,
        put_url: format!("http://{addr}{}", crate::PUT_PATH),
        get_url: format!("http://{addr}{}", crate::GET_PATH),
        sent: 0,
    };
    r.run(warmup, &[], None);
    let mut first_error = None;
    let mut ok = 0;
    let (user0, sys0) = rusage_us();
    let cpu0 = crate::process_cpu_ns();
    COUNTING.store(true, Relaxed);
    let mut last_end = Instant::now();
    for _ in 0..n {
        r.pause(&gaps, last_end);
        let result = r.send_next();
        last_end = Instant::now();
        match result {
            Ok(len) if len == device::BODY.len() => ok += 1,
            Ok(len) => {
                first_error.get_or_insert_with(|| format!("a body of {len} bytes"));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    COUNTING.store(false, Relaxed);
    let cpu1 = crate::process_cpu_ns();
    let (user1, sys1) = rusage_us();
    if let Some(e) = first_error {
        eprintln!("{CHILD_FLAG} {key}: the first failure: {e}");
    }
    Ok(Window {
        n: n as u64,
        ok,
        cpu_ns: cpu1.saturating_sub(cpu0),
        user_us: user1.saturating_sub(user0),
        sys_us: sys1.saturating_sub(sys0),
        allocs: ALLOCS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    })
}

// ---------------------------------------------------------------------------------------------
// strace.

/// Syscall counts by name.
pub type Syscalls = BTreeMap<String, u64>;

/// Parses the summary `strace -c -U name,calls` writes: a header, a rule, `name calls` lines, a
/// rule, `total N`.
pub fn parse_strace(text: &str) -> Result<Syscalls, String> {
    let mut counts = Syscalls::new();
    let mut total = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('-') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(name), Some(calls), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("unexpected line in strace's summary: {line:?}"));
        };
        if name == "syscall" && calls == "calls" {
            continue;
        }
        let calls: u64 =
            calls.parse().map_err(|_| format!("unexpected line in strace's summary: {line:?}"))?;
        if name == "total" {
            total = Some(calls);
        } else {
            *counts.entry(name.to_string()).or_default() += calls;
        }
    }
    let total = total.ok_or("no total in strace's summary")?;
    let sum: u64 = counts.values().sum();
    if sum != total {
        return Err(format!("strace's summary lines add up to {sum}, its total says {total}"));
    }
    Ok(counts)
}

/// Syscalls per command: (`with` − `without`) / `n`, by kind, without the kinds in `leave_out`.
/// A kind seen in one run only counts as 0 in the other. Differences can be slightly negative
/// (a background thread woke less often): they are kept, not hidden.
pub fn per_command(with: &Syscalls, without: &Syscalls, n: u64, leave_out: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if n == 0 {
        return out;
    }
    for name in with.keys().chain(without.keys()) {
        if leave_out.contains(&name.as_str()) || out.contains_key(name) {
            continue;
        }
        let a = with.get(name).copied().unwrap_or(0) as f64;
        let b = without.get(name).copied().unwrap_or(0) as f64;
        out.insert(name.clone(), (a - b) / n as f64);
    }
    out
}

/// Where strace is, if it runs.
fn strace() -> Option<&'static str> {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found =
        *FOUND.get_or_init(|| Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()));
    found.then_some("strace")
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// One client's figures in one scenario.
pub struct ClientProfile {
    /// The measured window (over [`ScenarioProfile::n`] commands).
    pub window: Result<Window, String>,
    /// Syscalls per command by kind (over [`ScenarioProfile::n_strace`] commands).
    pub syscalls: Result<BTreeMap<String, f64>, String>,
    /// Commands that failed in a child (the figures still count them): which run, how many.
    pub failed: Vec<String>,
}

/// One scenario's figures.
pub struct ScenarioProfile {
    pub scenario: Scenario,
    /// Commands in the measured window, and in the strace run.
    pub n: usize,
    pub n_strace: usize,
    /// The scenario's warm-up (before every child's commands).
    pub warmup: usize,
    /// By `Config::clients` index; `None`: not profiled (the client could not be built).
    pub clients: Vec<Option<ClientProfile>>,
    /// Why the whole scenario was not profiled.
    pub skipped: Option<String>,
    pub elapsed: Duration,
}

/// The results so far, in scenario order (see the module's documentation).
static RESULTS: Mutex<Vec<ScenarioProfile>> = Mutex::new(Vec::new());

/// Commands per child: (measured window, strace run). Fewer where pauses or the delayed ACK
/// make commands slow.
fn counts(sc: Scenario) -> (usize, usize) {
    match sc {
        Scenario::KeepAlive => (5_000, 2_000),
        Scenario::Fin | Scenario::Rst | Scenario::FinGap100us => (1_000, 300),
        Scenario::FinGap1ms | Scenario::IdleBeyond => (300, 200),
        Scenario::Idle => (100, 100),
        // A client that waits for the delayed ACK pays 40 ms a command.
        Scenario::Split => (50, 50),
        Scenario::TlsKeepAlive | Scenario::TlsClose | Scenario::TlsCloseGap | Scenario::TlsEmbedded => (0, 0),
    }
}

/// Runs the profiling children of scenario `sc` for every client of `cfg` that was built
/// (`not_run[i]` is `None`), against `device`, and keeps the results for the report.
pub fn run(cfg: &Config, sc: Scenario, device: &Device, warmup: usize, not_run: &[Option<String>]) {
    let started = Instant::now();
    let (n, n_strace) = counts(sc);
    let mut p = ScenarioProfile {
        scenario: sc,
        n,
        n_strace,
        warmup,
        clients: Vec::new(),
        skipped: None,
        elapsed: Duration::ZERO,
    };
    if sc.is_tls() {
        p.skipped = Some("not profiled over TLS (a child would need the run's CA)".into());
    } else {
        let gaps = sc.gaps_us(cfg);
        let gaps_arg = if gaps.is_empty() {
            "-".to_string()
        } else {
            gaps.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        };
        let leave_out: &[&str] = if gaps.is_empty() { &[] } else { &PAUSE_SYSCALLS };
        for (i, kind) in cfg.clients.iter().enumerate() {
            if not_run[i].is_some() {
                p.clients.push(None);
                continue;
            }
            eprint!("\r  {} profile: {:<18}", sc.key(), kind.key);
            let args = |n: usize| {
                vec![
                    CHILD_FLAG.to_string(),
                    kind.key.to_string(),
                    device.addr(i).to_string(),
                    warmup.to_string(),
                    n.to_string(),
                    gaps_arg.clone(),
                ]
            };
            let mut failed = Vec::new();
            let mut note = |run: &str, r: &Result<(Window, Option<Syscalls>, String), String>| {
                if let Ok((w, _, stderr)) = r
                    && w.ok < w.n
                {
                    failed.push(format!("{run}: {} of {} commands failed ({stderr})", w.n - w.ok, w.n));
                }
            };
            let window = spawn(None, &args(n));
            note("measured", &window);
            let syscalls = match strace() {
                None => Err("strace not found (apt-get install strace)".to_string()),
                Some(st) => {
                    let with = spawn(Some(st), &args(n_strace));
                    note("under strace", &with);
                    with.and_then(|(_, with, _)| {
                        let (_, without, _) = spawn(Some(st), &args(0))?;
                        Ok(per_command(
                            &with.unwrap_or_default(),
                            &without.unwrap_or_default(),
                            n_strace as u64,
                            leave_out,
                        ))
                    })
                }
            };
            p.clients.push(Some(ClientProfile { window: window.map(|(w, _, _)| w), syscalls, failed }));
        }
        eprintln!();
    }
    p.elapsed = started.elapsed();
    RESULTS.lock().unwrap_or_else(|e| e.into_inner()).push(p);
}

/// Runs one child (under `strace` if given); returns its window, under strace its syscall
/// counts, and the last line of its standard error (what failed, if any command did).
fn spawn(strace: Option<&str>, args: &[String]) -> Result<(Window, Option<Syscalls>, String), String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let summary: Option<PathBuf> = strace.map(|_| {
        std::env::temp_dir().join(format!(
            "compare-strace-{}-{}.txt",
            std::process::id(),
            SEQ.fetch_add(1, Relaxed)
        ))
    });
    let mut cmd = match (strace, &summary) {
        (Some(st), Some(path)) => {
            let mut c = Command::new(st);
            c.args(["-f", "-c", "-U", "name,calls", "-o"]).arg(path).arg(&exe);
            c
        }
        _ => Command::new(&exe),
    };
    let out = cmd.args(args).output().map_err(|e| format!("cannot start the child: {e}"))?;
    let read_summary = |path: &Path| {
        let text = std::fs::read_to_string(path).map_err(|e| format!("strace's summary: {e}"));
        let _ = std::fs::remove_file(path);
        text.and_then(|t| parse_strace(&t))
    };
    let syscalls = summary.as_deref().map(read_summary).transpose();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("the child failed ({}): {last}", out.status));
    }
    let window =
        Window::parse(&String::from_utf8_lossy(&out.stdout)).ok_or("no result line from the child")?;
    let last = stderr.lines().rfind(|l| l.starts_with(CHILD_FLAG)).unwrap_or("").to_string();
    Ok((window, syscalls?, last))
}

// ---------------------------------------------------------------------------------------------
// The report.

/// The kinds that get a column in one scenario's table: the [`MAIN_KINDS`] some client makes.
fn columns(rows: &[&BTreeMap<String, f64>]) -> Vec<&'static str> {
    MAIN_KINDS.into_iter().filter(|k| rows.iter().any(|r| r.get(*k).is_some_and(|&v| v >= 0.005))).collect()
}

/// A row's `other`, by kind, most frequent first (those that round to nothing left out).
fn others(row: &BTreeMap<String, f64>, cols: &[&str]) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = row
        .iter()
        .filter(|(k, v)| !cols.contains(&k.as_str()) && v.abs() >= 0.005)
        .map(|(k, &v)| (k.clone(), v))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// A per-command figure: two decimals, `0` when it rounds to nothing.
fn fig(v: f64) -> String {
    if v.abs() < 0.005 { "0".into() } else { format!("{v:.2}") }
}

/// The markdown section "Machine-independent figures (per command)", empty when nothing was
/// profiled.
pub fn section(cfg: &Config) -> String {
    let results = RESULTS.lock().unwrap_or_else(|e| e.into_inner());
    if results.is_empty() {
        return String::new();
    }
    let mut o = String::new();
    let _ = writeln!(o, "## Machine-independent figures (per command)\n");
    let _ = writeln!(
        o,
        "What each client makes the machine do per command, which does not depend on how fast the \
         host wakes threads up (`compare/src/profile.rs`). After a scenario's rounds, each client's \
         commands are run again in a child process against the same device, which stays in the \
         parent: the figures are the client's alone (all its threads), not the device's. Each child \
         first sends the scenario's warm-up. `CPU µs`: `CLOCK_PROCESS_CPUTIME_ID` over the \
         window (exact); `user µs` / `sys µs`: its split by `getrusage`, shown (not `·`) only for \
         windows of {} ms of CPU or more: most kernels account CPU time by tick, where the split \
         is sampled every 1–10 ms and only the sum is exact (the syscall counts are the \
         machine-independent view of the system side). `allocs` / `bytes`: heap allocations \
         (a `realloc` counts as one, of its new size) by a counting global allocator. Syscalls: \
         two more children under `strace -f -c`, one with commands and one with none (same start, \
         warm-up and exit), the difference divided by the commands; kinds that some client makes \
         get a column, the rest are `other`. ptrace slows every syscall, so that run's timing \
         differs: counts that depend on timing (a busy-poll's `recvfrom` that find nothing, \
         `epoll_wait`s that return empty, a background thread's `futex`) are indicative only. In \
         the scenarios with pauses, a child's pause sleeps (no spin), and that sleep \
         (`clock_nanosleep`) is left out; the CPU time of a thread woken after a pause includes \
         what the host makes a wake-up from idle cost (compare a scenario's rows with each other, \
         not across scenarios). A command that fails in a child still counts. Kinds not in a column and not rounding to 0 are listed \
         under the table.\n",
        MIN_SPLIT_CPU_NS / 1_000_000
    );
    for p in results.iter() {
        let _ = writeln!(o, "### ({}) {}\n", p.scenario.letter(), p.scenario.key());
        if let Some(why) = &p.skipped {
            let _ = writeln!(o, "{why}.\n");
            continue;
        }
        let _ = writeln!(
            o,
            "{} commands per client measured, {} under strace (after {} warm-up commands); {:.1} s.\n",
            p.n,
            p.n_strace,
            p.warmup,
            p.elapsed.as_secs_f64()
        );
        let sys_rows: Vec<&BTreeMap<String, f64>> =
            p.clients.iter().flatten().filter_map(|c| c.syscalls.as_ref().ok()).collect();
        let cols = columns(&sys_rows);
        let _ = write!(o, "| client | CPU µs | user µs | sys µs | allocs | bytes | syscalls |");
        for c in &cols {
            let _ = write!(o, " {c} |");
        }
        let _ = writeln!(o, " other |");
        let _ = writeln!(o, "|---|{}", "---:|".repeat(7 + cols.len()));
        let mut problems = Vec::new();
        let mut other_lists = Vec::new();
        for (i, c) in p.clients.iter().enumerate() {
            let Some(c) = c else { continue };
            let key = cfg.clients[i].key;
            problems.extend(c.failed.iter().map(|f| format!("{key}, {f}")));
            let _ = write!(o, "| {key} |");
            match &c.window {
                Ok(w) if w.n > 0 => {
                    let n = w.n as f64;
                    let split = |us: u64| {
                        if w.cpu_ns >= MIN_SPLIT_CPU_NS {
                            format!("{:.1}", us as f64 / n)
                        } else {
                            "·".into()
                        }
                    };
                    let _ = write!(
                        o,
                        " {:.1} | {} | {} | {} | {:.0} |",
                        w.cpu_ns as f64 / 1000.0 / n,
                        split(w.user_us),
                        split(w.sys_us),
                        fig(w.allocs as f64 / n),
                        w.bytes as f64 / n
                    );
                }
                Ok(_) => o.push_str(" – | – | – | – | – |"),
                Err(e) => {
                    o.push_str(" – | – | – | – | – |");
                    problems.push(format!("{key}: {e}"));
                }
            }
            match &c.syscalls {
                Ok(s) => {
                    let total: f64 = s.values().sum();
                    let shown: f64 = cols.iter().filter_map(|k| s.get(*k)).sum();
                    let _ = write!(o, " {} |", fig(total));
                    for k in &cols {
                        let _ = write!(o, " {} |", fig(s.get(*k).copied().unwrap_or(0.0)));
                    }
                    let _ = writeln!(o, " {} |", fig(total - shown));
                    if total - shown >= LIST_OTHER {
                        let list: Vec<String> =
                            others(s, &cols).into_iter().map(|(k, v)| format!("{k} {}", fig(v))).collect();
                        other_lists.push(format!("{key}, other: {}", list.join(", ")));
                    }
                }
                Err(e) => {
                    let _ = writeln!(o, "{}", " – |".repeat(cols.len() + 2));
                    problems.push(format!("{key} (syscalls): {e}"));
                }
            }
        }
        let _ = writeln!(o);
        for l in other_lists {
            let _ = writeln!(o, "- {l}");
        }
        for e in problems {
            let _ = writeln!(o, "- {e}");
        }
        let _ = writeln!(o);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "\
syscall              calls
---------------- ---------
recvfrom              4012
sendto                2000
epoll_wait            1999
close                   28
mmap                    38
---------------- ---------
total                 8077
";

    #[test]
    fn strace_summary_parses_by_name_and_checks_its_total() {
        let s = parse_strace(SUMMARY).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s["recvfrom"], 4012);
        assert_eq!(s["mmap"], 38);
        // A summary whose lines do not add up, or without its total, is refused.
        assert!(parse_strace(&SUMMARY.replace("8077", "8078")).is_err());
        assert!(parse_strace(&SUMMARY.replace("total                 8077\n", "")).is_err());
        assert!(parse_strace("syscall calls\nread 1 2\ntotal 1\n").is_err());
        // An empty run (no syscall at all) is a total of 0.
        assert_eq!(parse_strace("syscall calls\n--- ---\n--- ---\ntotal 0\n").unwrap().len(), 0);
    }

    #[test]
    fn per_command_is_the_difference_over_the_commands_without_the_pauses() {
        let with = parse_strace(SUMMARY).unwrap();
        let mut without = Syscalls::new();
        without.insert("recvfrom".into(), 12);
        without.insert("close".into(), 28);
        without.insert("mmap".into(), 38);
        without.insert("epoll_wait".into(), 2001);
        without.insert("clock_nanosleep".into(), 0);
        let mut with_pause = with.clone();
        with_pause.insert("clock_nanosleep".into(), 2000);
        let p = per_command(&with_pause, &without, 2000, &PAUSE_SYSCALLS);
        assert_eq!(p["recvfrom"], 2.0);
        assert_eq!(p["sendto"], 1.0);
        assert_eq!(p["close"], 0.0);
        // Fewer in the run with commands: kept negative, not hidden.
        assert_eq!(p["epoll_wait"], -0.001);
        assert!(!p.contains_key("clock_nanosleep"));
        // Without leaving anything out, the pause counts.
        assert_eq!(per_command(&with_pause, &without, 2000, &[])["clock_nanosleep"], 1.0);
        assert!(per_command(&with, &without, 0, &[]).is_empty());
    }

    #[test]
    fn a_window_goes_through_its_line() {
        let w = Window { n: 300, ok: 299, cpu_ns: 123_456, user_us: 70, sys_us: 50, allocs: 3, bytes: 4096 };
        let out = format!("noise\n{}\n", w.to_line());
        assert_eq!(Window::parse(&out), Some(w));
        assert_eq!(Window::parse("nothing here"), None);
        assert_eq!(Window::parse("profile-child n=1 ok=x"), None);
    }

    #[test]
    fn columns_are_the_main_kinds_seen_and_the_rest_is_listed() {
        let mut a = BTreeMap::new();
        a.insert("recvfrom".to_string(), 1.0);
        a.insert("sendto".to_string(), 1.0);
        a.insert("fcntl".to_string(), 0.1);
        let mut b = BTreeMap::new();
        b.insert("socket".to_string(), 1.0);
        b.insert("ioctl".to_string(), 2.0);
        b.insert("close".to_string(), 0.001);
        b.insert("clone3".to_string(), 2.0);
        let cols = columns(&[&a, &b]);
        assert_eq!(cols, vec!["socket", "sendto", "recvfrom"]);
        assert_eq!(others(&b, &cols), vec![("clone3".to_string(), 2.0), ("ioctl".to_string(), 2.0)]);
        assert_eq!(others(&a, &cols), vec![("fcntl".to_string(), 0.1)]);
    }
}
