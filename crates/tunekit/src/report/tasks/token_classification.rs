//! Token-classification section: entity precision / recall / F1 per type (seqeval semantics,
//! [`crate::task::ner::entity_scores`]) and the error spans — false positives, false
//! negatives, wrong types and wrong boundaries — with their sentence.

use std::fmt::Write as _;

use serde::Deserialize;

use super::{Section, TaskRun};
use crate::error::Result;
use crate::report::esc;
use crate::task::ner::{self, Entity};

/// Rows of the error-span table.
const MAX_ERRORS: usize = 50;

/// One line of a token-classification `predictions/<split>.jsonl`.
#[derive(Debug, Deserialize)]
struct Line {
    /// The words joined by spaces.
    text: String,
    /// Gold tag of each word.
    #[serde(default)]
    labels: Vec<String>,
    /// Predicted tag of each word.
    #[serde(default)]
    predicted: Vec<String>,
    /// The words (written by tunekit since the task report; else `text` split on spaces).
    #[serde(default)]
    words: Option<Vec<String>>,
}

/// What is wrong with an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    /// Predicted, but no gold entity of that type covers any of its words.
    FalsePositive,
    /// A gold entity nothing predicted matches or overlaps.
    FalseNegative,
    /// The span is right, the type is not.
    WrongType,
    /// The type is right and the spans overlap, but the boundaries differ.
    WrongBoundary,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::FalsePositive => "false positive",
            ErrorKind::FalseNegative => "false negative",
            ErrorKind::WrongType => "wrong type",
            ErrorKind::WrongBoundary => "wrong boundary",
        }
    }
}

/// One error of one sentence: the gold and/or predicted entity `(type, first word, last word)`.
#[derive(Debug, Clone, PartialEq)]
struct SpanError {
    kind: ErrorKind,
    gold: Option<Entity>,
    predicted: Option<Entity>,
}

/// The errors of one sentence. Entities that match exactly (type and span, as seqeval counts
/// a true positive) are not errors; a predicted entity with a gold entity's exact span but
/// another type is a wrong type, one overlapping a gold entity of its type a wrong boundary
/// (seqeval counts each of these as one false positive and one false negative); what remains
/// is a false positive or a false negative.
fn span_errors(gold: &[String], predicted: &[String]) -> Vec<SpanError> {
    let g = ner::entities(std::slice::from_ref(&gold.to_vec()));
    let p = ner::entities(std::slice::from_ref(&predicted.to_vec()));
    let mut gold_left: Vec<Entity> = g.iter().filter(|e| !p.contains(e)).cloned().collect();
    let mut out = Vec::new();
    for e in p.iter().filter(|e| !g.contains(e)) {
        let same_span = gold_left.iter().position(|x| x.1 == e.1 && x.2 == e.2);
        let overlap = || {
            gold_left
                .iter()
                .position(|x| x.0 == e.0 && x.1 <= e.2 && e.1 <= x.2)
        };
        let (kind, hit) = match same_span {
            Some(i) => (ErrorKind::WrongType, Some(i)),
            None => match overlap() {
                Some(i) => (ErrorKind::WrongBoundary, Some(i)),
                None => (ErrorKind::FalsePositive, None),
            },
        };
        out.push(SpanError {
            kind,
            gold: hit.map(|i| gold_left.remove(i)),
            predicted: Some(e.clone()),
        });
    }
    out.extend(gold_left.into_iter().map(|e| SpanError {
        kind: ErrorKind::FalseNegative,
        gold: Some(e),
        predicted: None,
    }));
    out.sort_by_key(|e| {
        let at = e.gold.as_ref().or(e.predicted.as_ref()).map_or(0, |x| x.1);
        (at, e.kind.name())
    });
    out
}

