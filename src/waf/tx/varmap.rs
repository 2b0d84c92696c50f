//! The variables of a collection (TX, IP, ...), as a transaction keeps
//! them: names lower-cased, names and values inline when short.
//!
//! Every transaction starts from a clone of the TX that CRS's
//! initialisation rules leave (`RuleSet::initial_tx`, some 45 variables)
//! and adds to it (920450 adds one per request header). Nearly all those
//! names fit in 48 bytes and values in 24 (scores, flags): cloned and
//! dropped, they cost no allocation, where a `String` name and a `Vec`
//! value cost two each, some 90 per request.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use smallvec::SmallVec;

/// Bytes kept inline up to `N`, on the heap beyond. Cloned with one copy:
/// `SmallVec`'s own `clone` goes byte by byte, and cost more than the
/// allocations it spared.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct InlineBytes<const N: usize>(SmallVec<[u8; N]>);

impl<const N: usize> InlineBytes<N> {
    pub fn new() -> Self {
        InlineBytes(SmallVec::new())
    }

    pub fn from_slice(bytes: &[u8]) -> Self {
        InlineBytes(SmallVec::from_slice(bytes))
    }

    pub fn from_vec(bytes: Vec<u8>) -> Self {
        InlineBytes(SmallVec::from_vec(bytes))
    }
}

impl<const N: usize> Clone for InlineBytes<N> {
    fn clone(&self) -> Self {
        InlineBytes::from_slice(&self.0)
    }
}

impl<const N: usize> Deref for InlineBytes<N> {
    type Target = SmallVec<[u8; N]>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<const N: usize> DerefMut for InlineBytes<N> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

// `Hash` and `Eq` above are the slice's, so a map keyed by these is
// looked up by `&[u8]`.
impl<const N: usize> Borrow<[u8]> for InlineBytes<N> {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// A variable's name: text, lower-cased (a name from a request is made
/// valid UTF-8 first, as ModSecurity's names are text).
pub type VarName = InlineBytes<48>;

/// A variable's value.
pub type VarValue = InlineBytes<24>;

/// Names are looked up as bytes (`map.get(name.as_bytes())`); they come
/// from requests (`setvar:tx.%{MATCHED_VAR_NAME}`), so the hasher is
/// seeded per process; foldhash, since SipHash showed in every profile.
pub type VarMap = HashMap<VarName, VarValue, foldhash::fast::RandomState>;

/// `name` as the text it holds.
pub fn name_text(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Appends `n` in decimal, with its sign (`setvar` arithmetic).
pub fn push_i64(out: &mut VarValue, n: i64) {
    out.extend_from_slice(crate::decimal::signed(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_inline_or_spilled_are_found_by_their_bytes_and_clone_equal() {
        let long = "x".repeat(200);
        let mut map = VarMap::default();
        for name in [
            "score",
            "header_name_920450_upgrade-insecure-requests",
            &long,
        ] {
            map.insert(
                VarName::from_slice(name.as_bytes()),
                VarValue::from_vec(name.as_bytes().repeat(3)),
            );
        }
        let copy = map.clone();
        for name in [
            "score",
            "header_name_920450_upgrade-insecure-requests",
            &long,
        ] {
            let value = copy.get(name.as_bytes()).map(|v| v.to_vec());
            assert_eq!(value, Some(name.as_bytes().repeat(3)), "{name}");
        }
        assert_eq!(copy, map);
        assert!(!copy.contains_key(b"scor".as_slice()));
    }

    #[test]
    fn signed_numbers_are_written_as_to_string_writes_them() {
        for n in [0, 7, -7, -100, i64::MAX, i64::MIN] {
            let mut out = VarValue::from_slice(b"x");
            push_i64(&mut out, n);
            assert_eq!(out.to_vec(), format!("x{n}").into_bytes());
        }
    }
}
