//! Accept-Encoding negotiation on arbitrary field values: no panic, and
//! the coding chosen is one that was offered.
#![no_main]

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use palisade::compress::Coding;
use palisade::compress::negotiate::choose;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    for offered in [
        &[Coding::Brotli, Coding::Zstd, Coding::Gzip][..],
        &[Coding::Gzip][..],
        &[][..],
    ] {
        if let Some(chosen) = choose(std::slice::from_ref(&value), offered) {
            assert!(offered.contains(&chosen), "{chosen:?} was not offered");
        }
    }
});
