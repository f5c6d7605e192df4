//! Configuration of `tidal serve`: flags, environment and a TOML file, in that order of
//! precedence, over named defaults.
//!
//! Each source becomes a [`ConfigLayer`] (every key optional); [`ServerConfig::resolve`]
//! takes, key by key, the first layer that sets it, then checks the result. TOML keys are
//! the flag names with `_` (`body_bytes_max`); environment variables are `TIDAL_` plus the
//! key in capitals (`TIDAL_BODY_BYTES_MAX`). The file itself is named by `--config` or
//! `TIDAL_CONFIG`. Unknown TOML keys are an error, so a typo never silently does nothing.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use tidal::options::{Durability, Options};
use tidal::signal::BATCH_SIGNALS_MAX;

/// Address the server binds unless told otherwise: loopback only.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7390";
/// Data directory unless told otherwise.
pub const DATA_DIR_DEFAULT: &str = "tidal-data";
/// Largest request body, in bytes.
pub const BODY_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Most signals one ingest request may carry.
pub const BATCH_SIGNALS_MAX_DEFAULT: usize = 10_000;
/// Requests under `/v1` served at once; more are answered 503 `overloaded`.
pub const REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 512;
/// Longest a `/v1` request may take (above the longest read wait of 30 s).
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Longest shutdown waits for in-flight requests before it stops anyway.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 30_000;
/// Shortest request timeout accepted.
pub const REQUEST_TIMEOUT_MS_MIN: u64 = 100;
/// Environment variable that names the TOML file.
pub const CONFIG_ENV: &str = "TIDAL_CONFIG";

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_owned(), message: message.into() }
}

/// One source of configuration; `None` means "not set here".
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub token: Option<String>,
    /// `fsync`, `none` or `interval:MS`.
    pub durability: Option<String>,
    pub shards: Option<u32>,
    pub body_bytes_max: Option<usize>,
    pub batch_signals_max: Option<usize>,
    pub requests_in_flight_max: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub custom_kinds: Option<Vec<String>>,
    /// Move segments snapshots cover to `archive/` (true) or delete them (false).
    pub wal_archive: Option<bool>,
    pub snapshot_every_signals: Option<u64>,
    pub segment_bytes_max: Option<u64>,
    pub wal_hold_bytes_max: Option<u64>,
}

impl fmt::Debug for ConfigLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLayer")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("durability", &self.durability)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

fn parse_env<T: FromStr>(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    match var(name) {
        None => Ok(None),
        Some(text) => text.trim().parse().map(Some).map_err(|e| invalid(name, format!("`{text}`: {e}"))),
    }
}

impl ConfigLayer {
    /// The layer the environment sets; `var` looks a variable up (`std::env::var(..).ok()`).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<ConfigLayer, ConfigError> {
        Ok(ConfigLayer {
            data_dir: var("TIDAL_DATA_DIR").map(PathBuf::from),
            listen: var("TIDAL_LISTEN"),
            token: var("TIDAL_TOKEN"),
            durability: var("TIDAL_DURABILITY"),
            shards: parse_env(&var, "TIDAL_SHARDS")?,
            body_bytes_max: parse_env(&var, "TIDAL_BODY_BYTES_MAX")?,
            batch_signals_max: parse_env(&var, "TIDAL_BATCH_SIGNALS_MAX")?,
            requests_in_flight_max: parse_env(&var, "TIDAL_REQUESTS_IN_FLIGHT_MAX")?,
            request_timeout_ms: parse_env(&var, "TIDAL_REQUEST_TIMEOUT_MS")?,
            shutdown_grace_ms: parse_env(&var, "TIDAL_SHUTDOWN_GRACE_MS")?,
            custom_kinds: var("TIDAL_CUSTOM_KINDS").map(|list| split_list(&list)),
            wal_archive: parse_env(&var, "TIDAL_WAL_ARCHIVE")?,
            snapshot_every_signals: parse_env(&var, "TIDAL_SNAPSHOT_EVERY_SIGNALS")?,
            segment_bytes_max: parse_env(&var, "TIDAL_SEGMENT_BYTES_MAX")?,
            wal_hold_bytes_max: parse_env(&var, "TIDAL_WAL_HOLD_BYTES_MAX")?,
        })
    }

    /// The layer a TOML document sets.
    pub fn from_toml(text: &str, path: &Path) -> Result<ConfigLayer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml { path: path.to_owned(), message: e.to_string() })
    }

    /// The layer of the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::from_toml(&text, path)
    }

    /// This layer with every key it leaves unset taken from `lower`.
    pub fn or(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            data_dir: self.data_dir.or(lower.data_dir),
            listen: self.listen.or(lower.listen),
            token: self.token.or(lower.token),
            durability: self.durability.or(lower.durability),
            shards: self.shards.or(lower.shards),
            body_bytes_max: self.body_bytes_max.or(lower.body_bytes_max),
            batch_signals_max: self.batch_signals_max.or(lower.batch_signals_max),
            requests_in_flight_max: self.requests_in_flight_max.or(lower.requests_in_flight_max),
            request_timeout_ms: self.request_timeout_ms.or(lower.request_timeout_ms),
            shutdown_grace_ms: self.shutdown_grace_ms.or(lower.shutdown_grace_ms),
            custom_kinds: self.custom_kinds.or(lower.custom_kinds),
            wal_archive: self.wal_archive.or(lower.wal_archive),
            snapshot_every_signals: self.snapshot_every_signals.or(lower.snapshot_every_signals),
            segment_bytes_max: self.segment_bytes_max.or(lower.segment_bytes_max),
            wal_hold_bytes_max: self.wal_hold_bytes_max.or(lower.wal_hold_bytes_max),
        }
    }
}

