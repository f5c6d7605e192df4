//! The web UI: static HTML, CSS and JS compiled into the binary (no CDN; works offline).

use axum::http::header;
use axum::response::IntoResponse;

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const STYLE_CSS: &str = include_str!("../../ui/style.css");
const MANAGE_JS: &str = include_str!("../../ui/manage.js");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}

pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn style_css() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub async fn manage_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", MANAGE_JS)
}
