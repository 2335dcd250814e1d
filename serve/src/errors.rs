//! Error responses in the shape each API's clients parse: TGI's `{"error", "error_type"}` and
//! OpenAI's `{"error": {"message", "type", "param", "code"}}`. Every refusal of the server
//! (bad JSON, limits, a full queue, a missing key) goes through [`ApiError`].

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeact_runtime::batching::SubmitError;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Which API's error shape a response uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Tgi,
    OpenAi,
}

impl Api {
    /// The API a path belongs to: `/v1/...` is OpenAI's, everything else TGI's.
    pub fn of_path(path: &str) -> Api {
        if path == "/v1" || path.starts_with("/v1/") {
            Api::OpenAi
        } else {
            Api::Tgi
        }
    }
}

/// Why a request failed, rendered in its API's JSON shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub api: Api,
    pub status: StatusCode,
    pub message: String,
    /// TGI's `error_type` (`validation`, `overloaded`, ...).
    pub tgi_type: &'static str,
    /// OpenAI's `type` (`invalid_request_error`, ...).
    pub openai_type: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn new(api: Api, status: StatusCode, message: impl Into<String>) -> ApiError {
        let (tgi_type, openai_type) = match status.as_u16() {
            401 => ("authentication", "invalid_request_error"),
            429 => ("overloaded", "rate_limit_exceeded"),
            503 => ("unavailable", "server_error"),
            s if s >= 500 => ("generation", "server_error"),
            _ => ("validation", "invalid_request_error"),
        };
        ApiError {
            api,
            status,
            message: message.into(),
            tgi_type,
            openai_type,
            param: None,
            code: None,
        }
    }

    /// A request the server will not run as given: TGI answers 422, OpenAI 400.
    pub fn invalid(api: Api, message: impl Into<String>) -> ApiError {
        let status = match api {
            Api::Tgi => StatusCode::UNPROCESSABLE_ENTITY,
            Api::OpenAi => StatusCode::BAD_REQUEST,
        };
        ApiError::new(api, status, message)
    }

    /// Like [`ApiError::invalid`], naming the offending parameter (OpenAI's `param`).
    pub fn invalid_param(api: Api, param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param),
            ..ApiError::invalid(api, message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub fn unauthorized(api: Api) -> ApiError {
        ApiError::new(
            api,
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key: send the header `Authorization: Bearer <key>`",
        )
        .with_code("invalid_api_key")
    }

    pub fn internal(api: Api, message: impl Into<String>) -> ApiError {
        ApiError::new(api, StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn not_found(api: Api, message: impl Into<String>) -> ApiError {
        ApiError::new(api, StatusCode::NOT_FOUND, message).with_code("not_found")
    }

    pub fn method_not_allowed(api: Api, message: impl Into<String>) -> ApiError {
        ApiError::new(api, StatusCode::METHOD_NOT_ALLOWED, message).with_code("method_not_allowed")
    }

    /// A refusal of the scheduler: full queue → 429, shutting down → 503, invalid → 4xx.
    pub fn submit(api: Api, e: SubmitError) -> ApiError {
        match e {
            SubmitError::QueueFull { .. } => {
                ApiError::new(api, StatusCode::TOO_MANY_REQUESTS, e.to_string()).with_code("queue_full")
            }
            SubmitError::ShuttingDown => {
                ApiError::new(api, StatusCode::SERVICE_UNAVAILABLE, e.to_string()).with_code("shutting_down")
            }
            SubmitError::Invalid(msg) => ApiError::invalid(api, msg),
        }
    }

    /// A request body that could not be read (too large: 413; broken transfer: 400).
    pub fn body(api: Api, e: BytesRejection) -> ApiError {
        let status = e.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server's limit".to_string()
        } else {
            e.body_text()
        };
        let err = ApiError::new(api, status, message);
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            err.with_code("request_too_large")
        } else {
            err
        }
    }

    /// The `data:` payload of an error inside an event stream.
    pub fn stream_payload(&self) -> serde_json::Value {
        self.body_json()
    }

    fn body_json(&self) -> serde_json::Value {
        match self.api {
            Api::Tgi => json!({"error": self.message, "error_type": self.tgi_type}),
            Api::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }}),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body_json())).into_response()
    }
}

/// Parses a JSON request body (whatever its content type), mapping every failure to the API's
/// error shape: unreadable or oversized body → 400/413, malformed JSON → 400, a well-formed body
/// with wrong types or values → 422 for TGI (as TGI's own extractor), 400 for OpenAI.
pub fn parse_body<T: DeserializeOwned>(
    api: Api,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::body(api, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let syntax = !matches!(e.classify(), serde_json::error::Category::Data);
        let message = format!("invalid JSON body: {e}");
        match (api, syntax) {
            (Api::Tgi, true) => ApiError::new(api, StatusCode::BAD_REQUEST, message),
            _ => ApiError::invalid(api, message),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let t = ApiError::invalid(Api::Tgi, "bad");
        assert_eq!(t.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(t.body_json(), json!({"error": "bad", "error_type": "validation"}));
        let o = ApiError::invalid_param(Api::OpenAi, "n", "bad");
        assert_eq!(o.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            o.body_json(),
            json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": null}})
        );
        let q = ApiError::submit(Api::OpenAi, SubmitError::QueueFull { capacity: 1 });
        assert_eq!(q.status, StatusCode::TOO_MANY_REQUESTS);
        let s = ApiError::submit(Api::Tgi, SubmitError::ShuttingDown);
        assert_eq!(s.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn json_errors() {
        #[derive(serde::Deserialize, Debug)]
        struct B {
            #[allow(dead_code)]
            n: u32,
        }
        let ok = |s: &str| Ok(axum::body::Bytes::copy_from_slice(s.as_bytes()));
        let e = parse_body::<B>(Api::Tgi, ok("{")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_body::<B>(Api::Tgi, ok(r#"{"n": -1}"#)).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse_body::<B>(Api::OpenAi, ok(r#"{"n": "x"}"#)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(Api::of_path("/v1/models"), Api::OpenAi);
        assert_eq!(Api::of_path("/generate"), Api::Tgi);
    }
}
