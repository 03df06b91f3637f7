//! How failures are answered: an HTTP status and `{"error": "<message>"}`.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::request_body::BodyError;
use crate::api::ErrorBody;
use crate::model::ErrorClass;
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

/// The one mapping from a class of error to an HTTP status, for both servers: 400 for a
/// mistake in the request, 404 for something it names that does not exist, 409 for a clash
/// with the state of things, 503 for a backend that cannot be reached now, 500 for a failure
/// while serving a correct request.
pub fn status_for(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::BadInput => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::Conflict => StatusCode::CONFLICT,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<BodyError> for ApiError {
    fn from(err: BodyError) -> Self {
        ApiError::new(err.status, err.message)
    }
}

impl From<VolumeError> for ApiError {
    fn from(err: VolumeError) -> Self {
        ApiError::new(status_for(err.class()), err.to_string())
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
    use crate::driver::DriverError;
    use crate::store::StoreError;

    #[test]
    fn each_class_has_one_status() {
        for (class, status) in [
            (ErrorClass::BadInput, 400),
            (ErrorClass::NotFound, 404),
            (ErrorClass::Conflict, 409),
            (ErrorClass::Unavailable, 503),
            (ErrorClass::Internal, 500),
        ] {
            assert_eq!(status_for(class).as_u16(), status, "{class:?}");
        }
    }

    #[test]
    fn statuses_follow_the_class_of_error() {
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
            (
                VolumeError::Mounted {
                    name: "v".into(),
                    holders: "cli".into(),
                    what: "fsck it",
                },
                409,
            ),
            (
                VolumeError::NoSuchReference {
                    name: "v".into(),
                    given: "cli".into(),
                    held: "plugin:a".into(),
                },
                404,
            ),
            (VolumeError::InvalidReference("x".into()), 400),
            // Driver errors carry their class.
            (DriverError::InvalidOption("size=0".into()).into(), 400),
            (
                DriverError::UnknownOption {
                    driver: "local",
                    key: "x".into(),
                    valid: vec!["size"],
                }
                .into(),
                400,
            ),
            (DriverError::InUse("image rbd/v is open".into()).into(), 409),
            (DriverError::conflict("created by someone else").into(), 409),
            (
                DriverError::failed(ErrorClass::NotFound, "pool ssd").into(),
                404,
            ),
            // A Ceph outage: the cluster does not answer.
            (
                DriverError::unavailable("rados_connect: Connection timed out").into(),
                503,
            ),
            (DriverError::internal("measuring").into(), 500),
            // An unfinished removal has the class of what stopped it.
            (
                VolumeError::RemovalUnfinished {
                    name: "v".into(),
                    source: Box::new(DriverError::unavailable("timed out").into()),
                },
                503,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(status_for(err.class()).as_u16(), status, "{err}");
        }
    }

    #[test]
    fn message_is_the_error_text() {
        let api = ApiError::from(VolumeError::NotFound("data".into()));
        assert_eq!(api.message, "no such volume: data");
    }
}
