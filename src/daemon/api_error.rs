//! How failures are answered: an HTTP status and `{"error": "<message>"}`.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::request_body::BodyError;
use crate::api::ErrorBody;
use crate::volume::VolumeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// 404 for a missing volume, 409 for a clash with its state, 400 for other mistakes in the
/// request, 500 for failures while serving it.
pub fn status_for(err: &VolumeError) -> StatusCode {
    match err {
        VolumeError::NotFound(_) | VolumeError::NoSuchReference { .. } => StatusCode::NOT_FOUND,
        VolumeError::Conflict { .. } | VolumeError::InUse { .. } => StatusCode::CONFLICT,
        err if err.is_user_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<BodyError> for ApiError {
    fn from(err: BodyError) -> Self {
        ApiError::new(err.status, err.message)
    }
}

impl From<VolumeError> for ApiError {
    fn from(err: VolumeError) -> Self {
        ApiError::new(status_for(&err), err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            log::error!("{}", self.message);
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn statuses_follow_the_kind_of_error() {
        let cases = [
            (VolumeError::NotFound("v".into()), 404),
            (
                VolumeError::Conflict {
                    name: "v".into(),
                    what: "driver x".into(),
                },
                409,
            ),
            (
                VolumeError::InUse {
                    name: "v".into(),
                    holders: "cli".into(),
                },
                409,
            ),
            (
                VolumeError::InvalidName {
                    name: "-".into(),
                    reason: "bad".into(),
                },
                400,
            ),
            (VolumeError::InvalidOption("size=0".into()), 400),
            (VolumeError::InvalidLabel("too many".into()), 400),
            (VolumeError::InvalidTarget("x".into()), 400),
            (
                VolumeError::UnknownDriver {
                    given: "x".into(),
                    valid: "local".into(),
                },
                400,
            ),
            (
                VolumeError::io("mounting", std::io::Error::other("boom")),
                500,
            ),
            (VolumeError::Store(StoreError::Db("broken".into())), 500),
        ];
        for (err, status) in cases {
            assert_eq!(status_for(&err).as_u16(), status, "{err}");
        }
    }

    #[test]
    fn message_is_the_error_text() {
        let api = ApiError::from(VolumeError::NotFound("data".into()));
        assert_eq!(api.message, "no such volume: data");
    }
}
