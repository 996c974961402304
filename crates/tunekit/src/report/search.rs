//! `STUDY/report.html` of a hyperparameter search: objective per trial with the best so far,
//! every trial's validation curve (where pruning cut them), one slice plot per parameter,
//! the importance table and the results table — same self-contained page style as a run's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plots::{self, Series, Style};
use super::{CSS, Figure, esc, figure_html};
use crate::error::Result;
use crate::fsutil::write_atomic;
use crate::search::study::{SearchConfig, SearchResults};
use crate::search::{Distribution, TrialState};

/// Write the search report into the study directory and return its path.
pub fn write(dir: &Path, cfg: &SearchConfig, results: &SearchResults) -> Result<PathBuf> {
    let mut figures = vec![objective_figure(results), curves_figure(results)];
    for (i, p) in cfg.space.params.iter().enumerate() {
        figures.push(slice_figure(results, i, &p.key, &p.dist));
    }
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tunekit search — {}</title><style>{CSS}</style></head><body>",
        esc(&dir.display().to_string())
    );
    let complete = results
        .trials
        .iter()
        .filter(|r| r.trial.state == TrialState::Complete)
        .count();
    let pruned = results
        .trials
        .iter()
        .filter(|r| r.trial.state == TrialState::Pruned)
        .count();
    let failed = results
        .trials
        .iter()
        .filter(|r| r.trial.state == TrialState::Failed)
        .count();
    let _ = write!(
        h,
        "<h1>Search <code>{}</code></h1><p class=\"lead\">{} trials ({complete} complete, {pruned} pruned, {failed} failed), sampler {:?}, pruner {:?}; objective: validation {} ({:?}).",
        esc(&dir.display().to_string()),
        results.trials.len(),
        cfg.search.sampler,
        cfg.search.pruner,
        esc(&results.objective),
        results.direction
    );
    if let Some(best) = results
        .best_trial
        .and_then(|n| results.trials.iter().find(|r| r.trial.number == n))
    {
        let params: Vec<String> = cfg
            .space
            .params
            .iter()
            .zip(&best.trial.values)
            .map(|(p, v)| format!("{} = {}", p.key, v.display(&p.dist)))
            .collect();
        let _ = write!(
            h,
            " Best: trial {} with {} = {:.4} ({}); its config is <code>best.toml</code>.",
            best.trial.number,
            esc(&results.objective),
            best.trial.objective.unwrap_or(f64::NAN),
            esc(&params.join(", "))
        );
    }
    h.push_str("</p><div class=\"grid\">");
    for f in &figures {
        figure_html(&mut h, f);
    }
    h.push_str("</div>");
    if !results.importance.is_empty() {
        h.push_str("<h2>Hyperparameter importance</h2><p>Share of the objective's variance over completed trials that each parameter explains on its own (a first-order, fANOVA-like main effect, from binned values).</p><table><tr><th>parameter</th><th>importance</th></tr>");
        for (k, v) in &results.importance {
            let _ = write!(h, "<tr><td>{}</td><td>{v:.3}</td></tr>", esc(k));
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>Trials</h2><pre>{}</pre>",
        esc(&crate::search::study::results_table(cfg, results))
    );
    h.push_str("<footer>Written by tunekit; each trial's own report is <code>trial-NNN/report.html</code>.</footer></body></html>\n");
    let path = dir.join(super::REPORT_FILE);
    write_atomic(&path, h.as_bytes())?;
    Ok(path)
}

