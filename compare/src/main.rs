//! The comparison harness (issue "Performance", point 1): finwatch against three hand-written
//! floors and six other Rust HTTP clients, in one run, on loopback, against the same simulated
//! device, in five scenarios (keep-alive, FIN after every response, idle close, RST, and
//! keep-alive with a device whose Nagle's algorithm holds each response's body until its head
//! is acknowledged).
//!
//! And over TLS (the TLS issue, point 8; `--tls`, written to `compare/RESULTS-tls.md`): finwatch
//! with its `tls` feature against the TLS-capable clients (reqwest and ureq with rustls, hyper
//! with hyper-rustls, libcurl with OpenSSL) in four scenarios: (t1) keep-alive; (t2) a
//! `close_notify` and FIN after every response, commands back to back, and (t2g) 1 ms apart;
//! (t3) the same device with an embedded CPU's handshake cost (its first flight held 30 ms in a
//! full handshake, 5 ms in a resumed one) and 10 ms between commands, during which the caller
//! is away (it sleeps: finwatch's loop does not run).
//!
//! `cargo run --release -p compare -- --help` for the options; `compare/run.sh` installs what
//! the build needs and runs everything, writing `compare/RESULTS.md`.
//!
//! `--link-delay-us N` runs everything across an emulated link instead of loopback (root only;
//! see `link.rs`): client and device in two private network namespaces joined by a userspace
//! TUN relay that holds every packet N µs, so a TCP handshake costs a 2N µs round trip as on a
//! real network, which loopback cannot show. The table then goes to `compare/RESULTS-link.md`.
//!
//! Noise (a 2-core machine shared with other test runs): clients are interleaved in rounds, the
//! order rotated each round, so a burst of background load hits every client about equally;
//! nothing is pinned. Percentiles are nearest-rank over all samples of all rounds pooled; the
//! table also shows the range of the per-round p50s, which tells how noisy the run was.

mod clients;
mod device;
mod haltpoll;
mod link;
mod profile;
mod regime;
mod report;
mod stats;
mod svg;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clients::{HttpClient, Kind, Method};
use device::{Device, DeviceTls, Mode};
use link::Link;
use stats::Record;

/// The four device behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    KeepAlive,
    Fin,
    Idle,
    Rst,
    /// Keep-alive, but the device's stack runs Nagle's algorithm and writes each response in
    /// two pieces (head, then body), as embedded stacks do: the body leaves once the head is
    /// acknowledged.
    Split,
    /// (t1) Keep-alive over TLS.
    TlsKeepAlive,
    /// (t2) TLS, `close_notify` and FIN after every response, commands back to back.
    TlsClose,
    /// (t2g) The same, commands 1 ms apart.
    TlsCloseGap,
    /// (t3) The same, with an embedded CPU's handshake delay (30 ms full, 5 ms resumed) and
    /// commands 10 ms apart.
    TlsEmbedded,
    /// (b) with 100 µs between commands: a fresh connection per command, and time for a warm
    /// spare's handshake between them.
    FinGap100us,
    /// (b) with 1 ms between commands.
    FinGap1ms,
    /// The device closes connections idle for 2 ms, the client pauses 2.5 ms: every command finds
    /// its connection closed, so each needs a fresh one (a spare opened right after a response
    /// idles out before use).
    IdleBeyond,
}

/// Number of scenarios (the length of the per-scenario arrays of [`Config`]).
pub const SCENARIOS: usize = 12;

/// The device's idle timeout and the client's gap in [`Scenario::IdleBeyond`].
pub const IDLE_BEYOND: (Duration, Duration) = (Duration::from_millis(2), Duration::from_micros(2_500));

/// The device's handshake delay in (t3): before its first flight, full and resumed.
pub const EMBEDDED_HANDSHAKE: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(5));

impl Scenario {
    /// The plain scenarios: what a run does by default.
    const PLAIN: [Scenario; 8] = [
        Scenario::KeepAlive,
        Scenario::Fin,
        Scenario::FinGap100us,
        Scenario::FinGap1ms,
        Scenario::Idle,
        Scenario::IdleBeyond,
        Scenario::Rst,
        Scenario::Split,
    ];
    /// The TLS scenarios (`--tls`).
    const TLS: [Scenario; 4] =
        [Scenario::TlsKeepAlive, Scenario::TlsClose, Scenario::TlsCloseGap, Scenario::TlsEmbedded];
    const ALL: [Scenario; SCENARIOS] = [
        Scenario::KeepAlive,
        Scenario::Fin,
        Scenario::Idle,
        Scenario::Rst,
        Scenario::Split,
        Scenario::TlsKeepAlive,
        Scenario::TlsClose,
        Scenario::TlsCloseGap,
        Scenario::TlsEmbedded,
        Scenario::FinGap100us,
        Scenario::FinGap1ms,
        Scenario::IdleBeyond,
    ];

