//! What a request to create a volume may carry. Options and labels are kept in the catalog and
//! sent with every answer that lists volumes, so one request must not be able to make them
//! arbitrarily large. Checked only when a volume is created: what the catalog already holds
//! stays readable. (What each option's value may be is its driver's schema's business.)
use std::collections::BTreeMap;

use super::VolumeError;

/// The most labels one volume may have.
pub const MAX_LABELS: usize = 64;
/// The longest label key, in bytes.
pub const MAX_LABEL_KEY: usize = 256;
/// The longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 4096;
/// All label keys and values of one volume together, in bytes.
pub const MAX_LABELS_TOTAL: usize = 64 * 1024;
/// The most options one volume may have (no driver takes more than a dozen).
pub const MAX_OPTIONS: usize = 32;
/// The longest option key, in bytes (every valid key is a short word).
pub const MAX_OPTION_KEY: usize = 64;
/// The longest option value, in bytes: a host path (PATH_MAX).
pub const MAX_OPTION_VALUE: usize = 4096;

/// Checks the options and labels of a new volume against the limits above; the driver's
/// schema parses the options afterwards.
pub fn check_new_volume(
    options: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Result<(), VolumeError> {
    check_options(options)?;
    check_labels(labels)
}

fn check_options(options: &BTreeMap<String, String>) -> Result<(), VolumeError> {
    let invalid = |why: String| Err(VolumeError::InvalidOption(why));
    if options.len() > MAX_OPTIONS {
        return invalid(format!(
            "{} options given; a volume takes at most {MAX_OPTIONS}",
            options.len()
        ));
    }
    for (key, value) in options {
        if key.len() > MAX_OPTION_KEY {
            return invalid(format!(
                "the option key {} is {} bytes long; option keys are at most {MAX_OPTION_KEY} bytes",
                shortened(key),
                key.len()
            ));
        }
        if value.len() > MAX_OPTION_VALUE {
            return invalid(format!(
                "the value of option {key:?} is {} bytes long; option values are at most \
                 {MAX_OPTION_VALUE} bytes",
                value.len()
            ));
        }
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), VolumeError> {
    let invalid = |why: String| Err(VolumeError::InvalidLabel(why));
    if labels.len() > MAX_LABELS {
        return invalid(format!(
            "{} labels given; a volume takes at most {MAX_LABELS}",
            labels.len()
        ));
    }
    let mut total = 0;
    for (key, value) in labels {
        if key.is_empty() {
            return invalid("a label key is empty; use the form key=value".to_owned());
        }
        if key.len() > MAX_LABEL_KEY {
            return invalid(format!(
                "the label key {} is {} bytes long; label keys are at most {MAX_LABEL_KEY} bytes",
                shortened(key),
                key.len()
            ));
        }
        if value.len() > MAX_LABEL_VALUE {
            return invalid(format!(
                "the value of label {} is {} bytes long; label values are at most \
                 {MAX_LABEL_VALUE} bytes",
                shortened(key),
                value.len()
            ));
        }
        total += key.len() + value.len();
    }
    if total > MAX_LABELS_TOTAL {
        return invalid(format!(
            "the labels take {total} bytes; all keys and values of a volume together are at \
             most {MAX_LABELS_TOTAL} bytes"
        ));
    }
    Ok(())
}

/// A key for a message: quoted, cut after 32 characters.
fn shortened(text: &str) -> String {
    const SHOWN: usize = 32;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
        pairs.iter().cloned().collect()
    }

    fn label_error(labels: &[(String, String)]) -> String {
        match check_new_volume(&BTreeMap::new(), &map(labels)) {
            Err(VolumeError::InvalidLabel(why)) => why,
            other => panic!("expected InvalidLabel, got {other:?}"),
        }
    }

    fn option_error(options: &[(String, String)]) -> String {
        match check_new_volume(&map(options), &BTreeMap::new()) {
            Err(VolumeError::InvalidOption(why)) => why,
            other => panic!("expected InvalidOption, got {other:?}"),
        }
    }

    fn pair(key: impl Into<String>, value: impl Into<String>) -> (String, String) {
        (key.into(), value.into())
    }

    #[test]
    fn labels_within_the_limits_pass() {
        let most: Vec<_> = (0..MAX_LABELS)
            .map(|i| {
                pair(
                    format!("k{i}"),
                    "v".repeat(MAX_LABELS_TOTAL / MAX_LABELS - 4),
                )
            })
            .collect();
        check_new_volume(&BTreeMap::new(), &map(&most)).unwrap();
        let longest = [pair("k".repeat(MAX_LABEL_KEY), "v".repeat(MAX_LABEL_VALUE))];
        check_new_volume(&BTreeMap::new(), &map(&longest)).unwrap();
        check_new_volume(&BTreeMap::new(), &map(&[pair("a", "")])).unwrap();
    }

    #[test]
    fn labels_over_the_limits_are_refused() {
        let many: Vec<_> = (0..=MAX_LABELS)
            .map(|i| pair(format!("k{i}"), ""))
            .collect();
        assert_eq!(
            label_error(&many),
            "65 labels given; a volume takes at most 64"
        );
        let key = label_error(&[pair("k".repeat(MAX_LABEL_KEY + 1), "")]);
        assert!(
            key.starts_with(&format!("the label key \"{}\"...", "k".repeat(32)))
                && key.ends_with("is 257 bytes long; label keys are at most 256 bytes"),
            "{key}"
        );
        let value = label_error(&[pair("a", "v".repeat(2 << 20))]);
        assert_eq!(
            value,
            "the value of label \"a\" is 2097152 bytes long; label values are at most 4096 bytes"
        );
        let total: Vec<_> = (0..MAX_LABELS)
            .map(|i| pair(format!("k{i:02}"), "v".repeat(MAX_LABEL_VALUE)))
            .collect();
        assert!(label_error(&total).contains("at most 65536 bytes"));
        assert!(label_error(&[pair("", "x")]).contains("empty"));
    }

    #[test]
    fn options_over_the_limits_are_refused() {
        let many: Vec<_> = (0..=MAX_OPTIONS)
            .map(|i| pair(format!("o{i}"), ""))
            .collect();
        assert_eq!(
            option_error(&many),
            "33 options given; a volume takes at most 32"
        );
        assert!(option_error(&[pair("k".repeat(65), "")]).contains("at most 64 bytes"));
        let value = option_error(&[pair("mount", "/".repeat(4097))]);
        assert!(value.contains("\"mount\" is 4097 bytes"), "{value}");
    }

    #[test]
    fn shortened_keys() {
        assert_eq!(shortened("abc"), "\"abc\"");
        assert_eq!(
            shortened(&"é".repeat(40)),
            format!("{:?}...", "é".repeat(32))
        );
    }
}
