//! Errors in a spec: every one names where (file:line:column, or the `--set` argument), which key, what is
//! wrong and how to fix it.

use super::node::Origin;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// The spec file as the user named it.
    pub file: String,
    pub origin: Origin,
    /// Dotted path of the key, e.g. `load.concurrency`; empty for the document itself.
    pub key: Box<str>,
    pub message: String,
    pub fix: Box<str>,
    /// The offending source line, for the caret display.
    pub line_text: Option<Box<str>>,
}

impl std::error::Error for SpecError {}

impl SpecError {
    pub fn new(file: &str, origin: Origin, key: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        SpecError {
            file: file.to_owned(),
            origin,
            key: key.into(),
            message: message.into(),
            fix: fix.into().into_boxed_str(),
            line_text: None,
        }
    }

    /// Attaches the source line the origin points at.
    pub fn with_source(mut self, text: &str) -> Self {
        if let Origin::File { line, .. } = self.origin {
            self.line_text = text.lines().nth(line.saturating_sub(1) as usize).map(Box::from);
        }
        self
    }

    /// `file:line:column` (or where else the value came from).
    pub fn place(&self) -> String {
        match &self.origin {
            Origin::File { line, column } => format!("{}:{line}:{column}", self.file),
            Origin::Override(arg) => format!("{} (command line `--set {arg}`)", self.file),
            Origin::Unknown => self.file.clone(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.place())?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(text), Origin::File { line, column }) = (&self.line_text, &self.origin) {
            let width = line.to_string().len();
            let shown: String = text.chars().take(160).collect();
            let pad: String = shown
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n {:>width$} | {shown}\n {:>width$} | {pad}^", line, "")?;
        }
        if !self.fix.is_empty() {
            write!(f, "\n  fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_l = word.to_lowercase().replace('-', "_");
    candidates
        .into_iter()
        .map(|c| (c, strsim::damerau_levenshtein(&word_l, &c.to_lowercase().replace('-', "_"))))
        .filter(|(c, d)| *d <= (c.chars().count().max(word.chars().count()) / 3).max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

/// Formats candidates as "`a`, `b` or `c`".
pub fn one_of(candidates: &[&str]) -> String {
    let quoted: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_rejects_strangers() {
        let fields = ["concurrency", "requests", "max_tokens", "prompt_tokens"];
        assert_eq!(closest("concurency", fields), Some("concurrency"));
        assert_eq!(closest("max-tokens", fields), Some("max_tokens"));
        assert_eq!(closest("banana", fields), None);
    }

    #[test]
    fn display_shows_place_key_caret_and_fix() {
        let e = SpecError::new(
            "s.yaml",
            Origin::File { line: 2, column: 16 },
            "load.concurrency",
            "must be ≥ 1",
            "set it to 1",
        )
        .with_source("load:\n  concurrency: 0\n");
        assert_eq!(
            e.to_string(),
            "s.yaml:2:16: `load.concurrency`: must be ≥ 1\n 2 |   concurrency: 0\n   |                ^\n  fix: set it to 1"
        );
    }
}
