//! The sans-IO core: bytes, readiness and time in; actions out. Nothing here owns a socket or
//! reads a clock.

pub(crate) mod chunked;
pub mod conn;
pub mod engine;
pub mod framing;
pub(crate) mod retry;
pub(crate) mod slab;
