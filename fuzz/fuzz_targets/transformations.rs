//! Every transformation on arbitrary bytes: no panic, and the properties
//! in `palisade::waf::transform::invariants` hold (decoders never grow
//! their input, lowercase is idempotent, removeNulls leaves no NUL, ...).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::waf::transform::invariants;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = invariants::check_all(data) {
        panic!("{broken}");
    }
});
