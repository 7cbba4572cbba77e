//! Stable error codes and the one place where internal errors become what a client sees:
//! HTTP status + JSON body, or an `error` event on the socket.

use axum::Json;
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use fieldvox_formats::code::ErrorCode;

use crate::audio::decode::DecodeError;
use crate::auth::AuthError;
use crate::limits::Refusal;
use crate::llm::LlmError;
use crate::models::ModelError;
use crate::pipeline::providers::StageError;
use crate::rag::{DocumentError, RagError};
use crate::session::protocol::ErrorBody;
use crate::session::resume::ResumeError;
use crate::vector::VectorError;
use crate::workers::PoolError;

impl From<&PoolError> for ErrorCode {
    /// A full queue is `overloaded` (retry shortly), not a broken model.
    fn from(e: &PoolError) -> Self {
        match e {
            PoolError::Overloaded { .. } => ErrorCode::Overloaded,
            PoolError::Stopped(_) => ErrorCode::ModelUnavailable,
        }
    }
}

impl From<&Refusal> for ErrorCode {
    fn from(r: &Refusal) -> Self {
        match r {
            Refusal::Limited { .. } => ErrorCode::RateLimited,
            Refusal::Unavailable { .. } => ErrorCode::LimiterUnavailable,
        }
    }
}

impl PoolError {
    /// When a refused job may be worth submitting again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PoolError::Overloaded { retry_after, .. } => Some(*retry_after),
            PoolError::Stopped(_) => None,
        }
    }
}

impl RagError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RagError::Document(DocumentError::UnsupportedType(_)) => ErrorCode::UnsupportedMediaType,
            RagError::Document(DocumentError::Empty) => ErrorCode::EmptyDocument,
            RagError::Document(DocumentError::TooManyPages { .. }) => ErrorCode::TooManyPages,
            RagError::Document(DocumentError::Invalid(_)) => ErrorCode::InvalidDocument,
            RagError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            RagError::Store(_) | RagError::Vector(VectorError::Unavailable(_)) => ErrorCode::StoreUnavailable,
            RagError::Vector(VectorError::Dimensions { .. }) => ErrorCode::Internal,
            RagError::Model(_) => ErrorCode::ModelUnavailable,
            RagError::Pool(e) => e.into(),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RagError::Pool(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl StageError {
    /// The code a turn's speech-recognition, answer or speech stage failure is shown as.
    pub fn code(&self) -> ErrorCode {
        match self {
            StageError::Pool(e) | StageError::Llm(LlmError::Pool(e)) => e.into(),
            StageError::Model(_) | StageError::Llm(_) => ErrorCode::ModelUnavailable,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StageError::Pool(e) | StageError::Llm(LlmError::Pool(e)) => e.retry_after(),
            _ => None,
        }
    }
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Unrecognised => ErrorCode::UnsupportedMediaType,
            DecodeError::Corrupt(_) | DecodeError::Empty => ErrorCode::InvalidRecording,
            DecodeError::TooLong { .. } => ErrorCode::RecordingTooLong,
        }
    }
}

impl ResumeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ResumeError::InvalidToken => ErrorCode::InvalidResumeToken,
            ResumeError::Expired => ErrorCode::ResumeExpired,
        }
    }
}

