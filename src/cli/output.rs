//! How results are shown: the `ls` table and sizes in human units.
use crate::volume::VolumeInfo;

/// Between columns, as `docker volume ls` spaces them.
const COLUMN_GAP: usize = 3;

/// DRIVER, VOLUME NAME, SIZE (the limit, or `-`), USED, MOUNTED.
pub fn volume_table(volumes: &[VolumeInfo]) -> String {
    let header = ["DRIVER", "VOLUME NAME", "SIZE", "USED", "MOUNTED"];
    let rows: Vec<[String; 5]> = volumes
        .iter()
        .map(|volume| {
            let status = &volume.status;
            [
                volume.driver.clone(),
                volume.name.clone(),
                status.size_limit.map_or_else(|| "-".to_owned(), human_size),
                human_size(status.used_bytes),
                if status.mounted { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    render_table(header, &rows)
}

/// `fvol snapshot ls`: one row per snapshot.
pub fn snapshot_table(snapshots: &[crate::volume::snapshot::SnapshotInfo]) -> String {
    let header = [
        "SNAPSHOT",
        "CREATED",
        "METHOD",
        "SIZE",
        "FILES",
        "WRITES HELD",
    ];
    let rows: Vec<[String; 6]> = snapshots
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.created_at.clone(),
                if s.missing {
                    format!("{} (missing)", s.method)
                } else {
                    s.method.clone()
                },
                human_size(s.bytes),
                s.files.to_string(),
                format!("{} ms", s.held_ms),
            ]
        })
        .collect();
    render_table(header, &rows)
}

fn render_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let lines = std::iter::once(header.map(str::to_owned)).chain(rows.iter().cloned());
    for line in lines {
        for (column, cell) in line.iter().enumerate() {
            text.push_str(cell);
            if column + 1 < N {
                let padding = widths[column] - cell.chars().count() + COLUMN_GAP;
                text.extend(std::iter::repeat_n(' ', padding));
            }
        }
        text.push('\n');
    }
    text
}

/// Binary units, as sizes are given (`size=512M` is 512MiB): `0B`, `1023B`, `1.5KiB`,
/// `512MiB`. One decimal at most, dropped when it is zero.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    let mut value = bytes as f64;
    while unit + 1 < UNITS.len() && round_tenth(value) >= 1024.0 {
        value /= 1024.0;
        unit += 1;
    }
    let value = round_tenth(value);
    if value.fract() == 0.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

fn round_tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_support::sample_volume;

    #[test]
    fn human_sizes() {
        let cases = [
            (0, "0B"),
            (1, "1B"),
            (1023, "1023B"),
            (1024, "1KiB"),
            (1536, "1.5KiB"),
            // 1023.99KiB rounds up into the next unit rather than showing 1024KiB.
            (1024 * 1024 - 10, "1MiB"),
            (512 * 1024 * 1024, "512MiB"),
            (10 * 1024 * 1024 * 1024, "10GiB"),
            (1_288_490_189, "1.2GiB"),
            (u64::MAX, "16EiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn table_aligns_columns() {
        let mut big = sample_volume("a-long-volume-name");
        big.status.size_limit = Some(10 * 1024 * 1024 * 1024);
        big.status.used_bytes = 1536;
        big.status.mounted = true;
        let small = sample_volume("v");
        let expected = "\
DRIVER   VOLUME NAME          SIZE    USED     MOUNTED
local    a-long-volume-name   10GiB   1.5KiB   yes
local    v                    -       0B       no
";
        assert_eq!(volume_table(&[big, small]), expected);
    }

    #[test]
    fn empty_table_is_just_the_header() {
        assert_eq!(
            volume_table(&[]),
            "DRIVER   VOLUME NAME   SIZE   USED   MOUNTED\n"
        );
    }
}
