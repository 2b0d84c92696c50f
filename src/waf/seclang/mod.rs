//! SecLang, the ModSecurity rule language: reading rule files (with
//! `Include`) into rules and engine settings, reporting every problem as
//! `file:line: message`, all at once.

pub mod ast;
mod lines;
pub mod names;
pub mod parse;
pub mod var;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use ast::{EngineSettings, Item, RuleAst};
pub use parse::Diag;

/// `Include` nesting deeper than this is refused (and catches cycles that
/// go through differently spelled paths).
const MAX_INCLUDE_DEPTH: usize = 16;
/// A rule file larger than this is refused.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A loaded rule set.
#[derive(Debug)]
pub struct RuleSource {
    pub items: Vec<Item>,
    pub settings: EngineSettings,
    pub warnings: Vec<Diag>,
}

impl RuleSource {
    pub fn rule_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Rule(_)))
            .count()
    }
}

/// Reads `files` in order (each may `Include` more) into one rule set.
/// `Err` holds every error found.
pub fn load(files: &[PathBuf]) -> Result<RuleSource, Vec<Diag>> {
    let mut parser = parse::Parser::default();
    let mut stack = Vec::new();
    for file in files {
        load_file(&mut parser, file, &mut stack, None);
    }
    parser.finish();
    check_operators(&mut parser);
    finish(parser)
}

/// Compiles every operator once, so a bad regex or a missing data file is
/// reported with the rule's file and line at load; the compiled operator
/// stays with the rule for `RuleSet::compile`.
fn check_operators(parser: &mut parse::Parser) {
    fn visit(rule: &mut RuleAst, errors: &mut Vec<Diag>) {
        let base = rule.origin.file.parent().unwrap_or(Path::new(""));
        match crate::waf::operator::Operator::compile(
            &rule.operator.name,
            &rule.operator.param,
            base,
        ) {
            Ok(op) => rule.operator.compiled = ast::Compiled(Some(Arc::new(op))),
            Err(message) => errors.push(Diag {
                origin: rule.origin.clone(),
                message,
            }),
        }
        for chained in &mut rule.chain {
            visit(chained, errors);
        }
    }
    let mut errors = Vec::new();
    for item in &mut parser.items {
        if let Item::Rule(rule) = item {
            visit(rule, &mut errors);
        }
    }
    parser.errors.extend(errors);
}

/// Parses rules given as text, as if read from `name` (relative `Include`s
/// resolve against the current directory).
pub fn load_str(name: &str, text: &str) -> Result<RuleSource, Vec<Diag>> {
    let mut parser = parse::Parser::default();
    let file: Arc<Path> = Arc::from(Path::new(name));
    let mut stack = Vec::new();
    parse_text(&mut parser, &file, text, &mut stack);
    parser.finish();
    check_operators(&mut parser);
    finish(parser)
}

fn finish(parser: parse::Parser) -> Result<RuleSource, Vec<Diag>> {
    if parser.errors.is_empty() {
        Ok(RuleSource {
            items: parser.items,
            settings: parser.settings,
            warnings: parser.warnings,
        })
    } else {
        Err(parser.errors)
    }
}

fn load_file(
    parser: &mut parse::Parser,
    path: &Path,
    stack: &mut Vec<PathBuf>,
    included_at: Option<&ast::Origin>,
) {
    let report = |parser: &mut parse::Parser, message: String| {
        let origin = included_at.cloned().unwrap_or(ast::Origin {
            file: Arc::from(path),
            line: 0,
        });
        parser.errors.push(Diag { origin, message });
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if stack.contains(&canonical) {
        return report(
            parser,
            format!("Include cycle: {} includes itself", path.display()),
        );
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return report(
            parser,
            format!("Include nested deeper than {MAX_INCLUDE_DEPTH} files"),
        );
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return report(
                parser,
                format!("{}: larger than {MAX_FILE_BYTES} bytes", path.display()),
            );
        }
        Ok(_) => {}
        Err(e) => return report(parser, format!("{}: {e}", path.display())),
    }
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => return report(parser, format!("{}: {e}", path.display())),
    };
    stack.push(canonical);
    let file: Arc<Path> = Arc::from(path);
    parse_text(parser, &file, &text, stack);
    stack.pop();
}

