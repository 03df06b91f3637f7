//! What kind of failure an error is. Every error a user can get has one class, and each class
//! has one HTTP status (`daemon::http::status_for`), for the CLI's API and the Docker
//! plugin alike.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request is wrong: a bad name, option, label, target or reference. Sending it again
    /// fails again.
    BadInput,
    /// What the request names does not exist (a volume, a reference, a pool).
    NotFound,
    /// The request clashes with the state of things: a volume that exists with other
    /// settings, one that is in use, a backing store someone else holds.
    Conflict,
    /// A backend the request needs cannot be reached now (a Ceph cluster that does not answer,
    /// missing client libraries). Sending it again later may work.
    Unavailable,
    /// fvol failed while serving a correct request (an I/O error, a catalog error).
    Internal,
}
