//! The `local` backend: passthrough to a host directory by inode identity.