/// A comma-separated list, blanks dropped.
pub fn split_list(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Parses `fsync`, `none` or `interval:MS`.
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    match text.trim() {
        "fsync" => Ok(Durability::Fsync),
        "none" => Ok(Durability::None),
        other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
            Some(Ok(ms)) if ms > 0 => Ok(Durability::Interval(Duration::from_millis(ms))),
            _ => Err(format!("`{other}`: expected fsync, none or interval:MS (MS > 0)")),
        },
    }
}

/// The request limits the server enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub body_bytes_max: usize,
    pub batch_signals_max: usize,
    pub requests_in_flight_max: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            batch_signals_max: BATCH_SIGNALS_MAX_DEFAULT,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            shutdown_grace: Duration::from_millis(SHUTDOWN_GRACE_MS_DEFAULT),
        }
    }
}

/// The resolved, checked configuration of a server.
#[derive(Clone, PartialEq)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// When set, every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer`.
    pub token: Option<String>,
    pub durability: Durability,
    /// Shards of a new store; an existing store keeps its count.
    pub shards: Option<u32>,
    pub limits: Limits,
    pub custom_kinds: Vec<String>,
    pub storage: Storage,
}

/// How the store keeps its log (see [`Options`] for each field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storage {
    pub wal_archive: bool,
    pub snapshot_every_signals: u64,
    pub segment_bytes_max: u64,
    pub wal_hold_bytes_max: u64,
}

impl Default for Storage {
    fn default() -> Self {
        let o = Options::default();
        Storage {
            wal_archive: o.wal_archive,
            snapshot_every_signals: o.snapshot_every_signals,
            segment_bytes_max: o.segment_bytes_max,
            wal_hold_bytes_max: o.wal_hold_bytes_max,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("durability", &self.durability)
            .field("shards", &self.shards)
            .field("limits", &self.limits)
            .field("custom_kinds", &self.custom_kinds)
            .field("storage", &self.storage)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            listen: SocketAddr::from(([127, 0, 0, 1], 7390)),
            token: None,
            durability: Durability::Fsync,
            shards: None,
            limits: Limits::default(),
            custom_kinds: Vec::new(),
            storage: Storage::default(),
        }
    }
}

