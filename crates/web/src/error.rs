//! The one error type of the API, its JSON form, and extractors whose rejections use it.
//!
//! Every error leaves as `{"error": {"code": "...", "message": "..."}}`. Client mistakes
//! (4xx) are not logged; internal failures get a generic body and their detail rides in a
//! response extension that the outermost middleware logs once, with the request line.

use axum::Json as AxumJson;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::ErrorCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::platform::PlatformError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A failure with one of the codes every layer shares (see [`ErrorCode`]).
    #[error("{message}")]
    Coded { code: ErrorCode, message: String },
    /// The request body is larger than the route accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The request body has a content type the route does not accept.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The path exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Too many attempts (login rate limit); retry after this many seconds.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::Coded {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Invalid, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// The HTTP status and the machine-readable code of the body.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Coded { code, .. } => (status_for(*code), code.as_str()),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }
}

/// The one place error codes become HTTP statuses.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Invalid => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The detail of a server-side failure, attached to the response for the logging middleware.
#[derive(Debug, Clone)]
pub(crate) struct FailureDetail(pub String);

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let server_side = status.is_server_error();
        let detail = self.to_string();
        let unavailable = matches!(
            self,
            ApiError::Coded {
                code: ErrorCode::Unavailable,
                ..
            }
        );
        let message = match &self {
            _ if unavailable => unavailable_message(&detail),
            _ if server_side => "internal error",
            _ => detail.as_str(),
        };
        let mut response = (
            status,
            AxumJson(ErrorBody {
                error: ErrorInner { code, message },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if unavailable {
            // An outage of a peer (issue 9): the client retries, nothing was accepted.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        if let ApiError::TooManyRequests { retry_after_s, .. } = &self
            && let Ok(value) = HeaderValue::from_str(&retry_after_s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if server_side {
            response.extensions_mut().insert(FailureDetail(detail));
        }
        response
    }
}

/// What a client may know of an outage: which dependency is unavailable, never the
/// error's own text (addresses, server messages).
fn unavailable_message(detail: &str) -> &'static str {
    if detail.starts_with("bus") {
        "the event bus is unavailable; retry later"
    } else if detail.starts_with("store unavailable") {
        "the store is unavailable; retry later"
    } else {
        "service unavailable"
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> ApiError {
        ApiError::new(err.code(), err.to_string())
    }
}

impl From<PlatformError> for ApiError {
    fn from(err: PlatformError) -> ApiError {
        ApiError::new(err.code, err.message)
    }
}

/// The innermost cause of an error: serde's message rather than axum's wrapper text.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `axum::Json` with rejections turned into [`ApiError`]s.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match AxumJson::<T>::from_request(req, state).await {
            Ok(AxumJson(value)) => Ok(Json(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected content-type application/json".into())
        }
        JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("request body is too large".into())
        }
        JsonRejection::JsonDataError(err) => {
            ApiError::invalid(format!("invalid request body: {}", root_cause(&err)))
        }
        JsonRejection::JsonSyntaxError(err) => ApiError::invalid(format!(
            "request body is not valid json: {}",
            root_cause(&err)
        )),
        other => ApiError::invalid(format!("unreadable request body: {}", root_cause(&other))),
    }
}

/// `axum::extract::Query` with rejections turned into [`ApiError`]s.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::invalid(format!("invalid query string: {}", root_cause(&rejection)))
}

/// `axum::extract::Path` with rejections turned into [`ApiError`]s.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    match rejection {
        PathRejection::FailedToDeserializePathParams(err) => ApiError::invalid(format!(
            "invalid path parameter: {}",
            err.body_text().to_lowercase()
        )),
        other => ApiError::internal(format!("path extraction failed: {}", other.body_text())),
    }
}
