//! `ctl`: a curl-like command line for poking a device with finwatch.
//!
//! ```text
//! ctl [-X METHOD] [-d DATA] [-H 'Name: value']... [--count N] [--gap-us G] [--timeout-ms T] [--json] URL
//! ```
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
//! # 1000 requests 2 ms apart, one JSON object per line, with every connection state change.
//! RUST_LOG=finwatch=debug cargo run --example ctl -- --json --count 1000 --gap-us 2000 \
//!     --timeout-ms 500 http://10.0.0.5/unico/v1/interface/io-state?ioId=25602
//! ```
//!
//! Without `--json`, each response is printed as its status line (`HTTP/1.1 200 OK`), its header
//! fields (`Name: value`), a blank line and the body (header values and body lossy as UTF-8).
//! Errors go to stderr as `error: <what happened>` followed by a `note:` saying whether the device
//! may have acted on the request.
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
//! `i` counts from 0; `conn` and `reused` come from [`finwatch::Meta`]; `us` is the latency of
//! that request in microseconds, measured around `Client::send`; `kind` is
//! [`finwatch::Error::kind`] and `message` its `Display`. In the summary, `retried`,
//! `connections_opened` and `fins_seen_idle` are the client's [`finwatch::Stats`] `retries`,
//! `connects` and `fins_seen_idle`; the percentiles are nearest-rank over the successful
//! requests' latencies (0 when there were none).
//!
//! `--gap-us` waits with [`std::thread::sleep`] after each request but the last: the pause is at
//! least G µs, plus the OS's wake-up latency (typically tens of µs, more on a loaded machine).
//!
//! Exit status: 0 when every request got a response (any HTTP status), 1 when one failed or the
//! output could not be written, 2 for a usage error (which sends nothing).

use std::ffi::OsString;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use finwatch::{Client, Error, Meta, Method, Request, Response, Stats};

#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod support;

const USAGE: &str = "\
Usage: ctl [OPTIONS] URL

Sends an HTTP/1.1 request to a device with finwatch (N times) and prints what came back.

Options:
  -X, --request METHOD    request method (default: GET, or POST when -d is given)
  -d, --data DATA         request body, sent as given (no Content-Type is added)
  -H, --header 'N: v'     add a header field; may be repeated
      --count N           send the request N times (default: 1)
      --gap-us G          wait G microseconds after each request but the last (default: 0)
      --timeout-ms T      deadline of each request, connecting included (default: 10000)
      --json              print one JSON object per request, then a summary line
  -h, --help              print this help

Long options also accept --name=value. URL is http://host[:port]/path?query.

Exit status: 0 if every request got a response (any HTTP status), 1 if one failed,
2 for a usage error. RUST_LOG=finwatch=debug logs every connection state change to stderr.
";

/// The longest `--timeout-ms` accepted (one day): far beyond any device, and safely away from
/// overflowing a deadline computed as `now + timeout`.
const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    /// `-h` / `--help`.
    Help,
    /// Send requests.
    Run(Options),
}

/// A validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    count: u64,
    gap: Duration,
    /// The per-request deadline; `None` leaves the client's default.
    timeout: Option<Duration>,
    json: bool,
}

impl Options {
    /// The request to send (each send clones it).
    fn request(&self) -> finwatch::Result<Request> {
        let mut builder = Request::builder(self.method.clone(), &self.url).body(self.body.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        builder.build()
    }
}

/// Parses the arguments (without the program name). Everything finwatch would refuse (method,
/// URL, header fields, Content-Length) is checked here too, so a usage error sends nothing.
fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut method = None;
    let mut data: Option<String> = None;
    let mut headers = Vec::new();
    let mut count = None;
    let mut gap_us = None;
    let mut timeout_ms = None;
    let mut json = false;
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
        // `--name=value`; short options take their value from the next argument.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        };
        let mut value = || match inline {
            Some(v) => Ok(v.to_string()),
            None => args.next().cloned().ok_or_else(|| format!("option {flag} needs a value")),
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-X" | "--request" => {
                let name = value()?;
                let m = Method::new(&name).map_err(|e| format!("{flag}: {e}"))?;
                set_once(&mut method, m, flag)?;
            }
            "-d" | "--data" => set_once(&mut data, value()?, flag)?,
            "-H" | "--header" => headers.push(parse_header(&value()?)?),
            "--count" => set_once(&mut count, parse_number(flag, &value()?, 1..=u64::MAX)?, flag)?,
            "--gap-us" => set_once(&mut gap_us, parse_number(flag, &value()?, 0..=u64::MAX)?, flag)?,
            "--timeout-ms" => {
                set_once(&mut timeout_ms, parse_number(flag, &value()?, 1..=MAX_TIMEOUT_MS)?, flag)?
            }
            "--json" if inline.is_none() => json = true,
            "--json" => return Err("option --json takes no value".to_string()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }

    let url = url.ok_or("missing URL")?;
    let method = method.unwrap_or(if data.is_some() { Method::POST } else { Method::GET });
    let opts = Options {
        method,
        url,
        headers,
        body: data.map(String::into_bytes).unwrap_or_default(),
        count: count.unwrap_or(1),
        gap: Duration::from_micros(gap_us.unwrap_or(0)),
        timeout: timeout_ms.map(Duration::from_millis),
        json,
    };
    opts.request().map_err(|e| e.to_string())?;
    Ok(Command::Run(opts))
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

/// `Name: value`, split on the first `:`; spaces and tabs around the value are dropped.
fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.to_string(), value.trim_matches([' ', '\t']).to_string()))
        }
        _ => Err(format!("malformed header {text:?}: expected 'Name: value'")),
    }
}

