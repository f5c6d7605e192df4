//! Label evaluation: precision, recall and F1 of the catalog's labels on a labelled file
//! (`forage labels eval`), micro- and macro-averaged, with the texts that got no label and
//! those that got several.
//!
//! Owns the labelled-file format: JSON Lines, one object per line,
//! `{"text": "...", "labels": ["rust", ...]}` (other fields are ignored, blank lines are
//! skipped). The file is bounded by [`EVAL_FILE_BYTES_MAX`] and [`EVAL_LINES_MAX`]; a bad line
//! is an error naming its line number, and nothing is evaluated. Labels named in the file but
//! not defined in the catalog are counted under [`EvalReport::unknown`] and otherwise ignored.
//! Predictions use the prototypes alone (the texts are not catalog items, so no feedback
//! forcing applies).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use super::{LabelError, Prototypes, read_bounded};
use crate::catalog::Catalog;
use crate::embed::{Embedder, embed_batched};

/// Largest labelled file read.
pub const EVAL_FILE_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Most non-blank lines in a labelled file.
pub const EVAL_LINES_MAX: usize = 20_000;
/// Most labels on one line.
pub const EVAL_LINE_LABELS_MAX: usize = 64;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct EvalExample {
    pub text: String,
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Counts and scores for one label (or the micro-average over all of them).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub name: String,
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    /// Texts that carry the label in the file.
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl LabelScore {
    fn from_counts(name: &str, tp: usize, fp: usize, fn_: usize) -> LabelScore {
        // 0/0 counts as 0: a label that predicts nothing has no precision to speak of.
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 =
            if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        LabelScore {
            name: name.to_owned(),
            true_positives: tp,
            false_positives: fp,
            false_negatives: fn_,
            support: tp + fn_,
            precision,
            recall,
            f1,
        }
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// The embedder used.
    pub model: String,
    /// Texts evaluated.
    pub examples: usize,
    /// One row per catalog label, in catalog order.
    pub per_label: Vec<LabelScore>,
    /// Micro-average: counts summed over labels.
    pub micro: LabelScore,
    /// Macro-average: precision, recall and F1 averaged over the labels (counts summed).
    pub macro_avg: LabelScore,
    /// Texts that got no label.
    pub unlabelled: usize,
    /// Texts that got more than one label.
    pub multi_labelled: usize,
    /// The threshold each label used (calibrated or hand-set), in catalog order.
    pub thresholds: Vec<f32>,
    /// Labels in the file that the catalog does not define, with how many texts carry them.
    pub unknown: BTreeMap<String, usize>,
}

impl EvalReport {
    /// A plain-text table for the CLI.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let width = self.per_label.iter().map(|s| s.name.len()).max().unwrap_or(0).max("macro avg".len());
        let _ = writeln!(out, "model {}, {} texts", self.model, self.examples);
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>6}  {:>6}  {:>7}  {:>4}  {:>4}  {:>4}",
            "label", "precision", "recall", "f1", "support", "tp", "fp", "fn"
        );
        for s in self.per_label.iter().chain([&self.micro, &self.macro_avg]) {
            let _ = writeln!(
                out,
                "{:<width$}  {:>9.3}  {:>6.3}  {:>6.3}  {:>7}  {:>4}  {:>4}  {:>4}",
                s.name,
                s.precision,
                s.recall,
                s.f1,
                s.support,
                s.true_positives,
                s.false_positives,
                s.false_negatives
            );
        }
        let _ = writeln!(
            out,
            "texts with no label: {}; with several labels: {}",
            self.unlabelled, self.multi_labelled
        );
        let thresholds: Vec<String> =
            self.per_label.iter().zip(&self.thresholds).map(|(s, t)| format!("{} {t:.3}", s.name)).collect();
        let _ = writeln!(out, "thresholds: {}", thresholds.join(", "));
        if !self.unknown.is_empty() {
            let list: Vec<String> = self.unknown.iter().map(|(n, c)| format!("{n} ({c})")).collect();
            let _ = writeln!(out, "unknown labels (ignored): {}", list.join(", "));
        }
        out
    }
}

