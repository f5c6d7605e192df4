//! The API answers what its OpenAPI document says: a real `forage demo` process (lexical
//! embedder, bundled samples) and schemathesis (PyPI; `scripts/test-all.sh` installs it)
//! run against its `/openapi.json`: every route is called with generated inputs, and every
//! answer is checked against the documented status codes, content types and response body
//! schemas, with no 5xx.
//!
//! The test fails, never skips, when schemathesis is missing.

mod support_forage;

use std::process::Command;

use support_forage::ForageProcess;

/// Generated cases per operation (enough to reach both answers and errors of every route).
const MAX_EXAMPLES: &str = "25";

#[test]
fn every_route_answers_as_its_schema_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forage = ForageProcess::demo(dir.path(), &[]);
    let spec = format!("{}/openapi.json", forage.base);
    // schemathesis keeps a cache in its working folder: keep it out of the source tree.
    let work = tempfile::tempdir().expect("tempdir");
    let output = Command::new("schemathesis")
        .current_dir(work.path())
        .args([
            "run",
            &spec,
            "--url",
            &forage.base,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "7",
            "--suppress-health-check",
            "all",
            "--workers",
            "1",
            "--no-color",
            // The export streams JSON Lines, not one JSON document.
            "--exclude-path",
            "/v1/export",
        ])
        .output()
        .expect("run schemathesis (pip install schemathesis; scripts/test-all.sh does)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(output.status.success(), "schemathesis found failures:\n{stdout}\n{stderr}");
    assert!(stdout.contains("/v1/feed"), "schemathesis tested nothing:\n{stdout}");
}
