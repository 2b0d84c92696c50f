//! Request ids: kept from a trusted proxy when well-formed, otherwise made
//! here. Ids are unique per process (a counter) and across restarts and
//! instances (a random per-process prefix); they are not secrets.
//!
//! Each thread counts in its own block of 2^40 ids: a shared counter would
//! bounce one cache line between the serving threads on every request.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

/// The next block of ids to hand to a thread.
static BLOCKS: AtomicU64 = AtomicU64::new(0);
const BLOCK_BITS: u32 = 40;

thread_local! {
    static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

/// A number no other call in this process gets.
fn next_number() -> u64 {
    NEXT.with(|next| {
        let mut n = next.get();
        if n == u64::MAX || n & ((1 << BLOCK_BITS) - 1) == (1 << BLOCK_BITS) - 1 {
            n = BLOCKS.fetch_add(1, Ordering::Relaxed) << BLOCK_BITS;
        }
        next.set(n + 1);
        n
    })
}
static PREFIX: OnceLock<u64> = OnceLock::new();

const MAX_LEN: usize = 128;

/// A new 32-hex-digit id.
pub fn generate() -> HeaderValue {
    let prefix = *PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = next_number();
    let mut text = [0u8; 32];
    write_hex(&mut text[..16], prefix);
    write_hex(&mut text[16..], mix(n));
    // Only hex digits: always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn write_hex(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 60 - 4 * i as u32;
        *byte = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

/// splitmix64: consecutive ids look unrelated, which keeps log greps honest.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether an incoming id is safe to keep: short, and only characters that
/// cannot break a log line or a header.
pub fn is_acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_distinct_and_acceptable() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_acceptable(&a));
    }

    #[test]
    fn hostile_ids_are_refused() {
        assert!(!is_acceptable(&HeaderValue::from_static("a b")));
        assert!(!is_acceptable(&HeaderValue::from_static("\"quoted\"")));
        assert!(!is_acceptable(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
        assert!(is_acceptable(&HeaderValue::from_static("req-42_a.b:c")));
    }
}
