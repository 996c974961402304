//! De-duplication within and across splits, exact and near (MinHash + LSH), with annotation
//! conflicts (same text, different labels) handled by policy and every decision counted.
//!
//! Splits have a priority: test > validation > train. A row of a lower split that also
//! appears in a higher one is *leakage* (the model would be evaluated on what it trained on)
//! and is dropped from the lower split by default; the higher split is never changed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What to do with a group of duplicates whose labels disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    /// Drop every row of the group (the default: the label is unknowable).
    #[default]
    Drop,
    /// Keep one row with the majority label; a tie drops the group.
    Majority,
    /// Keep all rows as they are.
    Keep,
}

/// What to do with rows of a lower-priority split found in a higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeakagePolicy {
    /// Drop them from the lower split (train loses rows, test never does).
    #[default]
    Drop,
    /// Keep them (still reported).
    Keep,
}

/// `[data.dedup]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupOptions {
    /// Drop exact duplicates (same text after NFKC, case and whitespace folding) within a
    /// split, keeping the first. Default on.
    #[serde(default = "yes")]
    pub exact: bool,
    /// Also treat near-duplicates (Jaccard similarity of character 5-grams ≥
    /// `near_threshold`) as duplicates. Default off.
    #[serde(default)]
    pub near: bool,
    /// Jaccard threshold for near-duplicates, in (0, 1].
    #[serde(default = "default_threshold")]
    pub near_threshold: f64,
    /// Same text with different labels.
    #[serde(default)]
    pub conflicts: ConflictPolicy,
    /// Rows shared between splits.
    #[serde(default)]
    pub leakage: LeakagePolicy,
}

fn yes() -> bool {
    true
}
fn default_threshold() -> f64 {
    0.8
}

impl Default for DedupOptions {
    fn default() -> Self {
        DedupOptions {
            exact: true,
            near: false,
            near_threshold: default_threshold(),
            conflicts: ConflictPolicy::Drop,
            leakage: LeakagePolicy::Drop,
        }
    }
}

/// One row as de-duplication sees it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Exact-duplicate key ([`super::clean::dedup_key`]).
    pub key: &'a str,
    /// The label.
    pub label: Option<&'a str>,
    /// Line in its file.
    pub line: usize,
    /// The text, for examples in the report.
    pub text: &'a str,
}

/// An example of a conflict, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictExample {
    /// Split.
    pub split: String,
    /// The text of the first row.
    pub text: String,
    /// Label → rows with it.
    pub labels: BTreeMap<String, usize>,
    /// Lines of the rows.
    pub lines: Vec<usize>,
}

/// Rows of one split found in a higher-priority split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Leakage {
    /// The lower split (where rows are dropped).
    pub split: String,
    /// The higher split they also appear in.
    pub also_in: String,
    /// Rows found.
    pub rows: usize,
    /// Whether they were dropped.
    pub dropped: bool,
    /// Up to 5 examples: (line, text).
    pub examples: Vec<(usize, String)>,
}

/// What de-duplication found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DedupReport {
    /// Per split: rows that exactly duplicate an earlier row with the same label.
    pub exact_duplicates: BTreeMap<String, usize>,
    /// Per split: rows that nearly duplicate an earlier row with the same label.
    pub near_duplicates: BTreeMap<String, usize>,
    /// Whether duplicates were dropped (`exact` / `near` options).
    pub duplicates_dropped: bool,
    /// Groups of duplicates with disagreeing labels.
    pub conflict_groups: usize,
    /// Rows dropped because of conflicts.
    pub conflict_rows_dropped: usize,
    /// Up to 10 conflict examples.
    pub conflict_examples: Vec<ConflictExample>,
    /// Cross-split overlap.
    pub leakage: Vec<Leakage>,
}

/// Why de-duplication dropped a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Same key as an earlier row with the same label.
    ExactDuplicate,
    /// Near-duplicate of an earlier row with the same label.
    NearDuplicate,
    /// Part of a group with disagreeing labels.
    Conflict,
    /// Also in a higher-priority split.
    Leakage,
}

impl DropReason {
    /// The name used in the data report (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::ExactDuplicate => "exact_duplicate",
            DropReason::NearDuplicate => "near_duplicate",
            DropReason::Conflict => "conflict",
            DropReason::Leakage => "leakage",
        }
    }
}

