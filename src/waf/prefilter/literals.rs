//! Necessary literals of a regex: a set of byte strings such that every
//! match of the pattern contains at least one of them (compared without
//! ASCII case). A value that contains none cannot match, so the engine can
//! skip the regex; one automaton over the literals of all rules then
//! answers "which rules could match this value" in a single pass.
//!
//! The analysis walks the pattern's syntax tree: a literal requires itself,
//! a concatenation requires the best requirement of its parts (adjacent
//! finite parts are joined into longer strings), an alternation requires
//! one of its branches' requirements, a repetition of at least one requires
//! its body's. Anything it cannot bound (classes too large to expand, an
//! optional part) requires nothing, which only makes the filter weaker,
//! never wrong.

use regex_syntax::hir::{Capture, Class, ClassBytes, Hir, HirKind, Repetition};

/// Finite sets larger than this are given up on.
const MAX_SET: usize = 64;
/// A requirement may be this many literals: CRS's command lists name a
/// few hundred commands, each of which the automaton then looks for.
const MAX_FACTOR_SET: usize = 1024;
/// Classes with more members than this are not expanded.
const MAX_CLASS: usize = 8;

type Set = Vec<Vec<u8>>;

/// What a sub-pattern matches, as far as the analysis can tell.
struct Info {
    /// Every string it matches, when that is a small finite set.
    exact: Option<Set>,
    /// A set of which every match contains a member.
    factor: Option<Set>,
}

/// The necessary literals of rule regex `pattern` (as compiled, so after
/// `\x{HH}` rewriting), lower-cased; `None` when no useful set exists.
pub fn necessary_literals(pattern: &str) -> Option<Set> {
    literals_of(&parse(pattern)?)
}

/// The necessary literals of `pattern` on inputs made only of `allowed`
/// bytes. CRS's command-injection patterns accept quotes, backslashes
/// and `$VAR` noise between the letters of each command name, so they
/// need no literal in general; on a value without those bytes the noise
/// cannot occur and each command must appear spelled out.
pub fn necessary_literals_within(pattern: &str, allowed: &ClassBytes) -> Option<Set> {
    literals_of(&restrict(&parse(pattern)?, allowed, 0))
}

fn parse(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .build()
        .parse(pattern)
        .ok()
}

fn literals_of(hir: &Hir) -> Option<Set> {
    let info = analyse(hir, 0);
    let set = best(info.factor, usable(info.exact))?;
    let mut lowered: Set = set.into_iter().map(|s| s.to_ascii_lowercase()).collect();
    lowered.sort();
    lowered.dedup();
    // A requirement met by any single common byte filters nothing.
    if lowered.iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(lowered)
}

/// `hir` matching only strings of `allowed` bytes: classes narrowed,
/// literals with other bytes made impossible. Whatever is left alone (a
/// Unicode class, depth past the bound) only matches more, which keeps the
/// literals found necessary.
fn restrict(hir: &Hir, allowed: &ClassBytes, depth: usize) -> Hir {
    if depth > 200 {
        return hir.clone();
    }
    let inner = |sub: &Hir| Box::new(restrict(sub, allowed, depth + 1));
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) | HirKind::Class(Class::Unicode(_)) => hir.clone(),
        HirKind::Literal(lit) => {
            let fits = lit
                .0
                .iter()
                .all(|b| allowed.iter().any(|r| (r.start()..=r.end()).contains(b)));
            if fits { hir.clone() } else { Hir::fail() }
        }
        HirKind::Class(Class::Bytes(class)) => {
            let mut narrowed = class.clone();
            narrowed.intersect(allowed);
            Hir::class(Class::Bytes(narrowed))
        }
        HirKind::Repetition(rep) => {
            let sub = inner(&rep.sub);
            match (is_fail(&sub), rep.min) {
                (true, 0) => Hir::empty(),
                (true, _) => Hir::fail(),
                (false, _) => Hir::repetition(Repetition { sub, ..rep.clone() }),
            }
        }
        HirKind::Capture(cap) => {
            let sub = inner(&cap.sub);
            if is_fail(&sub) {
                Hir::fail()
            } else {
                Hir::capture(Capture { sub, ..cap.clone() })
            }
        }
        HirKind::Concat(parts) => {
            let parts: Vec<Hir> = parts.iter().map(|p| *inner(p)).collect();
            if parts.iter().any(is_fail) {
                Hir::fail()
            } else {
                Hir::concat(parts)
            }
        }
        HirKind::Alternation(branches) => {
            let branches: Vec<Hir> = branches
                .iter()
                .map(|b| *inner(b))
                .filter(|b| !is_fail(b))
                .collect();
            if branches.is_empty() {
                Hir::fail()
            } else {
                Hir::alternation(branches)
            }
        }
    }
}

