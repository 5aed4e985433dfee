//! When a request that lost its connection may be sent again.
//!
//! The rule, in order (DESIGN.md, RFC 9110 §9.2.2, RFC 9112 §9.3.1):
//! 1. Never once a response byte has arrived: the device acted, and answered.
//! 2. If the device cannot have parsed the request (nothing, or less than its complete head, was
//!    written), re-sending cannot apply it twice: retry, whatever the method.
//! 3. Once the head is out, the device may act on it, whatever became of the body (a device
//!    that reads the head, answers early and closes with the body unread resets the
//!    connection under the rest of our write). If the connection was *reused*, the loss is
//!    most likely the keep-alive race (the device closed the idle connection as our request
//!    crossed its FIN): retry only an idempotent request, or one the caller marked retryable.
//! 4. The head written on a *fresh* connection: the device saw it and then failed; retrying
//!    would hide a device fault and may double a command. Report it.
//!
//! Every retry goes to a fresh connection at the head of the host's queue: one that has carried
//! nothing, connected after the lost one last saw a response (after it was lost, if it had carried
//! nothing either), so the device's idle close cannot take the retry as it took the request
//! (`Engine::dispatch`). The number of retries is bounded, so a device that always fails cannot
//! loop the client.

use crate::error::Stage;

/// What we know about a failed attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    /// How far it got.
    pub(crate) stage: Stage,
    /// Whether the connection had carried an earlier exchange.
    pub(crate) reused: bool,
    /// Idempotent method, or marked retryable by the caller.
    pub(crate) retryable: bool,
    /// Retries already spent on this request.
    pub(crate) retries: u32,
}

/// Whether the request may be sent again on a fresh connection.
pub(crate) fn retry_is_safe(a: Attempt, max_retries: u32) -> bool {
    if a.retries >= max_retries {
        return false;
    }
    match a.stage {
        Stage::ReadingResponse => false,
        Stage::Queued | Stage::Connecting | Stage::Sending => true,
        Stage::SendingBody | Stage::AwaitingResponse => a.reused && a.retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(stage: Stage, reused: bool, retryable: bool) -> Attempt {
        Attempt { stage, reused, retryable, retries: 0 }
    }

    #[test]
    fn never_after_a_response_byte() {
        for reused in [false, true] {
            for retryable in [false, true] {
                assert!(!retry_is_safe(attempt(Stage::ReadingResponse, reused, retryable), 1));
            }
        }
    }

    #[test]
    fn unsent_requests_retry_whatever_the_method() {
        assert!(retry_is_safe(attempt(Stage::Sending, true, false), 1));
        assert!(retry_is_safe(attempt(Stage::Sending, false, false), 1));
    }

    #[test]
    fn fully_sent_requests_retry_only_when_reused_and_idempotent() {
        assert!(retry_is_safe(attempt(Stage::AwaitingResponse, true, true), 1));
        assert!(!retry_is_safe(attempt(Stage::AwaitingResponse, true, false), 1));
        assert!(!retry_is_safe(attempt(Stage::AwaitingResponse, false, true), 1));
    }

    #[test]
    fn a_written_head_counts_as_sent_whatever_became_of_the_body() {
        assert!(!retry_is_safe(attempt(Stage::SendingBody, true, false), 1));
        assert!(!retry_is_safe(attempt(Stage::SendingBody, false, false), 1));
        assert!(!retry_is_safe(attempt(Stage::SendingBody, false, true), 1));
        assert!(retry_is_safe(attempt(Stage::SendingBody, true, true), 1));
    }

    #[test]
    fn retries_are_bounded() {
        let a = Attempt { stage: Stage::Sending, reused: true, retryable: true, retries: 1 };
        assert!(!retry_is_safe(a, 1));
        assert!(!retry_is_safe(attempt(Stage::Sending, true, true), 0));
    }
}
