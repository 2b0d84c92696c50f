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
//!
//! A part that is not finite may still begin and end in a known way
//! (`\.{2,3}` begins and ends with `..`): its prefixes extend the finite
//! run before it and its suffixes start the run after it, so CRS's
//! `(?:^|[/;\x5c])\.{2,3}[/;\x5c]` requires `../`, `..;` or `..\`, not
//! merely a dot.

use regex_syntax::hir::{Capture, Class, ClassBytes, Hir, HirKind, Repetition};

use super::ByteSet;

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
    /// A set of which every match begins with a member (`exact`, when
    /// known); the empty string in it means "anything".
    prefix: Option<Set>,
    /// The same for how every match ends.
    suffix: Option<Set>,
}

impl Info {
    /// A sub-pattern matching exactly the strings of `set` (`None`: unknown).
    fn exact(set: Option<Set>, factor: Option<Set>) -> Info {
        Info {
            prefix: set.clone(),
            suffix: set.clone(),
            exact: set,
            factor,
        }
    }

    fn unknown() -> Info {
        Info::exact(None, None)
    }
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

/// Byte sets every match of `pattern` holds a member of, each of them
/// (where the necessary literals ask for one of a set): a value lacking
/// every byte of one of these sets cannot match. CRS's `^\(\s*\)\s+\{`
/// needs `(`, `)` and `{`, its literal only `(`. The smallest few, smallest
/// first.
pub fn required_byte_sets(pattern: &str) -> Vec<ByteSet> {
    let Some(hir) = parse(pattern) else {
        return Vec::new();
    };
    let mut sets = Vec::new();
    required_bytes(&hir, &mut sets, 0);
    sets.sort_by_key(|set| (set.count(), set.0));
    sets.dedup();
    sets.truncate(MAX_REQUIRED_SETS);
    sets
}

/// How many required byte sets a rule keeps (see `required_byte_sets`).
const MAX_REQUIRED_SETS: usize = 3;
/// A required set with more bytes than this filters too little to keep.
const MAX_REQUIRED_BYTES: u32 = 8;

/// Pushes onto `out` the byte sets every match of `hir` holds a member of.
fn required_bytes(hir: &Hir, out: &mut Vec<ByteSet>, depth: usize) {
    if depth > 200 {
        return;
    }
    let mut keep = |set: ByteSet| {
        if (1..=MAX_REQUIRED_BYTES).contains(&set.count()) {
            out.push(set);
        }
    };
    match hir.kind() {
        HirKind::Literal(lit) => {
            for &b in lit.0.iter() {
                keep(ByteSet::of(&[b]));
            }
        }
        HirKind::Class(Class::Bytes(class)) => {
            let mut set = ByteSet::EMPTY;
            for range in class.iter() {
                for b in range.start()..=range.end() {
                    set.insert(b);
                }
            }
            keep(set);
        }
        HirKind::Capture(Capture { sub, .. }) => required_bytes(sub, out, depth + 1),
        HirKind::Repetition(rep) if rep.min >= 1 => required_bytes(&rep.sub, out, depth + 1),
        HirKind::Concat(parts) => {
            for part in parts {
                required_bytes(part, out, depth + 1);
            }
        }
        // Each branch holds one of its own sets: the union of each
        // branch's smallest is required, if every branch has one.
        HirKind::Alternation(branches) => {
            let mut union = ByteSet::EMPTY;
            for branch in branches {
                let mut own = Vec::new();
                required_bytes(branch, &mut own, depth + 1);
                match own.into_iter().min_by_key(|set| set.count()) {
                    Some(set) => union = union.union(set),
                    None => return,
                }
            }
            keep(union);
        }
        _ => {}
    }
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
        return Info::unknown();
    }
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::exact(Some(vec![Vec::new()]), None),
        HirKind::Literal(lit) => {
            let bytes = lit.0.to_vec();
            let factor = (!bytes.is_empty()).then(|| vec![bytes.clone()]);
            Info::exact(Some(vec![bytes]), factor)
        }
        HirKind::Class(class) => {
            let exact = class_bytes(class);
            Info::exact(exact.clone(), exact)
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
                return Info::exact(exact, None);
            }
            let factor = best(sub.factor, usable(sub.exact.clone()));
            if rep.max == Some(1) {
                return Info { factor, ..sub };
            }
            // At least `min` bodies in a row: their joined exact strings
            // begin and end every match (one body's ends, failing that).
            let repeated = sub.exact.as_ref().and_then(|set| power(set, rep.min));
            let factor = best(factor, usable(repeated.clone()));
            Info {
                exact: None,
                factor,
                prefix: repeated.clone().or(sub.prefix),
                suffix: repeated.or(sub.suffix),
            }
        }
        HirKind::Alternation(branches) => {
            let infos: Vec<Info> = branches.iter().map(|b| analyse(b, depth + 1)).collect();
            let mut exact = Some(Vec::new());
            let mut factor = Some(Vec::new());
            let mut prefix = Some(Vec::new());
            let mut suffix = Some(Vec::new());
            let join = |all: Option<Set>, set: Option<Set>, limit: usize| match (all, set) {
                (Some(mut all), Some(set)) if all.len() + set.len() <= limit => {
                    all.extend(set);
                    Some(all)
                }
                _ => None,
            };
            for info in infos {
                exact = join(exact, info.exact.clone(), MAX_SET);
                prefix = join(prefix, info.prefix, MAX_SET);
                suffix = join(suffix, info.suffix, MAX_SET);
                factor = join(
                    factor,
                    best(info.factor, usable(info.exact)),
                    MAX_FACTOR_SET,
                );
            }
            Info {
                exact,
                factor,
                prefix,
                suffix,
            }
        }
        HirKind::Concat(parts) => {
            let infos: Vec<Info> = parts.iter().map(|p| analyse(p, depth + 1)).collect();
            // The finite run so far: every match has, at this point, just
            // read one of its strings.
            let mut run: Option<Set> = Some(vec![Vec::new()]);
            let mut whole_exact = true;
            let mut factor: Option<Set> = None;
            for info in &infos {
                factor = best(factor, info.factor.clone());
                match (run.take(), &info.exact) {
                    (Some(current), Some(next)) => match cross(&current, next) {
                        Some(joined) => run = Some(joined),
                        None => {
                            // Too many to carry on joining, not too many
                            // to require.
                            let joined = cross_within(&current, next, MAX_FACTOR_SET);
                            factor = best(factor, usable(joined.or(Some(current))));
                            whole_exact = false;
                            run = Some(next.clone());
                        }
                    },
                    (current, _) => {
                        // The run ends where this part begins: joined to
                        // the part's prefixes it is still required.
                        let extended = match (&current, &info.prefix) {
                            (Some(current), Some(prefix)) => {
                                cross_within(current, prefix, MAX_FACTOR_SET)
                            }
                            _ => None,
                        };
                        factor = best(factor, usable(extended.or(current)));
                        whole_exact = false;
                        run = Some(info.suffix.clone().unwrap_or_else(|| vec![Vec::new()]));
                    }
                }
            }
            let exact = if whole_exact { run.clone() } else { None };
            factor = best(factor, usable(run));
            Info {
                prefix: exact
                    .clone()
                    .or_else(|| edge(infos.iter(), |i| &i.prefix, false)),
                suffix: exact
                    .clone()
                    .or_else(|| edge(infos.iter().rev(), |i| &i.suffix, true)),
                exact,
                factor,
            }
        }
    }
}