/// Whether `hir` matches nothing at all.
fn is_fail(hir: &Hir) -> bool {
    matches!(hir.kind(), HirKind::Class(Class::Bytes(c)) if c.ranges().is_empty())
}

fn analyse(hir: &Hir, depth: usize) -> Info {
    if depth > 200 {
        return Info {
            exact: None,
            factor: None,
        };
    }
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info {
            exact: Some(vec![Vec::new()]),
            factor: None,
        },
        HirKind::Literal(lit) => {
            let bytes = lit.0.to_vec();
            Info {
                factor: (!bytes.is_empty()).then(|| vec![bytes.clone()]),
                exact: Some(vec![bytes]),
            }
        }
        HirKind::Class(class) => {
            let exact = class_bytes(class);
            Info {
                factor: exact.clone(),
                exact,
            }
        }
        HirKind::Capture(cap) => analyse(&cap.sub, depth + 1),
        HirKind::Repetition(rep) => {
            let sub = analyse(&rep.sub, depth + 1);
            if rep.min == 0 {
                let exact = match (rep.max, sub.exact) {
                    (Some(1), Some(mut set)) if set.len() < MAX_SET => {
                        set.push(Vec::new());
                        Some(set)
                    }
                    _ => None,
                };
                Info {
                    exact,
                    factor: None,
                }
            } else {
                let factor = best(sub.factor, usable(sub.exact.clone()));
                let exact = if rep.min == 1 && rep.max == Some(1) {
                    sub.exact
                } else {
                    None
                };
                Info { exact, factor }
            }
        }
        HirKind::Alternation(branches) => {
            let infos: Vec<Info> = branches.iter().map(|b| analyse(b, depth + 1)).collect();
            let mut exact = Some(Vec::new());
            let mut factor = Some(Vec::new());
            for info in infos {
                exact = match (exact, info.exact.clone()) {
                    (Some(mut all), Some(set)) if all.len() + set.len() <= MAX_SET => {
                        all.extend(set);
                        Some(all)
                    }
                    _ => None,
                };
                factor = match (factor, best(info.factor, usable(info.exact))) {
                    (Some(mut all), Some(set)) if all.len() + set.len() <= MAX_FACTOR_SET => {
                        all.extend(set);
                        Some(all)
                    }
                    _ => None,
                };
            }
            Info { exact, factor }
        }
        HirKind::Concat(parts) => {
            let mut run: Option<Set> = Some(vec![Vec::new()]);
            let mut whole_exact = true;
            let mut factor: Option<Set> = None;
            for part in parts {
                let info = analyse(part, depth + 1);
                factor = best(factor, info.factor);
                match (run.take(), info.exact) {
                    (Some(current), Some(next)) => match cross(&current, &next) {
                        Some(joined) => run = Some(joined),
                        None => {
                            factor = best(factor, usable(Some(current)));
                            whole_exact = false;
                            run = Some(next);
                        }
                    },
                    (current, _) => {
                        factor = best(factor, usable(current));
                        whole_exact = false;
                        run = Some(vec![Vec::new()]);
                    }
                }
            }
            let exact = if whole_exact { run.clone() } else { None };
            factor = best(factor, usable(run));
            Info { exact, factor }
        }
    }
}

