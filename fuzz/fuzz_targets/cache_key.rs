//! The cache key on arbitrary targets: no panic, and the key of a target is
//! the key of its own normalised form (normalising twice changes nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::cache::key::{KeyParts, primary};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let parts = KeyParts {
        ignore_query_params: vec!["utm_source".into()],
        ..KeyParts::default()
    };
    let key = primary("http", "site.test", target, &parts);
    let Some(rest) = key.strip_prefix("http://site.test") else {
        panic!("key {key} lost its origin");
    };
    assert_eq!(primary("http", "site.test", rest, &parts), key);
});
