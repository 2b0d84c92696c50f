//! Property tests (proptest) for the invariants the fuzz targets in `fuzz/`
//! check, run with the ordinary test suite: normalisation is idempotent,
//! decoders never grow their input, the cache key ignores only what RFC
//! 3986 makes equivalent, negotiation picks only what was offered, the
//! request-body decoder never outgrows its cap, CIDR entries round-trip.

use std::io::Write;

use http::HeaderValue;
use palisade::cache::key::{KeyParts, primary};
use palisade::compress::Coding;
use palisade::compress::decode::{Caps, DecodeError, decode};
use palisade::compress::negotiate::choose;
use palisade::ipgeo::lists::parse_entry;
use palisade::pipeline::canonical::{canonical_path, routing_path};
use palisade::server::h1::{BodyFraming, parse_head};
use palisade::upstream::headers::{drop_underscored, is_hop_by_hop, strip_hop_by_hop};
use palisade::waf::transform::invariants;
use proptest::prelude::*;

/// Paths made of the pieces path tricks use: dot segments, encoded dots
/// and slashes, `;` parameters, doubled slashes, unreserved letters.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just("%2f".to_string()),
        Just("%41".to_string()),
        Just("%7e".to_string()),
        Just(";p=1".to_string()),
        "[a-zA-Z0-9_~-]{1,4}",
        "%[0-9a-fA-F]{2}",
        // Raw non-ASCII, as some clients send it unencoded.
        "[\u{80}-\u{7ff}\u{800}-\u{ffff}]{1,2}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|parts| format!("/{}", parts.concat()))
}

/// Request heads assembled from the pieces smuggling and header-alias
/// attacks use.
fn hostile_head() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("Host: site.test\r\n"),
        Just("Host: other.test\r\n"),
        Just("Content-Length: 5\r\n"),
        Just("Content-Length: 6\r\n"),
        Just("Content-Length: 5, 5\r\n"),
        Just("Content-Length: +5\r\n"),
        Just("Transfer-Encoding: chunked\r\n"),
        Just("Transfer-Encoding: chunked, chunked\r\n"),
        Just("Transfer-Encoding: gzip, chunked\r\n"),
        Just("Transfer-Encoding : chunked\r\n"),
        Just("Transfer_Encoding: chunked\r\n"),
        Just("X-Forwarded_For: 10.0.0.1\r\n"),
        Just("Connection: close, X-Secret\r\n"),
        Just("Connection: keep-alive\r\n"),
        Just("X-Secret: 1\r\n"),
        Just("TE: trailers\r\n"),
        Just("Upgrade: websocket\r\n"),
        Just("Keep-Alive: timeout=5\r\n"),
        Just("Proxy-Connection: keep-alive\r\n"),
        Just("X-Folded: a\r\n b\r\n"),
        Just("X-Bare: a\nX-Next: b\r\n"),
        Just("X-Ctl: a\x01b\r\n"),
        Just("Expect: 100-continue\r\n"),
    ];
    let start = prop_oneof![
        Just("GET / HTTP/1.1\r\n"),
        Just("POST /form HTTP/1.1\r\n"),
        Just("POST /form HTTP/1.0\r\n"),
        Just("GET /x/../admin HTTP/1.1\r\n"),
        Just("GET http://site.test/abs HTTP/1.1\r\n"),
        Just("GET /\r\n"),
        Just("GET / HTTP/2.0\r\n"),
        Just("GET / HTTP/1.1 \r\n"),
    ];
    (start, prop::collection::vec(line, 0..8)).prop_map(|(start, lines)| {
        let mut head = start.as_bytes().to_vec();
        for l in lines {
            head.extend_from_slice(l.as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    })
}

/// SecLang text made of directive pieces, quotes, escapes and line
/// continuations, the places a reader's line accounting goes wrong.
fn seclang_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("SecRule ".to_string()),
        Just("SecAction ".to_string()),
        Just("SecMarker END\n".to_string()),
        Just("ARGS|REQUEST_HEADERS:User-Agent ".to_string()),
        Just("\"@rx a(b\" ".to_string()),
        Just("\"@rx ^x$\" ".to_string()),
        Just("\"id:1,phase:2,deny,t:lowercase\"".to_string()),
        Just("\"id:2,phase:9\"".to_string()),
        Just("'msg:\\'quoted\\''".to_string()),
        Just(" \\\n  ".to_string()),
        Just("\n".to_string()),
        Just("# comment \\\n".to_string()),
        Just("\"".to_string()),
        Just("SecRuleEngine DetectionOnly\n".to_string()),
        Just("SecNoSuchThing on\n".to_string()),
        "[a-zA-Z:@|,\"' ]{0,12}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
}

