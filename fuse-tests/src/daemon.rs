//! A private fvol daemon, stopped on drop.
