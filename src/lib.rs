//! fvol: container volumes, each served as its own FUSE filesystem with a quota.
//!
//! Layers, top to bottom (PouchContainer's shape):
//! - `cli`: the `fvol` command, a client of the daemon's unix socket.
//! - `csi`: `fvol csi`, the Container Storage Interface over gRPC, a client of the daemon's
//!   socket like `cli`.
//! - `daemon`: hosts the mounts and serves the HTTP API on `ROOT/fvol.sock` and the Docker
//!   volume plugin protocol (`api::plugin`).
//! - `volume`: `VolumeManager` (the entry point) over `Core` (the logic).
//! - `store`: the redb catalog of volumes, options, labels, mount references and usage.
//! - `driver`: one `Driver` per backend, with its typed options (a schema) and errors; each
//!   opens a `fs::VolumeFs`.
//! - `model`: the records the catalog keeps and drivers read, and the classes of errors;
//!   beneath `store` and `driver`, so neither imports the other or `volume`.
//! - `fs`: filesystem cores that never see FUSE types; `fuse` adapts them to fuser.
//! - `sys`: the few raw system calls nix does not wrap.
pub mod api;
pub mod cli;
pub mod csi;
pub mod daemon;
pub mod driver;
pub mod fs;
pub mod fuse;
pub mod keeper;
pub mod model;
pub mod store;
pub mod sys;
pub mod volume;
