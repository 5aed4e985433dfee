//! `ctl`: a curl-like command line for poking a device with finwatch.
//!
//! ```text
//! ctl [-X METHOD] [-d DATA|@FILE|@-] [-H 'N: v']... [-u USER:PASS [--digest]] [-o FILE] [--max-body BYTES]
//!     [--count N] [--gap-us G] [--timeout-ms T] [--json] [-s] [-v] URL
//! ctl [-H 'N: v']... [-u USER:PASS [--digest]] [-o FILE] [--max-body BYTES]
//!     [--count N] [--gap-us G] [--timeout-ms T] [--json] [-s] [-v] --script FILE
//! ```
//!
//! As in curl, short options combine and take attached values: `-sv` is `-s -v`, `-XPUT` is
//! `-X PUT`, `-d@fw.bin` is `-d @fw.bin`, `'-HX-Id: 7'` is `-H 'X-Id: 7'`; in a group, an
//! option that takes a value takes the rest of the group (`-sXPUT`). Long options take
//! `--name value` or `--name=value`. `-d @FILE` sends FILE's bytes verbatim (like curl's
//! `--data-binary @FILE`; curl's `-d @FILE` would drop its newlines), `-d @-` the bytes of stdin.
//!
//! Examples:
//!
//! ```text
//! # Read a value; print the status line, the headers and the body.
//! cargo run --example ctl -- http://10.0.0.5/unico/v1/interface/io-state?ioId=25602
//!
//! # Switch an output (-d without -X sends a POST, as curl does; here -X makes it a PUT).
//! cargo run --example ctl -- -X PUT -H 'Content-Type: application/json' \
//!     -d '{"ioId":25602,"on":true}' http://10.0.0.5/unico/v1/interface/io
//!
//! # The same, showing what happened on the wire (connects, reuse, FINs, ...) on stderr.
//! cargo run --example ctl -- -v -X PUT -d '{"ioId":25602,"on":true}' http://10.0.0.5/unico/v1/interface/io
//!
//! # 1000 requests 2 ms apart, one JSON object per line.
//! cargo run --example ctl -- --json --count 1000 --gap-us 2000 \
//!     --timeout-ms 500 http://10.0.0.5/unico/v1/interface/io-state?ioId=25602
//!
//! # Fetch a binary blob to a file (exact bytes), refusing a body over 64 KiB.
//! cargo run --example ctl -- -s --max-body 64K -o state.bin http://10.0.0.5/unico/v1/dump
//!
//! # Upload a file as the body, curl style.
//! cargo run --example ctl -- -XPUT -d@config.bin '-HContent-Type: application/octet-stream' \
//!     http://10.0.0.5/unico/v1/config
//!
//! # Switch on, read back, switch off, read back: 50 rounds of a 4-line script.
//! cargo run --example ctl -- --json --count 50 --gap-us 2000 -H 'Content-Type: application/json' \
//!     --script toggle.ctl
//! ```
//!
//! Without `--json`, each response is printed as its status line (`HTTP/1.1 200 OK`), its header
//! fields (`Name: value`, values lossy as UTF-8), a blank line and the body as its raw bytes
//! (then a newline if it does not end in one, so the next response starts on a line of its
//! own). One exception, as in curl: a body with a NUL byte is not written to a terminal (a
//! `warning:` says so; `-o -` writes it anyway).
//! Errors go to stderr as `error: <what happened>` followed by a `note:` saying whether the device
//! may have acted on the request.
//!
//! `-o FILE` / `--output FILE` writes the body to FILE instead of stdout, byte for byte (the
//! status line and headers still go to stdout in text mode; `--json` lines are unchanged).
//! FILE is created or truncated before the first request is sent, and rewritten with each
//! response's body, so after the run it holds the body of the last response received (curl also
//! overwrites), or nothing if none arrived. `-o -` is stdout.
//!
//! `--max-body BYTES` (a number, or with `K`, `M` or `G`: KiB, MiB, GiB) is the client's
//! [`finwatch::Limits`] `max_body_bytes` (default 8 MiB): a larger body fails that request with
//! [`finwatch::Error::LimitExceeded`] (`"kind":"limit_exceeded"`), and the exit status is 1.
//!
//! `-s` / `--silent` drops the `warning:` lines (the binary body held back from a terminal: it
//! is still not written). It never hides an `error:` and its `note:` (a control loop must know
//! whether the device may have acted; curl needs `-sS` for that, and ctl takes `-S` /
//! `--show-error` too, changing nothing), nor `-v`'s trace (`-sv` traces, as with curl), nor
//! usage errors, nor `RUST_LOG` logging. ctl has no progress meter.
//!
//! With `--json`, stdout carries exactly one JSON object per line per request, then a summary.
//! Scripts depend on these keys and their order:
//!
//! ```text
//! {"i":0,"status":200,"body_b64":"eyJvbiI6dHJ1ZX0=","conn":1,"reused":false,"us":412}
//! {"i":1,"error":{"kind":"connect_failed","may_have_been_processed":false,"message":"..."}}
//! {"summary":{"sent":2,"ok":1,"failed":1,"retried":0,"connections_opened":2,"fins_seen_idle":0,"p50_us":412,"p99_us":412,"max_us":412}}
//! ```
//!
//! `i` counts from 0 (across the whole run, with `--script` too); `conn` and `reused` come from
//! [`finwatch::Meta`]; `us` is the latency of that request in microseconds, measured around
//! `Client::send`; `kind` is [`finwatch::Error::kind`] and `message` its `Display`. In the
//! summary, `retried`, `connections_opened` and `fins_seen_idle` are the client's
//! [`finwatch::Stats`] `retries`, `connects` and `fins_seen_idle`; the percentiles are
//! nearest-rank over the successful requests' latencies (0 when there were none).
//!
//! `--gap-us` waits with [`std::thread::sleep`] after each request but the last: the pause is at
//! least G µs, plus the OS's wake-up latency (typically tens of µs, more on a loaded machine).
//!
//! # Scripts
//!
//! `--script FILE` sends the requests listed in FILE instead of one given by `-X`, `-d` and a
//! URL (which are then refused). Each line is `METHOD URL [BODY]`: the method (case-sensitive,
//! as in HTTP), one or more blanks, the URL, and optionally blanks and a body, which is the rest
//! of the line taken verbatim (spaces inside and at the end included; the line ending is not).
//! Blank lines and lines whose first non-blank character is `#` are ignored. `-H` headers and
//! `--timeout-ms` apply to every line. `--count N` goes through the script N times, line by line
//! (`--count 3` with 2 lines: line 1, line 2, line 1, line 2, line 1, line 2), and `--gap-us`
//! separates every two requests. The whole script is checked before anything is sent: a bad
//! line is a usage error that names it as `FILE:LINE`.
//!
//! ```text
//! # toggle.ctl
//! PUT http://10.0.0.5/unico/v1/interface/io {"ioId":25602,"on":true}
//! GET http://10.0.0.5/unico/v1/interface/io-state?ioId=25602
//! PUT http://10.0.0.5/unico/v1/interface/io {"ioId":25602,"on":false}
//! GET http://10.0.0.5/unico/v1/interface/io-state?ioId=25602
//! ```
//!
//! # Verbose
//!
//! `-v` prints what happened on the wire to stderr, like `curl -v`, from the client's
//! [`finwatch::Trace`] (taken after each request; stdout is unchanged, so `--json -v` still
//! writes pure JSON lines to stdout). Each line has the time since the first request in µs,
//! the connection id (`-` for a request not on a connection), a marker (`>` request written,
//! `<` response, `*` anything else) and the event:
//!
//! ```text
//! [        0 µs] conn 1 * connecting to 10.0.0.5:80
//! [      311 µs] conn 1 * connected (handshake 311 µs)
//! [      335 µs] conn 1 > PUT /unico/v1/interface/io
//! [     1102 µs] conn 1 < 200
//! [     3184 µs] conn 1 * reusing the connection (1 exchange so far, idle 2082 µs)
//! [     3190 µs] conn 1 > GET /unico/v1/interface/io-state?ioId=25602
//! [     3710 µs] conn 1 < 200
//! [    25930 µs] conn 1 * FIN from the device while idle (seen 22220 µs after its last response)
//! ```
//!
//! Also shown: warm spares being opened and used, FINs on busy connections or caught by the
//! pre-write check, resets, retirements with their reason, retries and failures; at the end, the
//! connections still open. Events are recorded while a request is in progress, so a FIN that
//! arrives during a gap is shown when the next request starts (and one after the last request
//! is not shown).
//!
//! # Exit status
//!
//! - 0: every request got a response (any HTTP status: 404 is a response).
//! - 1: a request failed (no response, a deadline, a body over `--max-body`, ...), or stdout or
//!   the `-o` file could not be written during the run. The device may have acted: see the
//!   `note:` (or `may_have_been_processed` with `--json`).
//! - 2: nothing was sent: a usage error, or a file that could not be read or created before the
//!   first request (`-d @FILE`, `-d @-`, `--script`, `--cacert`, `-o`).
//!
//! Usage errors try to help: a misspelled option gets the closest known one suggested
//! (`-silent`: did you mean `--silent`?), a URL without `http://` gets it suggested.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal, Seek, Write};
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{
    Client, ConnectionInfo, Error, Limits, Meta, Method, Request, Response, Stats, Trace, TraceEvent,
    TraceKind, Url,
};

#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod support;

const USAGE: &str = "\
Usage: ctl [OPTIONS] URL
       ctl [OPTIONS] --script FILE

Sends HTTP/1.1 requests to a device with finwatch and prints what came back.

Options:
  -X, --request METHOD    request method (default: GET, or POST when -d is given)
  -d, --data DATA         request body, sent as given (no Content-Type is added);
                          @FILE: FILE's bytes verbatim, @-: the bytes of stdin
  -H, --header 'N: v'     add a header field to every request; may be repeated
  -u, --user USER:PASS    credentials, sent with HTTP Basic (split at the first ':')
      --digest            answer the device's Digest challenge with the -u credentials
      --script FILE       send the requests listed in FILE, one 'METHOD URL [BODY]' per
                          line, instead of -X, -d and URL (see below)
      --count N           send the request N times; with --script, go through the
                          script N times (default: 1)
      --gap-us G          wait G microseconds after each request but the last (default: 0)
      --timeout-ms T      deadline of each request, connecting included (default: 10000)
  -o, --output FILE       write the body to FILE (exact bytes), rewritten by each response:
                          the last one's is kept; '-' is stdout (even a binary body)
      --max-body BYTES    fail a request whose body is larger (K, M, G suffixes: KiB,
                          MiB, GiB; default: 8M)
      --json              print one JSON object per request, then a summary line
  -s, --silent            no warnings on stderr (errors and -v's trace are still shown)
  -S, --show-error        accepted for curl's -sS: errors are always shown
      --cacert FILE       https: trust the CA certificates in FILE (PEM)
      --pin sha256//B64   https: accept the device whose public key has this SHA-256
                          (curl's --pinnedpubkey form; several joined with ';')
  -k, --insecure          https: accept ANY certificate (dangerous: no authentication)
  -v, --verbose           show the connection events on stderr: connects (and warm spares),
                          reuse, requests written (>), responses (<), FINs, resets,
                          retirements, retries
  -h, --help              print this help

Short options combine as in curl: -sv, -XPUT, -d@file, '-HName: v'.
Long options also accept --name=value. URL is http://host[:port]/path?query, or
https://... when ctl is built with finwatch's `tls` feature
(cargo run --features tls --example ctl -- ...).

Script lines: METHOD URL [BODY], where BODY is the rest of the line, verbatim.
Blank lines and lines starting with # are ignored. With --count 3 and a 2-line
script, ctl sends line 1, line 2, line 1, line 2, line 1, line 2.

Exit status: 0 if every request got a response (any HTTP status), 1 if one failed (or
the output could not be written), 2 if nothing was sent (a usage error, or an unreadable
-d @FILE, --script or --cacert, or an -o FILE that cannot be created).
RUST_LOG=finwatch=debug logs every connection state change to stderr.
";

/// The longest `--timeout-ms` accepted (one day): far beyond any device, and safely away from
/// overflowing a deadline computed as `now + timeout`.
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// Every option, for suggestions when an unknown one is given.
const KNOWN_OPTIONS: &[&str] = &[
    "-X",
    "--request",
    "-d",
    "--data",
    "-H",
    "--header",
    "-u",
    "--user",
    "--digest",
    "--script",
    "--count",
    "--gap-us",
    "--timeout-ms",
    "-o",
    "--output",
    "--max-body",
    "--json",
    "-s",
    "--silent",
    "-S",
    "--show-error",
    "--cacert",
    "--pin",
    "-k",
    "--insecure",
    "-v",
    "--verbose",
    "-h",
    "--help",
];

/// Trace events kept by the client with `-v`. The trace is taken after every request, and one
/// request makes a handful of events (a connect, a retry, a spare, ...), so none is dropped.
const TRACE_CAPACITY: usize = 1024;

/// Blanks separating the words of a script line.
const BLANKS: [char; 2] = [' ', '\t'];

/// Short options that take a value: attached (`-XPUT`) or the next argument (`-X PUT`).
const SHORT_WITH_VALUE: [char; 5] = ['X', 'd', 'H', 'u', 'o'];

/// Short options without a value; several combine in one argument (`-sv`).
const SHORT_FLAGS: [char; 5] = ['h', 'k', 's', 'S', 'v'];

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// `-h` / `--help`.
    Help,
    /// Send requests.
    Run(Box<Options>),
}

/// A validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    /// The request given by `-X`, `-d` and the URL (unused with `--script`: GET, empty).
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// How many times the request (or the script) is sent.
    count: u64,
    gap: Duration,
    /// The per-request deadline; `None` leaves the client's default.
    timeout: Option<Duration>,
    json: bool,
    verbose: bool,
    /// `-s`: no `warning:` lines on stderr.
    silent: bool,
    /// `-o`: where bodies go instead of stdout (`-`: stdout, even a binary body on a terminal).
    output: Option<String>,
    /// `--max-body`: the client's `Limits::max_body_bytes`; `None` leaves finwatch's default.
    max_body: Option<usize>,
    /// `-u`: user and password; `digest`: answer a Digest challenge with them (else Basic).
    user: Option<(String, String)>,
    digest: bool,
    /// `--script`: the requests to send instead of `method`, `url` and `body`.
    script: Option<Script>,
    /// `--cacert`, `--pin`, `-k`: how `https` devices are authenticated.
    tls: TlsOptions,
}

