//! Fixtures for the FUSE tests: a private daemon per test, torn down on drop.
