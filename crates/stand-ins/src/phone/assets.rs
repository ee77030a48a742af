//! The page's files, built into the binary: the phone works with no network, and
//! nothing but Cargo is needed to build it.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/phone.css");
const SCRIPT: &str = include_str!("page/phone.js");
/// A picture the person can send: the page offers its own, so that trying MMS needs
/// no picture on the internet.
const PIZZA: &str = include_str!("page/pizza.svg");

/// The page may load only its own files, and run only its own script.
const POLICY: &str = "default-src 'self'; img-src * data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn page() -> Response {
    file("text/html; charset=utf-8", PAGE)
}

pub async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

pub async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn media(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "pizza.svg" => file("image/svg+xml", PIZZA),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
