//! `@detectXSS`: libinjection's HTML5 tokenizer (through the libinjectionrs
//! port), behind a shortcut that clears most values without running it.
//!
//! The shortcut is a proof, not a guess. libinjection parses the value in
//! five contexts and flags it only on one of these tokens: a doctype, an
//! opening tag name or a comment (each reachable only through a `<`), or an
//! attribute value that follows a suspicious attribute name (reachable only
//! through an `=`: the value a quoted context starts in has no name before
//! it, so it flags nothing). A value with neither `<` nor `=` makes none of
//! them. The tests below check this against the crate over random values.

/// Whether libinjection calls `input` cross-site scripting.
pub fn detect(input: &[u8]) -> bool {
    if cannot_be_xss(input) {
        return false;
    }
    libinjectionrs::detect_xss(input).is_injection()
}

/// True when no context can turn `input` into a flagged token (see the
/// module doc). False means only "not proven".
pub fn cannot_be_xss(input: &[u8]) -> bool {
    !input.iter().any(|b| matches!(b, b'<' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Differential: values built from everything the tokenizer reacts to
    /// except `<` and `=` (quotes, `>`, `/`, blanks, NUL, `!`, `?`, `%`,
    /// letters of black tags and attributes), none of which libinjection
    /// flags; and the same values with a `<` or `=` spliced in are still
    /// handed to it.
    #[test]
    fn values_without_lt_or_equals_are_never_xss() {
        let pieces: [&[u8]; 24] = [
            b"script",
            b"onload",
            b"onerror",
            b"style",
            b"href",
            b"src",
            b"xmlns",
            b"javascript:",
            b"'",
            b"\"",
            b"`",
            b">",
            b"/",
            b" ",
            b"\t",
            b"\0",
            b"!",
            b"?",
            b"%",
            b"--",
            b"DOCTYPE",
            b"[CDATA[",
            b"alert(1)",
            b"x",
        ];
        let mut next = super::super::random_below(0x9e37_79b9_7f4a_7c15u64);
        let mut flagged_once_spliced = 0;
        for _ in 0..30_000 {
            let mut value = Vec::new();
            for _ in 0..1 + next(10) {
                value.extend_from_slice(pieces[next(pieces.len())]);
            }
            assert!(cannot_be_xss(&value));
            assert!(
                !libinjectionrs::detect_xss(&value).is_injection(),
                "libinjection flags {:?}, which has no < or =",
                String::from_utf8_lossy(&value)
            );
            let at = next(value.len() + 1);
            value.insert(at, if next(2) == 0 { b'<' } else { b'=' });
            assert!(!cannot_be_xss(&value));
            flagged_once_spliced += usize::from(detect(&value));
        }
        assert!(
            flagged_once_spliced > 100,
            "only {flagged_once_spliced} spliced values flagged: the pieces no longer exercise the tokenizer"
        );
        assert!(detect(b"<script>alert(1)</script>"));
        assert!(detect(b"x onerror=alert(1)"));
    }
}
