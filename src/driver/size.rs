//! Sizes such as `512M`, `10G` or `1.5g`: binary units, case-insensitive.

const FORM: &str = "use a positive number with an optional binary unit K, M, G, T or P \
                    (for example 512M, 10G, 1.5G)";

/// Binary units, largest first, as shown by `format_size`.
const UNITS: [(&str, u32); 5] = [
    ("PiB", 50),
    ("TiB", 40),
    ("GiB", 30),
    ("MiB", 20),
    ("KiB", 10),
];

/// The smallest size a new volume may have: one block, the unit in which usage is counted.
pub const MIN_SIZE: u64 = 4096;

/// Parses a size in bytes. Rejects zero, negative numbers and unknown units. Used for sizes
/// already in the catalog, which must stay readable; new volumes go through `parse_new_size`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse(text).map(|size| size.bytes)
}

/// Parses the size of a new volume: as `parse_size`, but refuses less than `MIN_SIZE` (which a
/// volume could not hold a single block of) and a fraction of a byte (`1.5`, or `4096.5B`).
pub fn parse_new_size(text: &str) -> Result<u64, String> {
    let size = parse(text)?;
    let invalid = |why: &str| format!("invalid size {text:?}: {why}");
    if size.bytes < MIN_SIZE {
        return Err(invalid(&format!(
            "that is less than one block; the minimum is {MIN_SIZE} bytes (4K)"
        )));
    }
    if size.fraction_of_a_byte {
        return Err(invalid(
            "a number of bytes must be whole; use a unit for fractions (for example 1.5G)",
        ));
    }
    Ok(size.bytes)
}

struct ParsedSize {
    bytes: u64,
    /// The number had a non-zero fraction and no unit (or `B`).
    fraction_of_a_byte: bool,
}

fn parse(text: &str) -> Result<ParsedSize, String> {
    let invalid = |why: &str| format!("invalid size {text:?}: {why}; {FORM}");
    let s = text.trim();
    if s.is_empty() {
        return Err(invalid("it is empty"));
    }

    // Number: digits, optionally '.' and more digits. Parsed as integers, never as f64.
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    if int_len == 0 {
        return Err(invalid("it does not start with a digit"));
    }
    let (int_digits, rest) = s.split_at(int_len);
    let (frac_digits, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(invalid("a '.' must be followed by digits"));
            }
            after.split_at(n)
        }
        None => ("", rest),
    };

    let unit = rest.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
    };
    let multiplier = 1u64 << shift;

    let too_large = || invalid("it is larger than 16EiB");
    let whole = int_digits
        .bytes()
        .try_fold(0u64, |acc, d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(too_large)?;
    let bytes = whole
        .checked_add(fraction_bytes(frac_digits, multiplier))
        .ok_or_else(too_large)?;
    if bytes == 0 {
        return Err(invalid("it is zero"));
    }
    Ok(ParsedSize {
        bytes,
        fraction_of_a_byte: shift == 0 && frac_digits.bytes().any(|d| d != b'0'),
    })
}

/// floor(0.DIGITS * multiplier), exactly, for any number of digits: from the last digit
/// back, carry = floor((digit * multiplier + carry) / 10). Needs multiplier <= 2^50.
fn fraction_bytes(digits: &str, multiplier: u64) -> u64 {
    digits.bytes().rev().fold(0, |carry, d| {
        (u64::from(d - b'0') * multiplier + carry) / 10
    })
}

