//! A global allocator that counts the allocations of the threads that switched counting on:
//! the device server's threads and the test harness do not count. Shared by
//! `tests/zero_alloc.rs` and the benches (`#[path]`-included; one global allocator per binary).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counters are const-initialised
// thread-locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Switches counting on or off for this thread.
pub fn counting(on: bool) {
    COUNTING.with(|c| c.set(on));
}

/// This thread's count since the last [`reset`].
pub fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Zeroes this thread's count.
pub fn reset() {
    ALLOCS.with(|a| a.set(0));
}

/// Allocations made by `f` on this thread.
pub fn count(f: impl FnOnce()) -> u64 {
    reset();
    counting(true);
    f();
    counting(false);
    allocs()
}
