//! SecLang text as ModSecurity reads it: physical lines joined at a
//! trailing backslash (the next line's leading blanks kept, as Apache's
//! config reader does), `#` comment lines dropped, and each logical line cut
//! into a directive name and its arguments.
//!
//! Arguments are separated by blanks; one in double (or single) quotes runs
//! to the matching unescaped quote, and inside it only `\"` (or `\'`) is an
//! escape: every other backslash is kept, so `"@rx \d+"` reaches the regex
//! compiler as `\d+`.

/// A logical line longer than this is refused: no real rule comes near it,
/// and it bounds the work a hostile file can cause per directive.
pub const MAX_LOGICAL_LINE: usize = 1024 * 1024;

/// One directive: its name, arguments, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

/// Cuts `text` into directives. Problems (an unterminated quote, a line
/// over the limit) are returned with their line number alongside the
/// directives that did parse.
pub fn directives(text: &str) -> (Vec<Directive>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut logical = String::new();
    let mut start_line = 0;
    let mut continuing = false;
    // Set while skipping the rest of a logical line that grew too long.
    let mut overflowed = false;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if !continuing {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            start_line = number;
            logical.clear();
            overflowed = false;
        }
        let (body, continues) = match line.trim_end().strip_suffix('\\') {
            Some(body) => (body, true),
            None => (line, false),
        };
        continuing = continues;
        if !overflowed && logical.len() + body.len() > MAX_LOGICAL_LINE {
            errors.push((
                start_line,
                format!("directive longer than {MAX_LOGICAL_LINE} bytes"),
            ));
            overflowed = true;
            logical.clear();
        }
        if overflowed {
            continue;
        }
        logical.push_str(body);
        if continues {
            continue;
        }
        match tokenize(&logical) {
            Ok(tokens) => {
                let mut tokens = tokens.into_iter();
                if let Some(name) = tokens.next() {
                    out.push(Directive {
                        line: start_line,
                        name,
                        args: tokens.collect(),
                    });
                }
            }
            Err(message) => errors.push((start_line, message)),
        }
    }
    if continuing && !overflowed && !logical.trim().is_empty() {
        errors.push((start_line, "file ends inside a continued line".to_string()));
    }
    (out, errors)
}

/// Splits a logical line into blank-separated words, honouring quotes.
pub fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(_, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '\'' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                if c == '\\' && chars.peek().is_some_and(|&(_, n)| n == quote) {
                    word.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {quote} quote"));
            }
            // A quoted word ends at its quote; text glued to it after is a
            // word of its own, as Apache's reader has it.
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        tokens.push(word);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_lines_join_and_comments_drop() {
        let text = "# comment\nSecRule ARGS \"@rx a\\d\" \\\n    \"id:1,\\\n    deny\"\n\n  # another\nSecMarker END\n";
        let (dirs, errors) = directives(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].line, 2);
        assert_eq!(dirs[0].args, ["ARGS", "@rx a\\d", "id:1,    deny"]);
        assert_eq!(dirs[1].line, 7);
        assert_eq!(dirs[1].args, ["END"]);
    }

    #[test]
    fn escaped_quotes_and_unterminated_quotes() {
        assert_eq!(
            tokenize(r#"SecRule A "x \"y\" \z""#).unwrap(),
            ["SecRule", "A", r#"x "y" \z"#]
        );
        assert!(tokenize("SecRule A \"open").is_err());
        let (_, errors) = directives("SecAction \"id:1\nSecMarker X\n");
        assert_eq!(errors[0].0, 1);
    }

    #[test]
    fn overlong_lines_are_refused_once() {
        let long = format!(
            "SecAction \"{}\"\nSecMarker OK\n",
            "a".repeat(MAX_LOGICAL_LINE + 10)
        );
        let (dirs, errors) = directives(&long);
        assert_eq!(errors.len(), 1);
        assert_eq!(dirs.len(), 1);
        assert_eq!(dirs[0].name, "SecMarker");
    }
}
