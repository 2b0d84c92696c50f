//! The request-body decoder on arbitrary bytes in every coding: no panic,
//! and never more output than its cap (size and ratio).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::compress::decode::{Caps, decode};

fuzz_target!(|data: &[u8]| {
    let caps = Caps {
        limit: 64 * 1024,
        max_ratio: 50,
    };
    for coding in ["gzip", "x-gzip", "deflate", "br", "zstd", "identity", "bogus"] {
        if let Ok(Some(out)) = decode(coding, data, caps) {
            assert!(out.len() as u64 <= caps.limit, "{coding}: over the size cap");
            assert!(
                // Small bodies may always grow to 1 KiB (decode.rs).
                out.len() as u64 <= (data.len() as u64 * caps.max_ratio).max(1024),
                "{coding}: over the ratio cap"
            );
        }
    }
});
