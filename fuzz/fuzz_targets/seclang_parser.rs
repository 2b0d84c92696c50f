//! The SecLang reader on arbitrary text: it never panics, and every error
//! it reports points at a line of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade::waf::seclang;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Include would read files of this machine, whose errors point into
    // them; the reader's own line accounting is what is under test.
    if text.to_ascii_lowercase().contains("include") {
        return;
    }
    let lines = text.split('\n').count();
    if let Err(errors) = seclang::load_str("fuzz.conf", &text) {
        assert!(!errors.is_empty(), "Err without errors");
        for e in &errors {
            assert!(
                (1..=lines).contains(&e.origin.line),
                "error on line {} of a {lines}-line input: {e}",
                e.origin.line
            );
            assert!(e.to_string().starts_with("fuzz.conf:"), "{e}");
        }
    }
});
