//! `fvol ls --filter`, applied to the daemon's list as Docker does: different keys must all
//! match, several values of one key are alternatives.
use crate::volume::VolumeInfo;

const VALID_KEYS: &str = "dangling, driver, label, name";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeFilters {
    /// Substrings of the name.
    names: Vec<String>,
    drivers: Vec<String>,
    labels: Vec<LabelFilter>,
    /// True: no mount references.
    dangling: Vec<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LabelFilter {
    key: String,
    /// None: any value.
    value: Option<String>,
}

impl VolumeFilters {
    /// Parses `KEY=VALUE` specs; for labels the value is `K` or `K=V`.
    pub fn parse(specs: &[String]) -> Result<VolumeFilters, String> {
        let mut filters = VolumeFilters::default();
        for spec in specs {
            let Some((key, value)) = spec.split_once('=') else {
                return Err(format!(
                    "invalid filter {spec:?}: expected KEY=VALUE with KEY one of {VALID_KEYS}"
                ));
            };
            match key {
                "name" => filters.names.push(value.to_owned()),
                "driver" => filters.drivers.push(value.to_owned()),
                "label" => filters.labels.push(match value.split_once('=') {
                    Some((key, value)) => LabelFilter {
                        key: key.to_owned(),
                        value: Some(value.to_owned()),
                    },
                    None => LabelFilter {
                        key: value.to_owned(),
                        value: None,
                    },
                }),
                "dangling" => filters.dangling.push(parse_bool(value).ok_or_else(|| {
                    format!("invalid filter {spec:?}: dangling must be true or false")
                })?),
                _ => {
                    return Err(format!(
                        "invalid filter key {key:?}: valid keys are {VALID_KEYS}"
                    ));
                }
            }
        }
        Ok(filters)
    }

    pub fn matches(&self, volume: &VolumeInfo) -> bool {
        let is_dangling = volume.status.mount_refs.is_empty();
        any_or_none(&self.names, |name| volume.name.contains(name.as_str()))
            && any_or_none(&self.drivers, |driver| volume.driver == *driver)
            && any_or_none(&self.labels, |label| label.matches(volume))
            && any_or_none(&self.dangling, |dangling| *dangling == is_dangling)
    }
}

impl LabelFilter {
    fn matches(&self, volume: &VolumeInfo) -> bool {
        match (volume.labels.get(&self.key), &self.value) {
            (Some(actual), Some(wanted)) => actual == wanted,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// An absent filter key matches everything.
fn any_or_none<T>(alternatives: &[T], matches: impl Fn(&T) -> bool) -> bool {
    alternatives.is_empty() || alternatives.iter().any(matches)
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::test_support::sample_volume;

    fn filters(specs: &[&str]) -> VolumeFilters {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        VolumeFilters::parse(&specs).unwrap()
    }

    fn parse_error(spec: &str) -> String {
        VolumeFilters::parse(&[spec.to_owned()]).unwrap_err()
    }

    fn labelled(name: &str, labels: &[(&str, &str)]) -> VolumeInfo {
        let mut volume = sample_volume(name);
        for (key, value) in labels {
            volume.labels.insert(key.to_string(), value.to_string());
        }
        volume
    }

    #[test]
    fn label_value_keeps_everything_after_the_first_equals() {
        let parsed = filters(&["label=url=http://x?a=b"]);
        assert_eq!(
            parsed.labels,
            [LabelFilter {
                key: "url".into(),
                value: Some("http://x?a=b".into())
            }]
        );
    }

    #[test]
    fn unknown_key_lists_the_valid_ones() {
        assert_eq!(
            parse_error("colour=red"),
            "invalid filter key \"colour\": valid keys are dangling, driver, label, name"
        );
    }

    #[test]
    fn spec_without_equals_is_refused() {
        assert!(parse_error("dangling").starts_with("invalid filter \"dangling\""));
    }

    #[test]
    fn dangling_needs_a_boolean() {
        assert_eq!(
            parse_error("dangling=maybe"),
            "invalid filter \"dangling=maybe\": dangling must be true or false"
        );
        assert_eq!(filters(&["dangling=1"]).dangling, [true]);
    }

    #[test]
    fn no_filter_matches_everything() {
        assert!(filters(&[]).matches(&sample_volume("x")));
    }

    #[test]
    fn name_is_a_substring_match() {
        let f = filters(&["name=at"]);
        assert!(f.matches(&sample_volume("data")));
        assert!(!f.matches(&sample_volume("logs")));
    }

    #[test]
    fn driver_is_an_exact_match() {
        assert!(filters(&["driver=local"]).matches(&sample_volume("v")));
        assert!(!filters(&["driver=loc"]).matches(&sample_volume("v")));
    }

    #[test]
    fn label_with_and_without_value() {
        let web = labelled("web", &[("tier", "front")]);
        assert!(filters(&["label=tier"]).matches(&web));
        assert!(filters(&["label=tier=front"]).matches(&web));
        assert!(!filters(&["label=tier=back"]).matches(&web));
        assert!(!filters(&["label=owner"]).matches(&web));
    }

    #[test]
    fn dangling_means_no_mount_references() {
        let idle = sample_volume("idle");
        let mut used = sample_volume("used");
        used.status.mount_refs = vec!["cli".into()];
        let dangling = filters(&["dangling=true"]);
        assert!(dangling.matches(&idle) && !dangling.matches(&used));
        let in_use = filters(&["dangling=false"]);
        assert!(!in_use.matches(&idle) && in_use.matches(&used));
    }

    #[test]
    fn same_key_ors_different_keys_and() {
        let f = filters(&["name=web", "name=db", "label=tier"]);
        assert!(f.matches(&labelled("web1", &[("tier", "front")])));
        assert!(f.matches(&labelled("db1", &[("tier", "back")])));
        assert!(!f.matches(&labelled("db2", &[])));
        assert!(!f.matches(&labelled("cache", &[("tier", "x")])));
    }
}
