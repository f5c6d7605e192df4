//! Starts a real `tidal serve` process for Forage's remote-store tests: a temp data dir, a
//! free loopback port (`--listen 127.0.0.1:0`, the server prints the port it picked),
//! `--durability none`, and a `/readyz` poll before the server is handed out.
//!
//! The binary is the workspace's own `tidal`, found next to the test executable's profile
//! directory (`target/debug/deps/xxx` → `target/debug/tidal`); when it is missing it is built
//! once with `$CARGO build -p tidal-cli --bin tidal`. A dropped [`TidalServer`] kills its process.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to print its address and to answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `tidal serve`; killed on drop.
pub struct TidalServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl TidalServer {
    /// Starts a server on a fresh temp data dir with extra `flags` (say `["--token", "t"]`).
    pub fn start(flags: &[&str]) -> TidalServer {
        let dir = tempfile::tempdir().expect("temp data dir");
        let mut command = Command::new(tidal_binary());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--durability", "none"])
            .args(flags);
        // Flags must decide the configuration, not whatever the developer's shell exports.
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIDAL_")) {
            command.env_remove(key);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            // The server warns on every 5xx, and the tests provoke some on purpose.
            command.env("RUST_LOG", "error");
        }
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().expect("spawn tidal serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the address line so the server never blocks on stdout.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(START_TIMEOUT) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("tidal serve printed no `listening on` line: {:?}", child.wait());
            }
        };
        let server = TidalServer { child, base, _dir: dir };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/readyz", self.base);
        loop {
            let status = agent.get(&url).call().map(|r| r.status().as_u16());
            if let Ok(200) = status {
                return;
            }
            assert!(Instant::now() < deadline, "{url} not ready after {START_TIMEOUT:?}: {status:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TidalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://127.0.0.1:PORT` where nothing listens (a port bound once, then released).
pub fn dead_base() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The workspace's `tidal` binary, built when missing.
pub fn tidal_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>
    let profile_dir = exe.parent().and_then(Path::parent).expect("test exe lives in <target>/<profile>/deps");
    let binary = profile_dir.join(format!("tidal{}", std::env::consts::EXE_SUFFIX));
    if binary.is_file() {
        return binary;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "-p", "tidal-cli", "--bin", "tidal"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    let status = build.status();
    assert!(
        binary.is_file(),
        "no tidal binary at {} and `{} build -p tidal-cli --bin tidal` did not make one ({status:?}); \
         run `cargo build -p tidal-cli --bin tidal` first",
        binary.display(),
        Path::new(&cargo).display(),
    );
    binary
}