/// `--cacert FILE`, `--pin sha256//…`, `-k`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TlsOptions {
    cacert: Option<String>,
    pin: Option<String>,
    insecure: bool,
}

impl TlsOptions {
    fn given(&self) -> bool {
        self.cacert.is_some() || self.pin.is_some() || self.insecure
    }
}

/// A parsed `--script` file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Script {
    /// The file as given on the command line.
    path: String,
    /// At least one.
    steps: Vec<Step>,
}

/// One `METHOD URL [BODY]` line of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// 1-based line number in the file.
    line: usize,
    method: Method,
    url: String,
    body: Vec<u8>,
}

/// One request of a run, ready to send, and where it came from (`FILE:LINE` with `--script`).
#[derive(Debug, Clone)]
struct Planned {
    request: Request,
    origin: Option<String>,
}

impl Options {
    /// The distinct requests of the run, in order: the one of the command line, or one per
    /// script line. Each send clones one.
    fn plan(&self) -> Result<Vec<Planned>, String> {
        match &self.script {
            None => {
                check_url(&self.url)?;
                let request = self
                    .build(self.method.clone(), &self.url, self.body.clone())
                    .map_err(|e| e.to_string())?;
                Ok(vec![Planned { request, origin: None }])
            }
            Some(script) => script
                .steps
                .iter()
                .map(|step| {
                    let origin = format!("{}:{}", script.path, step.line);
                    let request = self
                        .build(step.method.clone(), &step.url, step.body.clone())
                        .map_err(|e| format!("{origin}: {e}"))?;
                    Ok(Planned { request, origin: Some(origin) })
                })
                .collect(),
        }
    }

    /// A request with the command line's headers and deadline.
    fn build(&self, method: Method, url: &str, body: Vec<u8>) -> finwatch::Result<Request> {
        let mut builder = Request::builder(method, url).body(body);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some((user, password)) = &self.user {
            builder = if self.digest {
                builder.digest_auth(user, password)
            } else {
                builder.basic_auth(user, password)
            };
        }
        builder.build()
    }

    /// How many requests the run sends.
    fn total(&self) -> u64 {
        let per_round = self.script.as_ref().map_or(1, |s| s.steps.len() as u64);
        self.count.saturating_mul(per_round)
    }
}

/// What `-d` was given: the body itself, `@FILE` or `@-`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Literal(String),
    File(String),
    Stdin,
}

impl Data {
    fn parse(flag: &str, value: String) -> Result<Data, String> {
        match value.strip_prefix('@') {
            None => Ok(Data::Literal(value)),
            Some("-") => Ok(Data::Stdin),
            Some("") => Err(format!("option {flag} @ needs a file name (@FILE), or @- for stdin")),
            Some(path) => Ok(Data::File(path.to_string())),
        }
    }
}

/// Something the command line asks ctl to read while parsing it: a `--script` or `-d @FILE`
/// file, or stdin for `-d @-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input<'a> {
    File(&'a str),
    Stdin,
}

/// Parses the arguments (without the program name), reading files from disk and `-d @-` from
/// stdin.
fn parse_args(args: &[String]) -> Result<Command, String> {
    parse_args_with(args, |input| match input {
        Input::File(path) => std::fs::read(path),
        Input::Stdin => {
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut io::stdin().lock(), &mut bytes)?;
            Ok(bytes)
        }
    })
}

/// One option of an argument, and its value when the argument carries it: `--name=value`, or
/// `-XPUT`. A group of short options (`-sv`, `-sXPUT`) gives one each; an option that takes a
/// value takes the rest of the group. An argument that does not start with a known short
/// option (`-count`, `-x`), or that names a long option with one dash (`-silent`: not `-s -i
/// ...`, nor `-data` as `-d ata`), is returned whole, for the caller to refuse with a
/// suggestion.
fn split_option(arg: &str) -> Result<Vec<(String, Option<String>)>, String> {
    if arg.starts_with("--") {
        return Ok(vec![match arg.split_once('=') {
            Some((flag, value)) => (flag.to_string(), Some(value.to_string())),
            None => (arg.to_string(), None),
        }]);
    }
    let known = |c: char| SHORT_WITH_VALUE.contains(&c) || SHORT_FLAGS.contains(&c);
    let first = arg.chars().nth(1);
    if !first.is_some_and(known) || KNOWN_OPTIONS.contains(&format!("-{arg}").as_str()) {
        return Ok(vec![(arg.to_string(), None)]);
    }
    let mut options = Vec::new();
    for (at, c) in arg.char_indices().skip(1) {
        let flag = format!("-{c}");
        if SHORT_WITH_VALUE.contains(&c) {
            let rest = &arg[at + c.len_utf8()..];
            options.push((flag, (!rest.is_empty()).then(|| rest.to_string())));
            return Ok(options);
        }
        if !known(c) {
            return Err(match suggest_option(&flag) {
                Some(meant) => format!("unknown option {flag} in {arg}: did you mean {meant}?"),
                None => format!("unknown option {flag} in {arg}"),
            });
        }
        options.push((flag, None));
    }
    Ok(options)
}

/// Parses the arguments, reading a `--script` file, a `-d @FILE` file and stdin (`-d @-`) with
/// `read`, once every option has been seen (`-h` reads nothing). Everything finwatch would
/// refuse (method, URL, header fields, Content-Length, any script line) is checked here too, so
/// a usage error sends nothing.
fn parse_args_with(
    args: &[String],
    read: impl Fn(Input<'_>) -> io::Result<Vec<u8>>,
) -> Result<Command, String> {
    let mut method = None;
    let mut data: Option<Data> = None;
    let mut headers = Vec::new();
    let mut count = None;
    let mut gap_us = None;
    let mut timeout_ms = None;
    let mut json = false;
    let mut verbose = false;
    let mut silent = false;
    let mut output: Option<String> = None;
    let mut max_body = None;
    let mut user: Option<(String, String)> = None;
    let mut digest = false;
    let mut script_path: Option<String> = None;
    let mut tls = TlsOptions::default();
    let mut url: Option<String> = None;
    let mut options_ended = false;

    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if options_ended || !arg.starts_with('-') || arg == "-" {
            if let Some(first) = &url {
                return Err(format!("unexpected argument {arg:?}: the URL was already given ({first:?})"));
            }
            url = Some(arg.clone());
            continue;
        }
        if arg == "--" {
            options_ended = true;
            continue;
        }
        // `--name=value`, `-XPUT`, `-sv`; otherwise an option's value is the next argument.
        for (flag, inline) in split_option(arg)? {
            let flag = flag.as_str();
            let mut value = || match &inline {
                Some(v) => Ok(v.clone()),
                None => args.next().cloned().ok_or_else(|| format!("option {flag} needs a value")),
            };
            match flag {
                "-h" | "--help" => return Ok(Command::Help),
                "-X" | "--request" => {
                    let name = value()?;
                    let m = Method::new(&name).map_err(|e| format!("{flag}: {e}"))?;
                    set_once(&mut method, m, flag)?;
                }
                "-d" | "--data" => set_once(&mut data, Data::parse(flag, value()?)?, flag)?,
                "-o" | "--output" => set_once(&mut output, value()?, flag)?,
                "--max-body" => set_once(&mut max_body, parse_size(flag, &value()?)?, flag)?,
                "-H" | "--header" => headers.push(parse_header(&value()?)?),
                "-u" | "--user" => {
                    let v = value()?;
                    // Never echoed: without its ':', the value may well be the password alone.
                    let (name, password) = v.split_once(':').ok_or_else(|| {
                        format!("{flag} needs USER:PASSWORD (no ':' in the value, which is not shown)")
                    })?;
                    set_once(&mut user, (name.to_string(), password.to_string()), flag)?;
                }
                "--script" => set_once(&mut script_path, value()?, flag)?,
                "--count" => set_once(&mut count, parse_number(flag, &value()?, 1..=u64::MAX)?, flag)?,
                "--gap-us" => set_once(&mut gap_us, parse_number(flag, &value()?, 0..=u64::MAX)?, flag)?,
                "--timeout-ms" => {
                    set_once(&mut timeout_ms, parse_number(flag, &value()?, 1..=MAX_TIMEOUT_MS)?, flag)?
                }
                "--cacert" => set_once(&mut tls.cacert, value()?, flag)?,
                "--pin" => set_once(&mut tls.pin, value()?, flag)?,
                "--json" | "--verbose" | "--silent" | "--show-error" | "--digest" | "--insecure"
                    if inline.is_some() =>
                {
                    return Err(format!("option {flag} takes no value"));
                }
                "--json" => json = true,
                "--digest" => digest = true,
                "-v" | "--verbose" => verbose = true,
                "-s" | "--silent" => silent = true,
                // curl's -sS: errors are always shown.
                "-S" | "--show-error" => {}
                "-k" | "--insecure" => tls.insecure = true,
                _ => {
                    return Err(match suggest_option(flag) {
                        Some(known) => format!("unknown option {flag}: did you mean {known}?"),
                        None => format!("unknown option {flag}"),
                    });
                }
            }
        }
    }

    let script = match script_path {
        None => None,
        Some(path) => {
            if method.is_some() {
                return Err("--script cannot be combined with -X/--request: each script line starts with \
                            its method"
                    .to_string());
            }
            if data.is_some() {
                return Err("--script cannot be combined with -d/--data: a script line's body is the rest \
                            of the line after its URL"
                    .to_string());
            }
            if let Some(url) = &url {
                return Err(format!(
                    "--script cannot be combined with a URL ({url:?}): each script line names its URL"
                ));
            }
            let bytes =
                read(Input::File(&path)).map_err(|e| format!("cannot read the script {path:?}: {e}"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("cannot read the script {path:?}: it is not UTF-8 text"))?;
            let steps = parse_script(&path, &text)?;
            Some(Script { path, steps })
        }
    };
    let url = match (&script, url) {
        (None, None) => return Err("missing URL".to_string()),
        (_, url) => url.unwrap_or_default(),
    };
    if digest && user.is_none() {
        return Err("--digest needs the credentials of -u/--user".to_string());
    }
    if tls.given() && !cfg!(feature = "tls") {
        return Err("--cacert, --pin and -k need ctl built with finwatch's `tls` feature \
                    (cargo run --features tls --example ctl -- ...)"
            .to_string());
    }
    let method = method.unwrap_or(if data.is_some() { Method::POST } else { Method::GET });
    // Read last: a command line that is wrong anyway does not wait for stdin.
    let body = match data {
        None => Vec::new(),
        Some(Data::Literal(text)) => text.into_bytes(),
        Some(Data::File(path)) => read(Input::File(&path))
            .map_err(|e| format!("cannot read the body file {path:?} (-d @FILE): {e}"))?,
        Some(Data::Stdin) => {
            read(Input::Stdin).map_err(|e| format!("cannot read the body from stdin (-d @-): {e}"))?
        }
    };
    let opts = Options {
        method,
        url,
        headers,
        body,
        count: count.unwrap_or(1),
        gap: Duration::from_micros(gap_us.unwrap_or(0)),
        timeout: timeout_ms.map(Duration::from_millis),
        json,
        verbose,
        silent,
        output,
        max_body,
        user,
        digest,
        script,
        tls,
    };
    opts.plan()?;
    Ok(Command::Run(Box::new(opts)))
}

/// The client's TLS settings from `--cacert`, `--pin` and `-k` (none given: `None`, and an
/// `https` device is refused, saying what to give).
#[cfg(feature = "tls")]
fn tls_config(opts: &TlsOptions) -> finwatch::Result<Option<finwatch::TlsConfig>> {
    if !opts.given() {
        return Ok(None);
    }
    let mut tls = finwatch::TlsConfig::new();
    if let Some(path) = &opts.cacert {
        tls = tls.ca_file(path)?;
    }
    if let Some(pin) = &opts.pin {
        tls = tls.pin_sha256(pin)?;
    }
    if opts.insecure {
        tls = tls.dangerous_accept_any_certificate();
    }
    Ok(Some(tls))
}

/// Stores the value of an option that may be given only once.
fn set_once<T>(slot: &mut Option<T>, value: T, flag: &str) -> Result<(), String> {
    match slot.replace(value) {
        Some(_) => Err(format!("option {flag} given more than once")),
        None => Ok(()),
    }
}

/// A whole decimal number within `range`.
fn parse_number(flag: &str, text: &str, range: RangeInclusive<u64>) -> Result<u64, String> {
    let n: u64 = text.parse().map_err(|_| format!("option {flag} needs a whole number, not {text:?}"))?;
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(format!("option {flag} must be between {} and {}, not {n}", range.start(), range.end()))
    }
}

