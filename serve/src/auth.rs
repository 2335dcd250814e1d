//! `--api-key`: every route but `/health` needs `Authorization: Bearer <key>`.

use crate::app::AppState;
use crate::errors::{Api, ApiError};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Compares without an early exit, so the time taken does not reveal how much of a guess matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `header` (the `Authorization` value) carries `key` as a bearer token.
pub fn authorized(header: Option<&[u8]>, key: &str) -> bool {
    let Some(h) = header else { return false };
    // The scheme is case-insensitive (RFC 9110, 11.1).
    let Some((scheme, token)) = h.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && same(token.trim_ascii(), key.as_bytes())
}

/// The middleware: 401 in the route's API shape when the key is set and not given.
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.opts.api_key {
        let path = req.uri().path();
        if path != "/health" && !authorized(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()), key) {
            return ApiError::unauthorized(Api::of_path(path)).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer() {
        assert!(authorized(Some(b"Bearer k1"), "k1"));
        assert!(!authorized(Some(b"Bearer k2"), "k1"));
        assert!(!authorized(Some(b"k1"), "k1"));
        assert!(!authorized(None, "k1"));
        assert!(!authorized(Some(b"Bearer k1x"), "k1"));
        assert!(authorized(Some(b"bearer k1"), "k1") && authorized(Some(b"BEARER k1"), "k1"));
        assert!(!authorized(Some(b"Basic k1"), "k1") && !authorized(Some(b"Bearer"), "k1"));
    }
}
