//! Diagnostics: what is wrong with a topology file, where, and how to fix it.
//!
//! Every error the model reports names the file, the line and the column (1-based, columns in
//! characters), says what is wrong and gives a hint. [`Diagnostics`] renders like a compiler:
//!
//! ```text
//! three-host.toml:12:20: error: link endpoint "h4" is not a node
//!    |
//! 12 | endpoints = ["h1", "h4"]
//!    |                    ^^^^
//!   = help: declare it with [[host]] name = "h4", or use one of: h1, h2, h3, sw1
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in, as it was given.
    pub file: PathBuf,
    /// 1-based line (0 when the problem has no position, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column, counted in characters (0 when there is no position).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: String,
    /// The source line the problem is on, for the snippet under the message.
    pub source_line: Option<String>,
    /// How many characters the caret underline spans (at least 1).
    pub width: usize,
}

impl Diagnostic {
    /// A diagnostic that points nowhere in particular (the file as a whole).
    pub fn whole_file(file: &Path, message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            help: help.into(),
            source_line: None,
            width: 1,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            writeln!(f, "{}: error: {}", self.file.display(), self.message)?;
        } else {
            writeln!(
                f,
                "{}:{}:{}: error: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(text) = &self.source_line {
            let gutter = " ".repeat(self.line.to_string().len());
            writeln!(f, "{gutter} |")?;
            writeln!(f, "{} | {}", self.line, text)?;
            let pad = " ".repeat(self.column.saturating_sub(1));
            writeln!(f, "{gutter} | {pad}{}", "^".repeat(self.width.max(1)))?;
        }
        write!(f, "  = help: {}", self.help)
    }
}

/// Every problem found in one topology file, in source order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The problems, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts by position, keeping the order of problems found at the same place.
    pub(crate) fn sort(&mut self) {
        self.0.sort_by_key(|d| (d.line, d.column));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Self(vec![d])
    }
}

/// Turns byte spans of one source text into diagnostics.
#[derive(Debug, Clone)]
pub(crate) struct Reporter<'a> {
    file: &'a Path,
    src: &'a str,
    found: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub(crate) fn new(file: &'a Path, src: &'a str) -> Self {
        Self {
            file,
            src,
            found: Vec::new(),
        }
    }

    /// The 1-based line of a byte offset.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let offset = self.clamp(offset);
        self.src[..offset].matches('\n').count() + 1
    }

    fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// Builds a diagnostic for `span` without recording it.
    pub(crate) fn at(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Diagnostic {
        let start = self.clamp(span.start);
        let end = self.clamp(span.end.max(start));
        let line_start = self.src[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.src[start..]
            .find('\n')
            .map_or(self.src.len(), |i| start + i);
        let text = self.src[line_start..line_end].trim_end_matches('\r');
        let column = self.src[line_start..start].chars().count() + 1;
        let width = self.src[start..end.min(line_end)].chars().count().max(1);
        Diagnostic {
            file: self.file.to_path_buf(),
            line: self.line_of(start),
            column,
            message: message.into(),
            help: help.into(),
            source_line: Some(text.to_string()),
            width,
        }
    }

    /// Records a problem at `span`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let d = self.at(span, message, help);
        self.found.push(d);
    }

    pub(crate) fn push(&mut self, d: Diagnostic) {
        self.found.push(d);
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.found.is_empty()
    }

    /// Everything recorded so far, sorted by position.
    pub(crate) fn into_diagnostics(self) -> Diagnostics {
        let mut d = Diagnostics(self.found);
        d.sort();
        d
    }

    /// `Err` with everything recorded, if anything was.
    pub(crate) fn finish(self) -> Result<(), Diagnostics> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(self.into_diagnostics())
        }
    }
}

/// The closest of `candidates` to `word`, if any is close enough to be a likely typo.
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = "a = 1\nnäme = \"x\"\n";
        let r = Reporter::new(Path::new("t.toml"), src);
        let start = src.find("= \"x\"").unwrap_or(0);
        let d = r.at(start..start + 1, "m", "h");
        assert_eq!((d.line, d.column), (2, 6));
        assert_eq!(d.source_line.as_deref(), Some("näme = \"x\""));
    }

    #[test]
    fn closest_suggests_typos_only() {
        assert_eq!(closest("subnt", ["subnet", "mtu", "name"]), Some("subnet"));
        assert_eq!(closest("zzz", ["subnet", "mtu", "name"]), None);
    }
}
