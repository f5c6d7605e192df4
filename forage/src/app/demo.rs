//! The bundled sample sources: five feed files (RSS, Atom, JSON Feed) and a folder of
//! Markdown notes, compiled into the binary so `forage demo` needs no network and no
//! checkout. [`install_samples`] writes them under the data folder and imports their OPML.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::labels::NewLabel;
use super::{AppError, Forage};

/// The bundled files, as (path relative to the samples folder, contents).
pub const SAMPLE_FILES: &[(&str, &str)] = &[
    ("sources.opml", include_str!("../../samples/sources.opml")),
    ("feeds/rust.xml", include_str!("../../samples/feeds/rust.xml")),
    ("feeds/databases.atom", include_str!("../../samples/feeds/databases.atom")),
    ("feeds/ml.json", include_str!("../../samples/feeds/ml.json")),
    ("feeds/climate.xml", include_str!("../../samples/feeds/climate.xml")),
    ("feeds/space.atom", include_str!("../../samples/feeds/space.atom")),
    ("feeds/notes/books.md", include_str!("../../samples/feeds/notes/books.md")),
    ("feeds/notes/bread.md", include_str!("../../samples/feeds/notes/bread.md")),
    ("feeds/notes/chess.md", include_str!("../../samples/feeds/notes/chess.md")),
    ("feeds/notes/cooking.md", include_str!("../../samples/feeds/notes/cooking.md")),
    ("feeds/notes/cycling.md", include_str!("../../samples/feeds/notes/cycling.md")),
    ("feeds/notes/garden.md", include_str!("../../samples/feeds/notes/garden.md")),
    ("feeds/notes/habits.md", include_str!("../../samples/feeds/notes/habits.md")),
    ("feeds/notes/music.md", include_str!("../../samples/feeds/notes/music.md")),
    ("feeds/notes/photography.md", include_str!("../../samples/feeds/notes/photography.md")),
    ("feeds/notes/projects.md", include_str!("../../samples/feeds/notes/projects.md")),
    ("feeds/notes/reading-list.md", include_str!("../../samples/feeds/notes/reading-list.md")),
    ("feeds/notes/travel.md", include_str!("../../samples/feeds/notes/travel.md")),
];

/// The bundled labels (name, examples, threshold) the demo creates.
pub const SAMPLE_LABELS: &str = include_str!("../../samples/labels/labels.json");

/// Writes the sample files under `dir/samples` (overwriting older copies) and returns the
/// samples folder.
pub fn write_samples(dir: &Path) -> Result<PathBuf, AppError> {
    let root = dir.join("samples");
    for (rel, contents) in SAMPLE_FILES {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| AppError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| AppError::Unavailable(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(root)
}

#[derive(Deserialize)]
struct SampleLabel {
    name: String,
    examples: Vec<String>,
    threshold: Option<f32>,
}

/// Writes the samples and imports their OPML (fetching every source). Returns how many
/// sources the samples name.
pub fn install_samples(app: &Forage) -> Result<usize, AppError> {
    let root = write_samples(app.data_dir())?;
    let opml = std::fs::read(root.join("sources.opml"))
        .map_err(|e| AppError::Unavailable(format!("cannot read the sample OPML: {e}")))?;
    Ok(app.import_opml_from(&opml, &root)?.len())
}

/// Creates the sample labels that do not exist yet (best after the items are embedded, so
/// they are labelled at once). Returns how many it created.
pub fn install_sample_labels(app: &Forage) -> Result<usize, AppError> {
    let labels: Vec<SampleLabel> = serde_json::from_str(SAMPLE_LABELS)
        .map_err(|e| AppError::Unavailable(format!("bundled labels are damaged: {e}")))?;
    let existing: Vec<String> = app.labels()?.into_iter().map(|l| l.label.name).collect();
    let mut created = 0;
    for l in labels.into_iter().filter(|l| !existing.contains(&l.name)) {
        app.create_label(NewLabel {
            name: l.name,
            examples: l.examples,
            threshold: l.threshold,
            strict: false,
        })?;
        created += 1;
    }
    Ok(created)
}
