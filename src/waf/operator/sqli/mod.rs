//! `@detectSQLi`: libinjection's SQL injection detection, written here.
//!
//! libinjection reads a value as SQL would (as is, then as if it followed
//! a `'` or a `"`, each in ANSI or MySQL comment rules), folds its tokens
//! into at most five, and calls it SQLi when the kinds of those tokens
//! spell a fingerprint on its blacklist that its whitelist does not
//! spare. CRS runs it on every argument, cookie, and the User-Agent and
//! Referer of every request, so it has to be cheap: tokens live on the
//! stack and keywords are found by hash, where the libinjectionrs port
//! (whose table this uses, and against which the tests hold every
//! verdict and fingerprint) allocates per word and runs every value
//! twice.
//!
//! `lexer` reads tokens, `fold` folds them and holds the whitelist,
//! `keywords` is the table, and `proof` clears plain words without
//! reading them at all.

mod fold;
mod keywords;
mod lexer;
mod proof;

use lexer::Flags;

/// Builds the tables now, not on the first request.
pub fn prepare() {
    keywords::prepare();
    proof::prepare();
}

/// libinjection's verdict on `input`: the fingerprint when it is SQLi.
pub fn detect(input: &[u8]) -> Option<String> {
    if input.is_empty() || proof::cannot_be_sqli(input) {
        return None;
    }
    let read = |quote: u8, mysql: bool| {
        let pass = fold::fold(input, Flags { quote, mysql });
        let (letters, len) = pass.fingerprint();
        let fingerprint = &letters[..len];
        let sqli = keywords::is_blacklisted(fingerprint)
            && fold::not_whitelisted(input, &pass, fingerprint);
        let found = sqli.then(|| String::from_utf8_lossy(fingerprint).into_owned());
        (found, pass.stats.reread_as_mysql())
    };
    let (found, reread) = read(0, false);
    if found.is_some() {
        return found;
    }
    if reread && let (found @ Some(_), _) = read(0, true) {
        return found;
    }
    if input.contains(&b'\'') {
        let (found, reread) = read(b'\'', false);
        if found.is_some() {
            return found;
        }
        if reread && let (found @ Some(_), _) = read(b'\'', true) {
            return found;
        }
    }
    if input.contains(&b'"') {
        // libinjection reads after a `"` in MySQL's rules only.
        return read(b'"', true).0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libinjectionrs's verdict and fingerprint, the reference.
    fn reference(input: &[u8]) -> Option<String> {
        let result = libinjectionrs::detect_sqli(input);
        result.is_injection().then(|| {
            result
                .fingerprint
                .map(|f| f.to_string())
                .unwrap_or_default()
        })
    }

    fn same_as_reference(input: &[u8]) {
        assert_eq!(
            detect(input),
            reference(input),
            "verdicts differ on {:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn classic_injections_are_flagged_with_their_fingerprints() {
        for attack in [
            &b"1' or '1'='1"[..],
            b"1 union select password from users",
            b"' OR 1=1 --",
            b"1; DROP TABLE users",
            b"admin'--",
            b"1 AND SLEEP(5)",
            b"x' AND 1=(SELECT COUNT(*) FROM tabname); --",
            b"1/**/union/**/select",
            b"-1' union select @@version -- ",
            b"1' AND extractvalue(1,concat(0x7e,version()))#",
        ] {
            assert!(
                detect(attack).is_some(),
                "{:?} not flagged",
                String::from_utf8_lossy(attack)
            );
            same_as_reference(attack);
        }
    }

    #[test]
    fn ordinary_values_are_not_flagged() {
        for benign in [
            &b"blue shoes"[..],
            b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
            b"https://shop.example/catalog?q=blue+shoes",
            b"O'Reilly",
            b"john.doe@example.com",
            b"Tom & Jerry",
            b"price < 100",
            b"",
        ] {
            assert_eq!(detect(benign), None, "{:?} flagged", String::from_utf8_lossy(benign));
            same_as_reference(benign);
        }
    }

    /// Every lexer path: each byte class, the string forms, numbers,
    /// comments, variables, dollar quotes.
    #[test]
    fn tricky_forms_agree_with_libinjectionrs() {
        let cases: &[&[u8]] = &[
            b"1 UNION ALL SELECT",
            b"1 union",
            b"SELECT 1 UNION",
            b"1 --",
            b"1 -- x",
            b"1--x",
            b"1#",
            b"1 #x",
            b"1/*",
            b"1/* x */",
            b"1/*! union */",
            b"1 /* /* */ x",
            b"'a' 'b'",
            b"'a' + 'b'",
            b"a' + 'b",
            b"\"x\" or \"y\"",
            b"x\" or 1=1 -- ",
            b"e'x' or 1",
            b"E'",
            b"n'x' or 1",
            b"N'",
            b"q'[x]' or 1",
            b"nq'{x}' or 1",
            b"Q'\x01x'",
            b"u&'x' or 1",
            b"b'0101' or 1",
            b"x'beef' or 1",
            b"0x1f or 1=1",
            b"0x or 1",
            b"0b101 or 1",
            b"1e5 or 1",
            b"1e or 1",
            b"1.5e+3 or 1",
            b".5 or 1",
            b". or 1",
            b"1d or 1",
            b"1f;",
            b"1fUNION select",
            b"$1,000.00 or 1",
            b"$. or 1",
            b"$$x$$ or 1",
            b"$tag$x$tag$ or 1",
            b"$tag or 1",
            b"$",
            b"@x or 1",
            b"@@x or 1",
            b"@`x` or 1",
            b"@'x' or 1",
            b"@",
            b"`user` or 1",
            b"`x",
            b"1 or `",
            b"[col] or 1",
            b"[col",
            b"\\N or 1",
            b"\\%1",
            b"\\ or 1",
            b"1 <=> 1",
            b"1 != 2 or 1",
            b"a:b or 1",
            b"1 || 1",
            b"1 && 1",
            b"a::int or 1",
            b"select user(1)",
            b"select user()",
            b"1 in (1)",
            b"1 not in (1)",
            b"in boolean mode",
            b"x like (1)",
            b"; if 1=1 select 1",
            b"collate utf8_bin or 1",
            b"{ `` }",
            b"{fn x} or 1",
            b"x } or 1",
            b"1,(2) or 1",
            b"1,-1",
            b"1,-sin(1)",
            b"select -1",
            b"select -(1)",
            b"select . `x`",
            b"db.table or 1",
            b"1 sp_password --",
            b"1 into outfile 'x'",
            b"1 into 'x'",
            b"sexy and 17",
            b"sexy and 17<18",
            b"1 and 1",
            b"((1)) or 1",
            b"(-1) or 1",
            b"+1 or 1",
            b"not 1 or 1",
            b"1.a or 1",
            b"union.x or 1",
            b"a\xa0or 1",
            b"\xff or 1",
            b"x\x00or 1",
            b"'\\' or 1 --",
            b"'\\\\' or 1 --",
            b"'a''b' or 1",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa or 1",
            b"'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' or 1",
        ];
        for case in cases {
            same_as_reference(case);
        }
    }

    /// Random values from a SQL-heavy alphabet and token list agree with
    /// libinjectionrs, verdict and fingerprint alike.
    #[test]
    fn random_values_agree_with_libinjectionrs() {
        let pieces: &[&[u8]] = &[
            b" ",
            b"  ",
            b"'",
            b"\"",
            b"`",
            b"(",
            b")",
            b",",
            b";",
            b"{",
            b"}",
            b"[",
            b"]",
            b"-",
            b"--",
            b"#",
            b"/*",
            b"*/",
            b"/*!",
            b"/",
            b"*",
            b"+",
            b"=",
            b"<",
            b">",
            b"!",
            b"~",
            b"&",
            b"|",
            b"^",
            b"%",
            b":",
            b"::",
            b"@",
            b"@@",
            b"$",
            b"$$",
            b"\\",
            b".",
            b"?",
            b"\n",
            b"\t",
            b"\xa0",
            b"\x00",
            b"\xc3\xa9",
            b"\xff",
            b"0x",
            b"0b",
            b"1",
            b"42",
            b"3.14",
            b"1e",
            b"1e5",
            b"1f",
            b"e",
            b"E'",
            b"N'",
            b"q'",
            b"u&'",
            b"b'",
            b"x'",
            b"union",
            b"UNION",
            b"select",
            b"from",
            b"where",
            b"or",
            b"and",
            b"not",
            b"in",
            b"like",
            b"is",
            b"null",
            b"order",
            b"by",
            b"group",
            b"having",
            b"limit",
            b"sleep",
            b"benchmark",
            b"user",
            b"version",
            b"concat",
            b"char",
            b"into",
            b"outfile",
            b"drop",
            b"table",
            b"insert",
            b"values",
            b"exec",
            b"if",
            b"waitfor",
            b"delay",
            b"collate",
            b"utf8_bin",
            b"int",
            b"varchar",
            b"case",
            b"when",
            b"then",
            b"else",
            b"end",
            b"sp_password",
            b"admin",
            b"blue",
            b"shoes",
            b"id",
            b"x",
            b"_",
            b"boolean",
            b"mode",
            b"all",
            b"distinct",
            b"current_user",
            b"binary",
            b"fn",
            b"tag",
        ];
        let mut next = super::super::random_below(0x9e37_79b9_7f4a_7c15);
        let mut flagged = 0;
        for _ in 0..200_000 {
            let mut value = Vec::new();
            for _ in 0..1 + next(12) {
                value.extend_from_slice(pieces[next(pieces.len())]);
                if next(3) == 0 {
                    value.push(b' ');
                }
            }
            flagged += usize::from(reference(&value).is_some());
            same_as_reference(&value);
        }
        assert!(
            flagged > 10_000,
            "only {flagged} flagged: the values miss the detector"
        );
    }

    /// Random bytes of any value, short and long: the same verdicts, and
    /// no panic.
    #[test]
    fn random_bytes_agree_with_libinjectionrs() {
        let mut next = super::super::random_below(0x2545_f491_4f6c_dd1d);
        for _ in 0..50_000 {
            let len = next(80);
            let value: Vec<u8> = (0..len)
                .map(|_| {
                    if next(4) == 0 {
                        next(256) as u8
                    } else {
                        {
                            let a = b"'\"`()-#/*1 aorun;@$\\e.x,";
                            a[next(a.len())]
                        }
                    }
                })
                .collect();
            same_as_reference(&value);
        }
    }

    /// The keyword table holds ASCII words only: the lookups compare
    /// bytes, where the port compares text.
    #[test]
    fn the_table_is_ascii() {
        for k in libinjectionrs::sqli::sqli_data::SQL_KEYWORDS {
            assert!(k.word.is_ascii() && k.word.len() < 32, "{}", k.word);
        }
    }
}