/// How every match of a concatenation begins (or, `from_end`, ends),
/// given its parts from that edge inward: the finite parts joined, then
/// the first other part's prefix (suffix).
fn edge<'a>(
    parts: impl Iterator<Item = &'a Info>,
    side: impl Fn(&Info) -> &Option<Set>,
    from_end: bool,
) -> Option<Set> {
    let mut joined: Set = vec![Vec::new()];
    for info in parts {
        let (part, last) = match (&info.exact, side(info)) {
            (Some(exact), _) => (exact, false),
            (None, Some(side)) => (side, true),
            (None, None) => return Some(joined),
        };
        let next = if from_end {
            cross(part, &joined)
        } else {
            cross(&joined, part)
        };
        match next {
            Some(next) => joined = next,
            // Too many to join: what is joined so far still begins it.
            None => return Some(joined),
        }
        if last {
            break;
        }
    }
    Some(joined)
}

/// `set` joined to itself `times` times, if that stays small.
fn power(set: &Set, times: u32) -> Option<Set> {
    let mut out: Set = vec![Vec::new()];
    for _ in 0..times.min(8) {
        out = cross(&out, set)?;
    }
    Some(out)
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
    cross_within(a, b, MAX_SET)
}

/// [`cross`] with at most `limit` results.
fn cross_within(a: &Set, b: &Set, limit: usize) -> Option<Set> {
    if a.len() * b.len() > limit {
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

    fn required(p: &str) -> Vec<Vec<u8>> {
        required_byte_sets(p)
            .iter()
            .map(|set| (0..=255u8).filter(|b| set.contains(*b)).collect())
            .collect()
    }

    #[test]
    fn required_bytes_are_those_every_match_passes_through() {
        // CRS 932170: its literal is `(`; `)` and `{` are required too.
        let shellshock = required(r"^\(\s*\)\s+\{");
        for b in [b'(', b')', b'{'] {
            assert!(shellshock.contains(&vec![b]), "{shellshock:?}");
        }
        // An alternation requires one of its branches' bytes.
        assert_eq!(required("(?:ab|cd)"), vec![vec![b'a', b'c']]);
        // Optional parts and large classes require nothing.
        assert_eq!(required("x?y*.+"), Vec::<Vec<u8>>::new());
        // Case-insensitive letters require either case.
        assert_eq!(required("(?i)q"), vec![vec![b'Q', b'q']]);
        // A branch without a requirement leaves the alternation none.
        assert_eq!(required("(?:a|.)"), Vec::<Vec<u8>>::new());
        // Every match of each pattern holds a byte of each set.
        for (pattern, matching) in [
            (r"^\(\s*\)\s+\{", &b"() { :; }"[..]),
            ("(?:ab|cd)e+", b"xcdeee"),
            ("(?i)on[a-z]{3}=", b"ONFOO="),
        ] {
            assert!(
                regex::bytes::Regex::new(pattern)
                    .unwrap()
                    .is_match(matching)
            );
            for set in required_byte_sets(pattern) {
                assert!(matching.iter().any(|b| set.contains(*b)), "{pattern}");
            }
        }
    }

    fn lits(p: &str) -> Option<Vec<String>> {
        necessary_literals(p).map(|s| {
            s.into_iter()
                .map(|x| String::from_utf8_lossy(&x).into_owned())
                .collect()
        })
    }

    #[test]
    fn literals_alternations_and_concatenations() {
        // The blank before `select` is part of every match too.
        assert_eq!(
            lits("union\\s+select"),
            Some(
                [
                    "\tselect",
                    "\nselect",
                    "\x0bselect",
                    "\x0cselect",
                    "\rselect",
                    " select"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(
            lits("(?i)(?:script|iframe)"),
            Some(vec!["iframe".into(), "script".into()])
        );
        assert_eq!(lits("a(?:b|c)d"), Some(vec!["abd".into(), "acd".into()]));
        assert_eq!(lits("\\d+"), None);
        assert_eq!(lits("x?"), None);
        assert_eq!(lits("(?:foo|\\w+)"), None, "one branch requires nothing");
    }

    /// CRS 930110: the dots alone are in every version number; what
    /// follows them is what makes a traversal.
    #[test]
    fn repetitions_join_the_runs_beside_them() {
        assert_eq!(
            lits(r"(?:^|[/;\x5c])\.{2,3}[/;\x5c]"),
            Some(vec!["../".into(), "..;".into(), "..\\".into()])
        );
        assert_eq!(lits("a(?:bc)+d"), Some(vec!["abc".into()]));
        assert_eq!(lits("x(?:ab){2,}"), Some(vec!["xabab".into()]));
        // An optional part ends the run without joining it.
        assert_eq!(lits("qq(?:x|yy)*z"), Some(vec!["qq".into()]));
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
            (r"(?:^|[/;\x5c])\.{2,3}[/;\x5c]", "...;x"),
            (r"(?:^|[/;\x5c])\.{2,3}[/;\x5c]", "a/../b"),
            ("x(?:ab|cd){2,}y", "xabcdcdy"),
            ("(?:a|b)+c", "bbbac"),
            ("(?:ab){2}c", "zababc"),
            ("a(?:bc)+d", "abcbcbcd"),
            ("q(?:x|yy)*z", "qz"),
            ("(?i)[ /]on[a-z]{3,50}=", "x OnLoad=1"),
            ("(?:%2f|/)(?:\\.|%2e){2}(?:%2f|/)", "%2f%2e.%2f"),
            ("(?:foo|ba+r)z", "baaarz"),
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
