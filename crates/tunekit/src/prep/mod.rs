//! Data preparation: the one pipeline `tunekit data check`, `data prepare` and `train` share,
//! from raw files to the examples a model sees, with a report that accounts for every row.
//!
//! Order of the steps, and why:
//! 1. read (encoding, decode errors, empty text/label, label filling) — [`crate::data`];
//! 2. clean ([`clean`]) and de-identify ([`privacy`]) each text, so personal data never
//!    reaches a cache, a model or an output file; rows left empty are dropped;
//! 3. carve the splits that have no file out of the training file ([`split`]), stratified;
//! 4. de-duplicate within and across splits ([`dedup`]): leakage leaves the lower split;
//! 5. token lengths with the model's tokenizer: statistics, truncation counts, and optional
//!    percentile-based removal of length outliers from the training split only (evaluation
//!    data is never thinned silently).

pub mod augment;
pub mod clean;
pub mod dedup;
pub mod privacy;
pub mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::data::{Example, ReadReport};
use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;

pub use clean::{CleanCounts, CleanOptions};
pub use dedup::{DedupOptions, DedupReport, DropReason};
pub use privacy::{PiiCounts, PrivacyOptions};
pub use split::SplitOptions;

/// The per-text part of the pipeline (cleaning and de-identification) as saved with an
/// exported model (`tunekit.json`), so `eval`, `predict` and `serve` feed the model text
/// prepared exactly as in training (no train/serve skew).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextPreprocess {
    /// Cleaning steps.
    pub clean: CleanOptions,
    /// Personal-data kinds replaced (empty: none).
    #[serde(default)]
    pub privacy: Vec<privacy::PiiKind>,
}

impl TextPreprocess {
    /// The per-text steps of a run's `[data]` section.
    pub fn from_config(data: &crate::config::DataSection) -> Self {
        TextPreprocess {
            clean: data.clean.clone(),
            privacy: if data.privacy.enabled {
                data.privacy.kinds.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Apply the steps to one text (counts are discarded: inference has no report).
    pub fn apply(&self, text: &str) -> String {
        self.apply_counted(text, &mut CleanCounts::default(), &mut PiiCounts::new())
    }

    /// Apply the steps, counting what each changed — the one place training and inference
    /// share, so they cannot drift apart.
    pub fn apply_counted(
        &self,
        text: &str,
        cleaning: &mut CleanCounts,
        pii: &mut PiiCounts,
    ) -> String {
        let cleaned = clean::clean(text, &self.clean, cleaning);
        if self.privacy.is_empty() {
            cleaned
        } else {
            privacy::deidentify(&cleaned, &self.privacy, pii)
        }
    }
}

/// `[data.outliers]`: token-length outliers, dropped from the training split only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OutlierOptions {
    /// Drop training rows shorter (in tokens) than this percentile of the training split
    /// (e.g. 1.0). Off when absent.
    #[serde(default)]
    pub drop_below_percentile: Option<f64>,
    /// Drop training rows longer than this percentile (e.g. 99.0). Off when absent.
    #[serde(default)]
    pub drop_above_percentile: Option<f64>,
}

/// One split after preparation.
#[derive(Debug, Clone)]
pub struct PreparedSplit {
    /// `train`, `validation` or `test`.
    pub name: String,
    /// The file its rows came from.
    pub file: PathBuf,
    /// The kept examples, cleaned.
    pub examples: Vec<Example>,
    /// Full token count per example (when a tokenizer was given).
    pub token_lengths: Option<Vec<usize>>,
}

/// Token-length statistics of a split (special tokens included, before truncation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    /// Mean.
    pub mean: f64,
    /// Shortest.
    pub min: usize,
    /// Median.
    pub p50: usize,
    /// 95th percentile.
    pub p95: usize,
    /// 99th percentile.
    pub p99: usize,
    /// Longest.
    pub max: usize,
    /// `model.max_length`.
    pub max_length: usize,
    /// Rows longer than `max_length`, which training truncates.
    pub truncated: usize,
    /// (bin, rows): power-of-two bins `1-8`, `9-16`, ..., `>512`.
    pub histogram: Vec<(String, usize)>,
}

/// What happened to one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// Split name.
    pub split: String,
    /// Source file.
    pub file: PathBuf,
    /// Set when the split was carved out of the training file (`[data.split]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carved_from_train: Option<f64>,
    /// Data rows read from the file (for carved splits: rows assigned to the split).
    pub rows_read: usize,
    /// Rows removed, by reason. Every removed row is in exactly one reason.
    pub dropped: BTreeMap<String, usize>,
    /// Rows whose empty label was filled (`data.fill_missing_label`).
    pub labels_filled: usize,
    /// Multilabel: rows kept with an empty label cell, i.e. the empty label set ("none of
    /// these"), which is a legitimate example, not a missing label.
    #[serde(default)]
    pub empty_label_sets: usize,
    /// Rows with undecodable bytes replaced (`data.on_decode_error = "replace"`).
    pub decode_replaced: usize,
    /// Rows each cleaning step changed.
    pub cleaning: CleanCounts,
    /// Personal data replaced, by kind.
    pub pii_replaced: PiiCounts,
    /// Rows kept.
    pub examples: usize,
    /// Kept rows per label.
    pub label_counts: BTreeMap<String, usize>,
    /// Token lengths of the kept rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<LengthStats>,
    /// Word pieces of the kept rows the tokenizer mapped to its unknown token (`[UNK]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_tokens: Option<UnknownTokens>,
}