fn objective_figure(results: &SearchResults) -> Figure {
    let mut complete = Vec::new();
    let mut pruned = Vec::new();
    let mut best_so_far = Vec::new();
    let mut best: Option<f64> = None;
    for r in &results.trials {
        let x = r.trial.number as f64;
        match (r.trial.state, r.trial.complete_objective()) {
            (TrialState::Complete, Some(y)) => {
                complete.push((x, y));
                if best.is_none_or(|b| results.direction.is_better(y, b)) {
                    best = Some(y);
                }
            }
            (TrialState::Pruned, _) => {
                if let Some((_, y)) = r.trial.last_report() {
                    pruned.push((x, y));
                }
            }
            _ => {}
        }
        if let Some(b) = best {
            best_so_far.push((x, b));
        }
    }
    let series = vec![
        Series {
            name: "complete trial (best validation value)".into(),
            points: complete,
            color: 0,
            style: Style::Dots,
        },
        Series {
            name: "pruned trial (value when stopped)".into(),
            points: pruned,
            color: 5,
            style: Style::Dots,
        },
        Series {
            name: "best so far".into(),
            points: best_so_far,
            color: 2,
            style: Style::Line,
        },
    ];
    Figure {
        id: "fig-objective".into(),
        caption: format!(
            "Validation {} of each trial, in the order they were proposed.",
            results.objective
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Objective per trial",
                x_label: "trial",
                y_label: &results.objective,
                marker: None,
                y_range: None,
                x_range: None,
                legend_low: false,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

fn curves_figure(results: &SearchResults) -> Figure {
    let series: Vec<Series> = results
        .trials
        .iter()
        .filter(|r| !r.trial.intermediate.is_empty())
        .map(|r| Series {
            name: format!("trial {}", r.trial.number),
            points: r
                .trial
                .intermediate
                .iter()
                .map(|&(e, v)| (e as f64, v))
                .collect(),
            color: if r.trial.state == TrialState::Pruned {
                5
            } else {
                0
            },
            style: Style::LineDots,
        })
        .collect();
    Figure {
        id: "fig-curves".into(),
        caption: format!(
            "Validation {} at each evaluation of every trial (blue: ran to the end, vermilion: pruned).",
            results.objective
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: "Learning curves",
                x_label: "evaluation",
                y_label: &results.objective,
                marker: None,
                y_range: None,
                x_range: None,
                legend_low: false,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}

fn slice_figure(results: &SearchResults, i: usize, key: &str, dist: &Distribution) -> Figure {
    let log = matches!(
        dist,
        Distribution::LogUniform { .. } | Distribution::Int { log: true, .. }
    );
    let mut complete = Vec::new();
    let mut pruned = Vec::new();
    for r in &results.trials {
        let Some(&v) = r.trial.values.get(i) else {
            continue;
        };
        let x = match v {
            crate::search::Value::Float(f) => f,
            crate::search::Value::Int(n) => n as f64,
            crate::search::Value::Choice(c) => c as f64,
        };
        let x = if log && x > 0.0 { x.log10() } else { x };
        match (
            r.trial.state,
            r.trial.complete_objective(),
            r.trial.last_report(),
        ) {
            (TrialState::Complete, Some(y), _) => complete.push((x, y)),
            (TrialState::Pruned, _, Some((_, y))) => pruned.push((x, y)),
            _ => {}
        }
    }
    let axis = match dist {
        Distribution::Choice(options) => {
            let names: Vec<String> = options
                .iter()
                .enumerate()
                .map(|(k, o)| format!("{k}={o}"))
                .collect();
            format!("{key} (option: {})", names.join(", "))
        }
        _ if log => format!("log10 {key}"),
        _ => key.to_string(),
    };
    let id = format!("fig-slice-{i}");
    let series = vec![
        Series {
            name: "complete".into(),
            points: complete,
            color: 0,
            style: Style::Dots,
        },
        Series {
            name: "pruned (when stopped)".into(),
            points: pruned,
            color: 5,
            style: Style::Dots,
        },
    ];
    Figure {
        id,
        caption: format!(
            "Slice plot: validation {} against {key}.",
            results.objective
        ),
        svg: plots::line_chart(
            &plots::Axes {
                title: &format!("Slice: {key}"),
                x_label: &axis,
                y_label: &results.objective,
                marker: None,
                y_range: None,
                x_range: None,
                legend_low: false,
            },
            &series,
        )
        .map_err(|e| e.to_string()),
    }
}