/// Decide which rows to keep. `splits` are (name, rows) in priority order, lowest first
/// (train, validation, test). Returns, per split and row, why it is dropped (`None`: kept).
pub fn dedup(
    splits: &[(&str, Vec<Item<'_>>)],
    opts: &DedupOptions,
) -> (Vec<Vec<Option<DropReason>>>, DedupReport) {
    let mut keep: Vec<Vec<Option<DropReason>>> = splits
        .iter()
        .map(|(_, rows)| vec![None; rows.len()])
        .collect();
    let mut report = DedupReport {
        duplicates_dropped: opts.exact || opts.near,
        ..DedupReport::default()
    };
    let near = opts
        .near
        .then(|| NearIndex::new(splits, opts.near_threshold));
    for (s, (name, rows)) in splits.iter().enumerate() {
        within_split(
            s,
            name,
            rows,
            near.as_ref(),
            opts,
            &mut keep[s],
            &mut report,
        );
    }
    across_splits(splits, near.as_ref(), opts, &mut keep, &mut report);
    (keep, report)
}

/// What happens to a group of duplicates.
enum GroupFate {
    /// Keep every row (conflicting labels under [`ConflictPolicy::Keep`]).
    KeepAll,
    /// Drop every row as a conflict.
    DropAll,
    /// Keep this row; the others are duplicates (or conflicts when their label differs).
    KeepOne(usize),
}

/// Within split `s`: groups of rows with the same key, joined by near-duplicate pairs; marks
/// in `keep` the rows dropped as duplicates or conflicts and counts them in `report`.
fn within_split(
    s: usize,
    name: &str,
    rows: &[Item<'_>],
    near: Option<&NearIndex>,
    opts: &DedupOptions,
    keep: &mut [Option<DropReason>],
    report: &mut DedupReport,
) {
    let (mut exact, mut nearn) = (0, 0);
    for members in duplicate_groups(s, rows, near)
        .values()
        .filter(|m| m.len() > 1)
    {
        match group_fate(name, rows, members, opts.conflicts, report) {
            GroupFate::KeepAll => {}
            GroupFate::DropAll => {
                for &i in members {
                    keep[i] = Some(DropReason::Conflict);
                }
                report.conflict_rows_dropped += members.len();
            }
            GroupFate::KeepOne(k) => {
                for &i in members.iter().filter(|&&i| i != k) {
                    let same_label = rows[i].label == rows[k].label;
                    if same_label && rows[i].key == rows[k].key {
                        exact += 1;
                    } else if same_label {
                        nearn += 1;
                    }
                    let dropped_as_duplicate = if rows[i].key == rows[k].key {
                        opts.exact
                    } else {
                        opts.near
                    };
                    if !same_label {
                        keep[i] = Some(DropReason::Conflict);
                        report.conflict_rows_dropped += 1;
                    } else if dropped_as_duplicate {
                        keep[i] = Some(if rows[i].key == rows[k].key {
                            DropReason::ExactDuplicate
                        } else {
                            DropReason::NearDuplicate
                        });
                    }
                }
            }
        }
    }
    report.exact_duplicates.insert(name.to_string(), exact);
    report.near_duplicates.insert(name.to_string(), nearn);
}

/// The rows of split `s` grouped by duplicate key and near-duplicate pairs: group root →
/// member rows, in row order.
fn duplicate_groups(
    s: usize,
    rows: &[Item<'_>],
    near: Option<&NearIndex>,
) -> BTreeMap<usize, Vec<usize>> {
    let mut uf = UnionFind::new(rows.len());
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        match first.get(r.key) {
            Some(&j) => uf.union(j, i),
            None => {
                first.insert(r.key, i);
            }
        }
    }
    if let Some(index) = near {
        for (a, b) in index.pairs_within(s) {
            uf.union(a, b);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..rows.len() {
        groups.entry(uf.find(i)).or_default().push(i);
    }
    groups
}

/// Which row of a group of duplicates survives: the first when all labels agree; otherwise
/// the group is a conflict (counted, and quoted in `report` up to 10 times) settled by
/// `policy`.
fn group_fate(
    name: &str,
    rows: &[Item<'_>],
    members: &[usize],
    policy: ConflictPolicy,
    report: &mut DedupReport,
) -> GroupFate {
    let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in members {
        *labels.entry(rows[i].label.unwrap_or("")).or_default() += 1;
    }
    if labels.len() == 1 {
        return GroupFate::KeepOne(members[0]);
    }
    report.conflict_groups += 1;
    if report.conflict_examples.len() < 10 {
        report.conflict_examples.push(ConflictExample {
            split: name.to_string(),
            text: clip(rows[members[0]].text),
            labels: labels.iter().map(|(l, n)| (l.to_string(), *n)).collect(),
            lines: members.iter().map(|&i| rows[i].line).collect(),
        });
    }
    match policy {
        ConflictPolicy::Keep => GroupFate::KeepAll,
        ConflictPolicy::Drop => GroupFate::DropAll,
        ConflictPolicy::Majority => {
            let max = labels.values().copied().max().unwrap_or(0);
            let winners: Vec<&str> = labels
                .iter()
                .filter(|(_, n)| **n == max)
                .map(|(l, _)| *l)
                .collect();
            let kept = match winners.as_slice() {
                [w] => members
                    .iter()
                    .copied()
                    .find(|&i| rows[i].label.unwrap_or("") == *w),
                _ => None,
            };
            kept.map_or(GroupFate::DropAll, GroupFate::KeepOne)
        }
    }
}

/// Across splits: rows of split s that appear in a higher split h (leakage), reported and,
/// under [`LeakagePolicy::Drop`], marked in `keep`.
fn across_splits(
    splits: &[(&str, Vec<Item<'_>>)],
    near: Option<&NearIndex>,
    opts: &DedupOptions,
    keep: &mut [Vec<Option<DropReason>>],
    report: &mut DedupReport,
) {
    for s in 0..splits.len() {
        for h in (s + 1..splits.len()).rev() {
            let higher: std::collections::HashSet<&str> =
                splits[h].1.iter().map(|r| r.key).collect();
            let mut leaked: Vec<usize> = splits[s]
                .1
                .iter()
                .enumerate()
                .filter(|(i, r)| keep[s][*i].is_none() && higher.contains(r.key))
                .map(|(i, _)| i)
                .collect();
            if let Some(index) = near {
                leaked.extend(
                    index
                        .pairs_between(s, h)
                        .into_iter()
                        .filter(|&i| keep[s][i].is_none()),
                );
                leaked.sort_unstable();
                leaked.dedup();
            }
            if leaked.is_empty() {
                continue;
            }
            let dropped = opts.leakage == LeakagePolicy::Drop;
            report.leakage.push(Leakage {
                split: splits[s].0.to_string(),
                also_in: splits[h].0.to_string(),
                rows: leaked.len(),
                dropped,
                examples: leaked
                    .iter()
                    .take(5)
                    .map(|&i| (splits[s].1[i].line, clip(splits[s].1[i].text)))
                    .collect(),
            });
            if dropped {
                for i in leaked {
                    keep[s][i] = Some(DropReason::Leakage);
                }
            }
        }
    }
}

/// Longest example text the report quotes, in characters; longer texts are clipped with `…`
/// and their full length, so one 10,000-character row does not flood the report.
pub const EXAMPLE_CHARS: usize = 160;

/// A text as the report quotes it (see [`EXAMPLE_CHARS`]).
pub fn clip(text: &str) -> String {
    let n = text.chars().count();
    if n <= EXAMPLE_CHARS {
        return text.to_string();
    }
    let head: String = text.chars().take(EXAMPLE_CHARS).collect();
    format!("{head}… ({n} characters)")
}

/// Group rows that de-duplication would treat as one text: the same exact key, or (with
/// `near = Some(threshold)`) near-duplicates. Returns each row's group, numbered in order of
/// first appearance, so a split can keep every group whole.
pub fn groups(keys: &[&str], near: Option<f64>) -> Vec<usize> {
    let mut uf = UnionFind::new(keys.len());
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, &k) in keys.iter().enumerate() {
        match first.get(k) {
            Some(&j) => uf.union(j, i),
            None => {
                first.insert(k, i);
            }
        }
    }
    if let Some(threshold) = near {
        let items: Vec<Item<'_>> = keys
            .iter()
            .map(|k| Item {
                key: k,
                label: None,
                line: 0,
                text: k,
            })
            .collect();
        let index = NearIndex::new(&[("", items)], threshold);
        for (a, b) in index.pairs_within(0) {
            uf.union(a, b);
        }
    }
    let mut number: HashMap<usize, usize> = HashMap::new();
    (0..keys.len())
        .map(|i| {
            let root = uf.find(i);
            let next = number.len();
            *number.entry(root).or_insert(next)
        })
        .collect()
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    /// Join two sets; the smaller root (the earlier row) becomes the root.
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi] = lo;
        }
    }
}

/// Number of MinHash permutations.
const PERMUTATIONS: usize = 128;
/// Character shingle size.
const SHINGLE: usize = 5;
/// Largest LSH bucket compared pairwise; bigger buckets (thousands of near-identical rows)
/// are compared against their first member only, which still joins them into one group.
const MAX_BUCKET: usize = 64;

/// Near-duplicate pairs, found by MinHash + LSH and then verified on the exact Jaccard
/// similarity of the shingle sets (LSH proposes, the exact similarity decides).
struct NearIndex {
    /// Verified pairs ((split, row), (split, row)), first < second.
    pairs: Vec<((usize, usize), (usize, usize))>,
}

impl NearIndex {
    fn new(splits: &[(&str, Vec<Item<'_>>)], threshold: f64) -> Self {
        let rows: Vec<(usize, usize, &str)> = splits
            .iter()
            .enumerate()
            .flat_map(|(s, (_, r))| r.iter().enumerate().map(move |(i, it)| (s, i, it.key)))
            .collect();
        let shingles: Vec<Vec<u64>> = rows.par_iter().map(|(_, _, k)| shingle_set(k)).collect();
        let (a, b) = permutations();
        let signatures: Vec<Vec<u64>> = shingles
            .par_iter()
            .map(|set| minhash(set, &a, &b))
            .collect();
        let r = rows_per_band(threshold);
        let bands = PERMUTATIONS / r;
        let mut candidates: Vec<(usize, usize)> = Vec::new();
        for band in 0..bands {
            let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
            for (i, sig) in signatures.iter().enumerate() {
                buckets
                    .entry(hash(&sig[band * r..(band + 1) * r]))
                    .or_default()
                    .push(i);
            }
            for members in buckets.values().filter(|m| m.len() > 1) {
                if members.len() <= MAX_BUCKET {
                    for (x, &i) in members.iter().enumerate() {
                        candidates.extend(members[x + 1..].iter().map(|&j| (i, j)));
                    }
                } else {
                    candidates.extend(members[1..].iter().map(|&j| (members[0], j)));
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let pairs = candidates
            .into_par_iter()
            .filter(|&(i, j)| jaccard(&shingles[i], &shingles[j]) >= threshold)
            .map(|(i, j)| ((rows[i].0, rows[i].1), (rows[j].0, rows[j].1)))
            .collect();
        NearIndex { pairs }
    }

    fn pairs_within(&self, split: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.pairs
            .iter()
            .filter(move |(a, b)| a.0 == split && b.0 == split)
            .map(|(a, b)| (a.1, b.1))
    }

    /// Rows of `lower` with a near-duplicate in `higher`.
    fn pairs_between(&self, lower: usize, higher: usize) -> Vec<usize> {
        self.pairs
            .iter()
            .filter_map(|(a, b)| {
                if a.0 == lower && b.0 == higher {
                    Some(a.1)
                } else if b.0 == lower && a.0 == higher {
                    Some(b.1)
                } else {
                    None
                }
            })
            .collect()
    }
}

/// Rows per LSH band: the largest r (fewest candidates) for which a pair at exactly the
/// threshold still becomes a candidate with probability ≥ 0.99.
fn rows_per_band(threshold: f64) -> usize {
    (1..=PERMUTATIONS)
        .rev()
        .filter(|r| PERMUTATIONS.is_multiple_of(*r))
        .find(|&r| {
            let bands = (PERMUTATIONS / r) as i32;
            1.0 - (1.0 - threshold.powi(r as i32)).powi(bands) >= 0.99
        })
        .unwrap_or(1)
}

fn hash<T: Hash + ?Sized>(x: &T) -> u64 {
    // SipHash with fixed keys: deterministic across runs and machines.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// Texts with at most this many letters and digits are short: too short for 5-grams to
/// tell a near copy (`nice` / `nice!` share no 5-gram), so they are compared on their
/// letters and digits alone.
const SHORT_TEXT: usize = 2 * SHINGLE;

/// Sorted, unique hashes of the character 5-grams; a short text (see [`SHORT_TEXT`]) is one
/// element, its letters and digits, so copies differing only in punctuation, symbols or
/// spacing match exactly (`nice`, `nice!`, `n.i.c.e`).
fn shingle_set(key: &str) -> Vec<u64> {
    let alnum: String = key.chars().filter(|c| c.is_alphanumeric()).collect();
    let chars: Vec<char> = key.chars().collect();
    let mut set: Vec<u64> = if !alnum.is_empty() && alnum.chars().count() <= SHORT_TEXT {
        vec![hash(&("short", alnum.as_str()))]
    } else if chars.len() <= SHINGLE {
        vec![hash(key)]
    } else {
        chars.windows(SHINGLE).map(hash).collect()
    };
    set.sort_unstable();
    set.dedup();
    set
}

const MERSENNE_61: u64 = (1 << 61) - 1;

/// Seeded coefficients of the permutations h(x) = (a·x + b) mod (2^61 − 1).
fn permutations() -> (Vec<u64>, Vec<u64>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % MERSENNE_61
    };
    let a = (0..PERMUTATIONS).map(|_| next().max(1)).collect();
    let b = (0..PERMUTATIONS).map(|_| next()).collect();
    (a, b)
}

fn minhash(set: &[u64], a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| {
            set.iter()
                .map(|&x| {
                    let v = (u128::from(a) * u128::from(x % MERSENNE_61) + u128::from(b))
                        % u128::from(MERSENNE_61);
                    v as u64
                })
                .min()
                .unwrap_or(u64::MAX)
        })
        .collect()
}

/// Jaccard similarity of two sorted sets.
fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - common;
    if union == 0 {
        1.0
    } else {
        common as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(drops: &[Option<DropReason>]) -> Vec<bool> {
        drops.iter().map(Option::is_none).collect()
    }

    fn items<'a>(rows: &'a [(&'a str, &'a str)]) -> Vec<Item<'a>> {
        rows.iter()
            .enumerate()
            .map(|(i, (k, l))| Item {
                key: k,
                label: Some(l),
                line: i + 2,
                text: k,
            })
            .collect()
    }

    #[test]
    fn exact_duplicates_keep_the_first_and_conflicts_follow_the_policy() {
        let rows = [
            ("a fine film", "pos"),
            ("a fine film", "pos"),
            ("dull", "neg"),
            ("dull", "pos"),
            ("dull", "neg"),
            ("ok", "pos"),
        ];
        let run = |policy| {
            let opts = DedupOptions {
                conflicts: policy,
                ..DedupOptions::default()
            };
            dedup(&[("train", items(&rows))], &opts)
        };
        let (keep, report) = run(ConflictPolicy::Drop);
        assert_eq!(kept(&keep[0]), [true, false, false, false, false, true]);
        assert_eq!(report.exact_duplicates["train"], 1);
        assert_eq!(
            (report.conflict_groups, report.conflict_rows_dropped),
            (1, 3)
        );
        assert_eq!(report.conflict_examples[0].lines, [4, 5, 6]);
        assert_eq!(report.conflict_examples[0].labels["neg"], 2);
        let (keep, report) = run(ConflictPolicy::Majority);
        assert_eq!(kept(&keep[0]), [true, false, true, false, false, true]);
        // Row 5 disagrees with the majority; row 6 duplicates the kept row 4.
        assert_eq!(report.conflict_rows_dropped, 1);
        assert_eq!(report.exact_duplicates["train"], 2);
        let (keep, _) = run(ConflictPolicy::Keep);
        assert_eq!(kept(&keep[0]), [true, false, true, true, true, true]);
    }

    #[test]
    fn leakage_drops_from_the_lower_split_only() {
        let train = [
            ("seen in test", "pos"),
            ("only train", "neg"),
            ("seen in val", "pos"),
        ];
        let val = [("seen in val", "pos"), ("also test", "neg")];
        let test = [("seen in test", "pos"), ("also test", "neg")];
        let splits = [
            ("train", items(&train)),
            ("validation", items(&val)),
            ("test", items(&test)),
        ];
        let (keep, report) = dedup(&splits, &DedupOptions::default());
        assert_eq!(kept(&keep[0]), [false, true, false]);
        assert_eq!(kept(&keep[1]), [true, false]);
        assert_eq!(kept(&keep[2]), [true, true]);
        let pairs: Vec<(&str, &str, usize)> = report
            .leakage
            .iter()
            .map(|l| (l.split.as_str(), l.also_in.as_str(), l.rows))
            .collect();
        assert_eq!(
            pairs,
            [
                ("train", "test", 1),
                ("train", "validation", 1),
                ("validation", "test", 1)
            ]
        );
        let keep_policy = DedupOptions {
            leakage: LeakagePolicy::Keep,
            ..DedupOptions::default()
        };
        let (keep, report) = dedup(&splits, &keep_policy);
        assert!(keep.iter().flatten().all(Option::is_none));
        assert_eq!(report.leakage.len(), 3);
    }

    #[test]
    fn near_duplicates_are_found_above_the_threshold_only() {
        let base = "the acting is superb and the story moves along at a brisk pace";
        let near = "the acting is superb and the story moves along at a brisk pace !";
        let far = "a tedious, overlong mess with nothing to say about anything at all";
        let rows = [(base, "pos"), (near, "pos"), (far, "neg")];
        assert!(jaccard(&shingle_set(base), &shingle_set(near)) > 0.9);
        let opts = DedupOptions {
            near: true,
            ..DedupOptions::default()
        };
        let (keep, report) = dedup(&[("train", items(&rows))], &opts);
        assert_eq!(kept(&keep[0]), [true, false, true]);
        assert_eq!(report.near_duplicates["train"], 1);
        // Across splits: a near copy of a test row leaves train.
        let (keep, report) = dedup(
            &[("train", items(&rows[..1])), ("test", items(&rows[1..2]))],
            &opts,
        );
        assert_eq!(kept(&keep[0]), [false]);
        assert_eq!(report.leakage[0].rows, 1);
        // Without near matching, the same pair is not leakage.
        let (keep, _) = dedup(
            &[("train", items(&rows[..1])), ("test", items(&rows[1..2]))],
            &DedupOptions::default(),
        );
        assert_eq!(kept(&keep[0]), [true]);
    }

    #[test]
    fn near_duplicate_short_texts_match_across_splits() {
        // Shorter than one 5-gram plus one: before, `nice` and `nice!` could never match.
        let opts = DedupOptions {
            near: true,
            ..DedupOptions::default()
        };
        let train = [("nice", "pos"), ("great fun", "pos"), ("bad", "neg")];
        let test = [("nice!", "pos"), ("great fun !!", "pos"), ("sad", "neg")];
        let (keep, report) = dedup(&[("train", items(&train)), ("test", items(&test))], &opts);
        assert_eq!(kept(&keep[0]), [false, false, true]);
        assert_eq!(report.leakage[0].rows, 2);
        assert_eq!(jaccard(&shingle_set("nice"), &shingle_set("nice!")), 1.0);
        assert!(jaccard(&shingle_set("bad"), &shingle_set("sad")) < 0.8);
    }

    #[test]
    fn leakage_and_conflict_examples_are_clipped() {
        let long = "word ".repeat(2000);
        let train = [(long.as_str(), "pos"), (long.as_str(), "neg")];
        let test = [(long.as_str(), "pos")];
        let opts = DedupOptions {
            conflicts: ConflictPolicy::Keep,
            ..DedupOptions::default()
        };
        let (_, report) = dedup(&[("train", items(&train)), ("test", items(&test))], &opts);
        let quoted = &report.leakage[0].examples[0].1;
        assert!(quoted.chars().count() < EXAMPLE_CHARS + 40, "{quoted}");
        assert!(quoted.ends_with("(10000 characters)"), "{quoted}");
        assert!(report.conflict_examples[0].text.chars().count() < EXAMPLE_CHARS + 40);
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn groups_join_exact_and_near_copies() {
        let keys = ["a fine film", "nice", "a fine film", "nice!", "other"];
        assert_eq!(groups(&keys, None), [0, 1, 0, 2, 3]);
        assert_eq!(groups(&keys, Some(0.8)), [0, 1, 0, 1, 2]);
    }

    #[test]
    fn lsh_bands_give_high_recall_at_the_threshold() {
        for t in [0.5, 0.7, 0.8, 0.9, 0.95] {
            let r = rows_per_band(t);
            let b = (PERMUTATIONS / r) as i32;
            assert!(
                1.0 - (1.0 - f64::powi(t, r as i32)).powi(b) >= 0.99,
                "t={t} r={r}"
            );
        }
        assert!(rows_per_band(0.9) > rows_per_band(0.5));
    }

    #[test]
    fn minhash_estimates_jaccard() {
        let x = shingle_set("the quick brown fox jumps over the lazy dog again and again");
        let y = shingle_set("the quick brown fox jumps over the lazy cat again and again");
        let (a, b) = permutations();
        let (sx, sy) = (minhash(&x, &a, &b), minhash(&y, &a, &b));
        let estimate =
            sx.iter().zip(&sy).filter(|(p, q)| p == q).count() as f64 / PERMUTATIONS as f64;
        let exact = jaccard(&x, &y);
        assert!((estimate - exact).abs() < 0.15, "{estimate} vs {exact}");
    }
}
