//! Helpers the HTTP integration tests share: start a real `tidal serve` on a free loopback
//! port, and an HTTP client that returns 4xx/5xx answers instead of failing on them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Starts `tidal serve` on `dir` (extra `flags`, `env` set, every other `TIDAL_*` variable
/// removed); returns the child and `http://ADDR` once it printed that it listens.
pub fn start_serve(dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidal"));
    command.arg("serve").arg("--data-dir").arg(dir).args(["--listen", "127.0.0.1:0"]).args(flags);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIDAL_")) {
        command.env_remove(key);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // The server warns on every 5xx, and some tests provoke them on purpose.
        command.env("RUST_LOG", "error");
    }
    command.envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().expect("spawn tidal serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the address line so the server never blocks on stdout.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => (child, base),
        Err(_) => {
            let _ = child.kill();
            panic!("tidal serve printed no address: {:?}", child.wait());
        }
    }
}

/// An HTTP client whose 4xx/5xx answers are answers, not errors.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// A `tidal serve` child process (and the data directory it owns, if any); killed when dropped.
#[allow(dead_code)] // not every test binary starts its servers this way
pub struct Server {
    pub child: Child,
    pub base: String,
    pub dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tidal serve` with `flags` on a fresh data directory.
#[allow(dead_code)]
pub fn start(flags: &[&str]) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, base) = start_serve(dir.path(), flags, &[]);
    Server { child, base, dir: Some(dir) }
}
