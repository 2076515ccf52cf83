//! An API error: a status and one clear sentence, answered as `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use strata_agent::{ClientError, EnvironmentError, OutputsError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is needed: Authorization: Bearer strata_... (strata token create)",
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> ApiError {
        let message = strata_errors::chain(&error);
        let status = match &error {
            ClientError::NoSuchJob(_) => StatusCode::NOT_FOUND,
            ClientError::Submit(_)
            | ClientError::Code(_)
            | ClientError::Environment(
                EnvironmentError::NoImage { .. } | EnvironmentError::Left { .. },
            ) => StatusCode::BAD_REQUEST,
            ClientError::Outputs(OutputsError::Io { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            ClientError::Outputs(OutputsError::Unfinished { .. }) => StatusCode::CONFLICT,
            ClientError::Outputs(_) => StatusCode::BAD_REQUEST,
            // The server's own store, configuration or database: not the caller's doing.
            ClientError::Environment(_)
            | ClientError::Config(_)
            | ClientError::SchedulerConfig(_)
            | ClientError::Jobs(_)
            | ClientError::Metrics(_)
            | ClientError::Plot(_)
            | ClientError::Log { .. }
            | ClientError::Push { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!("{message}");
        }
        ApiError::new(status, message)
    }
}
