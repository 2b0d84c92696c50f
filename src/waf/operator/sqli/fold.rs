//! libinjection's folding: the token stream squeezed into at most five
//! tokens (`1 + 1` is one number, `IN (` an operator, comments and unary
//! signs dropped), whose kinds are the fingerprint; and the whitelist that
//! spares the few blacklisted fingerprints benign text often spells.
//!
//! The rules, their order and their fall-throughs follow libinjection as
//! libinjectionrs behaves; the tests hold the two to the same answers.

use super::keywords::{self, Kind};
use super::lexer::{Flags, Lexer, Stats, Token, VALUE_MAX};

const MAX_TOKENS: usize = 5;

/// One pass over a value in one context.
pub struct Pass {
    pub tokens: [Token; MAX_TOKENS],
    /// How many of `tokens` the fingerprint has.
    pub count: usize,
    /// Every token the lexer produced, comments too.
    pub tokens_read: u32,
    pub stats: Stats,
}

impl Pass {
    /// The fingerprint: one letter per token; `X` alone when a token is
    /// evil.
    pub fn fingerprint(&self) -> ([u8; MAX_TOKENS], usize) {
        let mut letters = [0u8; MAX_TOKENS];
        for (letter, token) in letters.iter_mut().zip(&self.tokens[..self.count]) {
            *letter = token.kind as u8;
        }
        if letters[..self.count].contains(&b'X') {
            return ([b'X', 0, 0, 0, 0], 1);
        }
        (letters, self.count)
    }
}

fn is_unary(t: &Token) -> bool {
    t.kind == Kind::Operator
        && match t.value() {
            [b'+' | b'-' | b'!' | b'~'] | b"!!" => true,
            v => v.eq_ignore_ascii_case(b"NOT"),
        }
}

fn is_arithmetic(t: &Token) -> bool {
    t.kind == Kind::Operator && matches!(t.value(), [b'*' | b'/' | b'-' | b'+' | b'%'])
}

/// Kinds that can start or end a multi-word keyword (`ORDER BY`).
fn is_word_like(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Keyword
            | Kind::Bareword
            | Kind::Operator
            | Kind::Union
            | Kind::Function
            | Kind::Expression
            | Kind::Tsql
            | Kind::SqlType
    )
}

/// Names that are functions when a `(` follows (common column names
/// otherwise).
const FUNCTIONS_BEFORE_PARENS: [&[u8]; 11] = [
    b"USER_ID",
    b"USER_NAME",
    b"DATABASE",
    b"PASSWORD",
    b"USER",
    b"CURRENT_USER",
    b"CURRENT_DATE",
    b"CURRENT_TIME",
    b"CURRENT_TIMESTAMP",
    b"LOCALTIME",
    b"LOCALTIMESTAMP",
];

/// Tokens `l` and `l + 1` merged into one keyword of the table (into
/// `l`), if they make one.
fn merge_words(v: &mut [Token], l: usize) -> bool {
    let (head, tail) = v.split_at_mut(l + 1);
    let (a, b) = (&mut head[l], &tail[0]);
    if !is_word_like(a.kind) || !(is_word_like(b.kind) || b.kind == Kind::LogicOperator) {
        return false;
    }
    let (la, lb) = (usize::from(a.len), usize::from(b.len));
    if la + lb + 1 > VALUE_MAX {
        return false;
    }
    let mut merged = [0u8; VALUE_MAX];
    merged[..la].copy_from_slice(a.value());
    merged[la] = b' ';
    merged[la + 1..la + 1 + lb].copy_from_slice(b.value());
    let kind = keywords::lookup(&merged[..la + 1 + lb]);
    if kind == Kind::Bareword {
        return false;
    }
    a.kind = kind;
    a.val = merged;
    a.len = (la + 1 + lb) as u8;
    true
}

