//! Runs the real `forage` binary as a child process for the API and end-to-end tests, and
//! talks to it over HTTP with ureq.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use ureq::Agent;

/// How long the child may take to print its address (the demo embeds ~220 items).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A running `forage` process, killed on drop. Derefs to its [`Client`].
pub struct ForageProcess {
    child: Child,
    client: Client,
}

/// An HTTP client of a Forage server.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    agent: Agent,
}

impl std::ops::Deref for ForageProcess {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl ForageProcess {
    /// Starts `forage demo` on a free loopback port with the lexical embedder.
    pub fn demo(data_dir: &Path, extra: &[&str]) -> ForageProcess {
        let dir = data_dir.to_str().expect("utf-8 path");
        let mut args = vec!["demo", "--data-dir", dir, "--listen", "127.0.0.1:0", "--embedder", "lexical"];
        args.extend_from_slice(extra);
        Self::start(&args, extra.windows(2).find(|w| w[0] == "--token").map(|w| w[1].to_owned()))
    }

    /// Starts `forage` with `args`; waits for the `Forage UI: http://…/` line.
    pub fn start(args: &[&str], token: Option<String>) -> ForageProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_forage"))
            .args(args)
            .env("RUST_LOG", "forage=info,warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start forage");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Forage UI: ") {
                    let _ = tx.send(url.trim_end_matches('/').to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(START_TIMEOUT) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                panic!("forage did not print its address within {START_TIMEOUT:?}");
            }
        };
        let agent = Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .build()
            .into();
        ForageProcess { child, client: Client { base, token, agent } }
    }

    /// Stops the process with SIGTERM (graceful), waiting for it to exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

impl Client {
    /// The same server with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client { token: token.map(str::to_owned), ..self.clone() }
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// GET; returns (status, body as JSON or as a string value).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.auth(self.agent.get(format!("{}{path}", self.base))).call().expect("GET");
        answer(resp)
    }

    /// GET returning the raw text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let mut resp = self.auth(self.agent.get(format!("{}{path}", self.base))).call().expect("GET");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// POST a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.auth(self.agent.post(format!("{}{path}", self.base))).send_json(body).expect("POST");
        answer(resp)
    }

    /// POST raw bytes with a content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let req =
            self.auth(self.agent.post(format!("{}{path}", self.base))).header("Content-Type", content_type);
        answer(req.send(body).expect("POST"))
    }

    /// PUT a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.auth(self.agent.put(format!("{}{path}", self.base))).send_json(body).expect("PUT");
        answer(resp)
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let resp = self.auth(self.agent.delete(format!("{}{path}", self.base))).call().expect("DELETE");
        answer(resp)
    }
}

impl Drop for ForageProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The `error.code` of an error answer.
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}
