//! The one mapping from what went wrong to a gRPC status (CSI spec, "Error Scheme").
//!
//! The daemon's refusals carry an HTTP status that the daemon chose from the error's class
//! (`daemon::http::status_for`); this module turns each class into the code the CSI spec asks
//! for, with the daemon's own message, so a bad `parameters` entry reads exactly as the CLI's
//! error for the same `-o`. Nothing here reads an error's text.
use hyper::StatusCode;
use tonic::{Code, Status};

use super::client::DaemonError;

/// Which call a daemon refusal answers: a conflict means a different thing to each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// CreateVolume, CreateSnapshot: a name that exists with other settings.
    Create,
    /// Everything else: a volume in use, or held by another host.
    Other,
}

/// The status of a daemon refusal.
pub fn from_daemon(call: Call, err: DaemonError) -> Status {
    let code = match err.status {
        None => Code::Unavailable,
        Some(StatusCode::BAD_REQUEST) => Code::InvalidArgument,
        Some(StatusCode::NOT_FOUND) => Code::NotFound,
        Some(StatusCode::CONFLICT) if call == Call::Create => Code::AlreadyExists,
        Some(StatusCode::CONFLICT) => Code::FailedPrecondition,
        Some(StatusCode::SERVICE_UNAVAILABLE) => Code::Unavailable,
        Some(StatusCode::REQUEST_TIMEOUT) => Code::DeadlineExceeded,
        Some(_) => Code::Internal,
    };
    Status::new(code, err.message)
}

/// A required field is missing or a value is malformed.
pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

pub fn not_found(message: impl Into<String>) -> Status {
    Status::not_found(message)
}

pub fn out_of_range(message: impl Into<String>) -> Status {
    Status::out_of_range(message)
}

pub fn precondition(message: impl Into<String>) -> Status {
    Status::failed_precondition(message)
}

pub fn already_exists(message: impl Into<String>) -> Status {
    Status::already_exists(message)
}

pub fn internal(message: impl Into<String>) -> Status {
    Status::internal(message)
}

/// A token that this driver never gave out.
pub fn aborted(message: impl Into<String>) -> Status {
    Status::aborted(message)
}

/// The volume cannot be placed where the CO requires.
pub fn exhausted(message: impl Into<String>) -> Status {
    Status::resource_exhausted(message)
}

/// A field that must be set, by its name in the CSI spec.
pub fn required(field: &str) -> Status {
    invalid(format!("{field} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: StatusCode) -> DaemonError {
        DaemonError {
            status: Some(status),
            message: "why".into(),
        }
    }

    #[test]
    fn classes_map_to_the_spec_codes() {
        let cases = [
            (Call::Other, StatusCode::BAD_REQUEST, Code::InvalidArgument),
            (Call::Other, StatusCode::NOT_FOUND, Code::NotFound),
            (Call::Create, StatusCode::CONFLICT, Code::AlreadyExists),
            (Call::Other, StatusCode::CONFLICT, Code::FailedPrecondition),
            (
                Call::Other,
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
            ),
            (
                Call::Other,
                StatusCode::INTERNAL_SERVER_ERROR,
                Code::Internal,
            ),
        ];
        for (call, http, code) in cases {
            let status = from_daemon(call, refused(http));
            assert_eq!(status.code(), code, "{call:?} {http}");
            assert_eq!(status.message(), "why");
        }
        let unsent = DaemonError {
            status: None,
            message: "no daemon".into(),
        };
        assert_eq!(from_daemon(Call::Other, unsent).code(), Code::Unavailable);
    }
}