/// Folds the tokens of `input` read with `flags`.
pub fn fold(input: &[u8], flags: Flags) -> Pass {
    let mut lexer = Lexer::new(input, flags);
    let mut v = [Token::EMPTY; MAX_TOKENS + 3];
    let mut read = 0u32;
    let mut last_comment = Token::EMPTY;

    // Leading comments, `(`, SQL types and unary operators go.
    loop {
        if !lexer.next(&mut v[0]) {
            return finish(&v, 0, read, lexer.stats);
        }
        read += 1;
        let t = &v[0];
        if !(matches!(t.kind, Kind::Comment | Kind::LeftParens | Kind::SqlType) || is_unary(t)) {
            break;
        }
    }
    let mut more = true;
    let mut pos = 1usize;
    let mut left = 0usize;
    // Reads tokens into `v[pos..]` until `want` are past `left`.
    let mut fill = |v: &mut [Token; MAX_TOKENS + 3],
                    pos: &mut usize,
                    left: usize,
                    more: &mut bool,
                    want: usize| {
        while *more && *pos <= MAX_TOKENS && *pos - left < want {
            let mut t = Token::EMPTY;
            if !lexer.next(&mut t) {
                *more = false;
                break;
            }
            read += 1;
            if t.kind == Kind::Comment {
                last_comment = t;
            } else {
                last_comment.kind = Kind::None;
                v[*pos] = t;
                *pos += 1;
            }
        }
    };

    loop {
        if pos >= MAX_TOKENS && restarts_at_five(&v) {
            if pos > MAX_TOKENS {
                v[1] = v[MAX_TOKENS];
                pos = 2;
            } else {
                pos = 1;
            }
            left = 0;
        }
        if !more || left >= MAX_TOKENS {
            left = pos;
            break;
        }
        fill(&mut v, &mut pos, left, &mut more, 2);
        if pos - left < 2 {
            left = pos;
            continue;
        }
        match fold_two(&mut v, &mut pos, &mut left) {
            Two::Again => continue,
            Two::Evil => {
                // The fingerprint is `X` whatever else was read; the
                // comment counts of this pass are not kept (as in
                // libinjection, so no MySQL re-read follows).
                v[0] = v[left + 1];
                return finish(&v, 1, read, Stats::default());
            }
            Two::Next => {}
        }
        fill(&mut v, &mut pos, left, &mut more, 3);
        if pos - left < 3 {
            left = pos;
            continue;
        }
        if fold_three(&mut v, &mut pos, &mut left) {
            continue;
        }
        left += 1;
    }

    // A sixth token may have been read to settle the fifth.
    let mut count = left.min(MAX_TOKENS);
    // An unclosed, empty backtick at the end is PHP's comment.
    if count > 2 {
        let last = &mut v[count - 1];
        if last.kind == Kind::Bareword
            && last.str_open == b'`'
            && last.len == 0
            && last.str_close == 0
        {
            last.kind = Kind::Comment;
        }
    }
    if count < MAX_TOKENS && last_comment.kind == Kind::Comment {
        v[count] = last_comment;
        count += 1;
    }
    finish(&v, count, read, lexer.stats)
}

fn finish(v: &[Token], count: usize, tokens_read: u32, stats: Stats) -> Pass {
    let mut tokens = [Token::EMPTY; MAX_TOKENS];
    tokens[..count].copy_from_slice(&v[..count]);
    Pass {
        tokens,
        count,
        tokens_read,
        stats,
    }
}

/// The five-token shapes after which libinjection starts folding again
/// from the first token (`1,(2)`, `x+(y)` and the like).
fn restarts_at_five(v: &[Token]) -> bool {
    use Kind::*;
    let k = |i: usize| v[i].kind;
    (k(0) == Number
        && matches!(k(1), Operator | Comma)
        && k(2) == LeftParens
        && k(3) == Number
        && k(4) == RightParens)
        || (k(0) == Bareword
            && k(1) == Operator
            && k(2) == LeftParens
            && matches!(k(3), Bareword | Number)
            && k(4) == RightParens)
        || (k(0) == Number
            && k(1) == RightParens
            && k(2) == Comma
            && k(3) == LeftParens
            && k(4) == Number)
        || (k(0) == Bareword
            && k(1) == RightParens
            && k(2) == Operator
            && k(3) == LeftParens
            && k(4) == Bareword)
}

enum Two {
    /// A rule folded or retyped: start over.
    Again,
    /// No rule applies (or one that lets the three-token rules look too).
    Next,
    /// `{` and an empty bareword: evil, and the end of the pass.
    Evil,
}

