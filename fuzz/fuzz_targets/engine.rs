//! Sans-IO engine driven by arbitrary driver events; the entry point checks the engine's promises
//! (no write after FIN/RST, writes only after an Alive probe, no non-retryable request written
//! twice, every request completes exactly once). Input layout: see `finwatch::__fuzz::engine`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod known;

fuzz_target!(|data: &[u8]| known::run(|| finwatch::__fuzz::engine(data)));