impl ServerConfig {
    /// Resolves flags over environment over file over defaults, then checks the result.
    pub fn resolve(
        flags: ConfigLayer,
        env: ConfigLayer,
        file: ConfigLayer,
    ) -> Result<ServerConfig, ConfigError> {
        let merged = flags.or(env).or(file);
        let listen_text = merged.listen.unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|e| invalid("listen", format!("`{listen_text}`: {e} (expected IP:PORT)")))?;
        let durability = match merged.durability {
            Some(text) => parse_durability(&text).map_err(|e| invalid("durability", e))?,
            None => Durability::Fsync,
        };
        let ms = |v: Option<u64>, default: u64| Duration::from_millis(v.unwrap_or(default));
        let limits = Limits {
            body_bytes_max: merged.body_bytes_max.unwrap_or(BODY_BYTES_MAX_DEFAULT),
            batch_signals_max: merged.batch_signals_max.unwrap_or(BATCH_SIGNALS_MAX_DEFAULT),
            requests_in_flight_max: merged.requests_in_flight_max.unwrap_or(REQUESTS_IN_FLIGHT_MAX_DEFAULT),
            request_timeout: ms(merged.request_timeout_ms, REQUEST_TIMEOUT_MS_DEFAULT),
            shutdown_grace: ms(merged.shutdown_grace_ms, SHUTDOWN_GRACE_MS_DEFAULT),
        };
        let config = ServerConfig {
            data_dir: merged.data_dir.unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            listen,
            token: merged.token,
            durability,
            shards: merged.shards,
            limits,
            custom_kinds: merged.custom_kinds.unwrap_or_default(),
            storage: {
                let d = Storage::default();
                Storage {
                    wal_archive: merged.wal_archive.unwrap_or(d.wal_archive),
                    snapshot_every_signals: merged.snapshot_every_signals.unwrap_or(d.snapshot_every_signals),
                    segment_bytes_max: merged.segment_bytes_max.unwrap_or(d.segment_bytes_max),
                    wal_hold_bytes_max: merged.wal_hold_bytes_max.unwrap_or(d.wal_hold_bytes_max),
                }
            },
        };
        config.check()?;
        Ok(config)
    }

    /// Reads the environment through `var` and the TOML file named by `config_flag` (or
    /// `TIDAL_CONFIG`), and resolves them under `flags`.
    pub fn load(
        flags: ConfigLayer,
        config_flag: Option<PathBuf>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, ConfigError> {
        let file_path = config_flag.or_else(|| var(CONFIG_ENV).map(PathBuf::from));
        let env = ConfigLayer::from_env(&var)?;
        let file = match file_path {
            Some(path) => ConfigLayer::from_file(&path)?,
            None => ConfigLayer::default(),
        };
        Self::resolve(flags, env, file)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(invalid("token", "must not be empty (leave it unset to serve without a token)"));
        }
        if l.body_bytes_max == 0 {
            return Err(invalid("body_bytes_max", "must be positive"));
        }
        if !(1..=BATCH_SIGNALS_MAX).contains(&l.batch_signals_max) {
            return Err(invalid("batch_signals_max", format!("must be within 1..={BATCH_SIGNALS_MAX}")));
        }
        if l.requests_in_flight_max == 0 {
            return Err(invalid("requests_in_flight_max", "must be positive"));
        }
        if l.request_timeout < Duration::from_millis(REQUEST_TIMEOUT_MS_MIN) {
            return Err(invalid("request_timeout_ms", format!("must be at least {REQUEST_TIMEOUT_MS_MIN}")));
        }
        self.options().validate().map_err(|e| invalid("options", e.to_string()))
    }

    /// The store options this configuration opens the data directory with.
    pub fn options(&self) -> Options {
        Options {
            shards: self.shards,
            durability: self.durability,
            custom_kinds: self.custom_kinds.clone(),
            wal_archive: self.storage.wal_archive,
            snapshot_every_signals: self.storage.snapshot_every_signals,
            segment_bytes_max: self.storage.segment_bytes_max,
            wal_hold_bytes_max: self.storage.wal_hold_bytes_max,
            ..Options::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_listen(addr: &str) -> ConfigLayer {
        ConfigLayer { listen: Some(addr.into()), ..ConfigLayer::default() }
    }

    #[test]
    fn storage_keys_come_from_the_file_and_the_environment() {
        let file = ConfigLayer::from_toml(
            "wal_archive = false\nsnapshot_every_signals = 500\nwal_hold_bytes_max = 9000",
            Path::new("t.toml"),
        )
        .unwrap();
        let env = ConfigLayer::from_env(|k| (k == "TIDAL_SEGMENT_BYTES_MAX").then(|| "8192".into())).unwrap();
        let c = ServerConfig::resolve(ConfigLayer::default(), env, file).unwrap();
        let o = c.options();
        assert_eq!(
            (o.wal_archive, o.snapshot_every_signals, o.segment_bytes_max, o.wal_hold_bytes_max),
            (false, 500, 8192, 9000)
        );
        let bad = ConfigLayer::from_toml("segment_bytes_max = 10", Path::new("t.toml")).unwrap();
        assert!(ServerConfig::resolve(ConfigLayer::default(), ConfigLayer::default(), bad).is_err());
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let toml = r#"
            listen = "127.0.0.1:3"
            token = "from-file"
            durability = "none"
            shards = 3
            batch_signals_max = 30
        "#;
        let file = ConfigLayer::from_toml(toml, Path::new("t.toml")).unwrap();
        let env = ConfigLayer::from_env(|k| match k {
            "TIDAL_LISTEN" => Some("127.0.0.1:2".into()),
            "TIDAL_TOKEN" => Some("from-env".into()),
            "TIDAL_SHARDS" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        let flags = layer_listen("127.0.0.1:1");
        let c = ServerConfig::resolve(flags, env.clone(), file.clone()).unwrap();
        assert_eq!(c.listen.port(), 1, "flag wins");
        assert_eq!(c.token.as_deref(), Some("from-env"), "env beats file");
        assert_eq!(c.shards, Some(2));
        assert_eq!(c.durability, Durability::None, "file beats default");
        assert_eq!(c.limits.batch_signals_max, 30);
        assert_eq!(c.limits.body_bytes_max, BODY_BYTES_MAX_DEFAULT, "default when nobody sets it");
        let c = ServerConfig::resolve(ConfigLayer::default(), env, file.clone()).unwrap();
        assert_eq!(c.listen.port(), 2, "env beats file");
        let c = ServerConfig::resolve(ConfigLayer::default(), ConfigLayer::default(), file).unwrap();
        assert_eq!(c.listen.port(), 3, "file beats default");
        let c = ServerConfig::resolve(Default::default(), Default::default(), Default::default()).unwrap();
        assert_eq!(c, ServerConfig::default());
        assert!(c.listen.ip().is_loopback(), "binds loopback by default");
    }

    #[test]
    fn load_reads_the_file_named_by_flag_or_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tidal.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9\"\ncustom_kinds = [\"bookmark\"]\n").unwrap();
        let via_env = |k: &str| (k == CONFIG_ENV).then(|| path.display().to_string());
        let c = ServerConfig::load(ConfigLayer::default(), None, via_env).unwrap();
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.custom_kinds, vec!["bookmark".to_owned()]);
        let c = ServerConfig::load(ConfigLayer::default(), Some(path.clone()), |_| None).unwrap();
        assert_eq!(c.listen.port(), 9);
        let missing = ServerConfig::load(ConfigLayer::default(), Some(dir.path().join("no.toml")), |_| None);
        assert!(matches!(missing, Err(ConfigError::Io { .. })));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |r: Result<ServerConfig, ConfigError>| r.unwrap_err().to_string();
        let none = ConfigLayer::default;
        assert!(err(ServerConfig::resolve(layer_listen("nowhere"), none(), none())).contains("listen"));
        let durability = ConfigLayer { durability: Some("sometimes".into()), ..none() };
        assert!(err(ServerConfig::resolve(durability, none(), none())).contains("durability"));
        let batch = ConfigLayer { batch_signals_max: Some(0), ..none() };
        assert!(err(ServerConfig::resolve(batch, none(), none())).contains("batch_signals_max"));
        let token = ConfigLayer { token: Some(" ".into()), ..none() };
        assert!(err(ServerConfig::resolve(token, none(), none())).contains("token"));
        let env = ConfigLayer::from_env(|k| (k == "TIDAL_SHARDS").then(|| "many".into()));
        assert!(env.unwrap_err().to_string().contains("TIDAL_SHARDS"));
        let unknown = ConfigLayer::from_toml("listn = \"x\"", Path::new("t.toml"));
        assert!(unknown.unwrap_err().to_string().contains("listn"));
        let c = ConfigLayer { token: Some("secret".into()), ..none() };
        assert!(!format!("{c:?}").contains("secret"), "Debug must not print the token");
    }

    #[test]
    fn durability_forms() {
        assert_eq!(parse_durability("fsync"), Ok(Durability::Fsync));
        assert_eq!(parse_durability("none"), Ok(Durability::None));
        assert_eq!(parse_durability("interval:5"), Ok(Durability::Interval(Duration::from_millis(5))));
        assert!(parse_durability("interval:0").is_err());
        assert!(parse_durability("interval:x").is_err());
    }
}
