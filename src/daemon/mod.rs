//! `fvol daemon`: hosts the FUSE mounts and serves the API.