/// The bytes of a small class.
fn class_bytes(class: &Class) -> Option<Set> {
    let mut out = Vec::new();
    match class {
        Class::Bytes(bytes) => {
            for range in bytes.iter() {
                for b in range.start()..=range.end() {
                    out.push(vec![b]);
                    if out.len() > MAX_CLASS {
                        return None;
                    }
                }
            }
        }
        Class::Unicode(chars) => {
            for range in chars.iter() {
                for c in range.start()..=range.end() {
                    let b = u8::try_from(u32::from(c)).ok()?;
                    out.push(vec![b]);
                    if out.len() > MAX_CLASS {
                        return None;
                    }
                }
            }
        }
    }
    // Case variants of one letter fold to one requirement.
    let mut lowered: Set = out.into_iter().map(|s| s.to_ascii_lowercase()).collect();
    lowered.sort();
    lowered.dedup();
    Some(lowered)
}

/// Every `a` followed by every `b`, if the result stays small.
fn cross(a: &Set, b: &Set) -> Option<Set> {
    if a.len() * b.len() > MAX_SET {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut s = x.clone();
            s.extend_from_slice(y);
            out.push(s);
        }
    }
    Some(out)
}

/// An exact set used as a requirement: only if it has no empty string.
fn usable(set: Option<Set>) -> Option<Set> {
    set.filter(|s| !s.is_empty() && s.iter().all(|x| !x.is_empty()))
}

/// The stronger of two requirements: the one whose weakest member is
/// rarest in ordinary text, then the one with fewer members. A member's
/// rarity is its length, with a byte other than a letter, digit or blank
/// counting as four letters: `$` filters more form text than `abs` does.
fn best(a: Option<Set>, b: Option<Set>) -> Option<Set> {
    let rarity = |l: &Vec<u8>| {
        let punctuation = l.iter().any(|b| !b.is_ascii_alphanumeric() && *b != b' ');
        l.len() + if punctuation { 4 } else { 0 }
    };
    let score = |s: &Set| {
        let min = s.iter().map(rarity).min().unwrap_or(0);
        (min.min(8), usize::MAX - s.len())
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        necessary_literals(p).map(|s| {
            s.into_iter()
                .map(|x| String::from_utf8_lossy(&x).into_owned())
                .collect()
        })
    }

    #[test]
    fn literals_alternations_and_concatenations() {
        assert_eq!(lits("union\\s+select"), Some(vec!["select".into()]));
        assert_eq!(
            lits("(?i)(?:script|iframe)"),
            Some(vec!["iframe".into(), "script".into()])
        );
        assert_eq!(lits("a(?:b|c)d"), Some(vec!["abd".into(), "acd".into()]));
        assert_eq!(lits("\\d+"), None);
        assert_eq!(lits("x?"), None);
        assert_eq!(lits("(?:foo|\\w+)"), None, "one branch requires nothing");
    }

    #[test]
    fn noise_free_values_must_spell_the_word_out() {
        let pattern = r#"(?i)c["'\\]*a["'\\]*t\b"#;
        let anywhere = necessary_literals(pattern).unwrap_or_default();
        assert!(anywhere.iter().all(|l| l.len() == 1), "{anywhere:?}");
        let plain = ClassBytes::new([
            regex_syntax::hir::ClassBytesRange::new(b'a', b'z'),
            regex_syntax::hir::ClassBytesRange::new(b'A', b'Z'),
            regex_syntax::hir::ClassBytesRange::new(b' ', b' '),
        ]);
        assert_eq!(
            necessary_literals_within(pattern, &plain),
            Some(vec![b"cat".to_vec()])
        );
    }

    /// The filter may never reject a value the regex matches.
    #[test]
    fn never_rejects_a_match() {
        let cases = [
            ("(?i)<script[^>]*>", "<ScRiPt src=x>"),
            ("(?i:sel)ect", "SELect"),
            ("ab(?:cd|ef)+gh", "abefcdgh"),
            ("[Uu]nion", "xUnion"),
            ("\\x{e2}\\x80", "\u{2022}"),
        ];
        for (pattern, input) in cases {
            let re = crate::waf::operator::regex(pattern).unwrap();
            assert!(re.is_match(input.as_bytes()), "{pattern} on {input}");
            if let Some(set) = necessary_literals(re.as_str()) {
                let lower = input.as_bytes().to_ascii_lowercase();
                assert!(
                    set.iter()
                        .any(|l| lower.windows(l.len()).any(|w| w == l.as_slice())),
                    "{pattern}: {set:?} rejects {input}"
                );
            }
        }
    }
}
