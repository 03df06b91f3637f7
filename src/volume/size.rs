//! Sizes such as `512M`, `10G` or `1.5g`: binary units, case-insensitive.

/// Parses a size in bytes. Rejects zero, negative numbers and unknown units.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let _ = text;
    unimplemented!("helper A")
}

/// `67108864` -> `64MiB`, for messages.
pub fn format_size(bytes: u64) -> String {
    let _ = bytes;
    unimplemented!("helper A")
}
