//! The connection-lifecycle decisions, each in one place: what a connection's end teaches and
//! what follows it, the fate of a request whose connection was lost, who fails when a connect
//! fails, what a complete response means for its connection, and what a due idle retirement
//! does.
//!
//! Each decision is a *facts* type (everything it reads, `Copy`, gathered by the engine in one
//! place) with a `decide()` that is one `match`, first matching row wins, its table in the doc
//! comment and again as a test. The engine applies a decision as straight-line code that
//! branches only on the decision's variants. FAULTS.md is the same idea one level up.
//!
//! Every row must make **progress**: finish a request (complete or fail it) or spend from a
//! bounded budget (its retries, the pooled connections that existed when it was queued, the
//! host's connects while no exchange completes, time to its deadline). A row that does neither
//! is a loop: the connect storm of the faults issue was such a row (a failed connect replaced by
//! another while a second one was still connecting, 134,002 connects in 0.8 s).

use std::time::Duration;

use crate::error::Stage;
use crate::proto::conn::RetireReason;
use crate::proto::retry::{Attempt, retry_is_safe};

// ---------------------------------------------------------------------------------------------
// When a connect fails

/// A connect of a host failed (refused, unreachable, timed out, `EMFILE` at `socket()`, a name
/// that did not resolve; for a name, after every address was tried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectFailure {
    /// Queued requests that could start now: `min(queued, max_in_flight - in_flight)`.
    pub startable: usize,
    /// The host's other connections still connecting.
    pub others_connecting: usize,
    /// The host's other connections that are open (busy or idle).
    pub others_open: usize,
}

/// What follows a failed connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterConnectFailure {
    /// The oldest waiting request fails with the connect error: this connect was its.
    FailHead,
    /// Nobody fails: every request that could start has a connect of its own still coming.
    Wait,
    /// Nobody fails, and the host opens no new connection until one of its exchanges
    /// completes: the waiting request goes out on a connection that is open now, once it is free
    /// (a device that accepts one connection at a time refuses the second).
    WaitForOpen,
}

impl ConnectFailure {
    /// | # | startable > others connecting | another connection open | → | progress |
    /// |---|---|---|---|---|
    /// | 1 | no | any | `Wait` | the connects still coming finish or fail (each once) |
    /// | 2 | yes | no | `FailHead` | a request finished |
    /// | 3 | yes | yes | `WaitForOpen` | no connect until an exchange completes (a request finished); the deadline bounds the rest |
    ///
    /// So connects per request are bounded: a connect that fails either fails the request it was
    /// for, or stops the host's connects until a request has finished. Before, row 3 and rows
    /// where another connect was coming ended with nobody failing and `dispatch` opening another
    /// connect at once: with `max_in_flight_per_host(2)` against a port where nothing listens,
    /// 134,002 connects in 0.8 s and every request ended at its deadline; with `socket()`
    /// failing at once (`EMFILE`) the driver's action loop never returned.
    pub(crate) fn decide(self) -> AfterConnectFailure {
        match (self.startable > self.others_connecting, self.others_open > 0) {
            (false, _) => AfterConnectFailure::Wait,
            (true, false) => AfterConnectFailure::FailHead,
            (true, true) => AfterConnectFailure::WaitForOpen,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// When an exchange is lost

/// The connection under a request was lost (FIN, RST, unsolicited bytes) before its response
/// was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loss {
    /// How far the exchange had got. `Queued` here means: assigned, nothing written yet (the
    /// pre-write check was pending).
    pub stage: Stage,
    /// The connection had carried an earlier exchange, or was a warm spare (it waited in the
    /// pool like a reused one: the same race applies).
    pub pooled: bool,
    /// Idempotent method, or marked retryable by the caller.
    pub retryable: bool,
    /// Retries already spent, and the most allowed.
    pub retries: u32,
    pub max_retries: u32,
    /// The request's deadline is still ahead.
    pub before_deadline: bool,
    /// Part of its body was taken from the caller's reader (a streamed body): it cannot be
    /// sent again.
    pub unrepeatable: bool,
}

/// The fate of a request whose connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LossFate {
    /// Back to the head of its queue, not an attempt: a stale pooled connection was caught
    /// before a byte was written.
    Requeue,
    /// Sent again on a connection that has carried nothing, at the head of its queue.
    Retry,
    /// Fails with the loss (as `RetryFailed` if an earlier loss was kept).
    Fail,
}

impl Loss {
    /// The stage an attempt is judged at: nothing written on a *fresh* connection is still an
    /// attempt (the device closed it before our first byte), judged as `Sending`.
    pub(crate) fn attempt_stage(self) -> Stage {
        match self.stage {
            Stage::Queued => Stage::Sending,
            s => s,
        }
    }