/// Share of word pieces that are the tokenizer's unknown token (`[UNK]`) above which the
/// data report warns: the model's vocabulary does not cover the data (another script or
/// language), and what it cannot spell it cannot learn from.
pub const UNKNOWN_TOKEN_WARN_RATE: f64 = 0.05;

/// Unknown-token count of a split (special tokens excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownTokens {
    /// Word pieces of the kept rows (texts and pairs).
    pub word_pieces: usize,
    /// Of those, pieces that are the unknown token.
    pub unknown: usize,
    /// `unknown / word_pieces` (0 without pieces).
    pub rate: f64,
}

/// The data report: per split accounting plus de-duplication findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataReport {
    /// Splits in order train, validation, test.
    pub splits: Vec<SplitSummary>,
    /// Duplicates, conflicts and leakage.
    pub dedup: DedupReport,
    /// What a practitioner should look at before training (unknown-token rates past
    /// [`UNKNOWN_TOKEN_WARN_RATE`], classes too small for the splits, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `label_counts` key of multilabel rows with the empty label set.
pub const NO_LABELS: &str = "(no labels)";

/// Prepared splits and their report.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Train first, then validation and test when present.
    pub splits: Vec<PreparedSplit>,
    /// The report.
    pub report: DataReport,
}

impl PreparedData {
    /// The split of that name.
    pub fn split(&self, name: &str) -> Option<&PreparedSplit> {
        self.splits.iter().find(|s| s.name == name)
    }
}

/// A split in the making: examples plus their bookkeeping.
struct Working {
    name: &'static str,
    file: PathBuf,
    carved: Option<f64>,
    examples: Vec<Example>,
    read: ReadReport,
    dropped: BTreeMap<String, usize>,
    cleaning: CleanCounts,
    pii: PiiCounts,
    empty_label_sets: usize,
    /// What reading and cleaning did to each row of `examples` (kept in step with it until
    /// the splits are carved), so carved splits count their own rows.
    meta: Vec<RowMeta>,
}

/// Per-row bookkeeping of reading and cleaning.
#[derive(Debug, Clone, Default)]
struct RowMeta {
    /// Undecodable bytes were replaced.
    replaced: bool,
    /// The empty label was filled with `data.fill_missing_label`.
    filled: bool,
    /// Multilabel row with the empty label set.
    empty_label_set: bool,
    /// Cleaning steps that changed the row.
    cleaning: CleanCounts,
    /// Personal data replaced in the row.
    pii: PiiCounts,
}

impl Working {
    fn drop_count(&mut self, reason: &str, n: usize) {
        if n > 0 {
            *self.dropped.entry(reason.to_string()).or_default() += n;
        }
    }
}

