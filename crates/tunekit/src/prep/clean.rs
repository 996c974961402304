//! Text cleaning: each step optional, and each counted by the rows it changed, so a user can
//! see what a step did to their data before training on it.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// Unicode normalisation form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Leave code points as they are.
    None,
    /// Canonical composition: the same text typed differently becomes the same bytes.
    #[default]
    Nfc,
    /// Compatibility composition: also folds ligatures, full-width forms, superscripts.
    Nfkc,
}

/// `[data.clean]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanOptions {
    /// Unicode normalisation (default NFC).
    #[serde(default)]
    pub normalize: Normalization,
    /// Remove control and format characters (keeping tab and newline, which whitespace
    /// collapsing handles). Default on.
    #[serde(default = "yes")]
    pub strip_control: bool,
    /// Collapse runs of whitespace to one space and trim. Default on.
    #[serde(default = "yes")]
    pub collapse_whitespace: bool,
    /// Remove HTML tags and decode entities (`&amp;` → `&`). Default off.
    #[serde(default)]
    pub strip_html: bool,
    /// Lower-case the text. Default off (uncased tokenizers lower-case anyway).
    #[serde(default)]
    pub lowercase: bool,
}

fn yes() -> bool {
    true
}

impl Default for CleanOptions {
    fn default() -> Self {
        CleanOptions {
            normalize: Normalization::Nfc,
            strip_control: true,
            collapse_whitespace: true,
            strip_html: false,
            lowercase: false,
        }
    }
}

/// Rows each cleaning step changed (a row counts once per step however many characters
/// changed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanCounts {
    /// Rows changed by HTML stripping.
    pub html_stripped: usize,
    /// Rows changed by Unicode normalisation.
    pub unicode_normalized: usize,
    /// Rows that had control characters removed.
    pub control_removed: usize,
    /// Rows whose whitespace was collapsed or trimmed.
    pub whitespace_collapsed: usize,
    /// Rows lower-cased.
    pub lowercased: usize,
}

impl CleanCounts {
    /// Add another split's counts.
    pub fn add(&mut self, other: &CleanCounts) {
        self.html_stripped += other.html_stripped;
        self.unicode_normalized += other.unicode_normalized;
        self.control_removed += other.control_removed;
        self.whitespace_collapsed += other.whitespace_collapsed;
        self.lowercased += other.lowercased;
    }
}

static TAG: LazyLock<Regex> = LazyLock::new(|| {
    // Comments, and tags that start with a letter, `/` or `!`: "a < b" and "<3" survive.
    Regex::new(r"(?s)<!--.*?-->|</?[A-Za-z][^<>]*>|<![^<>]*>").unwrap_or_else(|_| unreachable!())
});

/// Apply the configured steps to one text, counting the steps that changed it.
pub fn clean(text: &str, opts: &CleanOptions, counts: &mut CleanCounts) -> String {
    let mut s: Cow<str> = Cow::Borrowed(text);
    if opts.strip_html {
        let stripped = TAG.replace_all(&s, " ");
        let decoded = html_escape::decode_html_entities(&stripped).into_owned();
        if decoded != s {
            counts.html_stripped += 1;
            s = Cow::Owned(decoded);
        }
    }
    // The quick check answers "already normalised" for almost every text without allocating.
    use unicode_normalization::{IsNormalized, is_nfc_quick, is_nfkc_quick};
    let normalized: Option<String> = match opts.normalize {
        Normalization::None => None,
        Normalization::Nfc => {
            (is_nfc_quick(s.chars()) != IsNormalized::Yes).then(|| s.nfc().collect())
        }
        Normalization::Nfkc => {
            (is_nfkc_quick(s.chars()) != IsNormalized::Yes).then(|| s.nfkc().collect())
        }
    };
    if let Some(n) = normalized
        && n != s
    {
        counts.unicode_normalized += 1;
        s = Cow::Owned(n);
    }
    if opts.strip_control && s.chars().any(is_control) {
        counts.control_removed += 1;
        s = Cow::Owned(s.chars().filter(|&c| !is_control(c)).collect());
    }
    if opts.collapse_whitespace {
        let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if collapsed != s {
            counts.whitespace_collapsed += 1;
            s = Cow::Owned(collapsed);
        }
    }
    if opts.lowercase {
        let lower = s.to_lowercase();
        if lower != s {
            counts.lowercased += 1;
            s = Cow::Owned(lower);
        }
    }
    s.into_owned()
}

/// Control (Cc) and invisible format characters (zero-width spaces and joiners, BOMs, bidi
/// marks), except whitespace controls, which whitespace collapsing deals with.
fn is_control(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}')
}

/// The key under which two texts count as exact duplicates: NFKC, lower-case, whitespace
/// collapsed. Independent of the cleaning options, so "exact" means the same thing for every
/// config.
pub fn dedup_key(text: &str) -> String {
    text.nfkc()
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, opts: &CleanOptions) -> (String, CleanCounts) {
        let mut c = CleanCounts::default();
        (clean(text, opts, &mut c), c)
    }

    #[test]
    fn default_steps_normalize_strip_controls_and_collapse_whitespace() {
        let (s, c) = run(
            "  Cafe\u{301}\u{200B} is\t\tgood\u{0007}\n",
            &CleanOptions::default(),
        );
        assert_eq!(s, "Café is good");
        assert_eq!(
            (
                c.unicode_normalized,
                c.control_removed,
                c.whitespace_collapsed
            ),
            (1, 1, 1)
        );
        let (s, c) = run("already clean", &CleanOptions::default());
        assert_eq!(s, "already clean");
        assert_eq!(c, CleanCounts::default());
    }

    #[test]
    fn html_is_stripped_and_entities_decoded_but_comparisons_survive() {
        let opts = CleanOptions {
            strip_html: true,
            ..CleanOptions::default()
        };
        let (s, c) = run("<p>Great <b>film</b> &amp; cast</p><!-- x -->", &opts);
        assert_eq!(s, "Great film & cast");
        assert_eq!(c.html_stripped, 1);
        let (s, _) = run("a < b and 3 > 2, <3", &opts);
        assert_eq!(s, "a < b and 3 > 2, <3");
    }

    #[test]
    fn nfkc_folds_compatibility_forms_and_lowercase_is_counted() {
        let opts = CleanOptions {
            normalize: Normalization::Nfkc,
            lowercase: true,
            ..CleanOptions::default()
        };
        let (s, c) = run("ＦＵＬＬ ﬁne", &opts);
        assert_eq!(s, "full fine");
        assert_eq!((c.unicode_normalized, c.lowercased), (1, 1));
    }

    #[test]
    fn dedup_key_ignores_case_width_and_spacing() {
        assert_eq!(dedup_key("  A  Good\tFilm "), dedup_key("a good film"));
        assert_eq!(dedup_key("ＡＢＣ"), "abc");
        assert_ne!(dedup_key("a good film"), dedup_key("a good film!"));
    }
}