    /// First matching row wins:
    ///
    /// | # | stage | pooled | retries left | before deadline | → | progress |
    /// |---|---|---|---|---|---|---|
    /// | 1 | nothing written | yes | any | any | `Requeue` | uses up one pooled connection (finite) |
    /// | 2 | any | | no | | `Fail` | a request finished |
    /// | 3 | any | | | no | `Fail` | a request finished |
    /// | 4 | any, a streamed body begun | | | | `Fail` | a request finished |
    /// | 5 | any | | yes | yes | [`retry_is_safe`] ? `Retry` : `Fail` | a retry spent, or finished |
    ///
    /// Row 4: a streamed body (`Client::send_streaming`) whose reader has given a byte cannot be
    /// read again; the head is then out (the body is read once the head is written), so the
    /// device may have acted on it. Row 5's rules ([`crate::proto::retry`]): never once a response byte arrived; whatever
    /// the method while the device cannot have the whole request head (`Sending`: nothing, or
    /// less than the head, written); once the head is out (`SendingBody`, `AwaitingResponse`)
    /// only an idempotent or retryable request on a pooled connection (the keep-alive race).
    /// Before, a partly written body counted as unsent, and a POST whose device had read its
    /// head, answered early and reset was sent again: applied twice.
    pub(crate) fn decide(self) -> LossFate {
        if self.stage == Stage::Queued && self.pooled {
            return LossFate::Requeue;
        }
        if self.retries >= self.max_retries || !self.before_deadline || self.unrepeatable {
            return LossFate::Fail;
        }
        let attempt = Attempt {
            stage: self.attempt_stage(),
            reused: self.pooled,
            retryable: self.retryable,
            retries: self.retries,
        };
        if retry_is_safe(attempt, self.max_retries) { LossFate::Retry } else { LossFate::Fail }
    }
}

// ---------------------------------------------------------------------------------------------
// When a response is complete

/// A response completed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AfterResponse {
    /// The response ended with the peer's FIN (a close-delimited body).
    pub fin: bool,
    /// Bytes followed the response.
    pub extra: bool,
    /// The request was still being written (an early response).
    pub still_writing: bool,
    /// The response says the connection ends (`Connection: close`, HTTP/1.0, close-delimited).
    pub says_close: Option<RetireReason>,
    /// The request asked for `Connection: close`.
    pub requested_close: bool,
    /// `Keep-Alive: max` reached.
    pub max_reached: bool,
    /// The device is thought to close after every response.
    pub closes_after_response: bool,
    /// This one is the connection in [`PROBATION_EVERY`] kept to re-check that.
    pub probation_due: bool,
}

/// What a complete response means for its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnFate {
    /// The device closed it: it is released.
    Released,
    /// We close it, for this reason.
    Retire(RetireReason),
    /// It goes back to the pool (on probation: only a retryable request may take it, and one
    /// that finds it alive unlearns "closes after every response").
    Keep { probation: bool },
}

/// One connection in this many, to a device thought to close after every response (or whose
/// learned idle close retires connections), is kept on probation to re-check the lesson.
pub(crate) const PROBATION_EVERY: u32 = 32;

