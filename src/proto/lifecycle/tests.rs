//! Each decision's table, row by row, as the doc comment states it.

use super::*;

const MS: Duration = Duration::from_millis(1);

#[test]
fn connect_failure_table() {
    use AfterConnectFailure::*;
    // (startable, others connecting, others open) → decision
    let rows = [
        ((1, 1, 0), Wait),
        ((2, 2, 1), Wait),
        ((0, 0, 0), Wait), // a warm spare failed while its request was busy elsewhere
        ((1, 0, 0), FailHead),
        ((2, 1, 0), FailHead), // the storm's row: one of two connects failed
        ((4, 0, 0), FailHead),
        ((1, 0, 1), WaitForOpen),
        ((2, 1, 3), WaitForOpen),
    ];
    for ((startable, others_connecting, others_open), want) in rows {
        let f = ConnectFailure { startable, others_connecting, others_open };
        assert_eq!(f.decide(), want, "{f:?}");
    }
}

#[test]
fn loss_table() {
    use LossFate::*;
    let base = Loss {
        stage: Stage::Queued,
        pooled: true,
        retryable: false,
        retries: 0,
        max_retries: 1,
        before_deadline: true,
        unrepeatable: false,
    };
    let rows = [
        // 1: a stale pooled connection caught before any byte: not an attempt, whatever else.
        (Loss { retries: 5, before_deadline: false, ..base }, Requeue),
        // 2, 3: no retries left, or past the deadline.
        (Loss { stage: Stage::Sending, retries: 1, ..base }, Fail),
        (Loss { stage: Stage::Sending, before_deadline: false, ..base }, Fail),
        // 4: a streamed body begun cannot be read again, retryable and reused or not.
        (Loss { stage: Stage::SendingBody, retryable: true, unrepeatable: true, ..base }, Fail),
        (Loss { stage: Stage::AwaitingResponse, retryable: true, unrepeatable: true, ..base }, Fail),
        // 5: nothing written on a fresh connection is an attempt at `Sending`: any method.
        (Loss { pooled: false, ..base }, Retry),
        // Less than the head written: the device cannot have parsed it, any method.
        (Loss { stage: Stage::Sending, ..base }, Retry),
        (Loss { stage: Stage::Sending, pooled: false, ..base }, Retry),
        // The head is out: the device may act on it whatever became of the body.
        (Loss { stage: Stage::SendingBody, ..base }, Fail),
        (Loss { stage: Stage::SendingBody, pooled: false, retryable: true, ..base }, Fail),
        (Loss { stage: Stage::SendingBody, retryable: true, ..base }, Retry),
        (Loss { stage: Stage::AwaitingResponse, ..base }, Fail),
        (Loss { stage: Stage::AwaitingResponse, retryable: true, ..base }, Retry),
        (Loss { stage: Stage::AwaitingResponse, pooled: false, retryable: true, ..base }, Fail),
        // Never once a response byte arrived.
        (Loss { stage: Stage::ReadingResponse, retryable: true, ..base }, Fail),
    ];
    for (loss, want) in rows {
        assert_eq!(loss.decide(), want, "{loss:?}");
    }
}

#[test]
fn after_response_table() {
    use super::ConnFate::{Keep as Kept, Released, Retire};
    let base = AfterResponse {
        fin: false,
        extra: false,
        still_writing: false,
        says_close: None,
        requested_close: false,
        max_reached: false,
        closes_after_response: false,
        probation_due: false,
    };
    let all = AfterResponse {
        fin: true,
        extra: true,
        still_writing: true,
        says_close: Some(RetireReason::ServerSaidClose),
        requested_close: true,
        max_reached: true,
        closes_after_response: true,
        probation_due: true,
    };
    let rows = [
        (all, Released),
        (AfterResponse { fin: false, ..all }, Retire(RetireReason::UnsolicitedData)),
        (AfterResponse { fin: false, extra: false, ..all }, Retire(RetireReason::EarlyResponse)),
        (
            AfterResponse { fin: false, extra: false, still_writing: false, ..all },
            Retire(RetireReason::ServerSaidClose),
        ),
        (
            AfterResponse { requested_close: true, max_reached: true, ..base },
            Retire(RetireReason::RequestedClose),
        ),
        (
            AfterResponse { max_reached: true, closes_after_response: true, ..base },
            Retire(RetireReason::KeepAliveMaxReached),
        ),
        (
            AfterResponse { closes_after_response: true, probation_due: true, ..base },
            Kept { probation: true },
        ),
        (
            AfterResponse { closes_after_response: true, ..base },
            Retire(RetireReason::DeviceClosesAfterResponse),
        ),
        (AfterResponse { probation_due: true, ..base }, Kept { probation: false }),
        (base, Kept { probation: false }),
    ];
    for (facts, want) in rows {
        assert_eq!(facts.decide(), want, "{facts:?}");
    }
}

#[test]
fn idle_retire_table() {
    use AtRetireTime::*;
    let rows = [
        (RetireReason::LearnedIdleClose, true, Probation),
        (RetireReason::LearnedIdleClose, false, Retire),
        (RetireReason::IdleTimeout, true, Retire),
        (RetireReason::KeepAliveTimeout, true, Retire),
    ];
    for (reason, recheck_due, want) in rows {
        assert_eq!(IdleRetire { reason, recheck_due }.decide(), want, "{reason:?} {recheck_due}");
    }
}

#[test]
fn ending_table() {
    let base = Ending {
        was: Was::Idle,
        by: EndedBy::Device,
        served: 1,
        since_response: Some(30 * MS),
        host_single_use: false,
    };
    let d = |lesson: Option<Duration>, probation_next: bool, spare: bool| EndDecision {
        lesson,
        probation_next,
        spare,
    };
    let rows = [
        (Ending { was: Was::Connecting, served: 0, since_response: None, ..base }, d(None, false, false)),
        (base, d(Some(30 * MS), false, true)),
        (Ending { served: 0, since_response: None, ..base }, d(None, false, false)),
        (Ending { was: Was::Probing, ..base }, d(Some(30 * MS), false, false)),
        (Ending { by: EndedBy::Us(RetireReason::LearnedIdleClose), ..base }, d(None, false, true)),
        (Ending { by: EndedBy::Us(RetireReason::IdleTimeout), ..base }, d(None, false, false)),
        (Ending { was: Was::Sending, ..base }, d(Some(30 * MS), false, false)),
        (Ending { was: Was::Sending, since_response: Some(MS), ..base }, d(Some(MS), true, false)),
        (
            Ending { was: Was::Sending, since_response: Some(MS), host_single_use: true, ..base },
            d(Some(MS), false, false),
        ),
        (Ending { was: Was::Sending, served: 0, since_response: None, ..base }, d(None, false, false)),
        (
            Ending { was: Was::Sending, by: EndedBy::Us(RetireReason::DeadlineExceeded), ..base },
            d(None, false, false),
        ),
        (Ending { was: Was::Reading, ..base }, d(None, false, false)),
        (Ending { was: Was::Released, ..base }, d(None, false, true)),
    ];
    for (facts, want) in rows {
        assert_eq!(facts.decide(), want, "{facts:?}");
    }
}
