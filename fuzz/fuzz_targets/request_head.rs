//! The request head parser and the sanitiser on arbitrary bytes: no panic;
//! an accepted head has one framing (never Content-Length with
//! Transfer-Encoding, never two lengths); once sanitised for the backend it
//! holds no hop-by-hop field and no `_` alias, and sanitising again changes
//! nothing; its path normalises idempotently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::pipeline::canonical::canonical_path;
use palisade::server::h1::{BodyFraming, parse_head};
use palisade::upstream::headers::{drop_underscored, is_hop_by_hop, strip_hop_by_hop};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((parts, framing))) = parse_head(data) else {
        return;
    };
    let headers = &parts.headers;
    let lengths = headers.get_all(http::header::CONTENT_LENGTH).iter().count();
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    assert!(!(chunked && lengths > 0), "both framings");
    assert!(lengths <= 1, "several lengths");
    assert_eq!(framing == BodyFraming::Chunked, chunked);
    let mut once = parts.headers.clone();
    strip_hop_by_hop(&mut once);
    drop_underscored(&mut once);
    for name in once.keys() {
        assert!(!is_hop_by_hop(name) && !name.as_str().contains('_'), "{name} kept");
    }
    let mut twice = once.clone();
    strip_hop_by_hop(&mut twice);
    drop_underscored(&mut twice);
    assert_eq!(once, twice);
    if let Ok(path) = canonical_path(parts.uri.path()) {
        assert_eq!(canonical_path(&path).as_deref(), Ok(&*path));
    }
});
