//! `fvol update NAME -o size=SIZE -o inodes=N`: changing a volume's quota, mounted or not.
//!
//! The new options go through the driver's schema like a create's; only `size=` and
//! `inodes=` may change. A mounted volume gets the new limits at once (its next write and
//! `df` see them; `Quota::set_limits`), an image grows online (`fs::image::fs::grow`). A
//! limit below what the volume holds is refused with the smallest allowed value, and
//! nothing changes. The catalog records the new options after the filesystem took them.
use std::collections::BTreeMap;

use super::core::Core;
use super::events::EventType;
use super::{Usage, VolumeError, VolumeRecord};
use crate::driver::{AnyDriver, Resize};
use crate::fs::UsageSnapshot;
use crate::fs::quota::ResizeError;

/// The options an update may change.
pub const RESIZABLE: &[&str] = &["size", "inodes"];

impl Core {
    pub fn update(
        &self,
        name: &str,
        changes: BTreeMap<String, String>,
    ) -> Result<VolumeRecord, VolumeError> {
        let mut rec = self.record(name)?;
        let driver = self.driver(&rec.driver)?;
        if changes.is_empty() {
            return Err(VolumeError::InvalidOption(format!(
                "nothing to change: give the new limits, e.g. fvol update {name} -o size=20G \
                 (update changes {})",
                resizable_list()
            )));
        }
        // The form of each value, and keys the driver knows, as for a create.
        driver.check_options(&changes)?;
        if let Some(fixed) = changes.keys().find(|k| !RESIZABLE.contains(&k.as_str())) {
            return Err(VolumeError::InvalidOption(format!(
                "{fixed}= is fixed when a volume is created; update changes {}",
                resizable_list()
            )));
        }
        let mut options = rec.options.clone();
        options.extend(changes);
        if options == rec.options {
            return Ok(rec);
        }
        let to = driver.resize_to(&options)?;
        let before = driver.resize_to(&rec.options)?;
        let refused = |used: UsageSnapshot| below_usage(driver.as_ref(), &rec, &options, &to, used);
        match self.active_fs(name) {
            Some(fs) => fs.resize(&to).map_err(|e| match e {
                ResizeError::BelowUsage(used) => refused(used),
                ResizeError::PassthroughServed => VolumeError::Refused(format!(
                    "volume {name} has no byte limit, so it is served with kernel \
                     passthrough, whose writes bypass the quota; unmount it (fvol unmount \
                     --all {name}) to give it size=, and mount it again"
                )),
                ResizeError::BeyondCapacity(most) => VolumeError::Refused(format!(
                    "volume {name} is mounted with room for at most {} and {} inodes; \
                     a tmpfs volume's shared memory is sized at mount (four times its size, \
                     at least 1 GiB more), so grow it that far now, or more after it is \
                     mounted again (its data lives only while mounted)",
                    most.bytes.map_or("any size".into(), human),
                    most.inodes
                        .map_or("any number of".into(), |i| i.to_string())
                )),
                ResizeError::Fs(e) => VolumeError::io(
                    format!("resizing volume {name}"),
                    std::io::Error::other(e.to_string()),
                ),
            })?,
            None => {
                let stored = self.store().usage(name)?;
                let used = UsageSnapshot {
                    bytes: stored.bytes,
                    inodes: stored.inodes,
                };
                if to.limits.bytes.is_some_and(|b| b < used.bytes)
                    || to.limits.inodes.is_some_and(|i| i < used.inodes)
                {
                    return Err(refused(used));
                }
                let mut resized = rec.clone();
                resized.options = options.clone();
                driver.resize_inactive(self.driver_context(), &resized, &to)?;
                // A volume without a byte limit may have been served with passthrough, whose
                // writes its usage does not count: the next mount measures it.
                if before.limits.bytes.is_none() && to.limits.bytes.is_some() {
                    self.store().set_usage(
                        name,
                        Usage {
                            clean: false,
                            ..stored
                        },
                    )?;
                }
            }
        }
        rec.options = options;
        if let Err(e) = self.store().put(&rec) {
            // The filesystem has the new limits; put the old ones back (an image stays grown).
            if let Some(fs) = self.active_fs(name) {
                let _ = fs.resize(&Resize {
                    image_size: None,
                    ..before
                });
            }
            return Err(e.into());
        }
        log::info!("volume {name}: limits now {:?}", to.limits);
        // The options as they are now, and the limits they enforce.
        let mut attributes = Vec::new();
        for key in RESIZABLE {
            if let Some(value) = rec.options.get(*key) {
                attributes.push((*key, value.clone()));
            }
        }
        if let Some(bytes) = to.limits.bytes {
            attributes.push(("size_limit", bytes.to_string()));
        }
        if let Some(inodes) = to.limits.inodes {
            attributes.push(("inode_limit", inodes.to_string()));
        }
        self.emit(EventType::Resize, &rec, &attributes);
        Ok(rec)
    }
}