/// Sends the requests and reports on `out` (responses, JSON lines) and `err` (errors in text
/// mode). Returns the exit status.
fn run(opts: &Options, out: &mut impl Write, err: &mut impl Write) -> u8 {
    match send_all(opts, out, err) {
        Ok(status) => status,
        Err(e) => {
            let _ = writeln!(err, "error: could not write the output: {e}");
            1
        }
    }
}

fn send_all(opts: &Options, out: &mut impl Write, err: &mut impl Write) -> io::Result<u8> {
    let request = match opts.request() {
        Ok(request) => request,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(2);
        }
    };
    let mut client = match Client::new() {
        Ok(client) => client,
        Err(e) => {
            writeln!(err, "error: {e}")?;
            return Ok(1);
        }
    };
    let mut latencies_us = Vec::new();
    let mut failed = 0;
    for i in 0..opts.count {
        let start = Instant::now();
        let result = client.send(request.clone());
        let us = micros(start.elapsed());
        match result {
            Ok(resp) => {
                latencies_us.push(us);
                if opts.json {
                    writeln!(out, "{}", success_line(i, resp.status(), resp.body(), resp.meta(), us))?;
                } else {
                    write_response(out, &resp)?;
                }
            }
            Err(e) => {
                failed += 1;
                if opts.json {
                    writeln!(out, "{}", error_line(i, &e))?;
                } else {
                    write_error(err, &e, (opts.count > 1).then_some(i))?;
                }
            }
        }
        if i + 1 < opts.count && !opts.gap.is_zero() {
            thread::sleep(opts.gap);
        }
    }
    if opts.json {
        writeln!(out, "{}", summary_line(&Summary::new(&latencies_us, failed, &client.stats())))?;
    }
    out.flush()?;
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Status line, header fields, blank line, body (ending in a newline).
fn write_response(out: &mut impl Write, resp: &Response) -> io::Result<()> {
    write!(out, "{} {}", resp.version(), resp.status())?;
    if !resp.reason().is_empty() {
        write!(out, " {}", resp.reason())?;
    }
    writeln!(out)?;
    for (name, value) in resp.headers() {
        writeln!(out, "{name}: {}", String::from_utf8_lossy(value))?;
    }
    writeln!(out)?;
    let body = resp.body();
    out.write_all(String::from_utf8_lossy(body).as_bytes())?;
    if !body.is_empty() && !body.ends_with(b"\n") {
        writeln!(out)?;
    }
    Ok(())
}

/// `error: …` and whether the device may have acted on the request; `index` when several were
/// sent (the `i` of the JSON output).
fn write_error(err: &mut impl Write, e: &Error, index: Option<u64>) -> io::Result<()> {
    match index {
        Some(i) => writeln!(err, "error: request {i}: {e}")?,
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
        Ok(Command::Run(opts)) => run(&opts, &mut io::stdout().lock(), &mut io::stderr()),
        Err(msg) => {
            eprint!("ctl: {msg}\n\n{USAGE}");
            2
        }
    };
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::support::{DeviceServer, Reply};
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
            Ok(Command::Run(opts)) => opts,
            other => panic!("{list:?} parsed as {other:?}"),
        }
    }

    fn parse_err(list: &[&str]) -> String {
        match parse(list) {
            Err(msg) => msg,
            Ok(cmd) => panic!("{list:?} accepted as {cmd:?}"),
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
        assert_eq!(parse_err(&["--verbose", URL]), "unknown option --verbose");
        assert_eq!(parse_err(&["-v", URL]), "unknown option -v");
        assert_eq!(parse_err(&["--json=yes", URL]), "option --json takes no value");
        assert_eq!(parse_err(&[URL, "-X"]), "option -X needs a value");
        assert_eq!(parse_err(&["-d", "a", "--data", "b", URL]), "option --data given more than once");
        assert_eq!(parse_err(&["--count", "1", "--count", "2", URL]), "option --count given more than once");
        assert!(parse_err(&["-X", "GE T", URL]).contains("invalid method"));
        assert!(parse_err(&["https://10.0.0.5/"]).contains("https is not supported"));
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
        for bad in ["NoColon", ": value", "  : value", ""] {
            let msg = parse_err(&["-H", bad, URL]);
            assert!(msg.starts_with("malformed header") && msg.contains("'Name: value'"), "{bad:?}: {msg}");
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
        let meta = Meta { connection_id: 3, reused: false, retries: 0 };
        assert_eq!(
            success_line(0, 200, br#"{"on":true}"#, meta, 412),
            r#"{"i":0,"status":200,"body_b64":"eyJvbiI6dHJ1ZX0=","conn":3,"reused":false,"us":412}"#
        );
        let meta = Meta { connection_id: 7, reused: true, retries: 1 };
        assert_eq!(
            success_line(12, 404, b"", meta, 0),
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
        let stats = Stats { retries: 2, connects: 3, fins_seen_idle: 1, ..Stats::default() };
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
}