/// A number of bytes, plain or with a binary suffix as curl's `--max-filesize` takes: `64K`
/// (KiB), `8M` (MiB), `1G` (GiB), either case.
fn parse_size(flag: &str, text: &str) -> Result<usize, String> {
    let bad = || format!("option {flag} needs a number of bytes, optionally with K, M or G, not {text:?}");
    let (digits, unit) = match text.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&text[..text.len() - 1], 1u64 << 10),
        Some('M') => (&text[..text.len() - 1], 1 << 20),
        Some('G') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("option {flag} is too large: {text:?}"))
}

/// `Name: value`, split on the first `:`; spaces and tabs around the value are dropped. A
/// malformed one is not echoed: `Authorization Bearer …` without its `:` is a credential.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.to_string(), value.trim_matches([' ', '\t']).to_string()))
        }
        _ => Err("malformed header: expected 'Name: value' (the value given is not shown: it may hold a \
                  credential)"
            .to_string()),
    }
}

/// The known option an unknown `flag` most likely meant: the same name with other dashes or
/// case (`-count`, `-x`), the only option it is a prefix of (`--time`), curl's `--data-raw` and
/// `--data-binary`, or the closest long option within a typo or two (`--cuont`).
fn suggest_option(flag: &str) -> Option<&'static str> {
    let name = flag.trim_start_matches('-');
    let bare = |known: &str| known.trim_start_matches('-').to_string();
    if name.is_empty() {
        return None;
    }
    if let Some(known) = KNOWN_OPTIONS
        .iter()
        .find(|k| bare(k) == name)
        .or_else(|| KNOWN_OPTIONS.iter().find(|k| bare(k).eq_ignore_ascii_case(name)))
    {
        return Some(known);
    }
    let name = name.to_ascii_lowercase();
    if name.len() < 2 {
        // An unknown one-letter option (`-i`, `-L`): no good guess.
        return None;
    }
    if matches!(name.as_str(), "data-raw" | "data-binary" | "data-ascii") {
        return Some("--data");
    }
    let longs = || KNOWN_OPTIONS.iter().copied().filter(|k| k.starts_with("--"));
    let mut prefixed = longs().filter(|k| k[2..].starts_with(&name));
    if let (Some(only), None) = (prefixed.next(), prefixed.next()) {
        return Some(only);
    }
    let (known, distance) = longs().map(|k| (k, edit_distance(&name, &k[2..]))).min_by_key(|&(_, d)| d)?;
    (distance <= 2 && distance * 3 <= name.chars().count()).then_some(known)
}

/// The optimal-string-alignment distance: how many insertions, deletions, substitutions and
/// swaps of two adjacent characters turn `a` into `b` (`cuont` is 1 from `count`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: the distance between a[..i] and b[..j].
    let mut d: Vec<Vec<usize>> = (0..=a.len()).map(|i| (0..=b.len()).map(|j| i.max(j)).collect()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
            let mut best = substitution.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// Checks that finwatch can use `url`; the error says what is wrong and, where it can tell,
/// what was probably meant (`http://` missing; `https://` for a device that also speaks HTTP).
fn check_url(url: &str) -> Result<(), String> {
    let Err(e) = Url::parse(url) else { return Ok(()) };
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https:") {
        let rest = url["https:".len()..].trim_start_matches('/');
        return Err(format!(
            "invalid URL {url:?}: https needs ctl built with finwatch's `tls` feature (cargo run \
             --features tls --example ctl -- ...); or try http://{rest} if the device also serves \
             plain HTTP"
        ));
    }
    if !url.contains("://") {
        // `10.0.0.5/io`, `localhost:8080/io`, `//host/io`, `http:/host/io`.
        let rest = if lower.starts_with("http:") { &url["http:".len()..] } else { url };
        let fixed = format!("http://{}", rest.trim_start_matches('/'));
        if Url::parse(&fixed).is_ok() {
            return Err(format!("{e}; did you mean {fixed}?"));
        }
    }
    Err(e.to_string())
}

/// Parses a script (`path` names it in errors): one `METHOD URL [BODY]` per line, blank lines
/// and `#` comments ignored. Errors are `FILE:LINE: what is wrong`.
fn parse_script(path: &str, text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let content = line.trim_start_matches(BLANKS);
        if content.trim_end_matches(BLANKS).is_empty() || content.starts_with('#') {
            continue;
        }
        let n = index + 1;
        let (method, url, body) = parse_script_line(content).map_err(|what| format!("{path}:{n}: {what}"))?;
        steps.push(Step { line: n, method, url, body });
    }
    if steps.is_empty() {
        return Err(format!("{path}: no requests in the script (only blank lines and comments)"));
    }
    Ok(steps)
}

/// `METHOD URL [BODY]`, without leading blanks; the body is the rest of the line after the
/// blanks that follow the URL.
fn parse_script_line(text: &str) -> Result<(Method, String, Vec<u8>), String> {
    const EXPECTED: &str = "expected 'METHOD URL [BODY]', e.g. 'GET http://10.0.0.5/io'";
    let (method, rest) = split_word(text);
    let (url, body) = split_word(rest);
    if method.contains("://") {
        return Err(format!("missing method before the URL {method:?} ({EXPECTED})"));
    }
    let method = Method::new(method).map_err(|e| match e {
        Error::InvalidRequest { reason } => format!("{reason} ({EXPECTED})"),
        other => other.to_string(),
    })?;
    if url.is_empty() {
        return Err(format!("missing URL after {} ({EXPECTED})", method.as_str()));
    }
    check_url(url)?;
    Ok((method, url.to_string(), body.as_bytes().to_vec()))
}

/// The first word of `text` (up to a blank), and the rest after the blanks that follow it.
fn split_word(text: &str) -> (&str, &str) {
    match text.find(BLANKS) {
        Some(end) => (&text[..end], text[end..].trim_start_matches(BLANKS)),
        None => (text, ""),
    }
}

/// Sends the requests and reports on `out` (responses, JSON lines) and `err` (errors in text
/// mode, `-v` events), `out` not being a terminal. Returns the exit status.
#[cfg(test)]
fn run(opts: &Options, out: &mut impl Write, err: &mut impl Write) -> u8 {
    run_on(opts, out, false, err)
}

/// [`run`], saying whether `out` is a terminal (a binary body is then held back).
fn run_on(opts: &Options, out: &mut impl Write, out_is_terminal: bool, err: &mut impl Write) -> u8 {
    match send_all(opts, out, out_is_terminal, err) {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(err, "error: could not write the output: {e}");
            1
        }
    }
}

fn send_all(
    opts: &Options,
    out: &mut impl Write,
    out_is_terminal: bool,
    err: &mut impl Write,
) -> io::Result<u8> {
    let plan = match opts.plan() {
        Ok(plan) => plan,
        Err(msg) => {
            writeln!(err, "error: {msg}")?;
            return Ok(2);
        }
    };
    let builder = Client::builder();
    let builder = if opts.verbose { builder.trace(TRACE_CAPACITY) } else { builder };
    let builder = match opts.max_body {
        Some(max_body_bytes) => builder.limits(Limits { max_body_bytes, ..Limits::default() }),
        None => builder,
    };
    #[cfg(feature = "tls")]
    let builder = match tls_config(&opts.tls) {
        Ok(Some(tls)) => builder.tls(tls),
        Ok(None) => builder,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(2);
        }
    };
    let mut client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(1);
        }
    };
    // Created (or truncated) before anything is sent: a file that cannot be written sends
    // nothing.
    let mut body_file = match opts.output.as_deref().filter(|path| *path != "-") {
        None => None,
        Some(path) => match File::create(path) {
            Ok(file) => Some((path, file)),
            Err(e) => {
                writeln!(err, "error: cannot create the output file {path:?} (-o): {e}; nothing was sent")?;
                return Ok(2);
            }
        },
    };
    // `-o -`: the body goes to stdout even when it is binary and stdout a terminal.
    let hold_back_binary = out_is_terminal && opts.output.is_none();
    let total = opts.total();
    let mut narrator = opts.verbose.then(|| Narrator::new(Instant::now()));
    let mut latencies_us = Vec::new();
    let mut failed = 0;
    for (i, planned) in (0..total).zip(plan.iter().cycle()) {
        let start = Instant::now();
        let result = client.send(planned.request.clone());
        let us = micros(start.elapsed());
        if let Some(narrator) = &mut narrator {
            // What the previous request printed comes first on a terminal.
            out.flush()?;
            if let Some(trace) = client.take_trace() {
                narrator.write_trace(err, &trace)?;
            }
        }
        match result {
            Ok(resp) => {
                latencies_us.push(us);
                if opts.json {
                    writeln!(out, "{}", success_line(i, resp.status(), resp.body(), resp.meta(), us))?;
                } else {
                    write_head(out, &resp)?;
                    if body_file.is_none() {
                        if hold_back_binary && resp.body().contains(&0) {
                            if !opts.silent {
                                out.flush()?;
                                writeln!(
                                    err,
                                    "warning: the body ({}) looks binary (it has a NUL byte) and \
                                     stdout is a terminal: not shown; -o FILE saves it, -o - \
                                     prints it anyway",
                                    plural(resp.body().len() as u64, "byte")
                                )?;
                            }
                        } else {
                            write_body(out, resp.body())?;
                        }
                    }
                }
                if let Some((path, file)) = &mut body_file {
                    rewrite(file, resp.body())
                        .map_err(|e| io::Error::new(e.kind(), format!("{path:?} (-o): {e}")))?;
                }
            }
            Err(e) => {
                failed += 1;
                if opts.json {
                    writeln!(out, "{}", error_line(i, &e))?;
                } else {
                    let label = match (&planned.origin, total > 1) {
                        (Some(origin), _) => Some(format!("request {i} ({origin})")),
                        (None, true) => Some(format!("request {i}")),
                        (None, false) => None,
                    };
                    write_error(err, &e, label.as_deref())?;
                }
            }
        }
        if i + 1 < total && !opts.gap.is_zero() {
            thread::sleep(opts.gap);
        }
    }
    if let Some(narrator) = &narrator {
        out.flush()?;
        narrator.write_open(err, &client.connections(), Instant::now())?;
    }
    if opts.json {
        writeln!(out, "{}", summary_line(&Summary::new(&latencies_us, failed, &client.stats())))?;
    }
    out.flush()?;
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Renders the client's trace for `-v`: one line per event, with the time since the start of
/// the run, the connection and a `curl -v`-like marker (`>` sent, `<` received, `*` the rest).
/// It follows each connection through the events, to say what a FIN interrupted and when a
/// connection is reused.
#[derive(Debug)]
struct Narrator {
    t0: Instant,
    conns: HashMap<u64, ConnView>,
}

/// What the narrator has seen of one live connection.
#[derive(Debug, Default)]
struct ConnView {
    connecting_at: Option<Instant>,
    spare: bool,
    /// Responses received on it.
    served: u32,
    /// A request was written (or is being written) and its response has not arrived.
    in_flight: bool,
    last_response: Option<Instant>,
}

impl Narrator {
    fn new(t0: Instant) -> Narrator {
        Narrator { t0, conns: HashMap::new() }
    }

    fn write_trace(&mut self, w: &mut impl Write, trace: &Trace) -> io::Result<()> {
        trace.events().try_for_each(|e| self.write_event(w, e))
    }

