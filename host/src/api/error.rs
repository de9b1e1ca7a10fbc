//! [`ApiError`]: every failure the API answers with, as `{"error": {"code", "message"}}` and
//! the status its rule maps to — once, here, for every registry and call error. 5xx details
//! are logged, never returned.

use crate::registry::Error as RegistryError;
use crate::runtime::call::CallError;
use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Every error the API returns: a status and a stable machine code with a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The message a client may see (a 5xx's details are the server log's only).
    pub(crate) fn public_message(&self) -> &str {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "internal error");
            "internal error; see the server log"
        } else {
            &self.message
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "internal error");
            "internal error; see the server log".to_string()
        } else {
            self.message
        };
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": message}})),
        )
            .into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Immutable { .. }
            | E::Pinned { .. }
            | E::MissingOperations { .. }
            | E::NameTaken { .. }
            | E::Deprecated(_)
            | E::Blocked(_)
            | E::AcknowledgementRequired(_)
            | E::CredentialsNeeded(_)
            | E::PublicPermanent(_) => StatusCode::CONFLICT,
            E::InvalidName(_)
            | E::InvalidVersion(_)
            | E::InvalidInput(_)
            | E::InvalidPage(_)
            | E::DescribeMismatch { .. }
            | E::Breaking { .. }
            | E::UngrantedImports(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Load(crate::runtime::LoadError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            E::Load(crate::runtime::LoadError::CompilerBusy(_)) => StatusCode::TOO_MANY_REQUESTS,
            E::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
            E::Storage { .. } | E::SecretsKey(_) => StatusCode::INTERNAL_SERVER_ERROR,
            E::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "too-large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
            _ => "bad-request",
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ApiError::new(r.status(), "bad-request", r.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too-large"
        } else {
            "bad-request"
        };
        ApiError::new(status, code, r.body_text())
    }
}

pub(crate) fn call_error(e: CallError) -> ApiError {
    let status = match &e {
        CallError::UnknownOperation { .. } => StatusCode::NOT_FOUND,
        CallError::InvalidInput(_) => StatusCode::BAD_REQUEST,
        CallError::Guest(_) => StatusCode::UNPROCESSABLE_ENTITY,
        CallError::CpuDeadline { .. } | CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let message = match &e {
        CallError::Guest(guest) => {
            serde_json::to_string(guest).unwrap_or_else(|_| guest.to_string())
        }
        other => other.to_string(),
    };
    ApiError {
        status,
        code: e.code(),
        message,
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not-found`, `conflict`, `acknowledgement-required`.
    pub code: String,
    pub message: String,
}
