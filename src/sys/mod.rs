//! Raw system calls that nix does not wrap. The only `unsafe` in the crate lives here.
