//! The fault matrix's machinery, shared by the plain matrix (tests/fault_matrix.rs) and the one
//! over TLS (tls-tests/tests/fault_matrix_tls.rs): the outcomes a cell may end with, the four
//! columns, the common bounds, and the runner that runs a row's cells in parallel.

use std::fmt;
use std::thread;
use std::time::Duration;

use finwatch::{Error, LostCause, Stage};

/// Deadline of every request that should not need it: a bug shows as an error, never a hang.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Deadline of the request under test in the stall rows.
pub const STALL_DEADLINE: Duration = Duration::from_millis(300);
/// How late a blocking call may return after its deadline on a loaded machine.
pub const LATE: Duration = Duration::from_millis(700);
/// Bound on every wait for the device.
pub const SETTLE: Duration = Duration::from_secs(2);
/// After the device's FIN/RST has left (on loopback: reached the client's socket), a margin
/// before the next request, so that it is a fault "while idle" and not a race.
pub const GAP: Duration = Duration::from_millis(20);
/// Body of the large partial-request rows. It must exceed what the loopback buffers absorb while
/// the device reads nothing, or the client completes its write into them and the request is no
/// longer partial for it: measured 4.3 MB here (the sender's buffer autotunes up to tcp_wmem's
/// maximum, 4 MiB, plus the receiver's window), so 4 MiB would not do.
pub const LARGE_BODY: usize = 8 << 20;
/// Bytes of a large request the device reads (its plaintext, over TLS) before it cuts the
/// connection.
pub const LARGE_CUT: usize = 64 << 10;

pub const FIN: LostCause = LostCause::PeerClosed;
pub const RST: LostCause = LostCause::Reset;
pub const SENDING_BODY: Stage = Stage::SendingBody;
pub const AWAITING: Stage = Stage::AwaitingResponse;
pub const READING: Stage = Stage::ReadingResponse;

// ---- outcomes ----

/// What the request under test ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Got {
    Ok,
    ConnectFailed,
    Lost(LostCause, Stage),
    Deadline(Stage),
    RetryFailed { first: (LostCause, Stage), last: (LostCause, Stage) },
}

impl Got {
    /// What `Error::may_have_been_processed` must say, from the contract in error.rs (spelled
    /// out here rather than asked of the crate): only a request whose head was written may have
    /// been acted on.
    pub fn may_have_been_processed(self) -> bool {
        let whole =
            |s: Stage| matches!(s, Stage::SendingBody | Stage::AwaitingResponse | Stage::ReadingResponse);
        match self {
            Got::Ok => unreachable!("not an error"),
            Got::ConnectFailed => false,
            Got::Lost(_, stage) | Got::Deadline(stage) => whole(stage),
            Got::RetryFailed { first, last } => whole(first.1) || whole(last.1),
        }
    }

    pub fn of(err: &Error) -> Option<Got> {
        let lost = |e: &Error| match e {
            Error::ConnectionLost { cause, stage, .. } => Some((*cause, *stage)),
            _ => None,
        };
        Some(match err {
            Error::ConnectFailed { .. } => Got::ConnectFailed,
            Error::ConnectionLost { cause, stage, .. } => Got::Lost(*cause, *stage),
            Error::DeadlineExceeded { stage } => Got::Deadline(*stage),
            Error::RetryFailed { first, last } => Got::RetryFailed { first: lost(first)?, last: lost(last)? },
            _ => return None,
        })
    }
}

/// The outcome of the request under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub got: Got,
    /// Retries the client spent on it (`meta().retries`, or its stats for an error).
    pub retries: u32,
    /// Times the device received the whole request.
    pub arrived: usize,
}

pub const fn ok(retries: u32, arrived: usize) -> Outcome {
    Outcome { got: Got::Ok, retries, arrived }
}

pub const fn lost(cause: LostCause, stage: Stage, retries: u32, arrived: usize) -> Outcome {
    Outcome { got: Got::Lost(cause, stage), retries, arrived }
}

pub const fn deadline(stage: Stage, arrived: usize) -> Outcome {
    Outcome { got: Got::Deadline(stage), retries: 0, arrived }
}

pub const CONNECT_FAILED: Outcome = Outcome { got: Got::ConnectFailed, retries: 0, arrived: 0 };

// ---- the matrix ----

/// A column of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Col {
    pub post: bool,
    pub reused: bool,
}

/// The columns, in the order of `Row::expect`.
pub const COLS: [Col; 4] = [
    Col { post: false, reused: false },
    Col { post: false, reused: true },
    Col { post: true, reused: false },
    Col { post: true, reused: true },
];

impl fmt::Display for Col {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = if self.post { "POST" } else { "PUT" };
        let conn = if self.reused { "reused" } else { "fresh" };
        write!(f, "{method}/{conn}")
    }
}

/// Runs a row's cells (the columns whose `expect` is not empty) in parallel threads named
/// `[label | column]`, and fails with every failing cell's message.
pub fn run_cells(label: &str, expect: [&[Outcome]; 4], cell: impl Fn(Col, &[Outcome]) + Sync) {
    let failures: Vec<String> = thread::scope(|s| {
        let cells: Vec<_> = COLS
            .iter()
            .zip(expect)
            .filter(|(_, expect)| !expect.is_empty())
            .map(|(&col, expect)| {
                let name = format!("[{label} | {col}]");
                let cell = &cell;
                let handle = thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(s, move || cell(col, expect))
                    .expect("spawn a cell");
                (name, handle)
            })
            .collect();
        cells
            .into_iter()
            .filter_map(|(name, handle)| {
                let panic = handle.join().err()?;
                let msg = (panic.downcast_ref::<String>().cloned())
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(if msg.contains(&name) { msg } else { format!("{name}: {msg}") })
            })
            .collect()
    });
    assert!(failures.is_empty(), "{} cell(s) failed:\n{}", failures.len(), failures.join("\n"));
}
