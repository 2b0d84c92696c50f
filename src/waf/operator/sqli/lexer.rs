//! libinjection's SQL tokenizer: one token at a time, in one of its three
//! quote contexts and two dialects, with the comment counts that decide
//! whether a value is read again as MySQL.
//!
//! What a token is, and each quirk of where one ends, follows libinjection
//! (as the libinjectionrs port behaves: the tests compare the two); the
//! byte classes come from the crate's own table.

use libinjectionrs::sqli::sqli_data::{CharType, get_char_type};

use super::keywords::{self, Kind};

/// libinjection keeps at most this many bytes of a token (and a NUL).
pub const VALUE_MAX: usize = 31;

#[derive(Clone, Copy)]
pub struct Token {
    pub kind: Kind,
    /// Bytes kept (at most [`VALUE_MAX`]).
    pub len: u8,
    pub val: [u8; VALUE_MAX],
    /// The quote a string opened and closed with (0: none, or unclosed).
    pub str_open: u8,
    pub str_close: u8,
}

impl Token {
    pub const EMPTY: Token = Token {
        kind: Kind::None,
        len: 0,
        val: [0; VALUE_MAX],
        str_open: 0,
        str_close: 0,
    };

    pub fn value(&self) -> &[u8] {
        &self.val[..usize::from(self.len)]
    }

    /// The first byte of the value, 0 when it is empty (a C string's NUL).
    pub fn first(&self) -> u8 {
        self.val[0]
    }

    fn set(&mut self, kind: Kind, value: &[u8]) {
        let len = value.len().min(VALUE_MAX);
        self.kind = kind;
        self.len = len as u8;
        self.val[..len].copy_from_slice(&value[..len]);
        if len < VALUE_MAX {
            self.val[len] = 0;
        }
    }

    fn set_string(&mut self, value: &[u8], open: u8, close: u8) {
        self.set(Kind::String, value);
        self.str_open = open;
        self.str_close = close;
    }
}

/// How the value is read: as if it followed a quote (or not), and which
/// dialect's comment rules apply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flags {
    /// 0, `'` or `"`.
    pub quote: u8,
    pub mysql: bool,
}

/// Comment counts of one pass; they decide the MySQL re-read.
#[derive(Default, Clone, Copy)]
pub struct Stats {
    pub dash_dash_other: u32,
    pub hash: u32,
}

impl Stats {
    /// libinjection reads a value again as MySQL after `--x` or `#`.
    pub fn reread_as_mysql(&self) -> bool {
        self.dash_dash_other != 0 || self.hash != 0
    }
}

pub struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    flags: Flags,
    pub stats: Stats,
}

fn is_white(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0 | 0)
}

