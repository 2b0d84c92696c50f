//! What a rule matched: MATCHED_VARS and MATCHED_VARS_NAMES, and each
//! match's captures, kept in one buffer that the transaction reuses from
//! rule to rule.
//!
//! A rule that matches many values (CRS's 920450 matches every header
//! name, and its chain then every variable the first link set) would
//! otherwise allocate a name, a value and a capture vector per match.

use crate::waf::operator::Captures;
use crate::waf::seclang::ast::Var;

const FIRST_BYTES: usize = 1024;
const FIRST_ENTRIES: usize = 16;

/// The matches of one rule, in the order they were found.
#[derive(Debug, Default)]
pub struct Matches {
    /// Each match's name, value and capture groups, one after another.
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Where each kept capture group ends in `bytes`; an entry owns a run.
    group_ends: Vec<u32>,
}

/// One match: its name starts at `start` and ends at `name_end`, where
/// its value starts; its groups are `group_ends[groups.0..groups.1]`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u32,
    name_end: u32,
    value_end: u32,
    groups: (u32, u32),
}

/// One match as read back.
pub struct Match<'a> {
    /// `VAR:key` (`REQUEST_HEADERS:Host`), as text: a key that is not
    /// UTF-8 has its invalid bytes replaced, as ModSecurity's names are
    /// text.
    pub name: &'a [u8],
    pub value: &'a [u8],
    groups: &'a [u32],
    bytes: &'a [u8],
    value_end: u32,
}

impl Match<'_> {
    /// The capture groups kept with this match (0: the whole match).
    pub fn groups(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = self.value_end as usize;
        self.groups.iter().map(move |&end| {
            let group = self.bytes.get(start..end as usize).unwrap_or_default();
            start = end as usize;
            group
        })
    }
}

impl Matches {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.group_ends.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records a match of the value (`var`, `key`), named as ModSecurity
    /// reports it (`ARGS:id`, `REQUEST_URI`), and with it `caps` when
    /// given. Past 4 GiB in all (no request is that large) a match
    /// is not kept.
    pub fn push(&mut self, var: Var, key: Option<&[u8]>, value: &[u8], caps: Option<&Captures>) {
        let mark = (self.bytes.len(), self.group_ends.len());
        if self.try_push(var, key, value, caps).is_none() {
            self.bytes.truncate(mark.0);
            self.group_ends.truncate(mark.1);
        }
    }

    fn try_push(
        &mut self,
        var: Var,
        key: Option<&[u8]>,
        value: &[u8],
        caps: Option<&Captures>,
    ) -> Option<()> {
        if self.entries.capacity() == 0 {
            // Room for a rule matching every header of a typical request
            // and its chain: grown once per transaction, not step by step.
            self.bytes.reserve(FIRST_BYTES);
            self.entries.reserve(FIRST_ENTRIES);
            self.group_ends.reserve(FIRST_ENTRIES);
        }
        let offset = |bytes: &Vec<u8>| u32::try_from(bytes.len()).ok();
        let start = offset(&self.bytes)?;
        self.bytes.extend_from_slice(var.name().as_bytes());
        if let Some(key) = key {
            self.bytes.push(b':');
            match std::str::from_utf8(key) {
                Ok(_) => self.bytes.extend_from_slice(key),
                Err(_) => self
                    .bytes
                    .extend_from_slice(String::from_utf8_lossy(key).as_bytes()),
            }
        }
        let name_end = offset(&self.bytes)?;
        self.bytes.extend_from_slice(value);
        let value_end = offset(&self.bytes)?;
        let first_group = u32::try_from(self.group_ends.len()).ok()?;
        for group in caps.into_iter().flat_map(Captures::iter) {
            self.bytes.extend_from_slice(group);
            self.group_ends.push(offset(&self.bytes)?);
        }
        let groups = (first_group, u32::try_from(self.group_ends.len()).ok()?);
        self.entries.push(Entry {
            start,
            name_end,
            value_end,
            groups,
        });
        Some(())
    }

    pub fn get(&self, index: usize) -> Option<Match<'_>> {
        let entry = self.entries.get(index)?;
        let (start, name_end, value_end) = (
            entry.start as usize,
            entry.name_end as usize,
            entry.value_end as usize,
        );
        Some(Match {
            name: self.bytes.get(start..name_end)?,
            value: self.bytes.get(name_end..value_end)?,
            groups: self
                .group_ends
                .get(entry.groups.0 as usize..entry.groups.1 as usize)?,
            bytes: &self.bytes,
            value_end: entry.value_end,
        })
    }

    pub fn last(&self) -> Option<Match<'_>> {
        self.get(self.len().checked_sub(1)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = Match<'_>> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(groups: &[&[u8]]) -> Captures {
        let mut caps = Captures::new();
        for g in groups {
            caps.push(g);
        }
        caps
    }

    /// A match as plain data: name, value, groups.
    type Read = (Vec<u8>, Vec<u8>, Vec<Vec<u8>>);

    #[test]
    fn matches_read_back_as_recorded_with_their_own_groups() {
        let mut m = Matches::default();
        m.push(
            Var::RequestHeadersNames,
            Some(b"Host"),
            b"Host",
            Some(&caps(&[b"host"])),
        );
        m.push(Var::Args, Some(b"q"), b"blue shoes", None);
        m.push(
            Var::RequestUri,
            None,
            b"/a?b",
            Some(&caps(&[b"/a", b"", b"b"])),
        );
        m.push(Var::Args, Some(b"k\xff"), b"\x00v", Some(&caps(&[])));
        assert_eq!(m.len(), 4);
        let read: Vec<Read> = m
            .iter()
            .map(|e| {
                (
                    e.name.to_vec(),
                    e.value.to_vec(),
                    e.groups().map(<[u8]>::to_vec).collect(),
                )
            })
            .collect();
        assert_eq!(
            read,
            vec![
                (
                    b"REQUEST_HEADERS_NAMES:Host".to_vec(),
                    b"Host".to_vec(),
                    vec![b"host".to_vec()]
                ),
                (b"ARGS:q".to_vec(), b"blue shoes".to_vec(), vec![]),
                (
                    b"REQUEST_URI".to_vec(),
                    b"/a?b".to_vec(),
                    vec![b"/a".to_vec(), b"".to_vec(), b"b".to_vec()]
                ),
                (
                    "ARGS:k\u{fffd}".as_bytes().to_vec(),
                    b"\x00v".to_vec(),
                    vec![]
                ),
            ]
        );
        assert_eq!(m.last().map(|e| e.value.to_vec()), Some(b"\x00v".to_vec()));
        m.clear();
        assert!(m.is_empty() && m.last().is_none() && m.get(0).is_none());
        m.push(Var::Args, Some(b"a"), b"1", None);
        assert_eq!(m.get(0).map(|e| e.name.to_vec()), Some(b"ARGS:a".to_vec()));
    }

    #[test]
    fn captures_keep_ten_groups_and_read_back_each() {
        let mut c = Captures::new();
        for i in 0..12u8 {
            c.push(&vec![b'a' + i; usize::from(i)]);
        }
        assert_eq!(c.len(), 10);
        for i in 0..10u8 {
            assert_eq!(
                c.get(usize::from(i)),
                Some(&vec![b'a' + i; usize::from(i)][..])
            );
        }
        assert_eq!(c.get(10), None);
        let copy = c.clone();
        c.clear();
        assert!(c.is_empty() && c.get(0).is_none());
        assert_eq!(copy.iter().count(), 10);
    }
}