/// CIDR text: mostly well-formed v4 and v6 blocks and bare addresses,
/// some noise.
fn cidr_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f:./]{1,43}",
        (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(a, len)| { format!("{}/{len}", std::net::Ipv4Addr::from(a)) }),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, len)| { format!("{}/{len}", std::net::Ipv6Addr::from(a)) }),
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn path_normalisation_is_idempotent_and_leaves_no_dot_segment(path in tricky_path()) {
        if let Ok(once) = canonical_path(&path) {
            let twice = canonical_path(&once);
            prop_assert_eq!(twice.as_deref(), Ok(&*once), "{}", path);
            prop_assert!(
                !once.split('/').any(|s| s == "." || s == ".."),
                "{} -> {}", path, once
            );
            let routed = routing_path(&once);
            prop_assert_eq!(routing_path(&routed), routed.clone());
            prop_assert!(!routed.contains("//") && !routed.contains(';'), "{}", routed);
        }
    }

    /// A head that is accepted has one unambiguous framing, and once
    /// sanitised for the backend holds no hop-by-hop field, no field its
    /// Connection named, no `_` alias; sanitising again changes nothing.
    #[test]
    fn accepted_heads_have_one_framing_and_sanitise_idempotently(head in hostile_head()) {
        let Ok(Some((parts, framing))) = parse_head(&head) else { return Ok(()) };
        let text = String::from_utf8_lossy(&head).into_owned();
        let headers = &parts.headers;
        let lengths: Vec<_> = headers.get_all(http::header::CONTENT_LENGTH).iter().collect();
        let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
        prop_assert!(!chunked || lengths.is_empty(), "both framings: {}", text);
        prop_assert!(lengths.len() <= 1, "several lengths: {}", text);
        match framing {
            BodyFraming::Chunked => prop_assert!(chunked, "{}", text),
            BodyFraming::Length(n) => {
                let declared = n.to_string();
                prop_assert_eq!(
                    lengths.first().and_then(|v| v.to_str().ok()),
                    Some(declared.as_str())
                );
            }
            BodyFraming::None => prop_assert!(!chunked, "{}", text),
        }
        let mut sanitised = parts.headers.clone();
        let named: Vec<String> = sanitised
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect();
        strip_hop_by_hop(&mut sanitised);
        drop_underscored(&mut sanitised);
        for name in sanitised.keys() {
            prop_assert!(!is_hop_by_hop(name), "{} kept: {}", name, text);
            prop_assert!(!name.as_str().contains('_'), "{} kept: {}", name, text);
            prop_assert!(!named.iter().any(|n| n == name.as_str()), "{} kept: {}", name, text);
        }
        let mut again = sanitised.clone();
        strip_hop_by_hop(&mut again);
        drop_underscored(&mut again);
        prop_assert_eq!(again, sanitised);
    }

    #[test]
    fn any_path_bytes_are_normalised_or_refused_never_a_panic(path in "/[ -~]{0,40}") {
        let _ = canonical_path(&path).map(|c| routing_path(&c).into_owned());
    }

    #[test]
    fn transformations_keep_their_invariants(input in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(broken) = invariants::check_all(&input) {
            prop_assert!(false, "{}", broken);
        }
    }

    #[test]
    fn transformations_keep_their_invariants_on_encoded_text(
        input in "[%&#\\\\a-fA-F0-9uxX;<>'\" /*+.-]{0,48}"
    ) {
        if let Err(broken) = invariants::check_all(input.as_bytes()) {
            prop_assert!(false, "{}", broken);
        }
    }

    /// Encoding unreserved characters, or changing the case of an escape,
    /// never changes the key; anything else the origin could tell apart
    /// (a reserved character encoded) does.
    #[test]
    fn cache_key_ignores_only_equivalent_encodings(
        segments in prop::collection::vec("[a-zA-Z0-9._~-]{1,6}", 1..5),
        encode in prop::collection::vec(any::<bool>(), 0..32),
    ) {
        let plain = format!("/{}", segments.join("/"));
        let mut encoded = String::new();
        for (i, c) in plain.chars().enumerate() {
            if c != '/' && encode.get(i).copied().unwrap_or(false) {
                if i % 2 == 0 {
                    encoded.push_str(&format!("%{:02X}", c as u32));
                } else {
                    encoded.push_str(&format!("%{:02x}", c as u32));
                }
            } else {
                encoded.push(c);
            }
        }
        let parts = KeyParts::default();
        prop_assert_eq!(
            primary("http", "site.test", &plain, &parts),
            primary("http", "site.test", &encoded, &parts)
        );
        let slash = format!("{}%2F{}", plain, segments[0]);
        let literal = format!("{}/{}", plain, segments[0]);
        prop_assert_ne!(
            primary("http", "site.test", &slash, &parts),
            primary("http", "site.test", &literal, &parts)
        );
    }

    /// Negotiation only ever picks an offered coding, and never one the
    /// client refused with q=0.
    #[test]
    fn negotiation_picks_only_what_was_offered_and_accepted(
        header in "[a-z*, ;=.0-9q]{0,40}",
        offer in prop::sample::subsequence(vec![Coding::Brotli, Coding::Zstd, Coding::Gzip], 0..=3),
    ) {
        let Ok(value) = HeaderValue::from_str(&header) else { return Ok(()) };
        if let Some(chosen) = choose(std::slice::from_ref(&value), &offer) {
            prop_assert!(offer.contains(&chosen), "{:?} not offered", chosen);
            let refused = format!("{};q=0", chosen.token());
            prop_assert!(
                !header.split(',').any(|p| p.replace(' ', "") == refused),
                "{} chosen though refused in {}", chosen.token(), header
            );
        }
    }

    /// Whatever the body decodes to, the decoder stops at the cap: the
    /// output is within it or the answer is TooLarge, never more bytes.
    #[test]
    fn request_body_decoder_never_outgrows_its_cap(
        size in 0usize..200_000,
        byte in any::<u8>(),
        limit in 1u64..100_000,
    ) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![byte; size]).unwrap();
        let body = gz.finish().unwrap();
        let caps = Caps { limit, max_ratio: u64::MAX };
        match decode("gzip", &body, caps) {
            Ok(Some(out)) => {
                prop_assert!(out.len() as u64 <= limit);
                prop_assert_eq!(out.len(), size);
            }
            Ok(None) => prop_assert!(false, "gzip was not decoded"),
            Err(DecodeError::TooLarge) => prop_assert!(size as u64 > limit),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }

    /// The SecLang reader never panics, and every error it reports points
    /// at a line of the input, named `file:line`.
    #[test]
    fn seclang_errors_point_at_a_line_of_the_input(text in seclang_text()) {
        let lines = text.split('\n').count();
        if let Err(errors) = palisade::waf::seclang::load_str("prop.conf", &text) {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!((1..=lines).contains(&e.origin.line), "{} in {:?}", e, text);
                prop_assert!(e.to_string().starts_with("prop.conf:"), "{}", e);
            }
        }
    }

    /// A CIDR entry that parses prints back to itself; any text either
    /// parses or is refused, never a panic.
    #[test]
    fn cidr_entries_round_trip(text in cidr_text()) {
        if let Ok(net) = parse_entry(&text) {
            prop_assert_eq!(parse_entry(&net.to_string()), Ok(net));
        }
    }
}