/// A byte class as a table: whether each byte is one of `bytes`.
const fn class(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

/// Bytes that end a word.
const ENDS_WORD: [bool; 256] = class(b" []{}<>:\\?=@!#~+-*/&|^%(),';\t\n\x0b\x0c\r\"\xa0\x00");

/// Bytes that end a variable name (`@name`).
const ENDS_VARIABLE: [bool; 256] = class(b" <>:\\?=@!#~+-*/&|^%(),;'\t\n\x0b\x0c\r`\"");

fn ends_word(b: u8) -> bool {
    ENDS_WORD[usize::from(b)]
}

fn ends_variable(b: u8) -> bool {
    ENDS_VARIABLE[usize::from(b)]
}

fn find(haystack: &[u8], byte: u8) -> Option<usize> {
    memchr::memchr(byte, haystack)
}

fn find_pair(haystack: &[u8], a: u8, b: u8) -> Option<usize> {
    haystack.windows(2).position(|w| w[0] == a && w[1] == b)
}

impl<'a> Lexer<'a> {
    pub fn new(s: &'a [u8], flags: Flags) -> Lexer<'a> {
        Lexer {
            s,
            pos: 0,
            flags,
            stats: Stats::default(),
        }
    }

    /// The next token into `t`; false at the end of the input.
    pub fn next(&mut self, t: &mut Token) -> bool {
        if self.pos >= self.s.len() {
            return false;
        }
        *t = Token::EMPTY;
        if self.pos == 0 && self.flags.quote != 0 {
            // The value is read as the rest of a string already open.
            self.pos = self.string_body(t, 0, self.flags.quote, 0);
            return true;
        }
        while self.pos < self.s.len() {
            self.pos = self.one(t);
            if t.kind != Kind::None {
                return true;
            }
        }
        false
    }

    /// Reads what starts at `self.pos`; returns where the next read starts.
    fn one(&mut self, t: &mut Token) -> usize {
        let pos = self.pos;
        let b = self.s[pos];
        match get_char_type(b) {
            CharType::White => pos + 1,
            CharType::Bang | CharType::Op2 => self.operator2(t),
            CharType::String => self.string_body(t, pos + 1, b, b),
            CharType::Hash => {
                self.stats.hash += 1;
                if self.flags.mysql {
                    // libinjection counts a MySQL `#` twice; only "not zero"
                    // is ever asked.
                    self.stats.hash += 1;
                    self.line_comment(t)
                } else {
                    t.set(Kind::Operator, b"#");
                    pos + 1
                }
            }
            CharType::Money => self.money(t),
            CharType::Op1 | CharType::Unary => {
                t.set(Kind::Operator, &[b]);
                pos + 1
            }
            CharType::LeftParens
            | CharType::RightParens
            | CharType::Comma
            | CharType::Semicolon
            | CharType::LeftBrace
            | CharType::RightBrace => {
                t.set(Kind::of_punctuation(b), &[b]);
                pos + 1
            }
            CharType::Dash => self.dash(t),
            CharType::Number => self.number(t),
            CharType::Slash => {
                if self.s.get(pos + 1) == Some(&b'*') {
                    self.block_comment(t)
                } else {
                    t.set(Kind::Operator, b"/");
                    pos + 1
                }
            }
            CharType::Variable => self.variable(t),
            CharType::Word => self.word(t, pos),
            CharType::BString => self.bit_or_hex_string(t, |b| b == b'0' || b == b'1'),
            CharType::XString => self.bit_or_hex_string(t, |b| b.is_ascii_hexdigit()),
            CharType::EString => self.e_string(t),
            CharType::NQString => {
                if pos + 2 < self.s.len() && self.s[pos + 1] == b'\'' {
                    self.e_string(t)
                } else {
                    self.q_string(t, pos + 1)
                }
            }
            CharType::QString => self.q_string(t, pos),
            CharType::UString => {
                if self.s.get(pos + 1..pos + 3) == Some(b"&'") {
                    let end = self.string_body(t, pos + 3, b'\'', b'\'');
                    t.str_open = b'u';
                    if t.str_close == b'\'' {
                        t.str_close = b'u';
                    }
                    end
                } else {
                    self.word(t, pos)
                }
            }
            CharType::BWord => {
                let end = find(&self.s[pos..], b']').map_or(self.s.len(), |i| pos + i + 1);
                t.set(Kind::Bareword, &self.s[pos..end]);
                end
            }
            CharType::Backslash => {
                if self.s.get(pos + 1) == Some(&b'N') {
                    // MySQL's `\N` is NULL.
                    t.set(Kind::Number, b"\\N");
                    pos + 2
                } else {
                    t.set(Kind::Backslash, b"\\");
                    pos + 1
                }
            }
            CharType::Tick => self.ticked(t, pos),
            CharType::Other => {
                t.set(Kind::Unknown, &[b]);
                pos + 1
            }
        }
    }

    fn operator2(&mut self, t: &mut Token) -> usize {
        let pos = self.pos;
        let s = self.s;
        if pos + 1 >= s.len() {
            t.set(Kind::Operator, &s[pos..=pos]);
            return pos + 1;
        }
        if s[pos..].starts_with(b"<=>") {
            t.set(Kind::Operator, b"<=>");
            return pos + 3;
        }
        let pair = &s[pos..pos + 2];
        match keywords::lookup(pair) {
            Kind::LogicOperator => {
                t.set(Kind::LogicOperator, pair);
                pos + 2
            }
            Kind::Bareword => {
                let kind = if s[pos] == b':' {
                    Kind::Colon
                } else {
                    Kind::Operator
                };
                t.set(kind, &s[pos..=pos]);
                pos + 1
            }
            _ => {
                t.set(Kind::Operator, pair);
                pos + 2
            }
        }
    }

    fn dash(&mut self, t: &mut Token) -> usize {
        let pos = self.pos;
        if self.s.get(pos + 1) != Some(&b'-') {
            t.set(Kind::Operator, b"-");
            return pos + 1;
        }
        if self.s.get(pos + 2).is_none_or(|b| is_white(*b)) {
            return self.line_comment(t);
        }
        self.stats.dash_dash_other += 1;
        if self.flags.mysql {
            // MySQL wants a space after `--`: these are two minus signs.
            t.set(Kind::Operator, b"-");
            pos + 1
        } else {
            self.line_comment(t)
        }
    }

    /// A comment to the end of the line (the newline is skipped).
    fn line_comment(&mut self, t: &mut Token) -> usize {
        let pos = self.pos;
        match find(&self.s[pos..], b'\n') {
            Some(i) => {
                t.set(Kind::Comment, &self.s[pos..pos + i]);
                pos + i + 1
            }
            None => {
                t.set(Kind::Comment, &self.s[pos..]);
                self.s.len()
            }
        }
    }

    /// `/* ... */`: evil when it nests another opening or is MySQL's
    /// executable `/*!`.
    fn block_comment(&mut self, t: &mut Token) -> usize {
        let pos = self.pos;
        let body = &self.s[pos + 2..];
        let mut kind = Kind::Comment;
        let end = match find_pair(body, b'*', b'/') {
            Some(close) => {
                // libinjection looks one byte past the body for a nested
                // opening (it reaches the `*` of the close).
                if find_pair(&body[..close + 1], b'/', b'*').is_some() {
                    kind = Kind::Evil;
                }
                pos + 2 + close + 2
            }
            None => self.s.len(),
        };
        if body.first() == Some(&b'!') {
            kind = Kind::Evil;
        }
        t.set(kind, &self.s[pos..end]);
        end
    }

    /// A string whose content starts at `start`, ended by an unescaped
    /// `delim` (not after an odd run of backslashes, and not doubled).
    fn string_body(&mut self, t: &mut Token, start: usize, delim: u8, open: u8) -> usize {
        let s = self.s;
        let mut from = start;
        while from < s.len() {
            let Some(i) = find(&s[from..], delim) else {
                break;
            };
            let at = from + i;
            let backslashes = s[..at].iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 1 {
                from = at + 1;
            } else if s.get(at + 1) == Some(&delim) {
                from = at + 2;
            } else {
                t.set_string(&s[start..at], open, delim);
                return at + 1;
            }
        }
        t.set_string(&s[start.min(s.len())..], open, 0);
        s.len()
    }

    fn e_string(&mut self, t: &mut Token) -> usize {
        let pos = self.pos;
        if pos + 2 >= self.s.len() || self.s[pos + 1] != b'\'' {
            return self.word(t, pos);
        }
        self.string_body(t, pos + 2, b'\'', b'\'')
    }

    /// Oracle's `q'[...]'` (at `at`, after an `N` or not).
    fn q_string(&mut self, t: &mut Token, at: usize) -> usize {
        let s = self.s;
        let pos = self.pos;
        if at + 2 >= s.len() || !matches!(s[at], b'q' | b'Q') || s[at + 1] != b'\'' {
            return self.word(t, pos);
        }
        let open = s[at + 2];
        // libinjection reads the delimiter as a signed char.
        if (open as i8) < 33 {
            return self.word(t, pos);
        }
        let close = match open {
            b'(' => b')',
            b'[' => b']',
            b'{' => b'}',
            b'<' => b'>',
            other => other,
        };
        let start = at + 3;
        match find_pair(&s[start..], close, b'\'') {
            Some(i) => {
                t.set_string(&s[start..start + i], b'q', b'q');
                start + i + 2
            }
            None => {
                t.set_string(&s[start..], b'q', 0);
                s.len()
            }
        }
    }

    /// `b'0101'` and `x'beef'`: numbers; anything else starts a word.
    fn bit_or_hex_string(&mut self, t: &mut Token, digit: fn(u8) -> bool) -> usize {
        let s = self.s;
        let pos = self.pos;
        if pos + 2 >= s.len() || s[pos + 1] != b'\'' {
            return self.word(t, pos);
        }
        let end = pos + 2 + s[pos + 2..].iter().take_while(|b| digit(**b)).count();
        if s.get(end) != Some(&b'\'') {
            return self.word(t, pos);
        }
        t.set(Kind::Number, &s[pos..=end]);
        end + 1
    }

    /// A word from `pos`: a keyword when the table has it. A `.` or `` ` ``
    /// inside ends it early when what comes before is a keyword.
    fn word(&mut self, t: &mut Token, pos: usize) -> usize {
        let s = self.s;
        let len = s[pos..]
            .iter()
            .position(|b| ends_word(*b))
            .unwrap_or(s.len() - pos);
        if len == 0 {
            // Never reached from the byte table; a safe step all the same.
            t.set(Kind::Unknown, &s[pos..=pos]);
            return pos + 1;
        }
        let word = &s[pos..pos + len];
        for (i, b) in word.iter().enumerate() {
            if matches!(b, b'.' | b'`') {
                let kind = keywords::lookup(&word[..i]);
                if kind != Kind::Bareword {
                    t.set(kind, &word[..i]);
                    return pos + i;
                }
            }
        }
        let kind = if len <= VALUE_MAX {
            keywords::lookup(word)
        } else {
            Kind::Bareword
        };
        t.set(kind, word);
        pos + len
    }

    /// A MySQL `` `name` ``: a bareword, or a function if the table says so.
    fn ticked(&mut self, t: &mut Token, pos: usize) -> usize {
        let end = self.string_body(t, pos + 1, b'`', b'`');
        t.kind = if keywords::lookup(t.value()) == Kind::Function {
            Kind::Function
        } else {
            Kind::Bareword
        };
        end
    }

    /// `@name`, `@@name`, and the quoted forms `@'x'`, `` @`x` ``.
    fn variable(&mut self, t: &mut Token) -> usize {
        let s = self.s;
        let pos = self.pos;
        let mut name = pos + 1;
        if s.get(name) == Some(&b'@') {
            name += 1;
        }
        match s.get(name) {
            Some(b'`') => {
                let end = self.ticked(t, name);
                t.kind = Kind::Variable;
                return end;
            }
            Some(&q @ (b'\'' | b'"')) => {
                let end = self.string_body(t, name + 1, q, q);
                t.kind = Kind::Variable;
                return end;
            }
            _ => {}
        }
        let end = name
            + s[name..]
                .iter()
                .position(|b| ends_variable(*b))
                .unwrap_or(s.len() - name);
        // The value keeps its `@`s, as libinjectionrs keeps them (C drops
        // them, so `@user(` is never taken for the function here).
        t.set(Kind::Variable, &s[pos..end]);
        end
    }

    /// `$1,000.00` (a number), PostgreSQL's `$$...$$` and `$tag$...$tag$`
    /// (strings), else a lone `$` bareword.
    fn money(&mut self, t: &mut Token) -> usize {
        let s = self.s;
        let pos = self.pos;
        if pos + 1 == s.len() {
            t.set(Kind::Bareword, b"$");
            return s.len();
        }
        let digits = s[pos + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b','))
            .count();
        if digits > 0 {
            if digits == 1 && s[pos + 1] == b'.' {
                return self.word(t, pos);
            }
            t.set(Kind::Number, &s[pos..pos + 1 + digits]);
            return pos + 1 + digits;
        }
        if s[pos + 1] == b'$' {
            return self.dollar_quoted(t, pos + 2, b"$$");
        }
        let tag = s[pos + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let tag_end = pos + 1 + tag;
        if tag > 0 && s.get(tag_end) == Some(&b'$') {
            return self.dollar_quoted(t, tag_end + 1, &s[pos..=tag_end]);
        }
        t.set(Kind::Bareword, b"$");
        pos + 1
    }

    fn dollar_quoted(&mut self, t: &mut Token, start: usize, tag: &[u8]) -> usize {
        let s = self.s;
        let body = &s[start.min(s.len())..];
        match body.windows(tag.len()).position(|w| w == tag) {
            Some(i) => {
                t.set_string(&body[..i], b'$', b'$');
                start + i + tag.len()
            }
            None => {
                t.set_string(body, b'$', 0);
                s.len()
            }
        }
    }

    fn number(&mut self, t: &mut Token) -> usize {
        let s = self.s;
        let pos = self.pos;
        let digits_from = |i: usize, digit: fn(&u8) -> bool| {
            i + s
                .get(i..)
                .unwrap_or(&[])
                .iter()
                .take_while(|b| digit(b))
                .count()
        };
        if s[pos] == b'0' && pos + 1 < s.len() {
            let digit: Option<fn(&u8) -> bool> = match s[pos + 1] {
                b'x' | b'X' => Some(u8::is_ascii_hexdigit),
                b'b' | b'B' => Some(|b| *b == b'0' || *b == b'1'),
                _ => None,
            };
            if let Some(digit) = digit {
                let end = digits_from(pos + 2, digit);
                let kind = if end == pos + 2 {
                    Kind::Bareword
                } else {
                    Kind::Number
                };
                t.set(kind, &s[pos..end]);
                return end;
            }
        }
        let mut end = digits_from(pos, u8::is_ascii_digit);
        if s.get(end) == Some(&b'.') {
            end = digits_from(end + 1, u8::is_ascii_digit);
            if end - pos == 1 {
                t.set(Kind::Dot, b".");
                return end;
            }
        }
        let mut exponent_without_digits = false;
        if matches!(s.get(end), Some(b'e' | b'E')) {
            end += 1;
            if matches!(s.get(end), Some(b'+' | b'-')) {
                end += 1;
            }
            let digits_end = digits_from(end, u8::is_ascii_digit);
            exponent_without_digits = digits_end == end;
            end = digits_end;
        }
        if matches!(s.get(end), Some(b'd' | b'D' | b'f' | b'F')) {
            // Oracle's float and double suffixes, when something that can
            // follow a number comes next (`1fUNION` too).
            match s.get(end + 1) {
                None => end += 1,
                Some(&next) if is_white(next) || matches!(next, b';' | b'u' | b'U') => end += 1,
                Some(_) => {}
            }
        }
        let kind = if exponent_without_digits {
            Kind::Bareword
        } else {
            Kind::Number
        };
        t.set(kind, &s[pos..end]);
        end
    }
}
