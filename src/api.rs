//! Request and response bodies of the daemon's HTTP API (JSON over `ROOT/fvol.sock`).