/// Per kept row: (undecodable bytes replaced, empty label filled).
type RowFlags = Vec<(bool, bool)>;

/// Read a file's examples with, per kept row, whether undecodable bytes were replaced in it
/// and whether its empty label was filled (so both are counted in the split the row ends up
/// in when tunekit carves the splits).
fn read_with_replacements(
    spec: &crate::data::DataSpec,
) -> Result<(Vec<Example>, RowFlags, ReadReport)> {
    let mut iter = crate::data::example_iter(spec)?;
    let (mut examples, mut flags) = (Vec::new(), Vec::new());
    let (mut replaced_before, mut filled_before) = (0, 0);
    while let Some(e) = iter.next() {
        examples.push(e?);
        let (replaced, filled) = (
            iter.report().decode_replaced,
            iter.report().empty_label_filled,
        );
        flags.push((replaced > replaced_before, filled > filled_before));
        (replaced_before, filled_before) = (replaced, filled);
    }
    Ok((examples, flags, iter.report().clone()))
}

/// Run the pipeline for a run's `[data]` section. With a tokenizer, token lengths are
/// measured and length outliers can be dropped.
pub fn prepare(config: &RunConfig, tokenizer: Option<&TextTokenizer>) -> Result<PreparedData> {
    if config.task.kind == crate::task::TaskKind::TokenClassification {
        return Err(Error::Config(
            "token_classification data are CoNLL sentences, not table rows: `tunekit train` reads them and writes their report (data_report.json)".into(),
        ));
    }
    let d = &config.data;
    let mut work: Vec<Working> = Vec::new();
    let files = [
        ("train", Some(&d.train)),
        ("validation", d.validation.as_ref()),
        ("test", d.test.as_ref()),
    ];
    for (name, file) in files {
        let Some(file) = file else { continue };
        work.push(read_split(config, name, file)?);
    }

    if let Some(opts) = &d.split {
        carve(
            &mut work,
            opts,
            config.task.kind.is_classification(),
            &d.dedup,
        )?;
    }

    let dedup_report = remove_duplicates(&mut work, &d.dedup);

    let mut out = Vec::new();
    let mut summaries = Vec::new();
    let mut warnings = Vec::new();
    for w in work {
        let (summary, split) = finish_split(w, config, tokenizer, &mut warnings)?;
        summaries.push(summary);
        out.push(split);
    }
    if config.task.kind.is_classification() {
        warnings.extend(class_coverage_warnings(&summaries));
    }
    Ok(PreparedData {
        splits: out,
        report: DataReport {
            splits: summaries,
            dedup: dedup_report,
            warnings,
        },
    })
}

/// Step 1–2 for one file: read split `name` from `file`, count what reading dropped, then
/// clean and de-identify its texts.
fn read_split(config: &RunConfig, name: &'static str, file: &Path) -> Result<Working> {
    let d = &config.data;
    let (examples, replaced, read) = read_with_replacements(&config.data_spec(file, true))?;
    let empty_sets =
        config.task.kind == crate::task::TaskKind::Multilabel && d.fill_missing_label.is_none();
    let meta = examples
        .iter()
        .zip(replaced)
        .map(|(e, (replaced, filled))| RowMeta {
            replaced,
            // Multilabel's empty sets are counted as such, not as filled labels.
            filled: filled && !empty_sets,
            empty_label_set: empty_sets && e.label.as_deref() == Some(""),
            ..RowMeta::default()
        })
        .collect();
    let mut w = Working {
        name,
        file: file.to_path_buf(),
        carved: None,
        examples,
        dropped: BTreeMap::new(),
        cleaning: CleanCounts::default(),
        pii: PiiCounts::new(),
        empty_label_sets: 0,
        meta,
        read,
    };
    if empty_sets {
        // The reader "filled" empty labels with the empty set (see `data_spec`).
        w.empty_label_sets = std::mem::take(&mut w.read.empty_label_filled);
    }
    w.drop_count("empty_text", w.read.empty_text_dropped);
    w.drop_count("empty_label", w.read.empty_label_dropped);
    clean_split(&mut w, config);
    Ok(w)
}