impl AfterResponse {
    /// First matching row wins:
    ///
    /// | # | fact | → |
    /// |---|---|---|
    /// | 1 | ended with the peer's FIN | `Released` |
    /// | 2 | bytes followed the response | `Retire(UnsolicitedData)` |
    /// | 3 | the request was still being written | `Retire(EarlyResponse)` |
    /// | 4 | the response says the connection ends | `Retire(that reason)` |
    /// | 5 | the request asked for close | `Retire(RequestedClose)` |
    /// | 6 | `Keep-Alive: max` reached | `Retire(KeepAliveMaxReached)` |
    /// | 7 | device closes after every response, probation due | `Keep { probation: true }` |
    /// | 8 | device closes after every response | `Retire(DeviceClosesAfterResponse)` |
    /// | 9 | otherwise | `Keep { probation: false }` |
    ///
    /// The probation counter advances (in the engine) only on rows 7 and 8, from the decision.
    pub(crate) fn decide(self) -> ConnFate {
        if self.fin {
            ConnFate::Released
        } else if self.extra {
            ConnFate::Retire(RetireReason::UnsolicitedData)
        } else if self.still_writing {
            ConnFate::Retire(RetireReason::EarlyResponse)
        } else if let Some(why) = self.says_close {
            ConnFate::Retire(why)
        } else if self.requested_close {
            ConnFate::Retire(RetireReason::RequestedClose)
        } else if self.max_reached {
            ConnFate::Retire(RetireReason::KeepAliveMaxReached)
        } else if self.closes_after_response && self.probation_due {
            ConnFate::Keep { probation: true }
        } else if self.closes_after_response {
            ConnFate::Retire(RetireReason::DeviceClosesAfterResponse)
        } else {
            ConnFate::Keep { probation: false }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// When an idle connection's retire time comes

/// At first, one retirement in this many by a learned idle close is a probation instead. Smaller
/// than [`PROBATION_EVERY`]: a probation here costs only a connection kept open longer (used by a
/// retryable request, or closed by the device first), while a wrong lesson costs a handshake per
/// command. Each probation the device confirms (it closes the connection first) doubles the
/// interval, up to [`RECHECK_LEARNED_MAX`]; one that survives makes the next retirement a
/// probation again.
pub(crate) const RECHECK_LEARNED_EVERY: u32 = 4;

/// The longest interval between probations of a learned idle close the device keeps confirming.
pub(crate) const RECHECK_LEARNED_MAX: u32 = 256;

/// An idle connection reached its retire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdleRetire {
    /// Why it is due (the earliest of our idle limit, `Keep-Alive: timeout`, the learned close).
    pub reason: RetireReason,
    /// The host's retirements by the learned idle close reached its recheck interval
    /// ([`RECHECK_LEARNED_EVERY`] at first), or this is the first since a probation survived.
    pub recheck_due: bool,
}

/// What a due retirement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtRetireTime {
    Retire,
    /// Kept past the learned idle close, on probation, until the limits without it: only a
    /// retryable request may take it, and if the pre-write check finds it alive the learned
    /// close was too short and is raised.
    Probation,
}

impl IdleRetire {
    /// | reason | recheck due | → | why |
    /// |---|---|---|---|
    /// | `LearnedIdleClose` | yes | `Probation` | a learned bound comes from one close, which may not have been an idle close at all (a reboot, a reset): unchecked, it would retire every connection before its next use for good |
    /// | `LearnedIdleClose` | no | `Retire` | |
    /// | any other | any | `Retire` | our own limit, or the device's announced one |
    ///
    /// Before, a device that reset one connection 30 ms after its response (a reboot) had
    /// every later command, 100 ms apart, open a new connection, for ever. The crossing risk a
    /// probation takes stays on retryable requests, which a crossed FIN only costs a retry.
    pub(crate) fn decide(self) -> AtRetireTime {
        match (self.reason, self.recheck_due) {
            (RetireReason::LearnedIdleClose, true) => AtRetireTime::Probation,
            _ => AtRetireTime::Retire,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// When a connection ends

/// The phase a connection ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Was {
    Connecting,
    Idle,
    /// Assigned to a request, nothing written yet (the pre-write check).
    Probing,
    /// A request was being written or awaited, no response byte yet.
    Sending,
    /// A response was being read.
    Reading,
    /// A close-delimited response ended with the device's FIN.
    Released,
}

/// Who ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndedBy {
    /// The device: FIN (a read or peek of 0) or RST (a socket error).
    Device,
    /// We retired it, for this reason.
    Us(RetireReason),
}

/// A connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ending {
    pub was: Was,
    pub by: EndedBy,
    /// Exchanges it completed.
    pub served: u32,
    /// Time since its last response, if it had one.
    pub since_response: Option<Duration>,
    /// The host is already thought to close after every response.
    pub host_single_use: bool,
}

/// What follows a connection's end (besides the request's fate, which [`Loss`] decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndDecision {
    /// The device's idle close is at most this (an upper bound to learn).
    pub lesson: Option<Duration>,
    /// The close came within [`crate::proto::learn::CLOSES_AFTER_RESPONSE`] of a response,
    /// under a request: the next connection kept for reuse is a probation of the lesson.
    pub probation_next: bool,
    /// Open a warm spare: the next command needs a new connection.
    pub spare: bool,
}