    fn key(self) -> &'static str {
        match self {
            Scenario::KeepAlive => "keepalive",
            Scenario::Fin => "fin",
            Scenario::Idle => "idle",
            Scenario::Rst => "rst",
            Scenario::Split => "split",
            Scenario::TlsKeepAlive => "tls-keepalive",
            Scenario::TlsClose => "tls-close",
            Scenario::TlsCloseGap => "tls-close-1ms",
            Scenario::TlsEmbedded => "tls-embedded",
            Scenario::FinGap100us => "fin-100us",
            Scenario::FinGap1ms => "fin-1ms",
            Scenario::IdleBeyond => "idle-beyond",
        }
    }

    pub fn is_tls(self) -> bool {
        Scenario::TLS.contains(&self)
    }

    /// The client's gaps before each command, in µs, cycled (none: back to back).
    fn gaps_us(self, cfg: &Config) -> Vec<u64> {
        match self {
            Scenario::Idle => cfg.gaps_ms().iter().map(|ms| ms * 1000).collect(),
            Scenario::TlsCloseGap | Scenario::FinGap1ms => vec![1000],
            Scenario::TlsEmbedded => vec![10_000],
            Scenario::FinGap100us => vec![100],
            Scenario::IdleBeyond => vec![IDLE_BEYOND.1.as_micros() as u64],
            _ => Vec::new(),
        }
    }

    /// A fresh connection for every command: the scenarios of the fresh-connection target,
    /// judged against the best of the plain-connect clients and the warm-spare floor.
    pub fn is_fresh_per_command(self) -> bool {
        matches!(self, Scenario::Fin | Scenario::FinGap100us | Scenario::FinGap1ms | Scenario::IdleBeyond)
    }

    fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|sc| sc.key() == s || sc.letter() == s)
    }

    pub fn letter(self) -> &'static str {
        match self {
            Scenario::KeepAlive => "a",
            Scenario::Fin => "b",
            Scenario::Idle => "c",
            Scenario::Rst => "d",
            Scenario::Split => "e",
            Scenario::TlsKeepAlive => "t1",
            Scenario::TlsClose => "t2",
            Scenario::TlsCloseGap => "t2g",
            Scenario::TlsEmbedded => "t3",
            Scenario::FinGap100us => "b100",
            Scenario::FinGap1ms => "b1ms",
            Scenario::IdleBeyond => "c2",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to run.
pub struct Config {
    pub scenarios: Vec<Scenario>,
    pub clients: Vec<&'static Kind>,
    /// Interleaved rounds, by scenario index.
    pub rounds: [usize; SCENARIOS],
    /// Measured commands per client, by scenario index.
    pub commands: [usize; SCENARIOS],
    /// Unmeasured commands per client before the rounds.
    pub warmup: usize,
    /// The device's idle timeout in scenario (c).
    pub idle_ms: u64,
    /// Client gaps in scenario (c), as offsets from `idle_ms`, cycled.
    pub gap_offsets: Vec<i64>,
    pub out: Option<PathBuf>,
    pub quick: bool,
    /// One-way delay of the emulated link; zero: loopback.
    pub link_delay: Duration,
    /// The TLS device offers X25519 only (a diagnostic, `--device-x25519-only`).
    pub x25519_only: bool,
    /// `--pin same|split`: the client's threads and the device's on one CPU, or on two.
    pub pin: Option<Pin>,
    /// After each scenario's rounds, the machine-independent figures (`profile.rs`): on in
    /// full runs, off with `--quick` unless `--profile`; `--no-profile` skips them.
    pub profile: bool,
    /// `--halt-poll-ns N`: the guest's halt polling for the run (see [`haltpoll`]).
    pub halt_poll_ns: Option<u64>,
}

/// Where the threads run (`--pin`). The VM's two wake-up regimes are where a client's thread runs
/// relative to the device's: on the same vCPU a response wakes the client by a context switch
/// (~5–10 µs a loopback round trip); on another, the idle vCPU must be woken from halt (~60–80
/// µs). Unpinned, the scheduler places the threads, and each client's rounds sit in one regime or
/// the other for a while, so two clients measured in the same round can be in different
/// regimes. Pinned, every client runs in the regime asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Every thread on CPU 0.
    Same,
    /// The device on CPU 1, the clients (and their runtimes' threads) on CPU 0.
    Split,
}

impl Pin {
    pub fn as_str(self) -> &'static str {
        match self {
            Pin::Same => "same",
            Pin::Split => "split",
        }
    }
}

/// Pins the calling thread (and the threads it spawns later) to `cpu`.
pub fn pin_this_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bit mask the kernel reads; zeroed is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

impl Config {
    fn full() -> Config {
        Config {
            scenarios: Scenario::PLAIN.to_vec(),
            // The TLS floor runs in the TLS scenarios only (`parse_args` adds it there).
            clients: clients::defaults().filter(|k| k.key != clients::FLOOR_TLS).collect(),
            // (a) decides the keep-alive targets, which sit within a few per cent of the
            // blocking floor while the machine's speed drifts by ±20 % from round to round: 30
            // rounds of 2,000 commands average that drift out better than 10 (rounds much
            // shorter than 2,000 commands inherit the state the previous client left behind).
            // (e): a client that waits for the delayed ACK pays 40 ms a command.
            // (t3): a command every ~16 ms or more (10 ms gap, 5 ms resumed handshake).
            rounds: [30, 10, 10, 10, 5, 10, 10, 10, 5, 10, 10, 10],
            commands: [60_000, 5_000, 400, 5_000, 100, 20_000, 3_000, 1_000, 300, 3_000, 2_000, 1_000],
            warmup: 200,
            idle_ms: 5,
            gap_offsets: vec![-2, -1, 0, 1, 3],
            out: Some(results_path("RESULTS.md")),
            quick: false,
            link_delay: Duration::ZERO,
            x25519_only: false,
            pin: None,
            halt_poll_ns: None,
            profile: true,
        }
    }

