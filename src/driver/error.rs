//! What a driver's failures are. Each carries its class (`ErrorClass`), which decides how the
//! daemon answers it, so that no caller has to read the message.
use thiserror::Error;

use crate::model::ErrorClass;

#[derive(Debug, Error)]
pub enum DriverError {
    /// An option the driver does not take.
    #[error(
        "invalid option: unknown option {key:?} for driver {driver}; {}",
        valid_options(valid)
    )]
    UnknownOption {
        driver: &'static str,
        key: String,
        /// Every option the driver takes, in its schema's order.
        valid: Vec<&'static str>,
    },
    /// An option's value is wrong: its form, or what it names on the host.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The backing store is in use by someone else; the driver changed nothing.
    #[error("{0}")]
    InUse(String),
    /// Any other failure, with its class.
    #[error("{message}")]
    Failed { class: ErrorClass, message: String },
}

fn valid_options(valid: &[&str]) -> String {
    match valid {
        [] => "it takes no options".to_owned(),
        _ => format!("valid options are: {}", valid.join(", ")),
    }
}

impl DriverError {
    pub fn class(&self) -> ErrorClass {
        match self {
            DriverError::UnknownOption { .. } | DriverError::InvalidOption(_) => {
                ErrorClass::BadInput
            }
            DriverError::InUse(_) => ErrorClass::Conflict,
            DriverError::Failed { class, .. } => *class,
        }
    }

    pub fn failed(class: ErrorClass, message: impl Into<String>) -> Self {
        DriverError::Failed {
            class,
            message: message.into(),
        }
    }

    /// The backend does not answer now; trying again later may work.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::failed(ErrorClass::Unavailable, message)
    }

    /// The request clashes with the backend's state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::failed(ErrorClass::Conflict, message)
    }

    /// A failure of fvol's own while serving a correct request.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::failed(ErrorClass::Internal, message)
    }

    /// A host I/O error while doing `context`.
    pub fn io(context: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::internal(format!("{context}: {e}"))
    }
}
