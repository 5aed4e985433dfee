//! The whole client (engine + driver) over the simulated kernel, with a scripted device decoded
//! from the input; the entry point checks the client's promises after every turn (see
//! `finwatch::__sim`). Input layout: `src/os/sim/scenario.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod known;

fuzz_target!(|data: &[u8]| known::run(|| {
    finwatch::__sim::run(data);
}));
