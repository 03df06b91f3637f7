//! Quota accounting shared by every backend.