    fn quick(mut self) -> Config {
        self.rounds = [4; SCENARIOS];
        self.commands = [3_000, 600, 100, 600, 40, 2_000, 400, 100, 40, 400, 200, 100];
        self.warmup = 50;
        self.out = None;
        self.quick = true;
        self
    }

    /// The gaps of scenario (c) in milliseconds (never below 0).
    pub fn gaps_ms(&self) -> Vec<u64> {
        self.gap_offsets.iter().map(|o| (self.idle_ms as i64 + o).max(0) as u64).collect()
    }

    pub fn per_round(&self, sc: Scenario) -> usize {
        self.commands[sc.index()].div_ceil(self.rounds(sc))
    }

    pub fn rounds(&self, sc: Scenario) -> usize {
        self.rounds[sc.index()]
    }

    /// Whether the run goes across an emulated link.
    pub fn on_link(&self) -> bool {
        !self.link_delay.is_zero()
    }
}

/// `name` in the harness's directory (`compare/`).
/// The file a full run writes unless told (`--out`): one per kind of run, so that a pinned run
/// never overwrites the unpinned `RESULTS.md`, nor one regime's file another's. `RESULTS`, then
/// `-tls` and `-link` where they apply, then the regime of a pinned run: `-same` (one vCPU),
/// `-split-fast` (two, the idle vCPU polling before it halts: `--halt-poll-ns` above 0, or the
/// host's own setting when not given) or `-split` (two, halting at once).
fn default_out(tls: bool, link: bool, pin: Option<Pin>, halt_poll_ns: Option<u64>) -> String {
    let mut name = String::from("RESULTS");
    if tls {
        name.push_str("-tls");
    }
    if link {
        name.push_str("-link");
    }
    match pin {
        None => {}
        Some(Pin::Same) => name.push_str("-same"),
        Some(Pin::Split) => match halt_poll_ns.or_else(haltpoll::current) {
            Some(ns) if ns > 0 => name.push_str("-split-fast"),
            _ => name.push_str("-split"),
        },
    }
    name.push_str(".md");
    name
}

fn results_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

const USAGE: &str = "\
compare: latency of finwatch vs. floors and other HTTP clients against one simulated device

USAGE: cargo run --release -p compare -- [OPTIONS]     (or compare/run.sh [OPTIONS])

  --quick              small counts (4 rounds; 3000/600/100/600 commands), writes no file
  --scenarios LIST     comma-separated: keepalive,fin,fin-100us,fin-1ms,idle,idle-beyond,rst,
                       split (or a,b,b100,b1ms,c,c2,d,e); default these eight; over TLS:
                       tls-keepalive,tls-close,tls-close-1ms,tls-embedded
                       (or t1,t2,t2g,t3)
  --tls                the four TLS scenarios (t1,t2,t2g,t3) with the TLS-capable clients;
                       default output compare/RESULTS-tls.md
  --clients LIST       comma-separated client keys (see --list); default all but the
                       experimental (floor-peek, floor-connect,
                       floor-connect-watchdog, floor-spin-peek, floor-uring,
                       floor-uring-audit, floor-uring-in)
  --list               print the client keys and exit
  --rounds N           interleaved rounds in every scenario (default 30 in (a) on loopback, 5 in (e),
                       10 in the others)
  --keepalive N        measured commands per client in (a) (default 60000; 20000 across a link)
  --fin N              ... in (b) (default 5000)
  --idle N             ... in (c) (default 400)
  --rst N              ... in (d) (default 5000)
  --split N            ... in (e) (default 100: a client that waits for the delayed ACK pays
                       40 ms a command)
  --b100 N / --b1ms N / --c2 N
                       ... in (b) with 100 µs and 1 ms gaps (default 3000 / 2000) and in (c2),
                       idle close at 2 ms with 2.5 ms gaps (default 1000)
  --t1 N / --t2 N / --t2g N / --t3 N
                       ... in the TLS scenarios (default 20000 / 3000 / 1000 / 300)
  --warmup N           unmeasured commands per client first (default 200; at most 20 in (c), 5 in (e))
  --idle-ms N          the device's idle timeout in (c) (default 5)
  --gaps LIST          client gaps in (c) as offsets from N ms, cycled (default -2,-1,0,1,3)
  --link-delay-us N    run across an emulated link with N µs delay each way (root only):
                       client and device in private network namespaces joined by two TUN
                       devices and a relay thread; a TCP handshake then costs 2N µs. Default
                       output compare/RESULTS-link.md (default N = 0: loopback)
  --pin same|split     pin the client's threads and the device's to one CPU (same: the VM's
                       fast wake-up regime, a context switch) or to two (split: the slow one, a
                       halted vCPU woken); unpinned, each client lands in either for a while
  --halt-poll-ns N     set the guest's halt polling (cpuidle-haltpoll's guest_halt_poll_ns) to N
                       for the run, and put the old value back after (root, KVM guests): an
                       idle vCPU polls up to N ns before it halts, so a wake-up from the other
                       vCPU within that time is fast. With --pin split: 0 gives the slow
                       cross-vCPU regime, 200000 the fast one the performance issue saw
  --device-x25519-only the TLS device offers no key exchange but X25519 (a diagnostic: rustls's
                       ring provider offers P-384 first)
  --profile / --no-profile
                       after each scenario's rounds, re-run its commands per client in a child
                       process (under strace -f -c for the syscalls) and report CPU time,
                       allocations and syscalls by kind per command (default: on, off with --quick)
  --out PATH           write the markdown here (default compare/RESULTS.md; -tls, -link and
                       the pinned regime (-same, -split, -split-fast) are added to the name
                       where they apply, e.g. compare/RESULTS-split-fast.md; none with --quick)
  --no-write           only print the markdown