    fn write_event(&mut self, w: &mut impl Write, e: &TraceEvent) -> io::Result<()> {
        let ended = matches!(
            e.kind,
            TraceKind::PeerFin { .. } | TraceKind::PeerReset { .. } | TraceKind::Closed { .. }
        );
        let mut view = self.conns.remove(&e.conn).unwrap_or_default();
        let line = match &e.kind {
            TraceKind::Connecting { spare } => {
                view = ConnView { connecting_at: Some(e.at), spare: *spare, ..ConnView::default() };
                if *spare {
                    ('*', format!("connecting to {} (warm spare, for the next request)", e.host))
                } else {
                    ('*', format!("connecting to {}", e.host))
                }
            }
            // A spare's connect may complete while no request runs the loop: it is seen late, so
            // its handshake time would be wrong.
            TraceKind::Connected => match view.connecting_at.filter(|_| !view.spare) {
                Some(t) => {
                    ('*', format!("connected (handshake {} µs)", micros(e.at.saturating_duration_since(t))))
                }
                None => ('*', "connected".to_string()),
            },
            TraceKind::Sent { line, .. } => {
                if let Some(last) = view.last_response.filter(|_| view.served > 0) {
                    let idle = micros(e.at.saturating_duration_since(last));
                    let served = plural(u64::from(view.served), "exchange");
                    self.write_line(
                        w,
                        e,
                        '*',
                        &format!("reusing the connection ({served} so far, idle {idle} µs)"),
                    )?;
                } else if view.spare {
                    let age = view.connecting_at.map_or(0, |t| micros(e.at.saturating_duration_since(t)));
                    self.write_line(w, e, '*', &format!("using the warm spare (opened {age} µs ago)"))?;
                }
                view.in_flight = true;
                ('>', line.clone())
            }
            TraceKind::Response { status, .. } => {
                view.served += 1;
                view.in_flight = false;
                view.last_response = Some(e.at);
                ('<', status.to_string())
            }
            TraceKind::PeerFin { state } => ('*', format!("FIN from the device {}", view.doing(state, e.at))),
            TraceKind::PeerReset { state } => {
                ('*', format!("reset (RST or socket error) {}", view.doing(state, e.at)))
            }
            TraceKind::Closed { reason } => ('*', format!("retired: {reason}")),
            TraceKind::Retried { .. } => {
                ('*', "the connection was lost under the request: retrying it on a fresh one".to_string())
            }
            TraceKind::Failed { error, .. } => ('*', format!("request failed: {error}")),
            TraceKind::TlsHandshake { version, cipher, resumed } => {
                let how = if *resumed { "resumed session" } else { "full handshake" };
                let ahead = if view.spare { ", ahead of need (warm spare)" } else { "" };
                ('*', format!("TLS {version} {cipher}, {how}{ahead}"))
            }
            TraceKind::TlsClosed { close_notify: true } => ('*', "close_notify from the device".to_string()),
            TraceKind::TlsClosed { close_notify: false } => {
                ('*', "the device closed TLS without close_notify (a bare FIN)".to_string())
            }
            // `TraceKind` is `#[non_exhaustive]`: a kind added later is shown by its Debug form.
            other => ('*', format!("{other:?}")),
        };
        if !ended && e.conn != 0 {
            self.conns.insert(e.conn, view);
        }
        self.write_line(w, e, line.0, &line.1)
    }

    /// `[   1234 µs] conn 7 > GET /io`
    fn write_line(&self, w: &mut impl Write, e: &TraceEvent, marker: char, text: &str) -> io::Result<()> {
        self.write_at(w, e.at, e.conn, marker, text)
    }

    fn write_at(
        &self,
        w: &mut impl Write,
        at: Instant,
        conn: u64,
        marker: char,
        text: &str,
    ) -> io::Result<()> {
        let us = micros(at.saturating_duration_since(self.t0));
        match conn {
            0 => writeln!(w, "[{us:>9} µs] conn - {marker} {text}"),
            c => writeln!(w, "[{us:>9} µs] conn {c} {marker} {text}"),
        }
    }

    /// The connections still open at the end of the run (closed as ctl exits).
    fn write_open(&self, w: &mut impl Write, conns: &[ConnectionInfo], now: Instant) -> io::Result<()> {
        for c in conns {
            let mut text =
                format!("still open at the end ({}, {}", c.state, plural(u64::from(c.served), "exchange"));
            if let Some(idle) = c.idle_for {
                text.push_str(&format!(", idle {} µs", micros(idle)));
            }
            text.push(')');
            self.write_at(w, now, c.id, '*', &text)?;
        }
        Ok(())
    }
}

impl ConnView {
    /// What the connection was doing when it ended, from the engine's state name and what the
    /// narrator saw of it.
    fn doing(&self, state: &str, at: Instant) -> String {
        match state {
            "Open(Idle)" => match self.last_response {
                Some(t) => format!(
                    "while idle (seen {} µs after its last response)",
                    micros(at.saturating_duration_since(t))
                ),
                None => "while idle (before its first request)".to_string(),
            },
            "Open(Busy)" if self.in_flight => {
                "while busy (the request was written, its response is incomplete)".to_string()
            }
            "Open(Busy)" => {
                "just before a request was written on it (caught by the pre-write check; nothing was sent)"
                    .to_string()
            }
            "Connecting" => "while connecting".to_string(),
            "end of a close-delimited response" => "ending a close-delimited response".to_string(),
            other => format!("({other})"),
        }
    }
}

/// `1 exchange`, `3 exchanges`.
fn plural(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Replaces the content of `file` with `body`.
fn rewrite(file: &mut File, body: &[u8]) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(body)?;
    file.flush()
}

/// Status line, header fields, blank line.
fn write_head(out: &mut impl Write, resp: &Response) -> io::Result<()> {
    write!(out, "{} {}", resp.version(), resp.status())?;
    if !resp.reason().is_empty() {
        write!(out, " {}", resp.reason())?;
    }
    writeln!(out)?;
    for (name, value) in resp.headers() {
        writeln!(out, "{name}: {}", String::from_utf8_lossy(value))?;
    }
    writeln!(out)
}

/// The body's bytes as they came, then a newline if it does not end in one.
fn write_body(out: &mut impl Write, body: &[u8]) -> io::Result<()> {
    out.write_all(body)?;
    if !body.is_empty() && !body.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(())
}

/// `error: …` and whether the device may have acted on the request; `label` says which request
/// when several were sent (`request 3`, with the `i` of the JSON output, and its script line).
fn write_error(err: &mut impl Write, e: &Error, label: Option<&str>) -> io::Result<()> {
    match label {
        Some(label) => writeln!(err, "error: {label}: {e}")?,
        None => writeln!(err, "error: {e}")?,
    }
    if e.may_have_been_processed() {
        writeln!(err, "note: the device may have acted on this request; check its state before resending")
    } else {
        writeln!(err, "note: the device did not receive this request; it is safe to send again")
    }
}

/// `{"i":0,"status":200,"body_b64":"...","conn":3,"reused":false,"us":412}`
fn success_line(i: u64, status: u16, body: &[u8], meta: Meta, us: u64) -> String {
    format!(
        r#"{{"i":{i},"status":{status},"body_b64":"{}","conn":{},"reused":{},"us":{us}}}"#,
        base64(body),
        meta.connection_id,
        meta.reused,
    )
}

/// `{"i":0,"error":{"kind":"...","may_have_been_processed":false,"message":"..."}}`
fn error_line(i: u64, e: &Error) -> String {
    format!(
        r#"{{"i":{i},"error":{{"kind":{},"may_have_been_processed":{},"message":{}}}}}"#,
        json_string(e.kind()),
        e.may_have_been_processed(),
        json_string(&e.to_string()),
    )
}

