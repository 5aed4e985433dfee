//! The engine's timers: request deadlines, connect timeouts, idle retire times.
//!
//! One min-heap, so finding the next wake-up and firing due timers costs O(log n) whatever the
//! number of devices and connections, instead of a scan per loop turn. Entries are never
//! removed when their subject goes away (a request completes long before its deadline); the
//! engine checks each entry against its subject when it surfaces and drops it if stale, and the
//! heap is rebuilt from the live subjects when stale entries outnumber them, so its size stays
//! proportional to what is live.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::proto::slab::Key;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The deadline of the request in this slot of the engine's request slab. One entry serves
    /// the slot's successive requests: a request whose deadline is no earlier than the entry's
    /// time pushes none, and the entry, when it surfaces, moves to the deadline of the request
    /// then in the slot (a keep-alive loop reuses one slot: no heap push or pop per command).
    Request(u32),
    /// A connecting connection's connect timeout.
    Connect(Key),
    /// An idle connection's retire time.
    Retire(Key),
}

/// Stale entries tolerated beyond four per live subject before the heap is rebuilt.
const SLACK: usize = 64;

#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Default for Timers {
    /// Room for what a client with up to 16 live subjects (a few devices' connections, spares
    /// and requests) holds before a compaction, so that its heap never grows in the steady
    /// state: how many stale entries pile up before one depends on timing (a spinning wait
    /// surfaces them later than a sleeping one), and a growth in the middle of a run is an
    /// allocation on a command's path (`tests/zero_alloc.rs`). 128 entries, 4 KiB.
    fn default() -> Timers {
        Timers { heap: BinaryHeap::with_capacity(2 * SLACK) }
    }
}

impl Timers {
    pub(crate) fn push(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest entry, live or stale.
    pub(crate) fn peek(&self) -> Option<(Instant, Timer)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    pub(crate) fn pop(&mut self) {
        self.heap.pop();
    }

    /// Whether stale entries dominate, given how many subjects are live.
    pub(crate) fn needs_compaction(&self, live: usize) -> bool {
        self.heap.len() > SLACK + 4 * live
    }

    /// Replaces every entry by `live`, reusing the heap's storage (no allocation).
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (Instant, Timer)>) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.clear();
        entries.extend(live.map(Reverse));
        self.heap = BinaryHeap::from(entries);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}
