//! The browser console: one page served by the server that talks to the administrator API.

use axum::http::header;
use axum::response::IntoResponse;

/// The console page itself; it holds no data, everything comes from the API after login.
const PAGE: &str = include_str!("console.html");

/// `GET /`: the console.
pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        PAGE,
    )
}
