//! Embedding section: retrieval metrics (each anchor ranks every positive of its split, as
//! [`crate::task::embedding::retrieval_scores`] does), recall@k against k, the similarity of
//! each anchor's positive against its hardest in-split negative, and the worst retrievals.

use std::fmt::Write as _;

use serde::Deserialize;

use super::{Section, TaskRun, histogram};
use crate::error::Result;
use crate::report::plots::{self, Series, Style};
use crate::report::{Figure, esc, fmt_opt, missing};

/// Largest k of the recall@k curve.
const MAX_K: usize = 50;
/// Rows of the worst-retrievals table.
const WORST: usize = 10;

/// One line of an embedding `predictions/<split>.jsonl`.
#[derive(Debug, Deserialize)]
struct Line {
    /// `anchor<TAB>positive`.
    text: String,
    /// 1-based rank of the anchor's own positive among all positives of the split.
    #[serde(default)]
    positive_rank: Option<usize>,
    /// Cosine similarity of anchor and positive.
    #[serde(default)]
    positive_similarity: Option<f64>,
    /// Row of the most similar other positive.
    #[serde(default)]
    nearest_negative: Option<usize>,
    /// Its cosine similarity with the anchor.
    #[serde(default)]
    nearest_negative_similarity: Option<f64>,
}

impl Line {
    fn anchor(&self) -> &str {
        self.text.split_once('\t').map_or(&self.text, |p| p.0)
    }
    fn positive(&self) -> &str {
        self.text.split_once('\t').map_or("", |p| p.1)
    }
}

/// Retrieval metrics from the positives' ranks: MRR (mean of 1 / rank) and recall@k (share of
/// anchors whose positive ranks k or better) for `ks`.
fn rank_metrics(ranks: &[usize], ks: &[usize]) -> (f64, Vec<f64>) {
    let n = ranks.len().max(1) as f64;
    let mrr = ranks.iter().map(|&r| 1.0 / r.max(1) as f64).sum::<f64>() / n;
    let recall = ks
        .iter()
        .map(|&k| ranks.iter().filter(|&&r| r <= k).count() as f64 / n)
        .collect();
    (mrr, recall)
}