";

fn parse_args(args: &[String]) -> Result<Option<Config>, String> {
    let mut cfg = Config::full();
    if args.iter().any(|a| a == "--quick") {
        cfg = cfg.quick();
    }
    let mut out_given = false;
    let mut clients_given = false;
    let mut profile = None;
    let (mut rounds_given, mut keepalive_given) = (false, false);
    let mut it = args.iter();
    let num = |v: Option<&String>, flag: &str| -> Result<usize, String> {
        v.ok_or(format!("{flag} needs a value"))?.parse().map_err(|e| format!("{flag}: {e}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => {}
            "--tls" => cfg.scenarios = Scenario::TLS.to_vec(),
            "--device-x25519-only" => cfg.x25519_only = true,
            "--profile" => profile = Some(true),
            "--no-profile" => profile = Some(false),
            "--halt-poll-ns" => cfg.halt_poll_ns = Some(num(it.next(), a)? as u64),
            "--pin" => {
                cfg.pin = Some(match it.next().map(String::as_str) {
                    Some("same") => Pin::Same,
                    Some("split") => Pin::Split,
                    other => return Err(format!("--pin takes same or split, not {other:?}")),
                })
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "--list" => {
                for k in clients::ALL {
                    let only =
                        if k.experimental { "  (experimental: only when named in --clients)" } else { "" };
                    println!("{:14} {}{only}", k.key, k.label);
                }
                return Ok(None);
            }
            "--scenarios" => {
                let v = it.next().ok_or("--scenarios needs a value")?;
                cfg.scenarios = v
                    .split(',')
                    .map(|s| Scenario::parse(s.trim()).ok_or(format!("unknown scenario {s:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--clients" => {
                let v = it.next().ok_or("--clients needs a value")?;
                cfg.clients = v
                    .split(',')
                    .map(|s| clients::find(s.trim()).ok_or(format!("unknown client {s:?} (see --list)")))
                    .collect::<Result<_, _>>()?;
                clients_given = true;
            }
            "--rounds" => {
                cfg.rounds = [num(it.next(), a)?.max(1); SCENARIOS];
                rounds_given = true;
            }
            "--keepalive" => {
                cfg.commands[0] = num(it.next(), a)?;
                keepalive_given = true;
            }
            "--fin" => cfg.commands[1] = num(it.next(), a)?,
            "--idle" => cfg.commands[2] = num(it.next(), a)?,
            "--rst" => cfg.commands[3] = num(it.next(), a)?,
            "--split" => cfg.commands[4] = num(it.next(), a)?,
            "--t1" => cfg.commands[5] = num(it.next(), a)?,
            "--t2" => cfg.commands[6] = num(it.next(), a)?,
            "--t2g" => cfg.commands[7] = num(it.next(), a)?,
            "--t3" => cfg.commands[8] = num(it.next(), a)?,
            "--b100" => cfg.commands[9] = num(it.next(), a)?,
            "--b1ms" => cfg.commands[10] = num(it.next(), a)?,
            "--c2" => cfg.commands[11] = num(it.next(), a)?,
            "--warmup" => cfg.warmup = num(it.next(), a)?,
            "--idle-ms" => cfg.idle_ms = num(it.next(), a)? as u64,
            "--gaps" => {
                let v = it.next().ok_or("--gaps needs a value")?;
                cfg.gap_offsets = v
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--gaps: {e}")))
                    .collect::<Result<_, _>>()?;
                if cfg.gap_offsets.is_empty() {
                    return Err("--gaps: empty".into());
                }
            }
            "--link-delay-us" => cfg.link_delay = Duration::from_micros(num(it.next(), a)? as u64),
            "--out" => {
                cfg.out = Some(PathBuf::from(it.next().ok_or("--out needs a value")?));
                out_given = true;
            }
            "--no-write" => {
                cfg.out = None;
                out_given = true;
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    cfg.profile = profile.unwrap_or(!cfg.quick);
    let tls = cfg.scenarios.iter().any(|s| s.is_tls());
    if !out_given && !cfg.quick {
        cfg.out = Some(results_path(&default_out(tls, cfg.on_link(), cfg.pin, cfg.halt_poll_ns)));
    }
    // Only TLS scenarios: only the clients that speak TLS here, unless told otherwise.
    if !clients_given && cfg.scenarios.iter().all(|s| s.is_tls()) {
        cfg.clients = clients::defaults().filter(|k| k.tls.is_some()).collect();
    } else if !clients_given && tls {
        cfg.clients = clients::defaults().collect();
    }
    // Across the link a command costs a millisecond round trip, which dwarfs the machine's
    // drift: (a) keeps 10 rounds of 2,000 there (three times as many would add 12 minutes).
    if cfg.on_link() && !cfg.quick {
        if !rounds_given {
            cfg.rounds[0] = 10;
        }
        if !keepalive_given {
            cfg.commands[0] = 20_000;
        }
    }
    Ok(Some(cfg))
}

/// The results of one scenario: one record per client, in `Config::clients` order.
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub records: Vec<Record>,
    /// Clients that could not be constructed, with the reason.
    pub not_run: Vec<Option<String>>,
    /// What each client says of the scenario itself (warm-up included), where it can.
    pub notes: Vec<Option<String>>,
    pub elapsed: Duration,
    /// The group each client took its rounds in (see [`groups`]): round k of two clients is
    /// the same stretch of time only within one group.
    pub group: Vec<usize>,
}

const PUT_PATH: &str = "/unico/v1/interface/io";
const GET_PATH: &str = "/unico/v1/interface/io-state?ioId=25602";
const PUT_BODY: &[u8] = br#"{"ioId":25602,"on":true}"#;

/// One client under test inside a scenario.
struct Runner {
    client: Box<dyn HttpClient>,
    put_url: String,
    get_url: String,
    /// Commands sent so far (selects PUT/GET and the gap).
    sent: usize,
}

impl Runner {
    /// Sends `n` commands, alternating PUT and GET; with `gaps`, waits the next gap (measured
    /// from the end of the previous command) before each. Returns the successful latencies.
    ///
    /// The process's CPU time is read around the whole batch when commands follow each other,
    /// and around each command only when gaps separate them (the harness's own waiting must
    /// not count). Not around each back-to-back command: reading `CLOCK_PROCESS_CPUTIME_ID`
    /// while the device thread is still on its CPU (it has just answered) takes that CPU's
    /// runqueue lock, and the device's way back to sleep stalls on it. How often that happens
    /// depends on how soon after the response a client returns, so it slowed clients unequally:
    /// in (a) it put one finwatch busy-poll command in six into a +16 µs mode the busy-poll
    /// floor hardly saw (PERFORMANCE.md, "the harness's own CPU clock").
    fn run(&mut self, n: usize, gaps: &[u64], record: Option<&mut Record>) -> Vec<u64> {
        let mut samples = Vec::with_capacity(n);
        let mut gap_samples = Vec::new();
        let mut errors = Vec::new();
        let mut last_end = Instant::now();
        let measured = record.is_some();
        let per_command_cpu = measured && !gaps.is_empty();
        let batch_cpu_start = (measured && gaps.is_empty()).then(process_cpu_ns);
        let mut cpu = 0;
        for k in 0..n {
            // The first command of a round follows a longer pause (the other clients ran):
            // it is left out of the per-gap figures.
            let filed_gap = self.pause(gaps, last_end).filter(|_| k > 0);
            let cpu_start = per_command_cpu.then(process_cpu_ns);
            let start = Instant::now();
            let result = self.send_next();
            last_end = Instant::now();
            if let Some(cpu_start) = cpu_start {
                cpu += process_cpu_ns() - cpu_start;
            }
            match result {
                Ok(len) if len == device::BODY.len() => {
                    let ns = (last_end - start).as_nanos() as u64;
                    samples.push(ns);
                    if let Some(g) = filed_gap {
                        gap_samples.push((g, ns));
                    }
                }
                Ok(len) => errors.push(format!("body of {len} bytes, expected {}", device::BODY.len())),
                Err(e) => errors.push(e),
            }
        }
        if let Some(start) = batch_cpu_start {
            cpu = process_cpu_ns().saturating_sub(start);
        }
        if let Some(record) = record {
            record.ok += samples.len() as u64;
            record.cpu_ns += cpu;
            for e in errors {
                record.add_error(e);
            }
            for (g, ns) in gap_samples {
                record.add_gap_sample(g, ns);
            }
        }
        samples
    }

    /// With `gaps`, waits the one due before the next command, measured from `last_end` (the
    /// end of the previous command); returns its index in `gaps`.
    fn pause(&mut self, gaps: &[u64], last_end: Instant) -> Option<usize> {
        let gap = (!gaps.is_empty()).then(|| self.sent % gaps.len());
        if let Some(g) = gap {
            self.client.pause_until(last_end + Duration::from_micros(gaps[g]));
        }
        gap
    }

    /// Sends the next command (PUT and GET alternate); returns the body length.
    fn send_next(&mut self) -> Result<usize, String> {
        let (method, url, body) = if self.sent.is_multiple_of(2) {
            (Method::Put, self.put_url.as_str(), PUT_BODY)
        } else {
            (Method::Get, self.get_url.as_str(), &[][..])
        };
        self.sent += 1;
        self.client.command(method, url, body)
    }
}

/// CPU time of the whole process (client, its helper threads if any, and the device), in ns.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until shortly before `deadline`, then spins to it: gaps accurate to a few µs.
pub fn wait_until(deadline: Instant) {
    // A profiling child only sleeps: its pauses are the harness's and must burn no CPU.
    let spin = if profile::pauses_sleep() { Duration::ZERO } else { Duration::from_micros(300) };
    let now = Instant::now();
    if deadline > now + spin {
        std::thread::sleep(deadline - now - spin);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

fn run_scenario(
    cfg: &Config,
    sc: Scenario,
    link: Option<&Link>,
    pki: Option<&tls::Pki>,
) -> std::io::Result<ScenarioResult> {
    let started = Instant::now();
    let mode = match sc {
        Scenario::KeepAlive | Scenario::TlsKeepAlive => Mode::KeepAlive,
        Scenario::Fin
        | Scenario::FinGap100us
        | Scenario::FinGap1ms
        | Scenario::TlsClose
        | Scenario::TlsCloseGap
        | Scenario::TlsEmbedded => Mode::Fin,
        Scenario::Idle => Mode::IdleClose(Duration::from_millis(cfg.idle_ms)),
        Scenario::IdleBeyond => Mode::IdleClose(IDLE_BEYOND.0),
        Scenario::Rst => Mode::Rst,
        Scenario::Split => Mode::Split,
    };
    let pki = if sc.is_tls() {
        Some(pki.ok_or_else(|| std::io::Error::other("a TLS scenario without the run's PKI"))?)
    } else {
        None
    };
    let device_tls = pki.map(|p| {
        let (delay_full, delay_resumed) =
            if sc == Scenario::TlsEmbedded { EMBEDDED_HANDSHAKE } else { (Duration::ZERO, Duration::ZERO) };
        DeviceTls { config: p.server.clone(), delay_full, delay_resumed }
    });
    let n = cfg.clients.len();
    let device_cpu = cfg.pin.map(|p| if p == Pin::Split { 1 } else { 0 });
    let device = Device::start(mode, n, link.map(|l| l.device_net().clone()), device_tls, device_cpu)?;
    let mut records: Vec<Record> = (0..n).map(|_| Record::default()).collect();
    let mut not_run = vec![None; n];
    let mut runners: Vec<Option<Runner>> = Vec::with_capacity(n);
    let scheme = if pki.is_some() { "https" } else { "http" };
    for (i, kind) in cfg.clients.iter().enumerate() {
        let addr = device.addr(i);
        let made = match (pki, kind.tls) {
            (None, _) => (kind.make)(addr),
            (Some(pki), Some(make)) => make(addr, pki),
            (Some(_), None) => Err("no TLS in this harness".to_string()),
        };
        match made {
            Ok(client) => runners.push(Some(Runner {
                client,
                put_url: format!("{scheme}://{addr}{PUT_PATH}"),
                get_url: format!("{scheme}://{addr}{GET_PATH}"),
                sent: 0,
            })),
            Err(e) => {
                eprintln!("  {}: cannot build the client: {e}", kind.key);
                not_run[i] = Some(e);
                runners.push(None);
            }
        }
    }
    let gaps = sc.gaps_us(cfg);
    let warmup = match sc {
        Scenario::Idle | Scenario::IdleBeyond | Scenario::TlsEmbedded => cfg.warmup.min(20),
        Scenario::Split => cfg.warmup.min(5),
        _ => cfg.warmup,
    };
    for r in runners.iter_mut().flatten() {
        r.run(warmup, &[], None);
    }
    let base: Vec<(u64, u64)> = (0..n).map(|i| counts(&device, i)).collect();
    let hs_base: Vec<stats::Handshakes> =
        (0..n).map(|i| stats::Handshakes::read(device.counters(i))).collect();
    let accepted: Vec<u64> = base.iter().map(|&(a, _)| a).collect();
    let per_round = cfg.per_round(sc);
    let groups = groups(sc, &accepted, warmup);
    let mut group_of = vec![0; n];
    for (g, group) in groups.iter().enumerate() {
        for &i in group {
            group_of[i] = g;
        }
    }
    for (g, group) in groups.iter().enumerate() {
        for round in 0..cfg.rounds(sc) {
            eprint!("\r  {} group {} round {}/{}   ", sc.key(), g + 1, round + 1, cfg.rounds(sc));
            for k in 0..group.len() {
                // Without its relay the link is gone: every command would fail, some after a
                // timeout.
                if link.is_some_and(Link::relay_ended) {
                    return Err(std::io::Error::other("the link's relay has stopped"));
                }
                let i = group[(k + round) % group.len()];
                if let Some(r) = runners[i].as_mut() {
                    let samples = r.run(per_round, &gaps, Some(&mut records[i]));
                    records[i].add_round(samples);
                }
            }
        }
    }
    eprintln!();
    let notes = runners.iter().map(|r| r.as_ref().and_then(|r| r.client.notes())).collect();
    // Let the device accept whatever is still in flight before counting.
    drop(runners);
    std::thread::sleep(Duration::from_millis(20));
    for (i, rec) in records.iter_mut().enumerate() {
        let (acc, served) = counts(&device, i);
        rec.conns = acc - base[i].0;
        rec.served = served - base[i].1;
        rec.handshakes_all = stats::Handshakes::read(device.counters(i));
        rec.handshakes = rec.handshakes_all.minus(&hs_base[i]);
    }
    if cfg.profile {
        profile::run(cfg, sc, &device, warmup, &not_run);
    }
    Ok(ScenarioResult { scenario: sc, records, not_run, notes, elapsed: started.elapsed(), group: group_of })
}

/// What the report says about the emulated link.
pub struct LinkReport {
    /// TCP handshakes across the link at start, each ≈ one round trip.
    pub connects: Vec<Duration>,
    /// The relay's statistics (or why there are none).
    pub relay: String,
}

/// Handshakes timed at start as a sanity check of the link.
const LINK_CHECK_CONNECTS: usize = 9;

/// Starts the link and times [`LINK_CHECK_CONNECTS`] TCP handshakes across it to a device.
fn start_link(delay: Duration) -> std::io::Result<(Link, Vec<Duration>)> {
    let link = Link::start(delay)?;
    let device = Device::start(Mode::KeepAlive, 1, Some(link.device_net().clone()), None, None)?;
    let mut connects = Vec::with_capacity(LINK_CHECK_CONNECTS);
    for _ in 0..LINK_CHECK_CONNECTS {
        let start = Instant::now();
        let stream = std::net::TcpStream::connect_timeout(&device.addr(0), Duration::from_secs(2))
            .map_err(|e| std::io::Error::new(e.kind(), format!("connecting across the link: {e}")))?;
        connects.push(start.elapsed());
        drop(stream);
    }
    connects.sort_unstable();
    Ok((link, connects))
}

/// The order in which the clients take their rounds: one group, all clients interleaved,
/// except in (a), where the clients that opened a connection for most of their `warmup`
/// commands (`accepted`: connections the device accepted from each during the warm-up) take
/// all their rounds after the others'. A client without connection reuse leaves a closed
/// socket behind per command, 2,000 per round in (a); interleaved with the others, that
/// residue slowed them, the event loops most (with minreq and attohttpc in the rotation the
/// minimal mio loop was 1.06–1.13× the blocking floor, without them 1.00–1.03×; PERFORMANCE.md).
/// In the other scenarios every client, or many, opens connections anyway.
fn groups(sc: Scenario, accepted: &[u64], warmup: usize) -> Vec<Vec<usize>> {
    let all: Vec<usize> = (0..accepted.len()).collect();
    if sc != Scenario::KeepAlive || warmup == 0 {
        return vec![all];
    }
    let (churning, reusing): (Vec<usize>, Vec<usize>) =
        all.into_iter().partition(|&i| accepted[i] as usize * 2 > warmup);
    [reusing, churning].into_iter().filter(|g| !g.is_empty()).collect()
}

fn counts(d: &Device, i: usize) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = d.counters(i);
    (c.accepted.load(Relaxed), c.served.load(Relaxed))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == profile::CHILD_FLAG) {
        return profile::child(&args[1..]);
    }
    let cfg = match parse_args(&args) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; measure with --release (compare/run.sh does)");
    }
    // Restored when main returns (the guard's drop).
    let _halt_poll = match cfg.halt_poll_ns.map(haltpoll::HaltPoll::set) {
        Some(Err(e)) => {
            eprintln!("--halt-poll-ns: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(guard)) => Some(guard),
        None => None,
    };
    // The clients run on this thread (and threads it starts, which inherit the mask).
    if cfg.pin.is_some()
        && let Err(e) = pin_this_thread(0)
    {
        eprintln!("--pin: could not pin the clients to CPU 0: {e}");
        return ExitCode::from(2);
    }
    // Before any other thread exists: the link moves this thread into the client's namespace.
    let link = if cfg.on_link() {
        match start_link(cfg.link_delay) {
            Ok((link, connects)) => {
                eprintln!(
                    "link: {} µs each way; TCP connect across it: min {} µs, median {} µs \
                     ({LINK_CHECK_CONNECTS} handshakes; expected ≈ {} µs)",
                    cfg.link_delay.as_micros(),
                    connects[0].as_micros(),
                    connects[connects.len() / 2].as_micros(),
                    2 * cfg.link_delay.as_micros()
                );
                Some((link, connects))
            }
            Err(e) => {
                eprintln!("--link-delay-us: cannot set up the emulated link: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    tls::install_default_provider();
    let pki = if cfg.scenarios.iter().any(|s| s.is_tls()) {
        match tls::Pki::generate(cfg.x25519_only) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("cannot make the run's certificates: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let machine = report::Machine::read();
    let mut results = Vec::new();
    for &sc in &cfg.scenarios {
        eprintln!(
            "scenario {} ({} commands per client, {} rounds)",
            sc.key(),
            cfg.commands[sc.index()],
            cfg.rounds(sc)
        );
        match run_scenario(&cfg, sc, link.as_ref().map(|(l, _)| l), pki.as_ref()) {
            Ok(r) => results.push(r),
            Err(e) => {
                // Dropping the link prints the relay's error, if it had one.
                eprintln!("scenario {}: {e}", sc.key());
                return ExitCode::FAILURE;
            }
        }
    }
    let link = link.map(|(link, connects)| {
        let relay = match link.stop() {
            Ok(stats) => stats.to_string(),
            Err(e) => format!("no statistics: {e}"),
        };
        eprintln!("link relay: {relay}");
        LinkReport { connects, relay }
    });
    let machine = machine.finish();
    let md = report::markdown(&cfg, &machine, &results, link.as_ref());
    println!("{md}");
    if let Some(path) = &cfg.out {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
        let picture = svg::path_beside(path);
        let md_name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        if let Err(e) = std::fs::write(&picture, svg::render(&cfg, &results, &md_name)) {
            eprintln!("cannot write {}: {e}", picture.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", picture.display());
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Config {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        parse_args(&args).expect("valid arguments").expect("a run, not --help")
    }

    /// In (a) the clients that open a connection per command take their rounds last; elsewhere,
    /// and without a warm-up to tell them by, every client is in one rotation.
    #[test]
    fn clients_without_reuse_take_their_keep_alive_rounds_last() {
        let accepted = [1, 200, 1, 0, 150];
        assert_eq!(groups(Scenario::KeepAlive, &accepted, 200), vec![vec![0, 2, 3], vec![1, 4]]);
        assert_eq!(groups(Scenario::KeepAlive, &[1, 1], 200), vec![vec![0, 1]]);
        assert_eq!(groups(Scenario::KeepAlive, &[200, 200], 200), vec![vec![0, 1]]);
        assert_eq!(groups(Scenario::KeepAlive, &accepted, 0), vec![(0..5).collect::<Vec<_>>()]);
        for sc in [Scenario::Fin, Scenario::Idle, Scenario::Rst] {
            assert_eq!(groups(sc, &accepted, 200), vec![(0..5).collect::<Vec<_>>()]);
        }
    }

    /// The TLS floor runs where TLS does: not in a plain run, first among the TLS clients.
    #[test]
    fn the_tls_floor_runs_in_the_tls_scenarios_only() {
        let keys = |c: &Config| c.clients.iter().map(|k| k.key).collect::<Vec<_>>();
        assert!(!keys(&parse("")).contains(&clients::FLOOR_TLS));
        assert_eq!(keys(&parse("--tls"))[0], clients::FLOOR_TLS);
        assert!(keys(&parse("--tls")).iter().all(|k| clients::find(k).unwrap().tls.is_some()));
        assert!(keys(&parse("--scenarios a,t1")).contains(&clients::FLOOR_TLS));
        assert_eq!(keys(&parse("--tls --clients finwatch,hyper")), vec!["finwatch", "hyper"]);
    }

    /// The experimental floors run only when named: never in a default run, plain or TLS.
    #[test]
    fn experimental_clients_run_only_when_named() {
        let keys = |c: &Config| c.clients.iter().map(|k| k.key).collect::<Vec<_>>();
        let experimental: Vec<&str> = clients::ALL.iter().filter(|k| k.experimental).map(|k| k.key).collect();
        assert_eq!(
            experimental,
            [
                "floor-peek",
                "floor-connect",
                "floor-connect-watchdog",
                "floor-spin-peek",
                "floor-uring",
                "floor-uring-audit",
                "floor-uring-in"
            ]
        );
        for args in ["", "--quick", "--tls", "--scenarios a,t1", "--scenarios b,c"] {
            assert!(keys(&parse(args)).iter().all(|k| !experimental.contains(k)), "{args:?}");
        }
        assert_eq!(
            keys(&parse("--clients floor-blocking,floor-peek,floor-uring")),
            ["floor-blocking", "floor-peek", "floor-uring"]
        );
    }

    /// (a) runs 30 × 2,000 on loopback and 10 × 2,000 across a link, unless told otherwise;
    /// `--rounds` and `--keepalive` each override only their own half.
    #[test]
    fn keep_alive_counts_default_by_network_and_yield_to_the_options() {
        let c = parse("");
        assert_eq!((c.rounds, c.commands[0]), ([30, 10, 10, 10, 5, 10, 10, 10, 5, 10, 10, 10], 60_000));
        let c = parse("--link-delay-us 500");
        assert_eq!((c.rounds[0], c.commands[0]), (10, 20_000));
        let c = parse("--link-delay-us 500 --rounds 4");
        assert_eq!((c.rounds, c.commands[0]), ([4; SCENARIOS], 20_000));
        let c = parse("--link-delay-us 500 --keepalive 6000");
        assert_eq!((c.rounds[0], c.commands[0]), (10, 6_000));
        let c = parse("--rounds 5 --keepalive 1000");
        assert_eq!((c.rounds, c.commands[0], c.per_round(Scenario::KeepAlive)), ([5; SCENARIOS], 1_000, 200));
    }
}

#[cfg(test)]
mod default_out_tests {
    use super::*;

    #[test]
    fn a_pinned_run_never_writes_the_unpinned_file() {
        assert_eq!(default_out(false, false, None, None), "RESULTS.md");
        assert_eq!(default_out(false, false, Some(Pin::Same), None), "RESULTS-same.md");
        assert_eq!(default_out(false, false, Some(Pin::Split), Some(0)), "RESULTS-split.md");
        assert_eq!(default_out(false, false, Some(Pin::Split), Some(200_000)), "RESULTS-split-fast.md");
        assert_eq!(default_out(true, false, Some(Pin::Same), Some(0)), "RESULTS-tls-same.md");
        assert_eq!(default_out(true, true, None, None), "RESULTS-tls-link.md");
        assert_eq!(default_out(false, true, None, None), "RESULTS-link.md");
    }
}
