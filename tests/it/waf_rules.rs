//! Loading SecLang rule sets: CRS as shipped, the `palisade rules check`
//! command, and hostile or broken rule files.

use std::path::{Path, PathBuf};
use std::process::Command;

use palisade::waf::seclang;

use crate::util::crs_files;

fn check(files: &[&Path]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["rules", "check"])
        .args(files)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn all_of_crs_loads_with_no_errors_and_no_warnings() {
    let rules = seclang::load(&crs_files()).unwrap_or_else(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!("CRS failed to load:\n{}", lines.join("\n"))
    });
    assert!(rules.warnings.is_empty(), "{:?}", rules.warnings);
    // 630 top-level rules in v4.28 (chained rules counted with their head).
    assert!(rules.rule_count() > 600, "{}", rules.rule_count());
    let files = crs_files();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, stdout, stderr) = check(&paths);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("{} rules loaded", rules.rule_count())
    );
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn every_error_in_a_broken_rule_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.conf");
    std::fs::write(
        &file,
        "SecRuleEngine On\n\
         SecRule ARGS \"@rx ok\" \"id:1,phase:2,deny\"\n\
         SecFrobnicate On\n\
         SecRule NO_SUCH_VAR \"@rx a\" \"id:2\"\n\
         SecRule ARGS \"@nosuchop a\" \"id:3\"\n\
         SecRule ARGS \"@rx a\" \"id:4,t:nosuchtfn\"\n\
         SecRule ARGS \"@rx a\" \"id:5,nosuchaction\"\n\
         SecRule ARGS \"@rx (unclosed\" \"id:6\"\n\
         SecRule ARGS \"@rx a\" \"id:1\"\n\
         SecRule ARGS \"@rx a\" \"id:7,ctl:frobnicate=1\"\n\
         SecRule ARGS \"@rx a\" \"phase:2\"\n\
         SecAuditLog /var/log/audit.log\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(&[&file]);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    let name = file.display().to_string();
    for (line, message) in [
        (3, "unsupported directive \"SecFrobnicate\""),
        (4, "unsupported variable \"NO_SUCH_VAR\""),
        (5, "unsupported operator @nosuchop"),
        (6, "unsupported transformation \"nosuchtfn\""),
        (7, "unsupported action \"nosuchaction\""),
        (8, "bad regex"),
        (9, "rule id 1 is used twice"),
        (10, "unsupported ctl option \"frobnicate\""),
        (11, "rule has no `id`"),
    ] {
        let expected = format!("{name}:{line}: {message}");
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert_eq!(
        stderr.lines().count(),
        9,
        "one line per error, no more:\n{stderr}"
    );
}

#[test]
fn includes_follow_globs_relative_to_the_including_file_and_cycles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("conf.d");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("10-a.conf"), "SecAction \"id:10,pass\"\n").unwrap();
    std::fs::write(sub.join("20-b.conf"), "SecAction \"id:20,pass\"\n").unwrap();
    std::fs::write(sub.join("skip.txt"), "not rules\n").unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "Include conf.d/*.conf\nSecAction \"id:1,pass\"\n").unwrap();
    let rules = seclang::load(std::slice::from_ref(&main)).unwrap();
    assert_eq!(rules.rule_count(), 3);

    let a = dir.path().join("a.conf");
    std::fs::write(&a, "Include b.conf\n").unwrap();
    std::fs::write(dir.path().join("b.conf"), "Include a.conf\n").unwrap();
    let errors = seclang::load(&[a]).unwrap_err();
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("b.conf:1: Include cycle")),
        "{text:?}"
    );
}

#[test]
fn hostile_rule_files_get_clear_errors_not_hangs() {
    let dir = tempfile::tempdir().unwrap();
    // A 10 MB line.
    let long = dir.path().join("long.conf");
    std::fs::write(
        &long,
        format!("SecAction \"id:1,msg:'{}'\"\n", "a".repeat(10 << 20)),
    )
    .unwrap();
    // A regex too big to compile, and one nested too deep.
    let big = dir.path().join("big.conf");
    std::fs::write(
        &big,
        format!(
            "SecRule ARGS \"@rx (?:[a-z]{{1000}}){{1000}}\" \"id:1\"\nSecRule ARGS \"@rx {}a{}\" \"id:2\"\n",
            "(".repeat(1000),
            ")".repeat(1000)
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, _, stderr) = check(&[&long, &big]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("long.conf:1: directive longer than"),
        "{stderr}"
    );
    assert!(
        stderr.contains("big.conf:1: regex is too large"),
        "{stderr}"
    );
    assert!(stderr.contains("big.conf:2: bad regex"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn logging_directives_are_accepted_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.conf");
    std::fs::write(
        &file,
        "SecAuditEngine RelevantOnly\nSecAction \"id:1,pass\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) = check(&[&file]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "1 rules loaded");
    assert!(
        stderr.contains("log.conf:1: SecAuditEngine ignored"),
        "{stderr}"
    );
}
