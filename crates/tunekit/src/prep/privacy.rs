//! De-identification: e-mail addresses, URLs, IP addresses, card numbers and phone numbers
//! become typed placeholders (`[EMAIL]`, `[URL]`, `[IP]`, `[CARD]`, `[PHONE]`) before
//! anything is cached, trained on or written, and every replacement is counted by kind.
//!
//! Patterns are deliberately validated after matching (Luhn for cards, the standard library's
//! parser for IPv6, digit counts for phones) so ordinary numbers, dates and times survive.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};

/// Kinds of personal data tunekit recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiKind {
    /// E-mail addresses.
    Email,
    /// http(s)/ftp URLs and `www.` addresses.
    Url,
    /// IPv4 and IPv6 addresses.
    Ip,
    /// Card-like digit runs (13-19 digits) that pass the Luhn check.
    Card,
    /// Phone numbers (7-15 digits with a `+` prefix, parentheses or separators).
    Phone,
}

impl PiiKind {
    /// All kinds, in the order they are replaced (most specific first).
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Url,
        PiiKind::Ip,
        PiiKind::Card,
        PiiKind::Phone,
    ];

    /// The placeholder written in place of a match.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EMAIL]",
            PiiKind::Url => "[URL]",
            PiiKind::Ip => "[IP]",
            PiiKind::Card => "[CARD]",
            PiiKind::Phone => "[PHONE]",
        }
    }
}

/// `[data.privacy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyOptions {
    /// Replace personal data with placeholders. Default off.
    #[serde(default)]
    pub enabled: bool,
    /// Which kinds (default all).
    #[serde(default = "all_kinds")]
    pub kinds: Vec<PiiKind>,
}

fn all_kinds() -> Vec<PiiKind> {
    PiiKind::ALL.to_vec()
}

impl Default for PrivacyOptions {
    fn default() -> Self {
        PrivacyOptions {
            enabled: false,
            kinds: all_kinds(),
        }
    }
}

/// Replacements per kind.
pub type PiiCounts = BTreeMap<PiiKind, usize>;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("built-in pattern: {e}"))
}

static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b"));
static URL: LazyLock<Regex> =
    LazyLock::new(|| re(r#"(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`]+"#));
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
});
static IPV6: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)[0-9a-f]*:[0-9a-f:]*:[0-9a-f.]*"));
static CARD: LazyLock<Regex> = LazyLock::new(|| re(r"\b(?:\d[ -]?){12,18}\d\b"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}\b|\+\d{7,15}\b")
});

/// Replace the enabled kinds in `text`, adding to `counts`.
pub fn deidentify(text: &str, kinds: &[PiiKind], counts: &mut PiiCounts) -> String {
    let mut s = text.to_string();
    for kind in PiiKind::ALL {
        if !kinds.contains(&kind) {
            continue;
        }
        let mut n = 0usize;
        let mut replace = |re: &Regex, s: &str, valid: &dyn Fn(&str) -> Option<usize>| {
            re.replace_all(s, |c: &Captures| {
                let m = &c[0];
                match valid(m) {
                    // `Some(len)`: the first `len` bytes are the match; the rest is kept.
                    Some(len) => {
                        n += 1;
                        format!("{}{}", kind.placeholder(), &m[len..])
                    }
                    None => m.to_string(),
                }
            })
            .into_owned()
        };
        s = match kind {
            PiiKind::Email => replace(&EMAIL, &s, &|m| Some(m.len())),
            PiiKind::Url => replace(&URL, &s, &|m| {
                // Sentence punctuation after a URL is not part of it.
                Some(
                    m.trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']'])
                        .len(),
                )
            }),
            PiiKind::Ip => {
                let v4 = replace(&IPV4, &s, &|m| Some(m.len()));
                replace(&IPV6, &v4, &|m| {
                    let t = m.trim_end_matches([':', '.']);
                    t.parse::<std::net::Ipv6Addr>().ok().map(|_| t.len())
                })
            }
            PiiKind::Card => replace(&CARD, &s, &|m| luhn(m).then_some(m.len())),
            PiiKind::Phone => replace(&PHONE, &s, &|m| {
                let digits = m.chars().filter(char::is_ascii_digit).count();
                let formatted =
                    m.starts_with('+') || m.contains('(') || m.contains([' ', '-', '.']);
                ((7..=15).contains(&digits) && formatted && !looks_like_date(m)).then_some(m.len())
            }),
        };
        if n > 0 {
            *counts.entry(kind).or_default() += n;
        }
    }
    s
}

/// `2024-01-15`, `15.01.2024`, `1999-2004`: digit groups that are dates or ranges, not phones.
fn looks_like_date(m: &str) -> bool {
    let groups: Vec<&str> = m
        .split(['-', '.', '/', ' '])
        .filter(|g| !g.is_empty())
        .collect();
    let year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    groups.len() <= 3 && groups.iter().any(|g| year(g)) && !m.starts_with('+')
}

/// The Luhn checksum of the digits in `s`, for 13 to 19 digits.
fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> (String, PiiCounts) {
        let mut c = PiiCounts::new();
        (deidentify(text, &PiiKind::ALL, &mut c), c)
    }

    #[test]
    fn each_kind_becomes_its_placeholder_and_is_counted() {
        let (s, c) = all(
            "Mail jane.doe+x@example.co.uk or see https://example.com/a?b=1. \
             Server 192.168.0.12 and fe80::1ff:fe23:4567:890a, card 4111 1111 1111 1111, \
             call +1 (555) 123-4567 or 020 7946 0958.",
        );
        assert_eq!(
            s,
            "Mail [EMAIL] or see [URL]. Server [IP] and [IP], card [CARD], call [PHONE] or [PHONE]."
        );
        assert_eq!(c[&PiiKind::Email], 1);
        assert_eq!(c[&PiiKind::Url], 1);
        assert_eq!(c[&PiiKind::Ip], 2);
        assert_eq!(c[&PiiKind::Card], 1);
        assert_eq!(c[&PiiKind::Phone], 2);
    }

    #[test]
    fn ordinary_numbers_dates_and_times_survive() {
        let text = "In 2019 it cost 12.50 for 3 tickets; 10:30:00 on 2024-01-15, rated 4/5, \
                    scores 1999-2004, order 1234567890123 (not Luhn), version 1.2.3";
        let (s, c) = all(text);
        assert_eq!(s, text, "{c:?}");
        assert!(c.is_empty());
    }

    #[test]
    fn only_the_chosen_kinds_are_replaced() {
        let mut c = PiiCounts::new();
        let s = deidentify("a@b.org at 10.0.0.1", &[PiiKind::Ip], &mut c);
        assert_eq!(s, "a@b.org at [IP]");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn luhn_accepts_real_test_numbers_only() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("1234"));
    }
}