fn parse_text(parser: &mut parse::Parser, file: &Arc<Path>, text: &str, stack: &mut Vec<PathBuf>) {
    let (directives, errors) = lines::directives(text);
    for (line, message) in errors {
        parser.errors.push(Diag {
            origin: ast::Origin {
                file: Arc::clone(file),
                line,
            },
            message,
        });
    }
    for d in directives {
        if d.name.eq_ignore_ascii_case("Include") {
            let origin = ast::Origin {
                file: Arc::clone(file),
                line: d.line,
            };
            let [pattern] = d.args.as_slice() else {
                parser.errors.push(Diag {
                    origin,
                    message: "Include takes one path or glob".into(),
                });
                continue;
            };
            match include_targets(file, pattern) {
                Ok(paths) => {
                    for path in paths {
                        load_file(parser, &path, stack, Some(&origin));
                    }
                }
                Err(message) => parser.errors.push(Diag { origin, message }),
            }
        } else {
            parser.directive(&d, file);
        }
    }
}

/// The files an `Include` names: a path or a glob (`*`, `?` in the last
/// component), relative to the including file's folder, sorted.
fn include_targets(including: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let base = including.parent().unwrap_or(Path::new(""));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![full]);
    }
    let dir = full.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "Include {pattern:?}: wildcards only in the file name"
        ));
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("Include {pattern:?}: {}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().is_some_and(|n| {
                    wildcard_match(name.as_bytes(), n.to_string_lossy().as_bytes())
                })
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!("Include {pattern:?}: no file matches"));
    }
    Ok(found)
}

/// `*` and `?` matching, iterative (no exponential backtracking).
fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuzz target's property, on a deterministic stream of mangled
    /// rule text: no panic, and every error points at a line of the input.
    #[test]
    fn mangled_rule_text_never_panics_and_errors_point_at_its_lines() {
        const PIECES: &[&str] = &[
            "SecRule ",
            "SecAction ",
            "SecMarker ",
            "SecRuleEngine ",
            "SecDefaultAction ",
            "SecRuleRemoveById ",
            "SecRuleUpdateTargetById ",
            "ARGS",
            "|",
            "!",
            "&",
            ":",
            "/",
            "'",
            "\"",
            "\\",
            "\\\n",
            "\n",
            "#",
            "@rx ",
            "@pm ",
            "@nosuch ",
            "(",
            ")",
            "[",
            "id:",
            "1",
            "phase:",
            "2",
            ",",
            "chain",
            "t:lowercase",
            "setvar:tx.a=+1",
            "deny",
            "skipAfter:X",
            "%{",
            "}",
            " ",
            "ctl:ruleEngine=Off",
            "XML:/*",
            "TX:/^a/",
        ];
        let mut next = crate::test_rng::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..next() % 40 {
                text.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let lines = text.split('\n').count();
            if let Err(errors) = load_str("m.conf", &text) {
                for e in errors {
                    assert!((1..=lines).contains(&e.origin.line), "{e} in {text:?}");
                }
            }
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"REQUEST-901.conf"));
        assert!(!wildcard_match(b"*.conf", b"a.conf.example"));
        assert!(wildcard_match(b"a?c*", b"abcdef"));
    }

    #[test]
    fn all_errors_come_at_once_with_their_lines() {
        let text = "SecRule ARGS \"@rx a\" \"id:1,deny\"\nSecNoSuch On\nSecRule NOPE \"@rx a\" \"id:2\"\nSecRule ARGS \"@rx a\" \"id:1\"\n";
        let errors = load_str("rules.conf", text).unwrap_err();
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("rules.conf:2: unsupported directive"));
        assert!(lines[1].starts_with("rules.conf:3: unsupported variable"));
        assert!(lines[2].starts_with("rules.conf:4: rule id 1 is used twice"));
    }

    #[test]
    fn chains_join_their_head_and_removals_apply_to_earlier_rules() {
        let text = "SecRule ARGS \"@rx a\" \"id:1,phase:2,deny,chain\"\n  SecRule ARGS \"@rx b\" \"t:lowercase\"\nSecAction \"id:2,pass\"\nSecRuleRemoveById 2\n";
        let rules = load_str("r.conf", text).unwrap();
        assert_eq!(rules.rule_count(), 1);
        let Item::Rule(head) = &rules.items[0] else {
            panic!()
        };
        assert_eq!(head.chain.len(), 1);
    }
}
