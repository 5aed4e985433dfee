//! Response reader: split-invariance and limits. Input layout: see `finwatch::__fuzz::response`
//! (`[flags, n_splits, split bytes..., payload...]`).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod known;

fuzz_target!(|data: &[u8]| known::run(|| finwatch::__fuzz::response(data)));
