//! Label operations of the app: list, create, edit, delete and confirm/reject, each
//! followed by relabelling the catalog with the new prototypes.

use serde::{Deserialize, Serialize};

use super::{AppError, Forage};
use crate::catalog::{Label, LabelPatch, LabelSpec};
use crate::labels;

/// A label as the API shows it: the stored label and how many items carry it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LabelView {
    #[serde(flatten)]
    pub label: Label,
    pub items: usize,
}

/// The body of `POST /v1/labels`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLabel {
    pub name: String,
    pub examples: Vec<String>,
    /// Set by hand; absent: calibrated from the examples and the other labels.
    pub threshold: Option<f32>,
    /// No nearest-label fallback (only the threshold decides).
    #[serde(default)]
    pub strict: bool,
}

/// The body of `PUT /v1/labels/{id}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelEdit {
    pub name: Option<String>,
    pub examples: Option<Vec<String>>,
    /// Sets the threshold by hand.
    pub threshold: Option<f32>,
    /// `true`: calibrate the threshold again.
    pub calibrated: Option<bool>,
    pub strict: Option<bool>,
}

impl Forage {
    /// Every label with its item count.
    pub fn labels(&self) -> Result<Vec<LabelView>, AppError> {
        let catalog = self.catalog();
        let counts = catalog.label_item_counts()?;
        let labels = catalog.list_labels()?;
        Ok(labels
            .into_iter()
            .map(|l| LabelView { items: counts.get(&l.id).copied().unwrap_or(0), label: l })
            .collect())
    }

    /// One label.
    pub fn label(&self, id: i64) -> Result<LabelView, AppError> {
        self.labels()?
            .into_iter()
            .find(|l| l.label.id == id)
            .ok_or_else(|| AppError::NotFound(format!("no label {id}")))
    }

    /// Creates a label and labels the catalog with it.
    pub fn create_label(&self, new: NewLabel) -> Result<LabelView, AppError> {
        let spec = LabelSpec {
            name: new.name,
            examples: new.examples,
            threshold: new.threshold,
            strict: new.strict,
        };
        let id = self.catalog().create_label(&spec, super::now_ms())?;
        self.relabel()?;
        self.label(id)
    }

    /// Edits a label and relabels the catalog.
    pub fn edit_label(&self, id: i64, edit: LabelEdit) -> Result<LabelView, AppError> {
        let patch = LabelPatch {
            name: edit.name,
            examples: edit.examples,
            threshold: edit.threshold,
            calibrated: edit.calibrated,
            strict: edit.strict,
        };
        self.catalog().update_label(id, &patch)?;
        self.relabel()?;
        self.label(id)
    }

    /// Deletes a label (its assignments go with it).
    pub fn delete_label(&self, id: i64) -> Result<(), AppError> {
        if !self.catalog().delete_label(id)? {
            return Err(AppError::NotFound(format!("no label {id}")));
        }
        Ok(())
    }

    /// Confirms (`true`) or rejects a label on an item; the label's prototype moves towards
    /// or away from the item, and the catalog is relabelled.
    pub fn label_feedback(&self, id: i64, item: &str, confirm: bool) -> Result<LabelView, AppError> {
        {
            let catalog = self.catalog();
            if catalog.get_label(id)?.is_none() {
                return Err(AppError::NotFound(format!("no label {id}")));
            }
            if catalog.get_item(item)?.is_none() {
                return Err(AppError::NotFound(format!("no item `{item}`")));
            }
            catalog.set_label_feedback(id, item, confirm, super::now_ms())?;
        }
        self.relabel()?;
        self.label(id)
    }

    fn relabel(&self) -> Result<usize, AppError> {
        Ok(labels::relabel_all(&self.catalog, self.embedder.as_ref())?)
    }
}
