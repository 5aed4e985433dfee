//! Opt-in masking of crashes that are already reported (and saved under `fuzz/regressions/`), so
//! a long run can look for new ones instead of stopping at the first, shallow one again.
//!
//! Off by default: the committed targets report every panic. `FINWATCH_FUZZ_SKIP_KNOWN=1` turns it
//! on; an input whose panic matches an entry of [`KNOWN`] is then treated as uninteresting, and any
//! other panic still aborts the run through libfuzzer-sys's hook. Remove an entry once its bug is
//! fixed.

use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::OnceLock;

/// Reported, unfixed panics: (source file suffix, fragment of the panic message). Empty when
/// every crash found so far is fixed. Past entries:
/// - `("src/proto/framing.rs", "attempt to subtract with overflow")`: `ResponseReader::feed_head`
///   computed the reason phrase's offset in its head buffer by pointer subtraction, but httparse
///   returns a `'static ""` for a status line without a reason phrase (`HTTP/1.1 200\r\n`) or
///   with obs-text in it (fuzz/regressions/*/reason_*; fixed by bounds-checking the slice).
const KNOWN: &[(&str, &str)] = &[];

/// Runs one input, swallowing the known panics when masking is on.
pub fn run(f: impl FnOnce()) {
    if enabled() {
        let _ = panic::catch_unwind(AssertUnwindSafe(f));
    } else {
        f();
    }
}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var_os("FINWATCH_FUZZ_SKIP_KNOWN").is_some_and(|v| v != "0" && !v.is_empty());
        if on {
            // libfuzzer-sys's hook (installed before the first input) prints and aborts: keep it
            // for every panic that is not a known one.
            let abort = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if !is_known(info) {
                    abort(info);
                }
            }));
        }
        on
    })
}

fn is_known(info: &PanicHookInfo<'_>) -> bool {
    let file = info.location().map_or("", |l| l.file());
    let msg = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("");
    KNOWN.iter().any(|(f, m)| file.ends_with(f) && msg.contains(m))
}