/// The last line of `--json` output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Summary {
    sent: u64,
    ok: u64,
    failed: u64,
    retried: u64,
    connections_opened: u64,
    fins_seen_idle: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl Summary {
    /// From the successful requests' latencies (any order), the failure count and the client's
    /// counters.
    fn new(latencies_us: &[u64], failed: u64, stats: &Stats) -> Summary {
        let mut sorted = latencies_us.to_vec();
        sorted.sort_unstable();
        let ok = sorted.len() as u64;
        Summary {
            sent: ok + failed,
            ok,
            failed,
            retried: stats.retries,
            connections_opened: stats.connects,
            fins_seen_idle: stats.fins_seen_idle,
            p50_us: percentile(&sorted, 50),
            p99_us: percentile(&sorted, 99),
            max_us: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// Nearest-rank percentile `p` (1..=100) of ascending `sorted`; 0 when it is empty.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// `{"summary":{"sent":N,"ok":..,"failed":..,"retried":..,"connections_opened":..,...}}`
fn summary_line(s: &Summary) -> String {
    format!(
        concat!(
            r#"{{"summary":{{"sent":{},"ok":{},"failed":{},"retried":{},"connections_opened":{},"#,
            r#""fins_seen_idle":{},"p50_us":{},"p99_us":{},"max_us":{}}}}}"#
        ),
        s.sent,
        s.ok,
        s.failed,
        s.retried,
        s.connections_opened,
        s.fins_seen_idle,
        s.p50_us,
        s.p99_us,
        s.max_us,
    )
}

/// Standard base64 (RFC 4648 §4) with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |k: usize| u32::from(chunk.get(k).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes give n + 1 significant characters; the rest of the 4 is padding.
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * k)) as usize & 0x3f]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `s` as a quoted JSON string (RFC 8259 §7): `"` and `\` escaped, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`; everything else verbatim (the output is UTF-8).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < '\u{20}' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A duration in whole microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn main() -> ExitCode {
    env_logger::init();
    let args: Result<Vec<String>, String> = std::env::args_os()
        .skip(1)
        .map(|a: OsString| a.into_string().map_err(|a| format!("argument {a:?} is not valid UTF-8")))
        .collect();
    let status = match args.and_then(|args| parse_args(&args)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            0
        }
        Ok(Command::Run(opts)) => {
            let stdout = io::stdout();
            let is_terminal = stdout.is_terminal();
            run_on(&opts, &mut stdout.lock(), is_terminal, &mut io::stderr())
        }
        Err(msg) => {
            // The message first and short: the synopsis, not the whole help, follows it.
            let synopsis: Vec<&str> = USAGE.lines().take_while(|l| !l.is_empty()).collect();
            eprintln!("ctl: {msg}\n\n{}\nRun 'ctl --help' for the options.", synopsis.join("\n"));
            2
        }
    };
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::support::{Cut, CutRequest, DeviceServer, Reply, ServerOptions, seq_reply};
    use super::*;
    use finwatch::Stage;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn parse(list: &[&str]) -> Result<Command, String> {
        parse_args(&args(list))
    }

    fn options(list: &[&str]) -> Options {
        match parse(list) {
            Ok(Command::Run(opts)) => *opts,
            other => panic!("{list:?} parsed as {other:?}"),
        }
    }

    fn parse_err(list: &[&str]) -> String {
        match parse(list) {
            Err(msg) => msg,
            Ok(cmd) => panic!("{list:?} accepted as {cmd:?}"),
        }
    }

    /// Parses `list`, with `script` as the content of the `--script` file (whatever its name).
    fn parse_with_script(list: &[&str], script: &str) -> Result<Command, String> {
        parse_args_with(&args(list), |_| Ok(script.as_bytes().to_vec()))
    }

    /// `--cacert`, `--pin`, `-k`: parsed with the `tls` feature, a usage error (saying how to get
    /// it) without; an `https` URL likewise.
    #[test]
    fn tls_options() {
        let list = ["--cacert", "ca.pem", "--pin", "sha256//AAAA", "-k", "https://10.0.0.5/io"];
        if cfg!(feature = "tls") {
            let tls = options(&list).tls;
            assert_eq!(tls.cacert.as_deref(), Some("ca.pem"));
            assert_eq!(tls.pin.as_deref(), Some("sha256//AAAA"));
            assert!(tls.insecure);
            assert!(parse_err(&["--insecure=1", "https://10.0.0.5/"]).contains("takes no value"));
            assert!(parse_err(&["--pin", "a", "--pin", "b", "https://10.0.0.5/"]).contains("more than once"));
        } else {
            assert!(parse_err(&list).contains("`tls` feature"), "{}", parse_err(&list));
            assert!(parse_err(&["https://10.0.0.5/io"]).contains("`tls` feature"));
        }
    }

    /// `-v` over TLS: the handshake (version, cipher, full or resumed, ahead of need on a warm
    /// spare) and how the device closed, from the client's trace (`TraceKind::TlsHandshake`,
    /// `TraceKind::TlsClosed`, recorded by the driver with the `tls` feature).
    #[test]
    fn verbose_shows_tls_handshakes_and_closes() {
        let t0 = Instant::now();
        let mut trace = Trace::new(16);
        let host = "https://10.0.0.5:443";
        let at = |us| t0 + Duration::from_micros(us);
        trace.record(at(0), 1, host, TraceKind::Connecting { spare: false });
        let full = TraceKind::TlsHandshake { version: "TLSv1_3".into(), cipher: "X".into(), resumed: false };
        trace.record(at(900), 1, host, full);
        trace.record(at(1200), 1, host, TraceKind::TlsClosed { close_notify: true });
        trace.record(at(1300), 2, host, TraceKind::Connecting { spare: true });
        let resumed =
            TraceKind::TlsHandshake { version: "TLSv1_3".into(), cipher: "X".into(), resumed: true };
        trace.record(at(1700), 2, host, resumed);
        trace.record(at(2500), 2, host, TraceKind::TlsClosed { close_notify: false });
        let mut out = Vec::new();
        Narrator::new(t0).write_trace(&mut out, &trace).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("TLS TLSv1_3 X, full handshake"), "{text}");
        assert!(text.contains("TLS TLSv1_3 X, resumed session, ahead of need (warm spare)"), "{text}");
        assert!(text.contains("close_notify from the device"), "{text}");
        assert!(text.contains("without close_notify (a bare FIN)"), "{text}");
    }

    fn script_options(list: &[&str], script: &str) -> Options {
        match parse_with_script(list, script) {
            Ok(Command::Run(opts)) => *opts,
            other => panic!("{list:?} with {script:?} parsed as {other:?}"),
        }
    }

    fn script_err(list: &[&str], script: &str) -> String {
        match parse_with_script(list, script) {
            Err(msg) => msg,
            Ok(cmd) => panic!("{list:?} with {script:?} accepted as {cmd:?}"),
        }
    }

    const URL: &str = "http://10.0.0.5/io";

    #[test]
    fn defaults() {
        let o = options(&[URL]);
        assert_eq!(o.method, Method::GET);
        assert_eq!(o.url, URL);
        assert!(o.headers.is_empty());
        assert!(o.body.is_empty());
        assert_eq!((o.count, o.gap, o.timeout, o.json), (1, Duration::ZERO, None, false));
    }

    #[test]
    fn all_flags() {
        let o = options(&[
            "-X",
            "PUT",
            "-d",
            r#"{"on":true}"#,
            "-H",
            "Content-Type: application/json",
            "--count",
            "5",
            "--gap-us",
            "250",
            "--timeout-ms",
            "300",
            "--json",
            URL,
        ]);
        assert_eq!(o.method.as_str(), "PUT");
        assert_eq!(o.body, br#"{"on":true}"#);
        assert_eq!(o.headers, [("Content-Type".to_string(), "application/json".to_string())]);
        assert_eq!(o.count, 5);
        assert_eq!(o.gap, Duration::from_micros(250));
        assert_eq!(o.timeout, Some(Duration::from_millis(300)));
        assert!(o.json);
        // Long forms, `=` values, the URL first, and `--` before it are equivalent.
        let long = options(&[
            URL,
            "--request=PUT",
            "--data",
            r#"{"on":true}"#,
            "--header=Content-Type: application/json",
            "--count=5",
            "--gap-us=250",
            "--timeout-ms",
            "300",
            "--json",
        ]);
        assert_eq!(long, o);
        let mut rest: Vec<&str> =
            vec!["-X", "PUT", "-d", r#"{"on":true}"#, "-H", "Content-Type: application/json"];
        rest.extend(["--count", "5", "--gap-us", "250", "--timeout-ms", "300", "--json", "--", URL]);
        assert_eq!(options(&rest), o);
    }

    #[test]
    fn headers_repeat_in_order_split_on_first_colon_and_trim_the_value() {
        let o =
            options(&["-H", "X-A: 1", "-H", "X-B:\t two words  ", "-H", "X-Time: 12:30", "-H", "X-E:", URL]);
        let expected = [("X-A", "1"), ("X-B", "two words"), ("X-Time", "12:30"), ("X-E", "")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        assert_eq!(o.headers, expected);
    }

    #[test]
    fn data_implies_post_unless_a_method_is_given() {
        assert_eq!(options(&["-d", "x=1", URL]).method, Method::POST);
        assert_eq!(options(&["-d", "", URL]).method, Method::POST);
        let o = options(&["-d", "x", "-X", "PATCH", URL]);
        assert_eq!((o.method.as_str(), o.body.as_slice()), ("PATCH", &b"x"[..]));
        assert_eq!(options(&["-X", "DELETE", URL]).method, Method::DELETE);
        // A value is taken as given, even when it looks like an option.
        assert_eq!(options(&["-d", "--json", URL]).body, b"--json");
    }

    #[test]
    fn help() {
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--json", "--help", URL]), Ok(Command::Help));
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse_err(&[]), "missing URL");
        assert_eq!(parse_err(&["--json"]), "missing URL");
        assert!(parse_err(&[URL, "http://other/"]).starts_with("unexpected argument"));
        assert_eq!(parse_err(&["--zzz", URL]), "unknown option --zzz");
        assert_eq!(parse_err(&["--verbose=yes", URL]), "option --verbose takes no value");
        assert_eq!(parse_err(&["--json=yes", URL]), "option --json takes no value");
        assert_eq!(parse_err(&[URL, "-X"]), "option -X needs a value");
        assert_eq!(parse_err(&["-d", "a", "--data", "b", URL]), "option --data given more than once");
        assert_eq!(parse_err(&["--count", "1", "--count", "2", URL]), "option --count given more than once");
        assert!(parse_err(&["-X", "GE T", URL]).contains("invalid method"));
        if !cfg!(feature = "tls") {
            assert!(parse_err(&["https://10.0.0.5/"]).contains("`tls` feature"));
        }
        assert!(parse_err(&["10.0.0.5/io"]).contains("missing scheme"));
    }

    #[test]
    fn bad_numbers() {
        for bad in ["", "abc", "-1", "1.5", "1e3", "18446744073709551616"] {
            let msg = parse_err(&["--count", bad, URL]);
            assert!(msg.contains("needs a whole number"), "{bad:?}: {msg}");
            assert!(parse_err(&["--gap-us", bad, URL]).contains("needs a whole number"), "{bad:?}");
            assert!(parse_err(&["--timeout-ms", bad, URL]).contains("needs a whole number"), "{bad:?}");
        }
        assert!(parse_err(&["--count", "0", URL]).contains("must be between 1 and"));
        assert!(parse_err(&["--timeout-ms", "0", URL]).contains("must be between 1 and"));
        assert!(parse_err(&["--timeout-ms", "86400001", URL]).contains("must be between 1 and 86400000"));
        assert_eq!(options(&["--gap-us", "0", URL]).gap, Duration::ZERO);
    }

    #[test]
    fn malformed_headers() {
        for bad in ["NoColon", ": value", "  : value", "", "Authorization Bearer s3cret"] {
            let msg = parse_err(&["-H", bad, URL]);
            assert!(msg.starts_with("malformed header") && msg.contains("'Name: value'"), "{bad:?}: {msg}");
            // The argument is never echoed: it may be a credential.
            assert!(!msg.contains("s3cret") && !msg.contains("NoColon") && !msg.contains("value\""), "{msg}");
        }
        // Well-formed but refused by finwatch: checked before anything is sent.
        assert!(parse_err(&["-H", "Bad Name: 1", URL]).contains("invalid header name"));
        assert!(parse_err(&["-H", "X: a\rb", URL]).contains("control byte"));
        assert!(parse_err(&["-H", "Content-Length: 9", "-d", "abc", URL]).contains("disagrees"));
    }

    #[test]
    fn base64_rfc4648_vectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg==")];
        for (input, expected) in vectors.into_iter().chain([("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]) {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn base64_binary() {
        // RFC 4648 §9 examples, and bytes that use `+`, `/` and the zero/one bit patterns.
        assert_eq!(base64(&[0x14, 0xfb, 0x9c, 0x03, 0xd9, 0x7e]), "FPucA9l+");
        assert_eq!(base64(&[0x14, 0xfb, 0x9c, 0x03, 0xd9]), "FPucA9k=");
        assert_eq!(base64(&[0x14, 0xfb, 0x9c, 0x03]), "FPucAw==");
        assert_eq!(base64(&[0x00]), "AA==");
        assert_eq!(base64(&[0x00, 0x00, 0x00]), "AAAA");
        assert_eq!(base64(&[0xff, 0xff, 0xff]), "////");
        assert_eq!(base64(&[0xfb, 0xef, 0xbe]), "++++");
        assert_eq!(base64(&[0x00, 0xff, 0xfe, 0x80, 0x0a]), "AP/+gAo=");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_string(""), r#""""#);
        assert_eq!(json_string(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(json_string(r"C:\dir"), r#""C:\\dir""#);
        assert_eq!(json_string("a\nb\r\tc"), r#""a\nb\r\tc""#);
        assert_eq!(
            json_string("\u{0}\u{1}\u{8}\u{c}\u{1b}\u{1f}"),
            r#""\u0000\u0001\u0008\u000c\u001b\u001f""#
        );
        assert_eq!(json_string("caf\u{e9} \u{7f} ok"), "\"caf\u{e9} \u{7f} ok\"");
    }

    #[test]
    fn success_line_shape() {
        // `Meta` is #[non_exhaustive]: built from its default.
        let meta = |connection_id, reused, retries| {
            let mut m = Meta::default();
            (m.connection_id, m.reused, m.retries) = (connection_id, reused, retries);
            m
        };
        let meta3 = meta(3, false, 0);
        assert_eq!(
            success_line(0, 200, br#"{"on":true}"#, meta3, 412),
            r#"{"i":0,"status":200,"body_b64":"eyJvbiI6dHJ1ZX0=","conn":3,"reused":false,"us":412}"#
        );
        assert_eq!(
            success_line(12, 404, b"", meta(7, true, 1), 0),
            r#"{"i":12,"status":404,"body_b64":"","conn":7,"reused":true,"us":0}"#
        );
    }

    #[test]
    fn error_line_shape() {
        let e = Error::ConnectTimedOut { host: "10.0.0.5:80".to_string() };
        assert_eq!(
            error_line(4, &e),
            r#"{"i":4,"error":{"kind":"connect_timed_out","may_have_been_processed":false,"message":"connect to 10.0.0.5:80 timed out"}}"#
        );
        let e = Error::DeadlineExceeded { stage: Stage::AwaitingResponse };
        let line = error_line(0, &e);
        assert!(
            line.starts_with(r#"{"i":0,"error":{"kind":"deadline_exceeded","may_have_been_processed":true,"#)
        );
        assert!(line.ends_with(r#"; the device may have acted on it"}}"#), "{line}");
        // The message is escaped.
        let e = Error::InvalidUrl { url: "http://h/\"x\"\n".to_string(), reason: "r" };
        assert_eq!(
            error_line(1, &e),
            r#"{"i":1,"error":{"kind":"invalid_url","may_have_been_processed":false,"message":"invalid URL \"http://h/\\\"x\\\"\\n\": r"}}"#
        );
    }

    #[test]
    fn summary_line_shape() {
        // `Stats` is #[non_exhaustive]: built from its default.
        let mut stats = Stats::default();
        (stats.retries, stats.connects, stats.fins_seen_idle) = (2, 3, 1);
        let s = Summary::new(&[300, 100, 200], 1, &stats);
        assert_eq!(
            summary_line(&s),
            r#"{"summary":{"sent":4,"ok":3,"failed":1,"retried":2,"connections_opened":3,"fins_seen_idle":1,"p50_us":200,"p99_us":300,"max_us":300}}"#
        );
        let none = Summary::new(&[], 2, &Stats::default());
        assert_eq!(
            summary_line(&none),
            r#"{"summary":{"sent":2,"ok":0,"failed":2,"retried":0,"connections_opened":0,"fins_seen_idle":0,"p50_us":0,"p99_us":0,"max_us":0}}"#
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 50), 7);
        assert_eq!(percentile(&[7], 99), 7);
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(
            (percentile(&hundred, 50), percentile(&hundred, 99), percentile(&hundred, 100)),
            (50, 99, 100)
        );
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!((percentile(&ten, 50), percentile(&ten, 99)), (5, 10));
        assert_eq!(percentile(&[1, 2, 3, 4, 5], 50), 3);
    }

    // End to end, against the loopback device server. Every request has a short deadline.

    /// The value of `"key":` in a flat JSON line (up to the next `,` or `}`).
    fn field<'a>(line: &'a str, key: &str) -> &'a str {
        let pat = format!("\"{key}\":");
        let start = line.find(&pat).unwrap_or_else(|| panic!("no {key} in {line}")) + pat.len();
        let rest = &line[start..];
        &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
    }

    /// Runs `ctl` with `list` plus `url`; returns (exit status, stdout, stderr).
    fn ctl(list: &[&str], url: &str) -> (u8, String, String) {
        let mut all = list.to_vec();
        all.push(url);
        let opts = options(&all);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run(&opts, &mut out, &mut err);
        (status, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    /// Runs `ctl` with `opts`; returns (exit status, stdout, stderr).
    fn run_opts(opts: &Options) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run(opts, &mut out, &mut err);
        (status, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }

    /// A URL on which nothing listens: a port that was just free.
    fn refused_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://127.0.0.1:{port}/io")
    }

    #[test]
    fn json_against_a_keep_alive_device() {
        let server = DeviceServer::keep_alive();
        let (status, out, err) =
            ctl(&["--json", "--count", "3", "--gap-us", "500", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        for (i, line) in lines[..3].iter().enumerate() {
            let prefix = format!(
                r#"{{"i":{i},"status":200,"body_b64":"{}","conn":"#,
                base64(format!(r#"{{"seq":{i}}}"#).as_bytes())
            );
            assert!(line.starts_with(&prefix), "{line}");
            assert_eq!(field(line, "reused"), if i == 0 { "false" } else { "true" }, "{line}");
            assert_eq!(field(line, "conn"), field(lines[0], "conn"), "one connection carries all");
            field(line, "us").parse::<u64>().unwrap();
        }
        let summary = lines[3];
        assert!(
            summary
                .starts_with(r#"{"summary":{"sent":3,"ok":3,"failed":0,"retried":0,"connections_opened":1,"#)
        );
        let max_us: u64 = field(summary, "max_us").parse().unwrap();
        assert!(field(summary, "p50_us").parse::<u64>().unwrap() <= max_us);
        assert_eq!(server.request_count(), 3);
    }

    #[test]
    fn json_against_a_device_that_closes_after_each_response() {
        let server = DeviceServer::close_after_response();
        let (status, out, err) =
            ctl(&["--json", "--count", "3", "--gap-us", "2000", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        for (i, line) in lines[..3].iter().enumerate() {
            assert_eq!((field(line, "i"), field(line, "status")), (i.to_string().as_str(), "200"));
            assert_eq!(field(line, "reused"), "false", "{line}");
        }
        let summary = lines[3];
        assert!(summary.starts_with(r#"{"summary":{"sent":3,"ok":3,"failed":0,"#), "{summary}");
        // One connection per request (plus, possibly, a warm spare opened for the next one).
        let opened: usize = field(summary, "connections_opened").parse().unwrap();
        assert!((3..=4).contains(&opened), "{summary}");
        let conns: std::collections::HashSet<usize> = server.requests().iter().map(|r| r.conn).collect();
        assert_eq!(conns.len(), 3);
        assert_eq!(server.bytes_after_fin(), 0);
    }

    #[test]
    fn sends_method_headers_and_body() {
        let server = DeviceServer::keep_alive();
        let list = ["-X", "PUT", "-d", r#"{"on":true}"#, "-H", "X-Trace:  7 ", "--timeout-ms", "2000"];
        let (status, _, err) = ctl(&list, &server.url("/io?id=1"));
        assert_eq!(status, 0, "stderr: {err}");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].method.as_str(), reqs[0].target.as_str()), ("PUT", "/io?id=1"));
        assert_eq!(reqs[0].body, br#"{"on":true}"#);
        assert_eq!(reqs[0].header("X-Trace"), Some("7"));
    }

    #[test]
    fn credentials_go_out_as_basic_or_answer_a_digest_challenge() {
        let server = DeviceServer::keep_alive();
        let (status, _, err) = ctl(&["-u", "op:pa:ss", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        // base64("op:pa:ss"): the password keeps its colons.
        assert_eq!(server.requests()[0].header("Authorization"), Some("Basic b3A6cGE6c3M="));

        let server = DeviceServer::start(|r| match r.header("Authorization") {
            Some(a) if a.starts_with("Digest username=\"op\"") => Reply::ok_for(r, b"{}"),
            _ => Reply::raw(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"d\", nonce=\"n\", \
                 qop=auth\r\nContent-Length: 0\r\n\r\n",
            ),
        });
        let (status, out, err) =
            ctl(&["-u", "op:pw", "--digest", "--count", "2", "--json"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}\n{out}");
        assert_eq!(server.request_count(), 3, "one challenge for two commands");

        for (args, message) in [
            (&["--digest"][..], "--digest needs the credentials of -u/--user"),
            (&["-u", "nocolon"][..], "-u needs USER:PASSWORD (no ':' in the value, which is not shown)"),
            (&["--user=s3cret"][..], "--user needs USER:PASSWORD (no ':' in the value, which is not shown)"),
            (&["--digest=1", "-u", "a:b"][..], "option --digest takes no value"),
        ] {
            let mut list: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            list.push("http://10.0.0.5/".into());
            assert_eq!(parse_args(&list).unwrap_err(), message);
        }
    }

    #[test]
    fn text_output() {
        let server = DeviceServer::keep_alive();
        let (status, out, err) = ctl(&["--count", "2", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        let one = |seq: u32| {
            format!(
                "HTTP/1.1 200 OK\nContent-Length: 9\nContent-Type: application/json\n\n{{\"seq\":{seq}}}\n"
            )
        };
        assert_eq!(out, one(0) + &one(1));
        assert_eq!(err, "");
    }

    #[test]
    fn connection_refused() {
        let url = refused_url();
        let (status, out, _) = ctl(&["--json", "--timeout-ms", "1000"], &url);
        assert_eq!(status, 1);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let prefix = r#"{"i":0,"error":{"kind":"connect_failed","may_have_been_processed":false,"message":""#;
        assert!(lines[0].starts_with(prefix), "{}", lines[0]);
        assert!(lines[0].contains("could not connect to "), "{}", lines[0]);
        assert!(lines[1].starts_with(r#"{"summary":{"sent":1,"ok":0,"failed":1,"#), "{}", lines[1]);
        assert!(lines[1].ends_with(r#""p50_us":0,"p99_us":0,"max_us":0}}"#), "{}", lines[1]);

        let (status, out, err) = ctl(&["--timeout-ms", "1000"], &url);
        assert_eq!((status, out.as_str()), (1, ""));
        assert!(err.starts_with("error: could not connect to "), "{err}");
        assert!(err.contains("note: the device did not receive this request"), "{err}");
    }

    #[test]
    fn deadline_on_a_device_that_never_answers() {
        let server = DeviceServer::start(|_| Reply::stall());
        let (status, out, _) =
            ctl(&["--json", "-X", "PUT", "-d", "1", "--timeout-ms", "100"], &server.url("/"));
        assert_eq!(status, 1);
        let first = out.lines().next().unwrap();
        assert_eq!(field(first, "kind"), r#""deadline_exceeded""#);
        assert_eq!(field(first, "may_have_been_processed"), "true");
    }
    // -v, --script, suggestions.

    #[test]
    fn verbose_flag() {
        assert!(options(&["-v", URL]).verbose);
        assert!(options(&["--verbose", "--json", URL]).verbose);
        let o = options(&[URL]);
        assert_eq!((o.verbose, o.script), (false, None));
        assert_eq!(parse_err(&["--verbose=1", URL]), "option --verbose takes no value");
        // Not a value-taking option: what follows is the URL.
        assert_eq!(options(&["-v", URL]).url, URL);
    }

    #[test]
    fn script_flag() {
        let text = "GET http://10.0.0.5/a\nPUT http://10.0.0.5/b {\"on\":true}\n";
        let o = script_options(&["--script", "t.ctl", "--count", "3", "-H", "X-A: 1", "--json"], text);
        let script = o.script.as_ref().unwrap();
        assert_eq!(script.path, "t.ctl");
        let lines: Vec<(usize, &str, &str)> =
            script.steps.iter().map(|s| (s.line, s.method.as_str(), s.url.as_str())).collect();
        assert_eq!(lines, [(1, "GET", "http://10.0.0.5/a"), (2, "PUT", "http://10.0.0.5/b")]);
        assert_eq!((o.count, o.total(), o.json), (3, 6, true));
        let origins: Vec<Option<String>> = o.plan().unwrap().into_iter().map(|p| p.origin).collect();
        assert_eq!(origins, [Some("t.ctl:1".to_string()), Some("t.ctl:2".to_string())]);
        // `--script=FILE` too; without --count, one round.
        let o = script_options(&["--script=t.ctl"], text);
        assert_eq!((o.count, o.total()), (1, 2));
        // Without a script, the plan is the command line's request.
        let plan = options(&[URL]).plan().unwrap();
        assert_eq!((plan.len(), plan[0].origin.as_deref()), (1, None));
    }

    #[test]
    fn script_conflicts_and_unreadable_files() {
        let text = "GET http://10.0.0.5/a\n";
        let msg = script_err(&["--script", "t.ctl", "-X", "PUT"], text);
        assert!(msg.starts_with("--script cannot be combined with -X/--request"), "{msg}");
        let msg = script_err(&["--data=1", "--script", "t.ctl"], text);
        assert!(msg.starts_with("--script cannot be combined with -d/--data"), "{msg}");
        for list in [["--script", "t.ctl", URL], [URL, "--script", "t.ctl"]] {
            let msg = script_err(&list, text);
            assert!(
                msg.starts_with(r#"--script cannot be combined with a URL ("http://10.0.0.5/io")"#),
                "{msg}"
            );
        }
        assert_eq!(
            script_err(&["--script", "a", "--script", "b"], text),
            "option --script given more than once"
        );
        assert_eq!(script_err(&["--script"], text), "option --script needs a value");
        // -h wins, and the file is not even read.
        let unread = |_: Input<'_>| -> io::Result<Vec<u8>> { panic!("the script was read") };
        assert_eq!(parse_args_with(&args(&["--script", "t.ctl", "-h"]), unread), Ok(Command::Help));
        let msg = parse_err(&["--script", "/nonexistent/finwatch-ctl.script"]);
        assert!(msg.starts_with(r#"cannot read the script "/nonexistent/finwatch-ctl.script": "#), "{msg}");
    }

    #[test]
    fn script_parsing() {
        let text = concat!(
            "# toggle output 25602\n",
            "\n",
            "   \t\n",
            "PUT http://10.0.0.5/io {\"ioId\": 25602, \"on\": true}  \n",
            "  # an indented comment\n",
            "\tGET\thttp://10.0.0.5/io-state?ioId=25602\r\n",
            "DELETE   http://10.0.0.5/x   a  b\n",
            "POST http://10.0.0.5/y #not a comment",
        );
        let steps = parse_script("t.ctl", text).unwrap();
        let got: Vec<(usize, &str, &str, &str)> = steps
            .iter()
            .map(|s| (s.line, s.method.as_str(), s.url.as_str(), std::str::from_utf8(&s.body).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (4, "PUT", "http://10.0.0.5/io", "{\"ioId\": 25602, \"on\": true}  "),
                (6, "GET", "http://10.0.0.5/io-state?ioId=25602", ""),
                (7, "DELETE", "http://10.0.0.5/x", "a  b"),
                (8, "POST", "http://10.0.0.5/y", "#not a comment"),
            ]
        );
    }

    #[test]
    fn script_errors_name_file_and_line() {
        let bad = |text: &str| parse_script("t.ctl", text).unwrap_err();
        let empty = "t.ctl: no requests in the script (only blank lines and comments)";
        assert_eq!((bad("").as_str(), bad("# only a comment\n\n \n").as_str()), (empty, empty));
        let msg = bad("GET http://h/a\n\nGET   \n");
        assert!(msg.starts_with("t.ctl:3: missing URL after GET (expected 'METHOD URL [BODY]'"), "{msg}");
        let msg = bad("GET http://h/a\nhttp://h/b {}\n");
        assert!(msg.starts_with(r#"t.ctl:2: missing method before the URL "http://h/b""#), "{msg}");
        let msg = bad("G(T http://h/a");
        assert!(msg.starts_with(r#"t.ctl:1: invalid method "G(T" (expected"#), "{msg}");
        assert!(bad("CONNECT http://h:443/").starts_with("t.ctl:1: CONNECT (tunnelling) is not supported"));
        let msg = bad("# c\nGET 10.0.0.5/io");
        assert!(msg.starts_with(r#"t.ctl:2: invalid URL "10.0.0.5/io": missing scheme"#), "{msg}");
        assert!(msg.ends_with("; did you mean http://10.0.0.5/io?"), "{msg}");
        if !cfg!(feature = "tls") {
            let msg = bad("\n\nGET https://10.0.0.5/io");
            assert!(msg.starts_with(r#"t.ctl:3: invalid URL "https://10.0.0.5/io": https needs"#), "{msg}");
        }
        // Lines are also checked with the command line's headers before anything is sent.
        let msg = script_err(
            &["--script", "t.ctl", "-H", "Content-Length: 3"],
            "PUT http://h/a abc\nPUT http://h/b abcd\n",
        );
        assert!(msg.starts_with("t.ctl:2: invalid request") && msg.contains("disagrees"), "{msg}");
    }

    #[test]
    fn misspelled_options_get_a_suggestion() {
        let cases = [
            ("--cuont", "--count"),
            ("--coutn", "--count"),
            ("--cont", "--count"),
            ("--co", "--count"),
            ("--cuont=3", "--count"),
            ("--jsn", "--json"),
            ("--JSON", "--json"),
            ("--vrebose", "--verbose"),
            ("--timeout", "--timeout-ms"),
            ("--timout-ms", "--timeout-ms"),
            ("--gap", "--gap-us"),
            ("--scirpt", "--script"),
            ("--headers", "--header"),
            ("--reqest", "--request"),
            ("--data-binary", "--data"),
            ("-count", "--count"),
            ("--X", "-X"),
            ("-x", "-X"),
            ("-V", "-v"),
        ];
        for (typo, meant) in cases {
            let flag = typo.split('=').next().unwrap();
            assert_eq!(parse_err(&[typo, URL]), format!("unknown option {flag}: did you mean {meant}?"));
        }
        for unknown in ["--zzz", "-i", "--frobnicate", "---", "--he"] {
            assert_eq!(parse_err(&[unknown, URL]), format!("unknown option {unknown}"));
        }
        assert_eq!(edit_distance("cuont", "count"), 1);
        assert_eq!(edit_distance("", "json"), 4);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn url_hints() {
        // finwatch's own reason (`missing scheme (http://)`), then the hint.
        let msg = parse_err(&["10.0.0.5/io"]);
        assert!(msg.starts_with(r#"invalid URL "10.0.0.5/io": missing scheme"#), "{msg}");
        assert!(msg.ends_with("; did you mean http://10.0.0.5/io?"), "{msg}");
        assert!(parse_err(&["localhost:8080/io"]).ends_with("; did you mean http://localhost:8080/io?"));
        assert!(parse_err(&["http:/10.0.0.5/io"]).ends_with("; did you mean http://10.0.0.5/io?"));
        assert!(parse_err(&["//10.0.0.5/io"]).ends_with("; did you mean http://10.0.0.5/io?"));
        if !cfg!(feature = "tls") {
            let msg = parse_err(&["https://10.0.0.5/io"]);
            assert_eq!(
                msg,
                concat!(
                    r#"invalid URL "https://10.0.0.5/io": https needs ctl built with finwatch's `tls` "#,
                    "feature (cargo run --features tls --example ctl -- ...); ",
                    "or try http://10.0.0.5/io if the device also serves plain HTTP"
                )
            );
        }
        // No guess when none would work.
        for bad in ["a b", "ftp://h/"] {
            let msg = parse_err(&[bad]);
            assert!(
                msg.starts_with(&format!("invalid URL {bad:?}: ")) && !msg.contains("did you mean"),
                "{msg}"
            );
        }
    }

    #[test]
    fn script_round_robin_against_a_keep_alive_device() {
        let server = DeviceServer::keep_alive();
        let text = format!(
            "# two commands\nPUT {} {{\"on\": true}}\n\nGET {}\n",
            server.url("/io"),
            server.url("/state?id=1")
        );
        let list = ["--json", "--count", "3", "--gap-us", "200", "--timeout-ms", "2000", "-H", "X-Trace: 7"];
        let mut list = list.to_vec();
        list.extend(["--script", "t.ctl"]);
        let (status, out, err) = run_opts(&script_options(&list, &text));
        assert_eq!(status, 0, "stderr: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 7, "{out}");
        for (i, line) in lines[..6].iter().enumerate() {
            assert!(line.starts_with(&format!(r#"{{"i":{i},"status":200,"body_b64":""#)), "{line}");
            assert!(line.ends_with('}') && !line.contains("line"), "{line}");
        }
        assert!(
            lines[6].starts_with(r#"{"summary":{"sent":6,"ok":6,"failed":0,"retried":0,"#),
            "{}",
            lines[6]
        );
        let reqs = server.requests();
        let got: Vec<(&str, &str, &[u8])> =
            reqs.iter().map(|r| (r.method.as_str(), r.target.as_str(), r.body.as_slice())).collect();
        let round: [(&str, &str, &[u8]); 2] =
            [("PUT", "/io", br#"{"on": true}"#), ("GET", "/state?id=1", b"")];
        assert_eq!(got, round.repeat(3));
        assert!(reqs.iter().all(|r| r.header("X-Trace") == Some("7")));
    }

    #[test]
    fn script_errors_in_text_mode_name_the_line() {
        let url = refused_url();
        let opts = script_options(
            &["--timeout-ms", "1000", "--script", "t.ctl"],
            &format!("GET {url}\nPUT {url} 1\n"),
        );
        let (status, out, err) = run_opts(&opts);
        assert_eq!((status, out.as_str()), (1, ""));
        assert!(err.starts_with("error: request 0 (t.ctl:1): could not connect to "), "{err}");
        assert!(err.contains("\nerror: request 1 (t.ctl:2): could not connect to "), "{err}");
    }

    /// The `[  N µs] conn C` prefixes of `-v` output: N never decreases.
    fn assert_verbose_lines(err: &str) {
        let mut last = 0;
        for line in err.lines() {
            let (t, rest) = line.strip_prefix('[').and_then(|l| l.split_once(" µs] conn ")).expect(line);
            let t: u64 = t.trim_start().parse().expect(line);
            assert!(t >= last, "{err}");
            last = t;
            let (conn, rest) = rest.split_once(' ').expect(line);
            assert!(conn == "-" || conn.parse::<u64>().is_ok(), "{line}");
            assert!(["* ", "> ", "< "].iter().any(|m| rest.starts_with(m)), "{line}");
        }
    }

    #[test]
    fn verbose_shows_connects_requests_responses_and_reuse() {
        let server = DeviceServer::keep_alive();
        let (status, out, err) =
            ctl(&["-v", "--json", "--count", "2", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        // stdout stays pure JSON lines.
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[..2].iter().all(|l| l.starts_with(r#"{"i":"#)), "{out}");
        assert!(lines[2].starts_with(r#"{"summary":{"sent":2,"#), "{out}");
        let c = field(lines[0], "conn");
        for expected in [
            format!("conn {c} * connecting to {}\n", server.addr()),
            format!("conn {c} * connected (handshake "),
            format!("conn {c} > GET /io\n"),
            format!("conn {c} < 200\n"),
            format!("conn {c} * reusing the connection (1 exchange so far, idle "),
            format!("conn {c} * still open at the end (Open(Idle), 2 exchanges, idle "),
        ] {
            assert!(err.contains(&expected), "no {expected:?} in\n{err}");
        }
        assert_eq!((err.matches("> GET /io").count(), err.matches("< 200").count()), (2, 2), "{err}");
        assert_verbose_lines(&err);

        // In text mode, stdout is unchanged too.
        let (status, out, err) = ctl(&["-v", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        assert!(out.starts_with("HTTP/1.1 200 OK\nContent-Length: 9\n"), "{out}");
        assert!(err.contains(" > GET /io\n") && err.contains(" < 200\n"), "{err}");
        assert_verbose_lines(&err);
    }

    #[test]
    fn verbose_shows_the_device_closing_after_each_response() {
        let server = DeviceServer::close_after_response();
        let list = ["-v", "--json", "--count", "3", "--gap-us", "20000", "--timeout-ms", "2000"];
        let (status, out, err) = ctl(&list, &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')), "{out}");
        // The first connection cannot be used again before its FIN is seen (the client does not
        // know yet that the device closes after every response).
        let first = field(lines[0], "conn");
        assert!(err.contains(&format!("conn {first} * FIN from the device ")), "{err}");
        assert!(!err.contains("reusing"), "{err}");
        assert_eq!(err.matches(" < 200\n").count(), 3, "{err}");
        assert_verbose_lines(&err);
    }

    #[test]
    fn verbose_shows_resets() {
        let server = DeviceServer::rst_after_response();
        let list = ["-v", "--json", "--count", "2", "--gap-us", "20000", "--timeout-ms", "2000"];
        let (status, out, err) = ctl(&list, &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}\nstdout: {out}");
        let first = field(out.lines().next().unwrap(), "conn");
        assert!(err.contains(&format!("conn {first} * reset (RST or socket error) ")), "{err}");
        assert_verbose_lines(&err);
    }

    #[test]
    fn verbose_shows_retries() {
        // The second request, on the reused connection, is cut (FIN) once the device has part of
        // it, as in the keep-alive race: a GET is retried on a fresh connection.
        let cut = CutRequest { after_requests: 1, once: true, after_bytes: 8, respond: b"", then: Cut::Fin };
        let options = ServerOptions { cut_request: Some(cut), ..Default::default() };
        let server = DeviceServer::with_options(options, seq_reply);
        let (status, out, err) =
            ctl(&["-v", "--json", "--count", "2", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "stderr: {err}\nstdout: {out}");
        assert!(out.contains(r#""retried":1,"#), "{out}");
        assert!(err.contains("conn - * the connection was lost under the request: retrying it"), "{err}");
        assert_eq!(err.matches(" > GET /io\n").count(), 3, "{err}");
        assert_eq!(err.matches(" < 200\n").count(), 2, "{err}");
        assert_verbose_lines(&err);
    }

    #[test]
    fn verbose_shows_failures() {
        let url = refused_url();
        let (status, _, err) = ctl(&["-v", "--timeout-ms", "1000"], &url);
        assert_eq!(status, 1);
        assert!(err.contains(" * connecting to 127.0.0.1:"), "{err}");
        assert!(err.contains(" * request failed: could not connect to "), "{err}");
        assert!(err.contains("\nerror: could not connect to "), "{err}");
    }

    // Curl-style short options, -d @FILE / @-, -o, --max-body, -s; the --json contract.

    /// A path in the temp dir for one test (tests run in parallel in one process), removed
    /// when dropped.
    struct TempPath(std::path::PathBuf);

    impl TempPath {
        fn new(name: &str) -> TempPath {
            TempPath(std::env::temp_dir().join(format!("finwatch-ctl-{}-{name}", std::process::id())))
        }

        fn with(name: &str, bytes: &[u8]) -> TempPath {
            let path = TempPath::new(name);
            std::fs::write(&path.0, bytes).unwrap();
            path
        }

        fn str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Not UTF-8 (11 bytes): a NUL, bytes that never appear in UTF-8, a lone continuation
    /// byte, CR LF, a truncated sequence.
    const BINARY: &[u8] = b"\x00\xff\xfe\x80ab\r\n\xc3\x28\x00";

    #[test]
    fn combined_short_flags_and_attached_values() {
        let split = options(&["-sv", "-XPUT", "-dx=1", "-HX-A: 1", "-uop:pw", "-oout.bin", URL]);
        let apart = options(&[
            "-s", "-v", "-X", "PUT", "-d", "x=1", "-H", "X-A: 1", "-u", "op:pw", "-o", "out.bin", URL,
        ]);
        assert_eq!(split, apart);
        assert!(split.silent && split.verbose);
        assert_eq!((split.method.as_str(), split.body.as_slice()), ("PUT", &b"x=1"[..]));
        assert_eq!(split.headers, [("X-A".to_string(), "1".to_string())]);
        assert_eq!(split.user, Some(("op".to_string(), "pw".to_string())));
        assert_eq!(split.output.as_deref(), Some("out.bin"));
        // A value-taking option ends a group: it takes the rest, or the next argument.
        let o = options(&["-svXPUT", URL]);
        assert!(o.silent && o.verbose && o.method.as_str() == "PUT");
        let o = options(&["-vX", "DELETE", URL]);
        assert!(o.verbose && o.method == Method::DELETE);
        assert_eq!(options(&["-Xs", URL]).method.as_str(), "s");
        // The attached value is taken whole: `=`, dashes, spaces.
        assert_eq!(options(&["-d--json=1 2", URL]).body, b"--json=1 2");
        assert_eq!(options(&["-HX-B:\t two ", URL]).headers, [("X-B".to_string(), "two".to_string())]);
        // -S (curl's -sS) is accepted and changes nothing.
        let o = options(&["-sS", URL]);
        assert_eq!(o, options(&["--silent", "--show-error", URL]));
        assert_eq!(o, options(&["-s", URL]));
        assert!(!options(&[URL]).silent);
    }

    #[test]
    fn short_option_errors() {
        assert_eq!(parse_err(&["-sz", URL]), "unknown option -z in -sz");
        assert_eq!(parse_err(&["-sV", URL]), "unknown option -V in -sV: did you mean -v?");
        // A long option with one dash is refused, not split into letters (`-d ata`).
        for (typo, meant) in [("-silent", "--silent"), ("-data", "--data"), ("-output", "--output")] {
            assert_eq!(parse_err(&[typo, URL]), format!("unknown option {typo}: did you mean {meant}?"));
        }
        // Missing values, at the end of a group or of the command line.
        for (list, flag) in [
            (&[URL, "-sX"][..], "-X"),
            (&[URL, "-d"][..], "-d"),
            (&[URL, "-vo"][..], "-o"),
            (&[URL, "--output"][..], "--output"),
            (&[URL, "--max-body"][..], "--max-body"),
            (&[URL, "-H"][..], "-H"),
        ] {
            assert_eq!(parse_err(list), format!("option {flag} needs a value"), "{list:?}");
        }
        assert_eq!(parse_err(&["--silent=1", URL]), "option --silent takes no value");
        assert_eq!(parse_err(&["--show-error=1", URL]), "option --show-error takes no value");
        assert_eq!(parse_err(&["-oa", "-ob", URL]), "option -o given more than once");
        assert_eq!(parse_err(&["-d@", URL]), "option -d @ needs a file name (@FILE), or @- for stdin");
        assert_eq!(parse_err(&["-XPUT", "-X", "GET", URL]), "option -X given more than once");
        // `-h` in a group still wins.
        assert_eq!(parse(&["-vh"]), Ok(Command::Help));
    }

    #[test]
    fn data_from_a_file_is_sent_verbatim() {
        let file = TempPath::with("data-file", BINARY);
        for list in [
            vec![format!("-d@{}", file.str())],
            vec!["-d".to_string(), format!("@{}", file.str())],
            vec![format!("--data=@{}", file.str())],
        ] {
            let mut list: Vec<&str> = list.iter().map(String::as_str).collect();
            list.push(URL);
            let o = options(&list);
            assert_eq!((o.method.clone(), o.body.as_slice()), (Method::POST, BINARY), "{list:?}");
        }
        let msg = parse_err(&["-d", "@/nonexistent/finwatch-ctl.body", URL]);
        assert!(
            msg.starts_with(r#"cannot read the body file "/nonexistent/finwatch-ctl.body" (-d @FILE): "#),
            "{msg}"
        );
        // Nothing is read for -h, nor when the command line is wrong anyway.
        let unread = |_: Input<'_>| -> io::Result<Vec<u8>> { panic!("read") };
        assert_eq!(parse_args_with(&args(&["-d@x", "-h"]), unread), Ok(Command::Help));
        assert_eq!(parse_args_with(&args(&["-d@x"]), unread), Err("missing URL".to_string()));
        let msg = parse_args_with(&args(&["-d@x", "--script", "t"]), unread).unwrap_err();
        assert!(msg.starts_with("--script cannot be combined with -d/--data"), "{msg}");
        // The body is checked against the headers like any other.
        let file = TempPath::with("data-file-length", b"abc");
        let data = format!("-d@{}", file.str());
        assert!(parse_err(&["-H", "Content-Length: 9", &data, URL]).contains("disagrees"));
    }

    #[test]
    fn data_from_stdin() {
        // Stdin is played by a temp file.
        let file = TempPath::with("stdin", BINARY);
        let stdin = |input: Input<'_>| match input {
            Input::Stdin => std::fs::read(&file.0),
            Input::File(path) => panic!("read the file {path:?}"),
        };
        for list in [&["-d@-", URL][..], &["-X", "PUT", "-d", "@-", URL][..], &["--data", "@-", URL][..]] {
            match parse_args_with(&args(list), stdin) {
                Ok(Command::Run(o)) => assert_eq!(o.body, BINARY, "{list:?}"),
                other => panic!("{list:?}: {other:?}"),
            }
        }
        let closed = |_: Input<'_>| -> io::Result<Vec<u8>> { Err(io::Error::other("closed")) };
        assert_eq!(
            parse_args_with(&args(&["-d@-", URL]), closed),
            Err("cannot read the body from stdin (-d @-): closed".to_string())
        );
        // `-` alone is still an argument (a URL), and a script named `-` is a file.
        assert!(parse_err(&["-"]).starts_with(r#"invalid URL "-""#));
    }

    #[test]
    fn max_body_sizes() {
        for (text, bytes) in
            [("0", 0), ("9", 9), ("64K", 65536), ("64k", 65536), ("8M", 8 << 20), ("1g", 1 << 30)]
        {
            assert_eq!(options(&["--max-body", text, URL]).max_body, Some(bytes), "{text}");
        }
        assert_eq!(options(&["--max-body=1K", URL]).max_body, Some(1024));
        assert_eq!(options(&[URL]).max_body, None);
        for bad in ["", "K", "1.5K", "-1", "+1", "12KB", "1T", "0x10", " 1"] {
            let msg = parse_err(&["--max-body", bad, URL]);
            assert_eq!(
                msg,
                format!("option --max-body needs a number of bytes, optionally with K, M or G, not {bad:?}")
            );
        }
        for huge in ["18446744073709551616", "18446744073709551615K"] {
            assert_eq!(
                parse_err(&["--max-body", huge, URL]),
                format!("option --max-body is too large: {huge:?}")
            );
        }
    }

    #[test]
    fn max_body_limits_the_response_body() {
        // `{"seq":0}` is 9 bytes.
        let server = DeviceServer::keep_alive();
        let (status, out, err) =
            ctl(&["--json", "--max-body", "8", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 1, "{err}");
        let first = out.lines().next().unwrap();
        assert!(
            first.starts_with(r#"{"i":0,"error":{"kind":"limit_exceeded","may_have_been_processed":true,"#),
            "{first}"
        );
        let (status, out, err) = ctl(&["--max-body", "8", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!((status, out.as_str()), (1, ""));
        assert!(err.starts_with("error: ") && err.contains("note: the device may have acted"), "{err}");
        let (status, out, err) = ctl(&["--max-body", "9", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "{err}");
        assert!(out.ends_with("\n\n{\"seq\":2}\n"), "{out}");
    }

    /// A device whose bodies are binary: `BINARY` for the first request, then its first 3 bytes.
    fn binary_device() -> DeviceServer {
        DeviceServer::start(|r| Reply::ok_for(r, if r.seq == 0 { BINARY } else { &BINARY[..3] }))
    }

    /// Runs `opts` with stdout a terminal or not; returns (exit status, stdout bytes, stderr).
    fn run_bytes(opts: &Options, terminal: bool) -> (u8, Vec<u8>, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = run_on(opts, &mut out, terminal, &mut err);
        (status, out, String::from_utf8(err).unwrap())
    }

    const BINARY_HEAD: &[u8] = b"HTTP/1.1 200 OK\nContent-Length: 11\nContent-Type: application/json\n\n";

    #[test]
    fn the_body_goes_to_stdout_as_raw_bytes() {
        assert_eq!(BINARY.len(), 11);
        let server = binary_device();
        let (status, out, err) = run_bytes(&options(&["--timeout-ms", "2000", &server.url("/b")]), false);
        assert_eq!(status, 0, "{err}");
        // Its own bytes, then a newline (it does not end in one).
        assert_eq!(out, [BINARY_HEAD, BINARY, b"\n"].concat());
        assert_eq!(err, "");
    }

    #[test]
    fn a_binary_body_is_held_back_from_a_terminal() {
        let server = binary_device();
        let url = server.url("/b");
        let (status, out, err) = run_bytes(&options(&["--timeout-ms", "2000", &url]), true);
        assert_eq!((status, out.as_slice()), (0, BINARY_HEAD));
        assert_eq!(
            err,
            "warning: the body (11 bytes) looks binary (it has a NUL byte) and stdout is a terminal: \
             not shown; -o FILE saves it, -o - prints it anyway\n"
        );
        // -s drops the warning (the body is still held back).
        let server = binary_device();
        let (status, out, err) =
            run_bytes(&options(&["-s", "--timeout-ms", "2000", &server.url("/b")]), true);
        assert_eq!((status, out.as_slice(), err.as_str()), (0, BINARY_HEAD, ""));
        // -o - prints it anyway; text is not held back.
        let server = binary_device();
        let (status, out, err) =
            run_bytes(&options(&["-o-", "--timeout-ms", "2000", &server.url("/b")]), true);
        assert_eq!((status, out, err.as_str()), (0, [BINARY_HEAD, BINARY, b"\n"].concat(), ""));
        let text = DeviceServer::keep_alive();
        let (status, out, err) = run_bytes(&options(&["--timeout-ms", "2000", &text.url("/io")]), true);
        assert_eq!((status, err.as_str()), (0, ""));
        assert!(out.ends_with(b"\n\n{\"seq\":0}\n"));
    }

    #[test]
    fn output_file_gets_the_exact_bytes_of_the_last_body() {
        let server = binary_device();
        let file = TempPath::new("output");
        let url = server.url("/b");
        let opts = options(&["-o", file.str(), "--timeout-ms", "2000", &url]);
        let (status, out, err) = run_bytes(&opts, false);
        assert_eq!((status, err.as_str()), (0, ""));
        // stdout: the status line and headers only.
        assert_eq!(out, BINARY_HEAD);
        assert_eq!(std::fs::read(&file.0).unwrap(), BINARY);
        // --count 2: the second, shorter body replaces the first entirely; --json is unchanged.
        let server = binary_device();
        let url = server.url("/b");
        let opts = options(&["--json", "--count", "2", "--output", file.str(), "--timeout-ms", "2000", &url]);
        let (status, out, err) = run_bytes(&opts, false);
        assert_eq!((status, err.as_str()), (0, ""));
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(field(lines[0], "body_b64"), format!("\"{}\"", base64(BINARY)));
        assert_eq!(std::fs::read(&file.0).unwrap(), &BINARY[..3]);
    }

    #[test]
    fn output_file_is_truncated_before_sending_and_a_bad_one_sends_nothing() {
        let file = TempPath::with("output-stale", b"stale");
        let (status, _, err) = ctl(&["-o", file.str(), "--timeout-ms", "1000"], &refused_url());
        assert_eq!(status, 1, "{err}");
        assert_eq!(std::fs::read(&file.0).unwrap(), b"", "no response: an empty file, not a stale one");

        let server = DeviceServer::keep_alive();
        let (status, out, err) = ctl(&["-o", "/nonexistent/finwatch-ctl.out"], &server.url("/io"));
        assert_eq!((status, out.as_str()), (2, ""));
        assert!(
            err.starts_with(r#"error: cannot create the output file "/nonexistent/finwatch-ctl.out" (-o): "#)
                && err.ends_with("; nothing was sent\n"),
            "{err}"
        );
        assert_eq!(server.request_count(), 0);
    }

    #[test]
    fn silent_still_shows_errors_and_the_verbose_trace() {
        let server = DeviceServer::keep_alive();
        let (status, out, err) = ctl(&["-sv", "--json", "--timeout-ms", "2000"], &server.url("/io"));
        assert_eq!(status, 0, "{err}");
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(err.contains(" > GET /io\n") && err.contains(" < 200\n"), "{err}");
        assert_verbose_lines(&err);
        let (status, _, err) = ctl(&["-sS", "--timeout-ms", "1000"], &refused_url());
        assert_eq!(status, 1);
        assert!(err.starts_with("error: could not connect to "), "{err}");
        assert!(err.contains("\nnote: the device did not receive this request"), "{err}");
    }

    #[test]
    fn exit_statuses() {
        // Any HTTP status is a response.
        let server =
            DeviceServer::start(|_| Reply::raw("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
        let (status, out, _) = ctl(&["--timeout-ms", "2000"], &server.url("/nope"));
        assert_eq!((status, out.as_str()), (0, "HTTP/1.1 404 Not Found\nContent-Length: 0\n\n"));
        // One failure among successes.
        let server = DeviceServer::keep_alive();
        let text = format!("GET {}\nGET {}\n", server.url("/io"), refused_url());
        let (status, _, _) = run_opts(&script_options(&["--timeout-ms", "1000", "--script", "t.ctl"], &text));
        assert_eq!(status, 1);
    }

    /// The `--json` lines documented in the header of this file: scripts depend on these keys
    /// and their order. Changing them breaks this test on purpose.
    const JSON_CONTRACT: [&str; 3] = [
        r#"{"i":0,"status":200,"body_b64":"eyJvbiI6dHJ1ZX0=","conn":1,"reused":false,"us":412}"#,
        r#"{"i":1,"error":{"kind":"connect_failed","may_have_been_processed":false,"message":"..."}}"#,
        r#"{"summary":{"sent":2,"ok":1,"failed":1,"retried":0,"connections_opened":2,"fins_seen_idle":0,"p50_us":412,"p99_us":412,"max_us":412}}"#,
    ];

    #[test]
    fn the_json_contract_is_unchanged() {
        // The header documents exactly these lines ...
        let source = include_str!("ctl.rs");
        let from = source.find("//! With `--json`, stdout carries exactly one JSON object").unwrap();
        let block = &source[from..];
        let block = &block[block.find("//! ```text\n").unwrap() + "//! ```text\n".len()..];
        let documented: Vec<&str> =
            block.lines().take_while(|l| *l != "//! ```").map(|l| l.strip_prefix("//! ").unwrap()).collect();
        assert_eq!(documented, JSON_CONTRACT);
        // ... and ctl prints them.
        let mut meta = Meta::default();
        meta.connection_id = 1;
        assert_eq!(success_line(0, 200, br#"{"on":true}"#, meta, 412), JSON_CONTRACT[0]);
        let e = Error::ConnectFailed { host: "10.0.0.5:80".to_string(), source: io::Error::other("refused") };
        let line = error_line(1, &e);
        let (head, _) = JSON_CONTRACT[1].split_once(r#""..."#).unwrap();
        assert!(line.starts_with(head) && line.ends_with(r#""}}"#), "{line}");
        let mut stats = Stats::default();
        stats.connects = 2;
        assert_eq!(summary_line(&Summary::new(&[412], 1, &stats)), JSON_CONTRACT[2]);
    }
}
