//! Token kinds and libinjection's keyword table (the one libinjectionrs
//! ships), looked up through a hash map of the upper-cased word instead of
//! an allocation and a binary search per word.

use std::collections::HashMap;
use std::sync::OnceLock;

use foldhash::fast::FixedState;
use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;

/// A token's kind; its value is the letter libinjection writes for it in
/// a fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    None = 0,
    Keyword = b'k',
    Union = b'U',
    Group = b'B',
    Expression = b'E',
    SqlType = b't',
    Function = b'f',
    Bareword = b'n',
    Number = b'1',
    Variable = b'v',
    String = b's',
    Operator = b'o',
    LogicOperator = b'&',
    Comment = b'c',
    Collate = b'A',
    LeftParens = b'(',
    RightParens = b')',
    LeftBrace = b'{',
    RightBrace = b'}',
    Dot = b'.',
    Comma = b',',
    Colon = b':',
    Semicolon = b';',
    Tsql = b'T',
    Unknown = b'?',
    Evil = b'X',
    Fingerprint = b'F',
    Backslash = b'\\',
}

impl Kind {
    /// The kind the table's type letter stands for; letters the table
    /// gives no meaning are plain barewords.
    fn of_table(letter: u8) -> Kind {
        match letter {
            b'k' => Kind::Keyword,
            b'f' => Kind::Function,
            b'U' => Kind::Union,
            b'E' => Kind::Expression,
            b'T' => Kind::Tsql,
            b't' => Kind::SqlType,
            b'o' => Kind::Operator,
            b'&' => Kind::LogicOperator,
            b'v' => Kind::Variable,
            b'1' => Kind::Number,
            b'A' => Kind::Collate,
            b'B' => Kind::Group,
            b'F' => Kind::Fingerprint,
            _ => Kind::Bareword,
        }
    }

    /// `(`, `)`, `,`, `;`, `{` and `}` are their own kinds.
    pub fn of_punctuation(b: u8) -> Kind {
        match b {
            b'(' => Kind::LeftParens,
            b')' => Kind::RightParens,
            b',' => Kind::Comma,
            b';' => Kind::Semicolon,
            b'{' => Kind::LeftBrace,
            b'}' => Kind::RightBrace,
            _ => Kind::Unknown,
        }
    }
}

/// The longest word the table holds, plus room; longer words are not
/// looked up.
const WORD_MAX: usize = 32;

struct Table {
    words: HashMap<&'static [u8], Kind, FixedState>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table {
        words: SQL_KEYWORDS
            .iter()
            .map(|k| (k.word.as_bytes(), Kind::of_table(k.token_type)))
            .collect(),
    })
}

/// Builds the table now rather than on the first lookup.
pub fn prepare() {
    table();
}

/// The kind the table gives `word` (without case); a bareword when the
/// table lacks it.
pub fn lookup(word: &[u8]) -> Kind {
    let mut upper = [0u8; WORD_MAX];
    let Some(buf) = upper.get_mut(..word.len()) else {
        return Kind::Bareword;
    };
    buf.copy_from_slice(word);
    buf.make_ascii_uppercase();
    table().words.get(&*buf).copied().unwrap_or(Kind::Bareword)
}

/// Whether `fingerprint` (token letters) is on libinjection's blacklist,
/// which the table keeps as `0` and the letters upper-cased.
pub fn is_blacklisted(fingerprint: &[u8]) -> bool {
    if fingerprint.is_empty() || fingerprint.len() >= WORD_MAX {
        return false;
    }
    let mut key = [0u8; WORD_MAX];
    key[0] = b'0';
    key[1..=fingerprint.len()].copy_from_slice(fingerprint);
    lookup(&key[..=fingerprint.len()]) == Kind::Fingerprint
}
