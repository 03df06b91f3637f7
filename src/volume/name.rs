//! Volume names, by Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
use rand::Rng;

use super::VolumeError;

const RULE: &str = "names must match [a-zA-Z0-9][a-zA-Z0-9_.-]+ (at least 2 characters)";
/// A name is a single path component, so it must fit NAME_MAX.
const MAX_LEN: usize = 255;

/// Accepts a name only if it matches Docker's rule (so it can never escape a directory).
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let invalid = |reason: String| VolumeError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.len() > MAX_LEN {
        return Err(invalid(format!(
            "names are at most {MAX_LEN} bytes (this one has {})",
            name.len()
        )));
    }
    let bytes = name.as_bytes();
    // Checked on bytes: any non-ASCII character has a byte >= 0x80, which no rule accepts.
    let first_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric);
    let rest_ok = bytes.len() >= 2
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(invalid(RULE.to_string()))
    }
}

/// A random 64-hex-digit name, as Docker gives anonymous volumes.
pub fn random_name() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for name in ["ab", "a.b-c_d", "0x", "A9", "my-volume.1", &"a".repeat(255)] {
            assert!(validate_name(name).is_ok(), "{name:?} should be valid");
        }
    }

    #[test]
    fn invalid_names() {
        let long = "a".repeat(256);
        for name in [
            "", "a", "/x", "..", ".", "a/b", "-ab", ".ab", "_ab", "é1", "aé", "a b", "a\0", &long,
        ] {
            match validate_name(name) {
                Err(VolumeError::InvalidName { name: got, reason }) => {
                    assert_eq!(got, name);
                    assert!(!reason.is_empty());
                }
                other => panic!("{name:?}: expected InvalidName, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_name_message_states_rule() {
        let err = validate_name("-ab").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid volume name \"-ab\": names must match [a-zA-Z0-9][a-zA-Z0-9_.-]+ (at least 2 characters)"
        );
        let err = validate_name(&"a".repeat(300)).unwrap_err().to_string();
        assert!(err.contains("at most 255 bytes"), "{err}");
    }

    #[test]
    fn random_names_are_64_hex_and_valid() {
        let a = random_name();
        let b = random_name();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert!(validate_name(&a).is_ok());
        assert_ne!(a, b);
    }
}
