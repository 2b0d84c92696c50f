//! Config diagnostics: every problem found in a config file, each pinned to
//! `file:line:col`, collected so that one `palisade check` shows all of them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in one file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// All problems of a config load, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one source text, turning byte spans into
/// line and column numbers.
pub struct Collector<'a> {
    file: &'a Path,
    text: &'a str,
    found: Vec<(usize, Diagnostic)>,
}

impl<'a> Collector<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Collector {
            file,
            text,
            found: Vec::new(),
        }
    }

    pub fn file(&self) -> &Path {
        self.file
    }

    /// Records `message` at the start of `span` (byte offsets into the text).
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let offset = span.start.min(self.text.len());
        let (line, col) = line_col(self.text, offset);
        self.found.push((
            offset,
            Diagnostic {
                file: self.file.to_path_buf(),
                line,
                col,
                message: message.into(),
            },
        ));
    }

    /// Records `message` at `line` of another file (a list the config
    /// names); it sorts after the config file's own problems.
    pub fn error_in(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.found.push((
            self.text.len().saturating_add(line),
            Diagnostic {
                file: file.to_path_buf(),
                line,
                col: 1,
                message: message.into(),
            },
        ));
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The diagnostics in source order, duplicates (same place, same text) removed.
    pub fn finish(mut self) -> Vec<Diagnostic> {
        self.found.sort_by_key(|(offset, _)| *offset);
        let mut out: Vec<Diagnostic> = Vec::with_capacity(self.found.len());
        for (_, d) in self.found {
            if out.last() != Some(&d) {
                out.push(d);
            }
        }
        out
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
        assert_eq!(line_col(text, 999), (3, 1));
    }
}