fn resizable_list() -> String {
    RESIZABLE
        .iter()
        .map(|k| format!("{k}="))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The refusal of a limit below `used`, with the smallest values allowed.
fn below_usage(
    driver: &dyn AnyDriver,
    rec: &VolumeRecord,
    options: &BTreeMap<String, String>,
    to: &Resize,
    used: UsageSnapshot,
) -> VolumeError {
    let name = &rec.name;
    let mut parts = Vec::new();
    if to.limits.bytes.is_some_and(|b| b < used.bytes) {
        parts.push(format!(
            "it holds {} ({} bytes), more than size={} allows; the smallest allowed is \
             size={}",
            human(used.bytes),
            used.bytes,
            options.get("size").map_or("?", |s| s.as_str()),
            smallest_size(driver, options, used.bytes)
        ));
    }
    if to.limits.inodes.is_some_and(|i| i < used.inodes) {
        parts.push(format!(
            "it holds {} inodes, more than inodes={}; the smallest allowed is inodes={}",
            used.inodes,
            options.get("inodes").map_or("?", |s| s.as_str()),
            used.inodes
        ));
    }
    VolumeError::Refused(format!(
        "volume {name} cannot shrink below what it holds: {}; nothing was changed (free \
         space in the volume first)",
        parts.join("; ")
    ))
}

/// The smallest `size=` (in whole MiB from 1 MiB on, else in KiB) whose byte limit holds
/// `used` with these options: for most drivers `used` itself, rounded up; for an image, with
/// its metadata region on top.
fn smallest_size(driver: &dyn AnyDriver, options: &BTreeMap<String, String>, used: u64) -> String {
    const K: u64 = 1 << 10;
    const M: u64 = 1 << 20;
    let text = |n: u64| match n < M {
        true => format!("{}K", n.div_ceil(K)),
        false => format!("{}M", n.div_ceil(M)),
    };
    let fits = |n: u64| {
        let mut o = options.clone();
        o.insert("size".into(), text(n));
        driver
            .resize_to(&o)
            .is_ok_and(|r| r.limits.bytes.is_none_or(|b| b >= used))
    };
    let unit = |n: u64| if n < M { 4 * K } else { M };
    let mut n = used.max(4 * K).next_multiple_of(4 * K);
    if n >= M {
        n = n.next_multiple_of(M);
    }
    // The limit grows with size=, by steps: walk up by doublings, then back down.
    let mut step = unit(n);
    while !fits(n) {
        n += step;
        step *= 2;
        if n > u64::MAX / 4 {
            return text(used);
        }
    }
    while step > unit(n) {
        step /= 2;
        if n > step && fits(n - step) && n - step >= used {
            n -= step;
        }
    }
    text(n)
}

/// Bytes as people read them: 1.5 GiB, 300 MiB, 12 KiB.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn smallest_size_holds_the_usage() {
        let local = crate::driver::local::LocalDriver;
        assert_eq!(smallest_size(&local, &options(&[]), 10), "4K");
        assert_eq!(smallest_size(&local, &options(&[]), 5000), "8K");
        assert_eq!(smallest_size(&local, &options(&[]), (3 << 20) + 1), "4M");
        let rbd = crate::driver::rbd::RbdDriver;
        let opts = options(&[("size", "1G")]);
        let s = smallest_size(&rbd, &opts, 100 << 20);
        let mut o = opts.clone();
        o.insert("size".into(), s.clone());
        let limit = AnyDriver::resize_to(&rbd, &o)
            .unwrap()
            .limits
            .bytes
            .unwrap();
        assert!(limit >= 100 << 20, "{s}: {limit}");
        let less = format!("{}M", s.trim_end_matches('M').parse::<u64>().unwrap() - 1);
        o.insert("size".into(), less.clone());
        let smaller = AnyDriver::resize_to(&rbd, &o).map(|r| r.limits.bytes.unwrap());
        assert!(smaller.is_err() || smaller.unwrap() < 100 << 20, "{less}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(10), "10 bytes");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