fn fold_two(v: &mut [Token; MAX_TOKENS + 3], pos: &mut usize, left: &mut usize) -> Two {
    use Kind::*;
    let l = *left;
    let (a, b) = (v[l].kind, v[l + 1].kind);
    if (a == String && b == String) || (a == Semicolon && b == Semicolon) {
        *pos -= 1;
    } else if matches!(a, Operator | LogicOperator) && (is_unary(&v[l + 1]) || b == SqlType) {
        *pos -= 1;
        *left = 0;
    } else if (a == LeftParens && is_unary(&v[l + 1])) || merge_words(v, l) {
        // A sign after `(` goes; two words that make one keyword merge.
        *pos -= 1;
        *left = l.saturating_sub(1);
    } else if a == Semicolon
        && b == Function
        && v[l + 1].len >= 2
        && v[l + 1].val[..2].eq_ignore_ascii_case(b"IF")
    {
        // T-SQL's `; IF`: a statement, not the function.
        v[l + 1].kind = Tsql;
    } else if matches!(a, Bareword | Variable)
        && b == LeftParens
        && FUNCTIONS_BEFORE_PARENS
            .iter()
            .any(|f| v[l].value().eq_ignore_ascii_case(f))
    {
        v[l].kind = Function;
    } else if a == Keyword
        && (v[l].value().eq_ignore_ascii_case(b"IN")
            || v[l].value().eq_ignore_ascii_case(b"NOT IN"))
    {
        // `IN (` compares; `IN BOOLEAN MODE` and the like do not.
        v[l].kind = if b == LeftParens { Operator } else { Bareword };
    } else if a == Operator
        && (v[l].value().eq_ignore_ascii_case(b"LIKE")
            || v[l].value().eq_ignore_ascii_case(b"NOT LIKE"))
    {
        if b == LeftParens {
            v[l].kind = Function;
        }
        return Two::Next;
    } else if a == SqlType
        && matches!(
            b,
            Bareword | Number | SqlType | LeftParens | Function | Variable | String
        )
    {
        v[l] = v[l + 1];
        *pos -= 1;
        *left = 0;
    } else if a == Collate && b == Bareword {
        // Too many collations to list: one with `_` is taken for a type.
        if v[l + 1].value().contains(&b'_') {
            v[l + 1].kind = SqlType;
            *left = 0;
        }
        return Two::Next;
    } else if a == Backslash {
        if is_arithmetic(&v[l + 1]) {
            // T-SQL reads `\%1` as `0 % 1`.
            v[l].kind = Number;
        } else {
            v[l] = v[l + 1];
            *pos -= 1;
        }
        *left = 0;
    } else if (a == LeftParens && b == LeftParens) || (a == RightParens && b == RightParens) {
        *pos -= 1;
        *left = 0;
    } else if a == LeftBrace && b == Bareword {
        if v[l + 1].len == 0 {
            // MySQL's `{``.``.id}` and nothing else; libinjection gives up.
            v[l + 1].kind = Evil;
            return Two::Evil;
        }
        // ODBC's `{fn expr}`: the `{ fn` goes.
        *left = 0;
        *pos -= 2;
    } else if b == RightBrace {
        *pos -= 1;
        *left = 0;
    } else {
        return Two::Next;
    }
    Two::Again
}

