//! The data directory's manifest: format version, node id, and everything shard apply
//! depends on (shard count, decay reference time and half-life, state limits), fixed when the
//! store is created ([`Manifest::params`]). Written atomically; read on every open, and
//! options that contradict a pinned value are refused ([`ManifestError::Pinned`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::{Options, SHARDS_DEFAULT};
use crate::score::{Decay, HALF_LIFE_MS_DEFAULT};
use crate::shard::state::{ShardParams, StateLimits};
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
    /// The state limits every shard is applied with. `None` only in manifests written before
    /// limits were pinned; opening such a store pins the options' limits and rewrites it.
    #[serde(default)]
    pub limits: Option<StateLimits>,
}

impl Manifest {
    /// The parameters every shard of this store is applied with (see [`ShardParams`]).
    pub fn params(&self) -> ShardParams {
        ShardParams {
            shards: self.shards,
            limits: self.limits.unwrap_or_default(),
            decay: Decay { t_ref_ms: self.created_ms, half_life_ms: self.score_half_life_ms },
        }
    }
}

fn half_life_default() -> u64 {
    HALF_LIFE_MS_DEFAULT
}

/// What is wrong with a data directory's manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("{MANIFEST_FILE} is damaged: {0}")]
    Damaged(String),
    #[error("format version {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },
    /// The options ask for a value the store fixed when it was created.
    #[error("the store's {what} is {store}; options ask for {options} (fixed at creation)")]
    Pinned { what: &'static str, store: String, options: String },
    #[error("{op}: {source}")]
    Io { op: &'static str, source: std::io::Error },
}

fn manifest_error(dir: &Path, reason: ManifestError) -> Error {
    Error::Manifest { path: dir.display().to_string(), reason }
}

/// Reads the manifest of an existing store without changing anything.
pub fn read(vfs: &dyn Vfs, dir: &Path) -> Result<Manifest> {
    let bytes = vfs
        .read_file(&dir.join(MANIFEST_FILE))
        .map_err(|source| manifest_error(dir, ManifestError::Io { op: "read manifest", source }))?;
    parse(dir, &bytes)
}

fn parse(dir: &Path, bytes: &[u8]) -> Result<Manifest> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| manifest_error(dir, ManifestError::Damaged(e.to_string())))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(manifest_error(
            dir,
            ManifestError::UnsupportedVersion { found: manifest.format_version },
        ));
    }
    Ok(manifest)
}

/// Reads the manifest, or creates it for a new store. Options must agree with it.
pub fn load_or_create(vfs: &dyn Vfs, dir: &Path, options: &Options, now_ms: u64) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    match vfs.read_file(&path) {
        Ok(bytes) => {
            let mut manifest = parse(dir, &bytes)?;
            check(dir, &manifest, options)?;
            if manifest.limits.is_none() {
                // Written before limits were pinned: pin the ones this store runs with now.
                manifest.limits = Some(options.state_limits.unwrap_or_default());
                write(vfs, dir, &manifest)?;
                tracing::info!(dir = %dir.display(), limits = ?manifest.limits, "state limits pinned in the manifest");
            }
            Ok(manifest)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(vfs, dir, options, now_ms),
        Err(source) => Err(manifest_error(dir, ManifestError::Io { op: "read manifest", source })),
    }
}

fn pinned(
    dir: &Path,
    what: &'static str,
    store: impl std::fmt::Debug,
    options: impl std::fmt::Debug,
) -> Error {
    manifest_error(
        dir,
        ManifestError::Pinned { what, store: format!("{store:?}"), options: format!("{options:?}") },
    )
}

fn check(dir: &Path, manifest: &Manifest, options: &Options) -> Result<()> {
    if let Some(shards) = options.shards
        && shards != manifest.shards
    {
        return Err(pinned(dir, "shard count", manifest.shards, shards));
    }
    if let Some(half_life) = options.score_half_life_ms
        && half_life != manifest.score_half_life_ms
    {
        return Err(pinned(dir, "score half-life (ms)", manifest.score_half_life_ms, half_life));
    }
    if let (Some(limits), Some(store)) = (options.state_limits, manifest.limits)
        && limits != store
    {
        return Err(pinned(dir, "state limits", store, limits));
    }
    if let Some(created) = options.created_ms
        && created != manifest.created_ms
    {
        return Err(pinned(dir, "decay reference time created_ms", manifest.created_ms, created));
    }
    if options.node_id != manifest.node_id {
        return Err(pinned(dir, "node id", manifest.node_id, options.node_id));
    }
    Ok(())
}

fn create(vfs: &dyn Vfs, dir: &Path, options: &Options, now_ms: u64) -> Result<Manifest> {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        shards: options.shards.unwrap_or(SHARDS_DEFAULT),
        node_id: options.node_id,
        created_ms: options.created_ms.unwrap_or(now_ms),
        score_half_life_ms: options.score_half_life_ms.unwrap_or(HALF_LIFE_MS_DEFAULT),
        limits: Some(options.state_limits.unwrap_or_default()),
    };
    write(vfs, dir, &manifest)?;
    Ok(manifest)
}

/// Writes the manifest atomically: temp file, fsync, rename, directory fsync.
fn write(vfs: &dyn Vfs, dir: &Path, manifest: &Manifest) -> Result<()> {
    let io = |op: &'static str| move |source| manifest_error(dir, ManifestError::Io { op, source });
    let bytes =
        serde_json::to_vec_pretty(manifest).map_err(|e| io("encode manifest")(std::io::Error::other(e)))?;
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    if vfs.file_len(&tmp).is_ok() {
        vfs.remove_file(&tmp).map_err(io("remove stale temp manifest"))?;
    }
    let mut file = vfs.create_new(&tmp).map_err(io("create manifest"))?;
    file.write_all(&bytes).map_err(io("write manifest"))?;
    file.sync_data().map_err(io("fsync manifest"))?;
    drop(file);
    vfs.rename(&tmp, &dir.join(MANIFEST_FILE)).map_err(io("rename manifest"))?;
    vfs.sync_dir(dir).map_err(io("fsync data directory"))?;
    Ok(())
}
