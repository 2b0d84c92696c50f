//! A seeded xorshift generator for the randomised unit tests: the same
//! cases on every run, so a failure can be replayed, and no dependency.

/// Successive pseudo-random numbers from `seed` (which must not be 0).
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