/// The three-token rules; true when one folded (start over).
fn fold_three(v: &mut [Token; MAX_TOKENS + 3], pos: &mut usize, left: &mut usize) -> bool {
    use Kind::*;
    let l = *left;
    let (a, b, c) = (v[l].kind, v[l + 1].kind, v[l + 2].kind);
    let unary = is_unary(&v[l + 1]);
    let drop_two = (a == Number && b == Operator && c == Number)
        || (a == Operator && b != LeftParens && c == Operator)
        || (a == LogicOperator && c == LogicOperator)
        || (a == Variable && b == Operator && matches!(c, Variable | Number | Bareword))
        || (matches!(a, Bareword | Number) && b == Operator && matches!(c, Number | Bareword))
        || (matches!(a, Bareword | Number | Variable | String)
            && b == Operator
            && v[l + 1].value() == b"::"
            && c == SqlType)
        || (matches!(a, Bareword | Number | String | Variable)
            && b == Comma
            && matches!(c, Number | Bareword | String | Variable))
        || (a == Bareword && b == Dot && c == Bareword);
    if drop_two {
        *pos -= 2;
        *left = 0;
        return true;
    }
    if (matches!(a, Expression | Group | Comma) && unary && c == LeftParens)
        || (matches!(a, Keyword | Expression | Group)
            && unary
            && matches!(c, Number | Bareword | Variable | String | Function))
    {
        // `SELECT -1`, `LIMIT +(`: the sign goes.
        v[l + 1] = v[l + 2];
        *pos -= 1;
        *left = 0;
        return true;
    }
    if a == Comma && unary && matches!(c, Number | Bareword | Variable | String) {
        // `1,-1` becomes `1,1`, and then (backing up) `1`.
        v[l + 1] = v[l + 2];
        *left = 0;
        *pos = pos.saturating_sub(3);
        return true;
    }
    if (a == Comma && unary && c == Function) || (a == Expression && b == Dot && c == Bareword) {
        v[l + 1] = v[l + 2];
        *pos -= 1;
        *left = 0;
        return true;
    }
    if a == Function
        && b == LeftParens
        && c != RightParens
        && v[l].value().eq_ignore_ascii_case(b"USER")
    {
        // `USER()` takes no arguments: `user(x)` is a name.
        v[l].kind = Bareword;
    }
    false
}

/// Whether a blacklisted fingerprint is SQLi after all: libinjection's
/// whitelist of short fingerprints that benign text spells.
pub fn not_whitelisted(input: &[u8], pass: &Pass, fingerprint: &[u8]) -> bool {
    let len = fingerprint.len();
    if len > 1 && fingerprint[len - 1] == b'c' && mentions_sp_password(input) {
        return true;
    }
    let t = &pass.tokens;
    match len {
        2 if pass.count >= 2 => two_tokens_are_sqli(input, pass, fingerprint),
        3 if pass.count >= 3 => {
            if fingerprint == b"sos" || fingerprint == b"s&s" {
                // `...foo' + 'bar...`: a string concatenated, as in SQLi.
                return t[0].str_open == 0
                    && t[2].str_close == 0
                    && t[0].str_close == t[2].str_open;
            }
            if matches!(fingerprint, b"s&n" | b"n&1" | b"1&1" | b"1&v" | b"1&s")
                && pass.tokens_read == 3
            {
                // `sexy and 17`, but not `sexy and 17<18`.
                return false;
            }
            if t[1].kind == Kind::Keyword && (t[1].len < 5 || !t[1].value().starts_with(b"INTO")) {
                // Only `INTO OUTFILE` and `INTO DUMPFILE` in the middle.
                // libinjectionrs compares `INTO` with case (C does not).
                return false;
            }
            true
        }
        _ => true,
    }
}

/// libinjectionrs reads the input as text for this check: invalid UTF-8
/// never mentions it.
fn mentions_sp_password(input: &[u8]) -> bool {
    std::str::from_utf8(input).is_ok()
        && input
            .windows(11)
            .any(|w| w.eq_ignore_ascii_case(b"sp_password"))
}

fn two_tokens_are_sqli(input: &[u8], pass: &Pass, fingerprint: &[u8]) -> bool {
    let t = &pass.tokens;
    if fingerprint[1] == b'U' {
        // `1 UNION` alone is too small to call; folded from more, it is.
        return pass.tokens_read != 2;
    }
    if t[1].first() == b'#' {
        return false;
    }
    if t[0].kind == Kind::Bareword && t[1].kind == Kind::Comment && t[1].first() != b'/' {
        return false;
    }
    if t[0].kind == Kind::Number && t[1].kind == Kind::Comment {
        if t[1].first() == b'/' || pass.tokens_read > 2 {
            return true;
        }
        // libinjection looks after the number as if it started the input.
        let after = usize::from(t[0].len);
        return match input.get(after) {
            None => false,
            Some(&b) if (b as i8) <= 32 => true,
            Some(b'/') => input.get(after + 1) == Some(&b'*'),
            Some(b'-') => input.get(after + 1) == Some(&b'-'),
            Some(_) => false,
        };
    }
    !(t[1].len > 2 && t[1].first() == b'-')
}