fn recall_figure(split: &str, ranks: &[usize]) -> Figure {
    let kmax = ranks.len().clamp(1, MAX_K);
    let ks: Vec<usize> = (1..=kmax).collect();
    let (_, recall) = rank_metrics(ranks, &ks);
    let series = [Series {
        name: format!("recall@k ({} candidates per anchor)", ranks.len()),
        points: ks.iter().zip(recall).map(|(&k, r)| (k as f64, r)).collect(),
        color: 0,
        style: Style::LineDots,
    }];
    Figure {
        id: "fig-recall-at-k".into(),
        caption: format!(
            "Share of {split} anchors whose own positive is among the k most similar of all \
             {} positives of the split.",
            ranks.len()
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Recall@k",
                x_label: "k",
                y_label: "recall@k",
                y_range: Some((0.0, 1.02)),
                legend_low: true,
                ..Default::default()
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

fn similarity_figure(split: &str, pos: &[f64], neg: &[f64]) -> Figure {
    let all = pos.iter().chain(neg).copied();
    let lo = all.clone().fold(f64::INFINITY, f64::min).min(0.0);
    let hi = all.fold(f64::NEG_INFINITY, f64::max).max(lo + 1e-6);
    let series = [
        Series {
            name: "anchor · its positive".into(),
            points: histogram(pos, lo, hi, 30),
            color: 2,
            style: Style::LineDots,
        },
        Series {
            name: "anchor · hardest in-split negative".into(),
            points: histogram(neg, lo, hi, 30),
            color: 5,
            style: Style::LineDots,
        },
    ];
    Figure {
        id: "fig-similarity".into(),
        caption: format!(
            "Cosine similarity of each {split} anchor with its positive and with the most similar \
             other positive of the split (30 bins; share of anchors per bin). An anchor \
             retrieves its positive first exactly when the first beats the second."
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Similarity: positives vs hardest negatives",
                x_label: "cosine similarity",
                y_label: "share of anchors",
                ..Default::default()
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

/// The embedding section of the page.
pub(super) fn section(run: &TaskRun) -> Result<Section> {
    let mut figures = Vec::new();
    let mut h = String::new();
    h.push_str("<h3>Retrieval</h3><table id=\"retrieval\"><tr><th>split</th><th>MRR</th><th>recall@1</th><th>recall@5</th><th>recall@10</th><th>median rank</th><th>candidates</th></tr>");
    for split in ["validation", "test"] {
        let Some(s) = run.scores(split) else { continue };
        let ranks: Vec<usize> = run
            .predictions::<Line>(split)?
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l.positive_rank)
            .collect();
        let (r10, median) = if ranks.is_empty() {
            ("—".to_string(), "—".to_string())
        } else {
            let mut sorted = ranks.clone();
            sorted.sort_unstable();
            (
                format!("{:.4}", rank_metrics(&ranks, &[10]).1[0]),
                sorted[(sorted.len() - 1) / 2].to_string(),
            )
        };
        let _ = write!(h, "<tr><td>{split}</td>");
        for k in ["mrr", "recall_at_1", "recall_at_5"] {
            let _ = write!(
                h,
                "<td data-key=\"retrieval/{split}/{k}\">{}</td>",
                fmt_opt(s.get(k).copied())
            );
        }
        let _ = write!(
            h,
            "<td data-key=\"retrieval/{split}/recall_at_10\">{r10}</td><td>{median}</td><td>{}</td></tr>",
            run.evaluated(split)
                .map_or_else(|| ranks.len().to_string(), |n| n.to_string())
        );
    }
    h.push_str("</table><p>Each anchor ranks every positive of its split by cosine similarity (the split is one batch of candidates); MRR and recall@1/5 are the run's scores (metrics.json), recall@10 and the median rank come from predictions/*.jsonl.</p>");

    match run.analysis_split::<Line>()? {
        Some((split, lines)) if !lines.is_empty() => {
            let ranks: Vec<usize> = lines.iter().filter_map(|l| l.positive_rank).collect();
            figures.push(if ranks.is_empty() {
                missing(
                    "fig-recall-at-k",
                    "Recall@k",
                    "the predictions lines have no positive_rank",
                )
            } else {
                recall_figure(split, &ranks)
            });
            let pos: Vec<f64> = lines.iter().filter_map(|l| l.positive_similarity).collect();
            let neg: Vec<f64> = lines
                .iter()
                .filter_map(|l| l.nearest_negative_similarity)
                .collect();
            figures.push(if pos.is_empty() || neg.is_empty() {
                missing(
                    "fig-similarity",
                    "Similarity: positives vs hardest negatives",
                    "the predictions lines have no similarities (written by tunekit since the task report)",
                )
            } else {
                similarity_figure(split, &pos, &neg)
            });
            worst_table(&mut h, split, &lines);
        }
        _ => {
            let why = "no predictions/*.jsonl in the run directory";
            figures.push(missing("fig-recall-at-k", "Recall@k", why));
            figures.push(missing(
                "fig-similarity",
                "Similarity: positives vs hardest negatives",
                why,
            ));
        }
    }
    Ok(Section {
        title: "Retrieval".into(),
        figures,
        html: h,
    })
}

/// Anchors whose positive was not retrieved first, by how far the hardest negative beat it.
fn worst_table(h: &mut String, split: &str, lines: &[Line]) {
    let mut misses: Vec<(usize, &Line)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.positive_rank.is_some_and(|r| r > 1))
        .collect();
    let margin = |l: &Line| {
        l.nearest_negative_similarity.unwrap_or(0.0) - l.positive_similarity.unwrap_or(0.0)
    };
    misses.sort_by(|a, b| margin(b.1).total_cmp(&margin(a.1)));
    let _ = write!(
        h,
        "<h3 id=\"retrieval-errors\">Worst retrievals ({split} split, {} of {} anchors did not retrieve their positive first; {} shown)</h3>\
         <table class=\"errors\"><tr><th>#</th><th>anchor</th><th>its positive</th><th>retrieved instead</th><th>rank</th><th>similarity positive / retrieved</th></tr>",
        misses.len(),
        lines.len(),
        misses.len().min(WORST)
    );
    for (n, (_, l)) in misses.iter().take(WORST).enumerate() {
        let instead = l
            .nearest_negative
            .and_then(|j| lines.get(j))
            .map_or("—", Line::positive);
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td><td>{} / {}</td></tr>",
            n + 1,
            esc(l.anchor()),
            esc(l.positive()),
            esc(instead),
            l.positive_rank.unwrap_or(0),
            fmt_opt(l.positive_similarity),
            fmt_opt(l.nearest_negative_similarity)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_metrics_equal_the_libraries_retrieval_scores() {
        // Three anchors and positives in 2-D; ranks by hand: anchor 0 → own positive first,
        // anchor 1 → second (positive 0 is closer), anchor 2 → second (positive 1 is).
        let a = vec![vec![1.0f32, 0.0], vec![0.8, 0.6], vec![0.0, 1.0]];
        let p = vec![vec![0.96f32, 0.28], vec![0.0, 1.0], vec![-0.6, 0.8]];
        let lib = crate::task::embedding::retrieval_scores(&a, &p, 20.0);
        let ranks = [1usize, 2, 2];
        let (mrr, recall) = rank_metrics(&ranks, &[1, 5]);
        assert!((mrr - 2.0 / 3.0).abs() < 1e-12);
        assert!((mrr - lib["mrr"]).abs() < 1e-12);
        assert!((recall[0] - lib["recall_at_1"]).abs() < 1e-12);
        assert!((recall[1] - lib["recall_at_5"]).abs() < 1e-12);
    }

    #[test]
    fn lines_split_anchor_and_positive_at_the_first_tab() {
        let l = Line {
            text: "a b\tc\td".into(),
            positive_rank: None,
            positive_similarity: None,
            nearest_negative: None,
            nearest_negative_similarity: None,
        };
        assert_eq!((l.anchor(), l.positive()), ("a b", "c\td"));
    }
}
