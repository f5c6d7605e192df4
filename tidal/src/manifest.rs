//! The data directory's manifest: format version, shard count and node id, fixed when the
//! store is created. Written atomically; read on every open.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::{Options, SHARDS_DEFAULT};
use crate::score::HALF_LIFE_MS_DEFAULT;
use crate::wal::vfs::Vfs;

/// Name of the manifest file in the data directory.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Version of the data directory layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub shards: u32,
    pub node_id: u32,
    pub created_ms: u64,
    /// Half-life of ranking weights; rankings decay relative to `created_ms`.
    #[serde(default = "half_life_default")]
    pub score_half_life_ms: u64,
}

fn half_life_default() -> u64 {
    HALF_LIFE_MS_DEFAULT
}

fn manifest_error(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Manifest { path: dir.display().to_string(), reason: reason.into() }
}

/// Reads the manifest, or creates it for a new store. Options must agree with it.
pub fn load_or_create(vfs: &dyn Vfs, dir: &Path, options: &Options, now_ms: u64) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    match vfs.read_file(&path) {
        Ok(bytes) => {
            let manifest: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| manifest_error(dir, format!("{MANIFEST_FILE} is damaged: {e}")))?;
            check(dir, &manifest, options)?;
            Ok(manifest)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(vfs, dir, options, now_ms),
        Err(e) => Err(manifest_error(dir, format!("cannot read {MANIFEST_FILE}: {e}"))),
    }
}

fn check(dir: &Path, manifest: &Manifest, options: &Options) -> Result<()> {
    if manifest.format_version != FORMAT_VERSION {
        return Err(manifest_error(
            dir,
            format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                manifest.format_version
            ),
        ));
    }
    if let Some(shards) = options.shards
        && shards != manifest.shards
    {
        return Err(manifest_error(
            dir,
            format!(
                "the store has {} shards; options ask for {shards} (the count is fixed at creation)",
                manifest.shards
            ),
        ));
    }
    if let Some(half_life) = options.score_half_life_ms
        && half_life != manifest.score_half_life_ms
    {
        return Err(manifest_error(
            dir,
            format!(
                "the store's score half-life is {} ms; options ask for {half_life} ms (fixed at creation)",
                manifest.score_half_life_ms
            ),
        ));
    }
    if options.node_id != manifest.node_id {
        return Err(manifest_error(
            dir,
            format!("the store belongs to node {}; options say node {}", manifest.node_id, options.node_id),
        ));
    }
    Ok(())
}

fn create(vfs: &dyn Vfs, dir: &Path, options: &Options, now_ms: u64) -> Result<Manifest> {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        shards: options.shards.unwrap_or(SHARDS_DEFAULT),
        node_id: options.node_id,
        created_ms: now_ms,
        score_half_life_ms: options.score_half_life_ms.unwrap_or(HALF_LIFE_MS_DEFAULT),
    };
    let io = |op: &'static str, e| manifest_error(dir, format!("{op}: {e}"));
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| manifest_error(dir, e.to_string()))?;
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    if vfs.file_len(&tmp).is_ok() {
        vfs.remove_file(&tmp).map_err(|e| io("remove stale temp manifest", e))?;
    }
    let mut file = vfs.create_new(&tmp).map_err(|e| io("create manifest", e))?;
    file.write_all(&bytes).map_err(|e| io("write manifest", e))?;
    file.sync_data().map_err(|e| io("fsync manifest", e))?;
    drop(file);
    vfs.rename(&tmp, &dir.join(MANIFEST_FILE)).map_err(|e| io("rename manifest", e))?;
    vfs.sync_dir(dir).map_err(|e| io("fsync data directory", e))?;
    Ok(manifest)
}