impl Ending {
    /// | was ↓ / by → | device (FIN or RST) | us (reason) |
    /// |---|---|---|
    /// | `Connecting` | nothing (reported as a connect failure) | nothing |
    /// | `Idle`, `Probing` | lesson: idle close ≤ since response; spare if it served | spare if it served and the reason announces the end (`will_end`) |
    /// | `Sending` after a response | lesson as `Idle`; probation next if ≤ 2 ms since the response and the host is not single-use yet; no spare (the request goes through dispatch, which connects) | no spare |
    /// | `Sending`, never a response | nothing | nothing |
    /// | `Reading` | nothing | nothing |
    /// | `Released` | spare if it served | spare if it served |
    pub(crate) fn decide(self) -> EndDecision {
        let served = self.served > 0;
        let nothing = EndDecision { lesson: None, probation_next: false, spare: false };
        match (self.was, self.by) {
            (Was::Connecting, _) | (Was::Reading, _) => nothing,
            (Was::Idle | Was::Probing, EndedBy::Device) => EndDecision {
                lesson: self.since_response,
                probation_next: false,
                spare: served && self.was == Was::Idle,
            },
            (Was::Idle | Was::Probing, EndedBy::Us(reason)) => {
                EndDecision { spare: served && self.was == Was::Idle && will_end(reason), ..nothing }
            }
            (Was::Sending, EndedBy::Device) => match self.since_response {
                Some(d) => EndDecision {
                    lesson: Some(d),
                    probation_next: d <= crate::proto::learn::CLOSES_AFTER_RESPONSE && !self.host_single_use,
                    spare: false,
                },
                None => nothing,
            },
            (Was::Sending, EndedBy::Us(_)) => nothing,
            (Was::Released, _) => EndDecision { spare: served, ..nothing },
        }
    }
}

/// Whether a retirement means the device's next command needs a new connection (so a warm
/// spare is worth opening), as opposed to a fault.
pub(crate) fn will_end(reason: RetireReason) -> bool {
    matches!(
        reason,
        RetireReason::ServerSaidClose
            | RetireReason::Http10
            | RetireReason::CloseDelimitedBody
            | RetireReason::KeepAliveMaxReached
            | RetireReason::KeepAliveTimeout
            | RetireReason::LearnedIdleClose
            | RetireReason::DeviceClosesAfterResponse
    )
}

#[cfg(test)]
mod tests;
