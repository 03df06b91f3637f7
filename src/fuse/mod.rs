//! The thin adapter from fuser to `fs::VolumeFs`.