/// `67108864` -> `64MiB`, for messages.
pub fn format_size(bytes: u64) -> String {
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if bytes < unit {
            continue;
        }
        let whole = bytes / unit;
        // Two decimals, rounded down so a limit is never overstated; trailing zeros dropped.
        let hundredths = ((u128::from(bytes % unit) * 100) / u128::from(unit)) as u64;
        return match hundredths {
            0 => format!("{whole}{name}"),
            h if h % 10 == 0 => format!("{whole}.{}{name}", h / 10),
            h => format!("{whole}.{h:02}{name}"),
        };
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    const G: u64 = 1 << 30;
    const T: u64 = 1 << 40;
    const P: u64 = 1 << 50;

    #[test]
    fn valid_sizes() {
        for (text, want) in [
            ("512M", 512 * M),
            ("10G", 10 * G),
            ("1.5G", 1_610_612_736),
            ("1.5g", 1_610_612_736),
            ("100m", 100 * M),
            ("64MiB", 64 * M),
            ("64mb", 64 * M),
            ("64MB", 64 * M),
            ("4096", 4096),
            ("4096B", 4096),
            ("1T", T),
            ("2k", 2 * K),
            ("1P", P),
            ("  10G \n", 10 * G),
            ("10 G", 10 * G),
            ("0.5K", 512),
            ("1.0009765625K", 1025),
            // Rounded down to a whole byte.
            ("1.0001K", 1024),
            ("1.333333333333333333333333333K", 1365),
            ("16383P", 16383 * P),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn invalid_sizes() {
        for text in [
            "",
            "  ",
            "0",
            "0M",
            "0.0G",
            "0.0001K",
            "-1",
            "+1",
            "10X",
            "1.2.3",
            "G",
            ".5G",
            "1.G",
            "1,5G",
            "1e9",
            "10GG",
            "10 G B",
            "16384P",
            "18446744073709551616",
            "99999999999999999999999",
            "1.5.",
            "M10",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn error_names_input_and_form() {
        let err = parse_size("10X").unwrap_err();
        assert!(err.starts_with("invalid size \"10X\": "), "{err}");
        assert!(err.contains("unknown unit \"X\""), "{err}");
        assert!(
            err.ends_with(
                "use a positive number with an optional binary unit K, M, G, T or P \
                 (for example 512M, 10G, 1.5G)"
            ),
            "{err}"
        );
        assert!(parse_size("0").unwrap_err().contains("zero"));
        assert!(parse_size("16384P").unwrap_err().contains("larger"));
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(4096), "4KiB");
        assert_eq!(format_size(4097), "4KiB");
        assert_eq!(format_size(64 * M), "64MiB");
        assert_eq!(format_size(1_610_612_736), "1.5GiB");
        assert_eq!(format_size(G + G / 4), "1.25GiB");
        assert_eq!(format_size(2 * T - 1), "1.99TiB");
        assert_eq!(format_size(3 * P), "3PiB");
        assert_eq!(format_size(u64::MAX), "16383.99PiB");
    }

    #[test]
    fn new_volumes_get_at_least_one_block_and_whole_bytes() {
        for (text, want) in [
            ("4096", 4096),
            ("4K", 4096),
            ("4096.0", 4096),
            ("5000", 5000),
            ("10G", 10 * G),
            ("1.5G", 1_610_612_736),
            ("0.5M", 512 * K),
            // Units may give a fraction of a byte, rounded down, as before.
            ("4.0001K", 4096),
        ] {
            assert_eq!(parse_new_size(text), Ok(want), "{text:?}");
        }
        for text in ["100", "1.5", "1", "4095", "0.5K", "3.99K", "4095B"] {
            let err = parse_new_size(text).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "invalid size {text:?}: that is less than one block; the minimum is 4096 \
                     bytes (4K)"
                )
            );
        }
        for text in ["4096.5", "5000.25B", "1000000.1"] {
            let err = parse_new_size(text).unwrap_err();
            assert!(err.contains("must be whole"), "{text}: {err}");
        }
        // The same rules never apply to what is already in the catalog.
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("1.5"), Ok(1));
        // And the forms that were always refused still are, with the same message.
        assert_eq!(parse_new_size("0"), parse_size("0"));
        assert_eq!(parse_new_size("10X"), parse_size("10X"));
    }

    proptest! {
        #[test]
        fn plain_numbers_round_trip(n in 1u64..) {
            prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
        }

        #[test]
        fn unit_numbers_round_trip(n in 1u64..(1 << 33), unit in 0usize..3) {
            let (suffix, shift) = [("K", 10), ("M", 20), ("G", 30)][unit];
            prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n << shift));
            prop_assert_eq!(parse_size(&format!("{n}{}", suffix.to_lowercase())), Ok(n << shift));
        }

        #[test]
        fn whole_units_format_then_parse(n in 1u64..1024, unit in 0u32..6) {
            let bytes = n << (10 * unit);
            prop_assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }
}
