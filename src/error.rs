//! Stable error codes and the one place where internal errors become what a client sees:
//! HTTP status + JSON body, or an `error` event on the socket.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub use fieldvox_formats::code::ErrorCode;

use crate::auth::AuthError;
use crate::llm::LlmError;
use crate::models::ModelError;
use crate::pipeline::providers::StageError;
use crate::rag::{DocumentError, RagError};
use crate::session::resume::ResumeError;
use crate::vector::VectorError;
use crate::workers::PoolError;

impl From<&PoolError> for ErrorCode {
    /// A full queue is `overloaded` (retry shortly), not a broken model.
    fn from(e: &PoolError) -> Self {
        match e {
            PoolError::Overloaded(_) => ErrorCode::Overloaded,
            PoolError::Stopped(_) => ErrorCode::ModelUnavailable,
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
}

impl StageError {
    /// The code a turn's speech-recognition, answer or speech stage failure is shown as.
    pub fn code(&self) -> ErrorCode {
        match self {
            StageError::Pool(e) | StageError::Llm(LlmError::Pool(e)) => e.into(),
            StageError::Model(_) | StageError::Llm(_) => ErrorCode::ModelUnavailable,
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
    Resume(#[from] ResumeError),
    /// A missing or malformed field of an HTTP request.
    #[error("{0}")]
    BadRequest(String),
    /// No such thing for this tenant (another tenant's ids look the same: not found).
    #[error("no such {0}")]
    NotFound(&'static str),
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
            AppError::BadRequest(_) => ErrorCode::InvalidRequest,
            AppError::NotFound(_) => ErrorCode::NotFound,
            AppError::Io(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.code() {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::PayloadTooLarge | ErrorCode::TooManyPages => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidDocument | ErrorCode::EmptyDocument => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Interrupted => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::SessionLimit
            | ErrorCode::Draining
            | ErrorCode::Overloaded
            | ErrorCode::ModelUnavailable
            | ErrorCode::IdentityUnavailable
            | ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UserSessionLimit => StatusCode::TOO_MANY_REQUESTS,
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
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body =
            ErrorResponse { error: self.reason(), message: self.to_string(), retryable: self.code().retryable() };
        (self.status(), Json(body)).into_response()
    }
}
