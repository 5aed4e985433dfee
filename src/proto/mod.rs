//! The sans-IO core: bytes, readiness and time in; actions out. Nothing here owns a socket or
//! reads a clock.

pub(crate) mod chunked;
pub mod conn;
pub(crate) mod digest;
pub mod engine;
pub mod framing;
#[doc(hidden)]
#[cfg(feature = "__internal")]
pub mod fuzz;
pub(crate) mod hash;
pub(crate) mod learn;
pub(crate) mod lifecycle;
pub(crate) mod retry;
pub(crate) mod slab;
pub(crate) mod spin;
pub(crate) mod time;
pub(crate) mod timers;
