//! CIDR list parsing on arbitrary text: no panic; every entry that parses
//! prints back to itself, and a list reports each bad line by number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::ipgeo::lists::{parse_entry, parse_list};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        if let Ok(net) = parse_entry(line) {
            assert_eq!(parse_entry(&net.to_string()), Ok(net));
        }
    }
    if let Err(bad) = parse_list(text) {
        assert!(!bad.is_empty());
    }
});