/// Errors that reach the HTTP layer or the end of a turn.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Rag(#[from] RagError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("the server holds its maximum of {0} sessions")]
    SessionLimit(usize),
    #[error("this user already has the maximum of {0} open sessions")]
    UserSessionLimit(usize),
    #[error("the server is shutting down; connect to another instance or retry shortly")]
    Draining,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// A missing or malformed field of an HTTP request.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing for this tenant (another tenant's ids look the same: not found).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// A request body over its configured size.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A voice note that is not a recording we read, or not a whole one.
    #[error(transparent)]
    Recording(#[from] DecodeError),
    /// A voice note in which no words were heard.
    #[error("no words were heard in the recording")]
    NoSpeech,
    /// A turn run for an HTTP request failed before it answered (as the socket reports it).
    #[error("{}", .0.message)]
    Turn(ErrorBody),
    #[error(transparent)]
    Rtc(#[from] crate::rtc::RtcError),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

impl AppError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AppError::Auth(AuthError::Forbidden(_)) => ErrorCode::Forbidden,
            AppError::Auth(AuthError::KeysUnavailable) => ErrorCode::IdentityUnavailable,
            AppError::Auth(_) => ErrorCode::Unauthorized,
            AppError::Rag(e) => e.code(),
            AppError::Model(ModelError::Input { .. }) => ErrorCode::InvalidEvent,
            AppError::Model(_) => ErrorCode::ModelUnavailable,
            AppError::Pool(e) => e.into(),
            AppError::Resume(e) => e.code(),
            AppError::SessionLimit(_) => ErrorCode::SessionLimit,
            AppError::UserSessionLimit(_) => ErrorCode::UserSessionLimit,
            AppError::Draining => ErrorCode::Draining,
            AppError::Refused(r) => r.into(),
            AppError::BadRequest(_) => ErrorCode::InvalidRequest,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            AppError::Recording(e) => e.code(),
            AppError::NoSpeech => ErrorCode::NoSpeech,
            AppError::Turn(body) => body.code,
            AppError::Rtc(crate::rtc::RtcError::NotSdp) => ErrorCode::UnsupportedMediaType,
            AppError::Rtc(crate::rtc::RtcError::InvalidOffer(_)) => ErrorCode::InvalidSdp,
            AppError::Rtc(crate::rtc::RtcError::Engine(_)) => ErrorCode::Internal,
            AppError::Io(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.code() {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PayloadTooLarge | ErrorCode::TooManyPages | ErrorCode::RecordingTooLong => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorCode::InvalidDocument
            | ErrorCode::EmptyDocument
            | ErrorCode::InvalidRecording
            | ErrorCode::NoSpeech => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Interrupted => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::SessionLimit
            | ErrorCode::Draining
            | ErrorCode::Overloaded
            | ErrorCode::ModelUnavailable
            | ErrorCode::IdentityUnavailable
            | ErrorCode::StoreUnavailable
            | ErrorCode::LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UserSessionLimit | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::UnknownEvent
            | ErrorCode::InvalidEvent
            | ErrorCode::UnsupportedAudioFormat
            | ErrorCode::UnsupportedField
            | ErrorCode::AudioFormatNotSet
            | ErrorCode::InvalidAudio
            | ErrorCode::UnknownPipeline
            | ErrorCode::EmptyQuestion => StatusCode::BAD_REQUEST,
            ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidResumeToken => StatusCode::FORBIDDEN,
            ErrorCode::ResumeExpired => StatusCode::GONE,
            ErrorCode::InvalidSdp => StatusCode::BAD_REQUEST,
            // Reported in logs and metrics: the peer is gone by then.
            ErrorCode::PeerNeverConnected => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::PeerConnectionFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// When the same request may succeed: a limit's refill, a pool's backlog.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AppError::Refused(r) => Some(r.retry_after()),
            AppError::Pool(e) => e.retry_after(),
            AppError::Rag(e) => e.retry_after(),
            AppError::Turn(body) => body.retry_after_ms.map(Duration::from_millis),
            _ => None,
        }
    }

    /// The reason shown to clients: auth failures give their precise stable reason.
    fn reason(&self) -> &'static str {
        match self {
            AppError::Auth(e) => e.code(),
            other => other.code().as_str(),
        }
    }
}

/// Every refusal's body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorResponse<'a> {
    /// Stable code (`not_found`, `payload_too_large`, ...).
    error: &'a str,
    /// What went wrong, for people.
    message: String,
    /// Whether the same request may succeed later.
    retryable: bool,
    /// When it may (also the `Retry-After` header, in whole seconds rounded up).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    /// For `rate_limited`: which limit (`uploads`, `searches`, `session_opens`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after();
        let limit = match &self {
            AppError::Refused(r) => Some(r.limit().as_str()),
            _ => None,
        };
        let body = ErrorResponse {
            error: self.reason(),
            message: self.to_string(),
            retryable: self.code().retryable(),
            retry_after_ms: retry_after.map(|d| d.as_micros().div_ceil(1000) as u64),
            limit,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(after) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        response
    }
}

/// `Retry-After` is whole seconds: rounded up, so a client that waits it is not early.
pub fn retry_after_secs(after: Duration) -> u64 {
    after.as_micros().div_ceil(1_000_000).max(1) as u64
}