/// Parses a labelled JSONL document. Errors name the 1-based line number.
pub fn parse_examples(text: &str) -> Result<Vec<EvalExample>, LabelError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= EVAL_LINES_MAX {
            return Err(LabelError::invalid("labelled file", format!("more than {EVAL_LINES_MAX} lines")));
        }
        let bad = |reason: String| LabelError::invalid("labelled file", format!("line {line_no}: {reason}"));
        let ex: EvalExample = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if ex.text.trim().is_empty() {
            return Err(bad("empty \"text\"".into()));
        }
        if ex.labels.len() > EVAL_LINE_LABELS_MAX {
            return Err(bad(format!("{} labels, at most {EVAL_LINE_LABELS_MAX}", ex.labels.len())));
        }
        out.push(ex);
    }
    Ok(out)
}

/// Evaluates the catalog's labels (prototypes built with `embedder`) on the labelled file at
/// `path`.
pub fn evaluate_file(
    path: &Path,
    catalog: &Catalog,
    embedder: &dyn Embedder,
) -> Result<EvalReport, LabelError> {
    let bytes = read_bounded(path, EVAL_FILE_BYTES_MAX)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| LabelError::invalid("labelled file", format!("{}: not UTF-8: {e}", path.display())))?;
    let examples = parse_examples(text)?;
    let prototypes = Prototypes::build(catalog, embedder)?;
    evaluate(&examples, &prototypes, embedder)
}

/// Evaluates `prototypes` on labelled examples.
pub fn evaluate(
    examples: &[EvalExample],
    prototypes: &Prototypes,
    embedder: &dyn Embedder,
) -> Result<EvalReport, LabelError> {
    if prototypes.labels.is_empty() {
        return Err(LabelError::NotFound("labels to evaluate (the catalog defines none)".into()));
    }
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let vectors = embed_batched(embedder, &texts)?;
    let index: HashMap<&str, usize> =
        prototypes.labels.iter().enumerate().map(|(i, l)| (l.name.as_str(), i)).collect();
    let n = prototypes.labels.len();
    let (mut tp, mut fp, mut fn_) = (vec![0usize; n], vec![0usize; n], vec![0usize; n]);
    let mut unknown = BTreeMap::new();
    let (mut unlabelled, mut multi_labelled) = (0usize, 0usize);
    for (example, vector) in examples.iter().zip(&vectors) {
        let mut gold = HashSet::new();
        for name in &example.labels {
            match index.get(name.as_str()) {
                Some(&i) => {
                    gold.insert(i);
                }
                None => *unknown.entry(name.clone()).or_insert(0) += 1,
            }
        }
        let predicted: HashSet<usize> = prototypes.matching(vector).into_iter().collect();
        unlabelled += usize::from(predicted.is_empty());
        multi_labelled += usize::from(predicted.len() > 1);
        for i in 0..n {
            match (predicted.contains(&i), gold.contains(&i)) {
                (true, true) => tp[i] += 1,
                (true, false) => fp[i] += 1,
                (false, true) => fn_[i] += 1,
                (false, false) => {}
            }
        }
    }
    let per_label = prototypes
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| LabelScore::from_counts(&l.name, tp[i], fp[i], fn_[i]));
    let per_label: Vec<LabelScore> = per_label.collect();
    let sum = |v: &[usize]| v.iter().sum::<usize>();
    let micro = LabelScore::from_counts("micro avg", sum(&tp), sum(&fp), sum(&fn_));
    let mut macro_avg = LabelScore::from_counts("macro avg", sum(&tp), sum(&fp), sum(&fn_));
    let mean =
        |f: fn(&LabelScore) -> f64| per_label.iter().map(f).sum::<f64>() / per_label.len().max(1) as f64;
    (macro_avg.precision, macro_avg.recall, macro_avg.f1) =
        (mean(|s| s.precision), mean(|s| s.recall), mean(|s| s.f1));
    let thresholds = prototypes.labels.iter().map(|l| l.threshold).collect();
    Ok(EvalReport {
        model: prototypes.model.clone(),
        examples: examples.len(),
        per_label,
        micro,
        macro_avg,
        unlabelled,
        multi_labelled,
        thresholds,
        unknown,
    })
}