/// Step 4: de-duplicate within and across the splits, dropping (and counting) what
/// [`dedup::dedup`] decides.
fn remove_duplicates(work: &mut [Working], opts: &DedupOptions) -> DedupReport {
    let keys: Vec<Vec<String>> = work
        .iter()
        .map(|w| w.examples.iter().map(example_key).collect())
        .collect();
    let splits: Vec<(&str, Vec<dedup::Item<'_>>)> = work
        .iter()
        .zip(&keys)
        .map(|(w, keys)| {
            let rows = w
                .examples
                .iter()
                .zip(keys)
                .map(|(e, k)| dedup::Item {
                    key: k,
                    label: e.label.as_deref(),
                    line: e.line,
                    text: &e.text,
                })
                .collect();
            (w.name, rows)
        })
        .collect();
    let (drops, dedup_report) = dedup::dedup(&splits, opts);
    drop(splits);
    drop(keys);
    for (w, drops) in work.iter_mut().zip(drops) {
        let mut kept = Vec::with_capacity(w.examples.len());
        for (e, reason) in std::mem::take(&mut w.examples).into_iter().zip(drops) {
            match reason {
                None => kept.push(e),
                Some(r) => w.drop_count(r.name(), 1),
            }
        }
        w.examples = kept;
    }
    dedup_report
}

/// Step 5 and the summary for one split: token lengths (dropping training-set length
/// outliers), label counts, and the split's report; a split left empty is an error.
fn finish_split(
    mut w: Working,
    config: &RunConfig,
    tokenizer: Option<&TextTokenizer>,
    warnings: &mut Vec<String>,
) -> Result<(SplitSummary, PreparedSplit)> {
    let (lengths, unknown_tokens) = match tokenizer {
        Some(t) => token_lengths(&mut w, t, &config.data.outliers, warnings)?,
        None => (None, None),
    };
    let label_counts = label_counts(&w.examples, config);
    let summary = SplitSummary {
        split: w.name.to_string(),
        file: w.file.clone(),
        carved_from_train: w.carved,
        rows_read: w.read.rows_read,
        dropped: w.dropped,
        labels_filled: w.read.empty_label_filled,
        empty_label_sets: w.empty_label_sets,
        decode_replaced: w.read.decode_replaced,
        cleaning: w.cleaning,
        pii_replaced: w.pii,
        examples: w.examples.len(),
        label_counts,
        tokens: lengths
            .as_deref()
            .map(|l| length_stats(l, config.model.max_length)),
        unknown_tokens,
    };
    if w.examples.is_empty() {
        return Err(Error::Data(crate::data::DataError::Malformed {
            file: w.file.clone(),
            line: 0,
            message: format!(
                "no {} examples left after preparation (see the data report: tunekit data check)",
                w.name
            ),
        }));
    }
    let split = PreparedSplit {
        name: w.name.to_string(),
        file: w.file,
        examples: w.examples,
        token_lengths: lengths,
    };
    Ok((summary, split))
}

/// Token lengths of a split's examples (after dropping length outliers from the training
/// split) and its unknown-token rate, warning when that rate is past
/// [`UNKNOWN_TOKEN_WARN_RATE`].
fn token_lengths(
    w: &mut Working,
    t: &TextTokenizer,
    outliers: &OutlierOptions,
    warnings: &mut Vec<String>,
) -> Result<(Option<Vec<usize>>, Option<UnknownTokens>)> {
    let mut unknown_tokens = None;
    let texts: Vec<&str> = w.examples.iter().map(|e| e.text.as_str()).collect();
    let pairs: Option<Vec<&str>> = w.examples.iter().map(|e| e.text_pair.as_deref()).collect();
    let counts = t.token_counts(&texts, pairs.as_deref())?;
    let mut lengths = counts.lengths;
    if w.name == "train" {
        let removed = drop_outliers(&mut w.examples, &mut lengths, outliers);
        w.drop_count("length_outlier", removed);
    }
    if t.unk_id().is_some() {
        unknown_tokens = Some(UnknownTokens {
            word_pieces: counts.word_pieces,
            unknown: counts.unknown,
            rate: counts.unknown as f64 / counts.word_pieces.max(1) as f64,
        });
    }
    if let Some(u) = &unknown_tokens
        && u.rate > UNKNOWN_TOKEN_WARN_RATE
    {
        warnings.push(format!(
            "{}: {:.1}% of the word pieces ({} of {}) are the tokenizer's unknown token (over {:.0}%): the model's vocabulary does not cover this data's language or script, and what it cannot spell it cannot learn from; use a model whose tokenizer covers it",
            w.name,
            100.0 * u.rate,
            u.unknown,
            u.word_pieces,
            100.0 * UNKNOWN_TOKEN_WARN_RATE
        ));
    }
    Ok((Some(lengths), unknown_tokens))
}

/// Rows per label (multilabel rows with the empty label set under [`NO_LABELS`]).
fn label_counts(examples: &[Example], config: &RunConfig) -> BTreeMap<String, usize> {
    let multilabel = config.task.kind == crate::task::TaskKind::Multilabel;
    let mut label_counts = BTreeMap::new();
    for e in examples {
        let label = match e.label.clone().unwrap_or_default() {
            l if multilabel
                && crate::task::multilabel::parse_labels(&l, &config.task.label_separator)
                    .is_empty() =>
            {
                NO_LABELS.to_string()
            }
            l => l,
        };
        *label_counts.entry(label).or_insert(0) += 1;
    }
    label_counts
}

/// Classes of the training split with no row in an evaluation split (their recall there is
/// undefined and their F1 counts as 0), and classes with a single training row.
fn class_coverage_warnings(summaries: &[SplitSummary]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(train) = summaries.iter().find(|s| s.split == "train") else {
        return out;
    };
    for sp in summaries.iter().filter(|s| s.split != "train") {
        let missing: Vec<String> = train
            .label_counts
            .iter()
            .filter(|(l, _)| !sp.label_counts.contains_key(*l))
            .map(|(l, n)| format!("{l:?} ({n} in train)"))
            .collect();
        if !missing.is_empty() {
            out.push(format!(
                "{} has no row of class {}: too few members for this split; its scores there cannot measure {}",
                sp.split,
                missing.join(", class "),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
    }
    let single: Vec<String> = train
        .label_counts
        .iter()
        .filter(|(_, n)| **n == 1)
        .map(|(l, _)| format!("{l:?}"))
        .collect();
    if !single.is_empty() {
        out.push(format!(
            "train has a single row of class {}: too few members to learn from (and to split; `--cv K` needs K rows per class)",
            single.join(", class ")
        ));
    }
    out
}

/// Exact-duplicate key of an example: its text, and its pair when it has one.
fn example_key(e: &Example) -> String {
    match &e.text_pair {
        Some(p) => format!("{}\u{1F}{}", clean::dedup_key(&e.text), clean::dedup_key(p)),
        None => clean::dedup_key(&e.text),
    }
}

/// Clean and de-identify every text of a split; drop rows left empty. What each row went
/// through is counted in the split and kept in the row's [`RowMeta`].
fn clean_split(w: &mut Working, config: &RunConfig) {
    let steps = TextPreprocess::from_config(&config.data);
    let before = w.examples.len();
    let mut kept = Vec::with_capacity(before);
    let mut kept_meta = Vec::with_capacity(before);
    let rows = std::mem::take(&mut w.examples);
    let metas = std::mem::take(&mut w.meta);
    for (mut e, mut m) in rows.into_iter().zip(metas) {
        e.text = steps.apply_counted(&e.text, &mut m.cleaning, &mut m.pii);
        if let Some(p) = e.text_pair.as_mut() {
            *p = steps.apply_counted(p, &mut m.cleaning, &mut m.pii);
        }
        w.cleaning.add(&m.cleaning);
        for (k, n) in &m.pii {
            *w.pii.entry(*k).or_default() += n;
        }
        if !e.text.trim().is_empty() {
            kept.push(e);
            kept_meta.push(m);
        }
    }
    w.examples = kept;
    w.meta = kept_meta;
    let emptied = before - w.examples.len();
    w.drop_count("empty_after_cleaning", emptied);
}

/// `a - b` of cleaning counts (moving carved rows' counts out of train).
fn clean_sub(a: &mut CleanCounts, b: &CleanCounts) {
    a.html_stripped = a.html_stripped.saturating_sub(b.html_stripped);
    a.unicode_normalized = a.unicode_normalized.saturating_sub(b.unicode_normalized);
    a.control_removed = a.control_removed.saturating_sub(b.control_removed);
    a.whitespace_collapsed = a
        .whitespace_collapsed
        .saturating_sub(b.whitespace_collapsed);
    a.lowercased = a.lowercased.saturating_sub(b.lowercased);
}

/// Carve validation/test out of train where they have no file. Identical and (with
/// `dedup.near`) near-identical texts are grouped first and a group never straddles two
/// splits, so the split itself creates no leakage and de-duplication does not shift the
/// fractions; each row's read and cleaning counts move with it to its split.
fn carve(
    work: &mut Vec<Working>,
    opts: &SplitOptions,
    stratify: bool,
    dedup_opts: &DedupOptions,
) -> Result<()> {
    let missing: Vec<(&'static str, f64)> = [("validation", opts.validation), ("test", opts.test)]
        .into_iter()
        .filter(|(name, f)| *f > 0.0 && !work.iter().any(|w| w.name == *name))
        .collect();
    let total: f64 = missing.iter().map(|(_, f)| f).sum();
    if missing.iter().any(|(_, f)| !f.is_finite() || *f < 0.0) || total >= 1.0 {
        return Err(Error::Config(format!(
            "data.split: validation + test fractions must be in [0, 1) together, got {} + {}",
            opts.validation, opts.test
        )));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let train = &mut work[0];
    let keys: Vec<String> = train.examples.iter().map(example_key).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let group_of = dedup::groups(
        &key_refs,
        dedup_opts.near.then_some(dedup_opts.near_threshold),
    );
    let n_groups = group_of.iter().map(|g| g + 1).max().unwrap_or(0);
    // Stratify by class (a group's class is its first row's); regression values and label
    // sets are (nearly) all distinct, so those tasks split uniformly at random instead.
    let mut strata: Vec<&str> = vec![""; n_groups];
    let mut sizes = vec![0usize; n_groups];
    for (e, &g) in train.examples.iter().zip(&group_of) {
        if sizes[g] == 0 && stratify {
            strata[g] = e.label.as_deref().unwrap_or("");
        }
        sizes[g] += 1;
    }
    // A group counts as one row when de-duplication will keep one row of it.
    let weights: Vec<usize> = if dedup_opts.exact || dedup_opts.near {
        vec![1; n_groups]
    } else {
        sizes
    };
    let fractions: Vec<f64> = missing.iter().map(|(_, f)| *f).collect();
    let group_part = split::stratified_group_split(&strata, &weights, &fractions, opts.seed);
    drop(strata);
    let mut parts: Vec<Vec<(Example, RowMeta)>> = vec![Vec::new(); missing.len() + 1];
    let rows = std::mem::take(&mut train.examples);
    let metas = std::mem::take(&mut train.meta);
    for ((e, m), g) in rows.into_iter().zip(metas).zip(group_of) {
        parts[group_part[g]].push((e, m));
    }
    let mut parts = parts.into_iter();
    let (examples, meta) = parts.next().unwrap_or_default().into_iter().unzip();
    train.examples = examples;
    train.meta = meta;
    let file = train.file.clone();
    let mut carved = Vec::new();
    for ((name, f), rows) in missing.into_iter().zip(parts) {
        let (examples, meta): (Vec<Example>, Vec<RowMeta>) = rows.into_iter().unzip();
        let mut w = Working {
            name,
            file: file.clone(),
            carved: Some(f),
            read: ReadReport {
                rows_read: examples.len(),
                ..ReadReport::default()
            },
            examples,
            dropped: BTreeMap::new(),
            cleaning: CleanCounts::default(),
            pii: PiiCounts::new(),
            empty_label_sets: 0,
            meta: Vec::new(),
        };
        for m in &meta {
            w.read.decode_replaced += usize::from(m.replaced);
            w.read.empty_label_filled += usize::from(m.filled);
            w.empty_label_sets += usize::from(m.empty_label_set);
            w.cleaning.add(&m.cleaning);
            for (k, n) in &m.pii {
                *w.pii.entry(*k).or_default() += n;
            }
        }
        w.meta = meta;
        carved.push(w);
    }
    let train = &mut work[0];
    for w in &carved {
        train.read.rows_read -= w.read.rows_read;
        train.read.decode_replaced = train
            .read
            .decode_replaced
            .saturating_sub(w.read.decode_replaced);
        train.read.empty_label_filled = train
            .read
            .empty_label_filled
            .saturating_sub(w.read.empty_label_filled);
        train.empty_label_sets = train.empty_label_sets.saturating_sub(w.empty_label_sets);
        clean_sub(&mut train.cleaning, &w.cleaning);
        for (k, n) in &w.pii {
            if let Some(t) = train.pii.get_mut(k) {
                *t = t.saturating_sub(*n);
            }
        }
    }
    train.pii.retain(|_, n| *n > 0);
    work.extend(carved);
    work.sort_by_key(|w| {
        ["train", "validation", "test"]
            .iter()
            .position(|n| *n == w.name)
    });
    Ok(())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn drop_outliers(
    examples: &mut Vec<Example>,
    lengths: &mut Vec<usize>,
    opts: &OutlierOptions,
) -> usize {
    if opts.drop_below_percentile.is_none() && opts.drop_above_percentile.is_none() {
        return 0;
    }
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    let lo = opts
        .drop_below_percentile
        .map_or(0, |p| percentile(&sorted, p));
    let hi = opts
        .drop_above_percentile
        .map_or(usize::MAX, |p| percentile(&sorted, p));
    let before = examples.len();
    let mut keep = lengths.iter().map(|&l| l >= lo && l <= hi);
    examples.retain(|_| keep.next().unwrap_or(true));
    lengths.retain(|&l| l >= lo && l <= hi);
    before - examples.len()
}

fn length_stats(lengths: &[usize], max_length: usize) -> LengthStats {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut histogram = Vec::new();
    let mut lo = 1;
    for hi in [8usize, 16, 32, 64, 128, 256, 512] {
        let n = sorted.iter().filter(|&&l| l >= lo && l <= hi).count();
        histogram.push((format!("{lo}-{hi}"), n));
        lo = hi + 1;
    }
    histogram.push((
        ">512".to_string(),
        sorted.iter().filter(|&&l| l > 512).count(),
    ));
    LengthStats {
        mean: sorted.iter().sum::<usize>() as f64 / sorted.len().max(1) as f64,
        min: sorted.first().copied().unwrap_or(0),
        p50: percentile(&sorted, 50.0),
        p95: percentile(&sorted, 95.0),
        p99: percentile(&sorted, 99.0),
        max: sorted.last().copied().unwrap_or(0),
        max_length,
        truncated: sorted.iter().filter(|&&l| l > max_length).count(),
        histogram,
    }
}

/// Write prepared examples as JSONL with the config's column names (text, pair, label),
/// atomically, so `tunekit train` can read the prepared files directly.
pub fn write_jsonl(
    path: &Path,
    examples: &[Example],
    data: &crate::config::DataSection,
) -> Result<()> {
    let mut out = Vec::new();
    for e in examples {
        let mut row = serde_json::Map::new();
        row.insert(data.text_column.clone(), e.text.clone().into());
        if let (Some(col), Some(p)) = (&data.text_pair_column, &e.text_pair) {
            row.insert(col.clone(), p.clone().into());
        }
        if let Some(l) = &e.label {
            row.insert(data.label_column.clone(), l.clone().into());
        }
        serde_json::to_writer(&mut out, &row)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        out.push(b'\n');
    }
    crate::fsutil::write_atomic(path, &out)
}

impl DataReport {
    /// The report as text, for the terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for sp in &self.splits {
            let _ = writeln!(
                s,
                "{}: {} ({}{} rows read) -> {} kept",
                sp.split,
                sp.file.display(),
                sp.carved_from_train
                    .map(|f| format!("{:.0}% carved from train, ", f * 100.0))
                    .unwrap_or_default(),
                sp.rows_read,
                sp.examples
            );
            if !sp.dropped.is_empty() {
                let parts: Vec<String> =
                    sp.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "  dropped: {}", parts.join(", "));
            }
            if sp.labels_filled > 0 {
                let _ = writeln!(s, "  empty labels filled: {}", sp.labels_filled);
            }
            if sp.empty_label_sets > 0 {
                let _ = writeln!(
                    s,
                    "  empty label sets kept (multilabel \"none of these\"): {}",
                    sp.empty_label_sets
                );
            }
            if sp.decode_replaced > 0 {
                let _ = writeln!(
                    s,
                    "  rows with undecodable bytes replaced: {}",
                    sp.decode_replaced
                );
            }
            let c = &sp.cleaning;
            let cleaned = [
                ("html", c.html_stripped),
                ("unicode", c.unicode_normalized),
                ("control chars", c.control_removed),
                ("whitespace", c.whitespace_collapsed),
                ("lowercased", c.lowercased),
            ];
            if cleaned.iter().any(|(_, n)| *n > 0) {
                let parts: Vec<String> = cleaned
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                let _ = writeln!(s, "  rows changed by cleaning: {}", parts.join(", "));
            }
            if !sp.pii_replaced.is_empty() {
                let parts: Vec<String> = sp
                    .pii_replaced
                    .iter()
                    .map(|(k, n)| format!("{} {n}", k.placeholder()))
                    .collect();
                let _ = writeln!(s, "  personal data replaced: {}", parts.join(", "));
            }
            let labels: Vec<String> = sp
                .label_counts
                .iter()
                .map(|(k, n)| {
                    format!(
                        "{k} {n} ({:.1}%)",
                        100.0 * *n as f64 / sp.examples.max(1) as f64
                    )
                })
                .collect();
            let _ = writeln!(s, "  labels: {}", labels.join(", "));
            if let Some(u) = &sp.unknown_tokens {
                let _ = writeln!(
                    s,
                    "  unknown tokens: {} of {} word pieces ({:.2}%)",
                    u.unknown,
                    u.word_pieces,
                    100.0 * u.rate
                );
            }
            if let Some(t) = &sp.tokens {
                let _ = writeln!(
                    s,
                    "  tokens: mean {:.1}, min {}, p50 {}, p95 {}, p99 {}, max {}; {} longer than max_length {} (truncated)",
                    t.mean, t.min, t.p50, t.p95, t.p99, t.max, t.truncated, t.max_length
                );
                let bins: Vec<String> = t
                    .histogram
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(b, n)| format!("{b}: {n}"))
                    .collect();
                let _ = writeln!(s, "  length histogram: {}", bins.join(", "));
            }
        }
        let d = &self.dedup;
        let _ = writeln!(
            s,
            "duplicates (same label): exact {:?}, near {:?}{}",
            d.exact_duplicates,
            d.near_duplicates,
            if d.duplicates_dropped {
                ", dropped"
            } else {
                ", kept"
            }
        );
        let _ = writeln!(
            s,
            "label conflicts: {} groups, {} rows dropped",
            d.conflict_groups, d.conflict_rows_dropped
        );
        for c in d.conflict_examples.iter().take(5) {
            let _ = writeln!(
                s,
                "  {} lines {:?}: {:?} labelled {:?}",
                c.split, c.lines, c.text, c.labels
            );
        }
        for l in &d.leakage {
            let _ = writeln!(
                s,
                "leakage: {} rows of {} also in {} ({} {})",
                l.rows,
                l.split,
                l.also_in,
                if l.dropped { "dropped from" } else { "kept in" },
                l.split
            );
            for (line, text) in l.examples.iter().take(3) {
                let _ = writeln!(s, "  {} line {line}: {text:?}", l.split);
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }

    /// Write the report as JSON and text next to each other in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_json(&dir.join("data_report.json"), self)?;
        crate::fsutil::write_atomic(&dir.join("data_report.txt"), self.to_text().as_bytes())
    }
}