/// The sentence with the words of `spans` in bold.
fn marked_sentence(words: &[String], spans: &[&Entity]) -> String {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if spans.iter().any(|e| e.1 <= i && i <= e.2) {
                format!("<b>{}</b>", esc(w))
            } else {
                esc(w)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn entity_text(words: &[String], e: Option<&Entity>) -> String {
    match e {
        Some((ty, a, b)) => format!(
            "{}: {}",
            esc(ty),
            esc(&words.get(*a..=*b).map(|w| w.join(" ")).unwrap_or_default())
        ),
        None => "—".into(),
    }
}

fn words_of(l: &Line) -> Vec<String> {
    match &l.words {
        Some(w) => w.clone(),
        None => l.text.split(' ').map(String::from).collect(),
    }
}

/// The token-classification section of the page.
pub(super) fn section(run: &TaskRun) -> Result<Section> {
    let mut h = String::new();
    let Some((split, lines)) = run.analysis_split::<Line>()? else {
        h.push_str("<p>No predictions/*.jsonl in the run directory: no per-type table.</p>");
        return Ok(Section {
            title: "Entities".into(),
            figures: Vec::new(),
            html: h,
        });
    };
    let gold: Vec<Vec<String>> = lines.iter().map(|l| l.labels.clone()).collect();
    let pred: Vec<Vec<String>> = lines.iter().map(|l| l.predicted.clone()).collect();
    let (all, per_type) = ner::entity_scores(&gold, &pred);
    let _ = write!(
        h,
        "<h3>Per entity type ({split} split, {} sentences; entity-level, seqeval's default mode)</h3><table id=\"entity-types\"><tr><th>type</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>predicted</th></tr>",
        lines.len()
    );
    let rows = per_type
        .iter()
        .map(|(t, s)| (t.as_str(), format!("f1/{t}"), s))
        .chain(std::iter::once(("all (micro)", "f1".to_string(), &all)));
    for (ty, key, s) in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td data-key=\"entity-types/{split}/{}\">{:.4}</td><td>{}</td><td>{}</td></tr>",
            esc(ty),
            s.precision,
            s.recall,
            esc(&key),
            s.f1,
            s.support,
            s.predicted
        );
    }
    h.push_str("</table>");

    let mut errors: Vec<(usize, SpanError)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        errors.extend(
            span_errors(&l.labels, &l.predicted)
                .into_iter()
                .map(|e| (i, e)),
        );
    }
    let count = |k: ErrorKind| errors.iter().filter(|e| e.1.kind == k).count();
    let _ = write!(
        h,
        "<h3 id=\"error-spans\">Error spans ({split} split): {} errors — {} false positives, {} false negatives, {} wrong types, {} wrong boundaries; the first {} shown</h3>\
         <table class=\"errors\"><tr><th>#</th><th>error</th><th>true entity</th><th>predicted entity</th><th>sentence (entities in bold)</th></tr>",
        errors.len(),
        count(ErrorKind::FalsePositive),
        count(ErrorKind::FalseNegative),
        count(ErrorKind::WrongType),
        count(ErrorKind::WrongBoundary),
        errors.len().min(MAX_ERRORS)
    );
    for (n, (i, e)) in errors.iter().take(MAX_ERRORS).enumerate() {
        let words = words_of(&lines[*i]);
        let spans: Vec<&Entity> = e.gold.iter().chain(e.predicted.iter()).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            n + 1,
            e.kind.name(),
            entity_text(&words, e.gold.as_ref()),
            entity_text(&words, e.predicted.as_ref()),
            marked_sentence(&words, &spans)
        );
    }
    h.push_str("</table>");
    Ok(Section {
        title: "Entities".into(),
        figures: Vec::new(),
        html: h,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn kinds(gold: &str, pred: &str) -> Vec<(ErrorKind, Option<Entity>, Option<Entity>)> {
        span_errors(&tags(gold), &tags(pred))
            .into_iter()
            .map(|e| (e.kind, e.gold, e.predicted))
            .collect()
    }

    fn ent(t: &str, a: usize, b: usize) -> Option<Entity> {
        Some((t.to_string(), a, b))
    }

    #[test]
    fn exact_matches_are_no_errors() {
        assert!(kinds("B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC").is_empty());
    }

    #[test]
    fn each_error_kind_is_named_with_its_entities() {
        use ErrorKind::*;
        // Wrong type on words 0–1, a missed LOC at 3, a spurious ORG at 5.
        assert_eq!(
            kinds("B-PER I-PER O B-LOC O O", "B-ORG I-ORG O O O B-ORG"),
            vec![
                (WrongType, ent("PER", 0, 1), ent("ORG", 0, 1)),
                (FalseNegative, ent("LOC", 3, 3), None),
                (FalsePositive, None, ent("ORG", 5, 5)),
            ]
        );
        // Boundary: PER 0–1 predicted as PER 0–0.
        assert_eq!(
            kinds("B-PER I-PER O", "B-PER O O"),
            vec![(WrongBoundary, ent("PER", 0, 1), ent("PER", 0, 0))]
        );
    }

    #[test]
    fn error_counts_agree_with_seqeval_counts() {
        // Every error kind but FN has one predicted entity; every kind but FP one gold entity;
        // so predicted − correct and gold − correct are recovered from the errors.
        let gold = tags("B-PER I-PER O B-LOC O B-ORG I-ORG O B-PER");
        let pred = tags("B-PER I-PER O B-ORG O B-ORG O B-LOC B-PER");
        let e = span_errors(&gold, &pred);
        let (all, _) = ner::entity_scores(&[gold], &[pred]);
        let correct = (all.precision * all.predicted as f64).round() as usize;
        let with_pred = e.iter().filter(|x| x.predicted.is_some()).count();
        let with_gold = e.iter().filter(|x| x.gold.is_some()).count();
        assert_eq!(with_pred, all.predicted - correct);
        assert_eq!(with_gold, all.support - correct);
    }

    #[test]
    fn marked_sentence_bolds_span_words_and_escapes() {
        let w: Vec<String> = ["a<b", "Maria", "Khan", "x"].map(String::from).to_vec();
        let e = ("PER".to_string(), 1, 2);
        assert_eq!(
            marked_sentence(&w, &[&e]),
            "a&lt;b <b>Maria</b> <b>Khan</b> x"
        );
    }
}
