//! Driver options (`-o key=value`): each driver declares its own typed options as a schema
//! (`OptionSet::SCHEMA`: name, kind, default, help, and where the parsed value goes). Parsing,
//! validation of each kind, the error messages, `fvol create --help` and the option tables in
//! the docs all come from these schemas.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::error::DriverError;
use super::size::{parse_new_size, parse_size};

/// What an option's value is, and so how it is parsed, checked and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A size in bytes with an optional binary unit (`512M`, `10G`, `1.5g`); at least 4K for a
    /// new volume.
    Size,
    /// A positive whole number.
    Count,
    /// A numeric user or group id (0 to 4294967294).
    Id,
    /// Octal permission bits, 0 to 7777.
    Mode,
    /// An absolute host path.
    Path,
    /// A Ceph pool, image, user or cluster name: letters, digits and `. _ -`.
    CephName,
    /// A whole number of seconds, minutes or hours with its unit (`30s`, `2m`, `1h`), from 1 s
    /// to 24 h.
    Duration,
}

impl Kind {
    /// What stands for the value in help and docs (`size=SIZE`).
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Size => "SIZE",
            Kind::Count => "N",
            Kind::Id => "ID",
            Kind::Mode => "MODE",
            Kind::Path => "PATH",
            Kind::CephName => "NAME",
            Kind::Duration => "DURATION",
        }
    }

    /// A valid value, as the examples in messages show it.
    pub fn example(self) -> &'static str {
        match self {
            Kind::Size => "10G",
            Kind::Count => "100000",
            Kind::Id => "1000",
            Kind::Mode => "755",
            Kind::Path => "/srv/data",
            Kind::CephName => "rbd",
            Kind::Duration => "30s",
        }
    }

    /// Parses `text` as a value of this kind; the error says what a valid value looks like.
    /// `check` is `New` for the options of a volume being created (or a default for one),
    /// `Stored` for options the catalog holds, which stay readable whatever later versions
    /// refuse for new volumes.
    fn parse(self, text: &str, check: Check) -> Result<Value, String> {
        let form = |rule: &str| format!("use {rule}, for example {}", self.example());
        match self {
            Kind::Size => match check {
                Check::New => parse_new_size(text),
                Check::Stored => parse_size(text),
            }
            .map(Value::Bytes),
            Kind::Count => decimal(text)
                .filter(|&n| n > 0)
                .map(Value::Count)
                .ok_or_else(|| form("a positive whole number")),
            // u32::MAX is chown's "leave unchanged", so it cannot name an owner.
            Kind::Id => decimal(text)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n != u32::MAX)
                .map(Value::Id)
                .ok_or_else(|| form("a numeric id from 0 to 4294967294")),
            Kind::Mode => octal_mode(text)
                .map(Value::Mode)
                .ok_or_else(|| form("octal permission bits from 0 to 7777 (1777 for sticky)")),
            Kind::Path => {
                let path = PathBuf::from(text);
                match path.is_absolute() {
                    true => Ok(Value::Path(path)),
                    false => Err(form("an absolute host path")),
                }
            }
            Kind::CephName => ceph_name(text)
                .map(Value::Name)
                .ok_or_else(|| form("letters, digits and . _ - (no spaces, slashes or @)")),
            Kind::Duration => duration(text).map(Value::Duration).ok_or_else(|| {
                "use a whole number of seconds, minutes or hours with its unit, from 1s to \
                 24h, for example 30s, 2m or 1h"
                    .to_owned()
            }),
        }
    }
}

/// How strictly values are checked (see `Kind::parse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    New,
    Stored,
}

/// A parsed value; its variant is its option's `Kind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Bytes(u64),
    Count(u64),
    Id(u32),
    Mode(u32),
    Path(PathBuf),
    Name(String),
    Duration(Duration),
}

impl Value {
    pub fn bytes(self) -> Option<u64> {
        match self {
            Value::Bytes(n) => Some(n),
            _ => None,
        }
    }
    pub fn count(self) -> Option<u64> {
        match self {
            Value::Count(n) => Some(n),
            _ => None,
        }
    }
    pub fn id(self) -> Option<u32> {
        match self {
            Value::Id(n) => Some(n),
            _ => None,
        }
    }
    pub fn mode(self) -> Option<u32> {
        match self {
            Value::Mode(n) => Some(n),
            _ => None,
        }
    }
    pub fn path(self) -> Option<PathBuf> {
        match self {
            Value::Path(p) => Some(p),
            _ => None,
        }
    }
    pub fn name(self) -> Option<String> {
        match self {
            Value::Name(n) => Some(n),
            _ => None,
        }
    }
    pub fn duration(self) -> Option<Duration> {
        match self {
            Value::Duration(d) => Some(d),
            _ => None,
        }
    }
}

/// What help and docs show of one option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionInfo {
    pub name: &'static str,
    pub kind: Kind,
    /// What holds when the option is not given ("no limit", "64M"); empty when nothing needs
    /// saying.
    pub default: &'static str,
    /// One sentence or a few: what the option does.
    pub help: &'static str,
    /// The option names one volume's own backing store (`mount=`, `image=`), so it has no
    /// default and the configuration file cannot give one.
    pub per_volume: bool,
}

/// One option of the options type `T`: what it is, and where its parsed value goes.
pub struct OptionSpec<T> {
    pub info: OptionInfo,
    /// Stores a value of `info.kind` in `T`.
    pub set: fn(&mut T, Value),
}

/// An option of `T`, for schemas.
pub const fn option<T>(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
    set: fn(&mut T, Value),
) -> OptionSpec<T> {
    OptionSpec {
        info: OptionInfo {
            name,
            kind,
            default,
            help,
            per_volume: false,
        },
        set,
    }
}

impl<T> OptionSpec<T> {
    /// Marks the option as one only a volume's create may give (see `OptionInfo::per_volume`).
    pub const fn per_volume(mut self) -> Self {
        self.info.per_volume = true;
        self
    }
}

/// A driver's typed options. `Default` is "no option given".
pub trait OptionSet: Default + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Every option the driver takes, in the order help, docs and errors list them.
    const SCHEMA: &'static [OptionSpec<Self>];
}

/// Parses the options of `driver` given as text, refusing a key its schema lacks.
pub fn parse<T: OptionSet>(
    driver: &'static str,
    raw: &BTreeMap<String, String>,
    check: Check,
) -> Result<T, DriverError> {
    let mut options = T::default();
    for (key, text) in raw {
        let spec = find::<T>(driver, key)?;
        let value = parse_value(&spec.info, text, check)?;
        (spec.set)(&mut options, value);
    }
    Ok(options)
}

/// Checks a default for one option of `driver` (from the configuration file), as the value
/// of a new volume's option; an option given per volume has no default.
pub fn check_default<T: OptionSet>(
    driver: &'static str,
    key: &str,
    text: &str,
) -> Result<(), DriverError> {
    let spec = find::<T>(driver, key)?;
    if spec.info.per_volume {
        return Err(DriverError::InvalidOption(format!(
            "{key}= is given per volume (it names that volume's own backing store), so it \
             cannot have a default; give it with -o {key}={} when you create the volume",
            spec.info.kind.placeholder()
        )));
    }
    parse_value(&spec.info, text, Check::New).map(drop)
}

fn find<T: OptionSet>(
    driver: &'static str,
    key: &str,
) -> Result<&'static OptionSpec<T>, DriverError> {
    T::SCHEMA
        .iter()
        .find(|spec| spec.info.name == key)
        .ok_or_else(|| DriverError::UnknownOption {
            driver,
            key: key.to_owned(),
            valid: T::SCHEMA.iter().map(|s| s.info.name).collect(),
        })
}

fn parse_value(info: &OptionInfo, text: &str, check: Check) -> Result<Value, DriverError> {
    info.kind.parse(text, check).map_err(|form| {
        DriverError::InvalidOption(match info.kind {
            // The size parser's message names the value already.
            Kind::Size => format!("{}: {form}", info.name),
            _ => format!("{}={text:?} is not valid: {form}", info.name),
        })
    })
}

/// A pool, image, user or cluster name: what Ceph accepts without quoting.
fn ceph_name(text: &str) -> Option<String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    (!text.is_empty() && text.len() <= 255 && text.bytes().all(ok)).then(|| text.to_string())
}

/// `N` + `s`, `m` or `h`, from 1 s to 24 h.
fn duration(text: &str) -> Option<Duration> {
    let unit = match text.bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        _ => return None,
    };
    let secs = decimal(&text[..text.len() - 1])?.checked_mul(unit)?;
    (1..=24 * 3600)
        .contains(&secs)
        .then(|| Duration::from_secs(secs))
}

/// Plain decimal digits only (no sign, no spaces), within u64.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Octal digits only, at most 0o7777 (permission, setuid, setgid and sticky bits).
fn octal_mode(text: &str) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    text.bytes().try_fold(0u32, |acc, b| {
        let digit = match b {
            b'0'..=b'7' => u32::from(b - b'0'),
            _ => return None,
        };
        Some(acc * 8 + digit).filter(|&m| m <= 0o7777)
    })
}

/// What help and docs show of one driver.
pub struct DriverDoc {
    pub name: &'static str,
    pub summary: &'static str,
    pub options: Vec<OptionInfo>,
}

/// The drivers and their options as `fvol create --help` shows them, wrapped at `width`.
pub fn render_help(drivers: &[DriverDoc], width: usize) -> String {
    let mut out = wrap(
        "Drivers (-d DRIVER, default local) and the options each takes (-o KEY=VALUE, \
         repeatable):",
        "",
        width,
    );
    for driver in drivers {
        out.push('\n');
        out.push_str(&wrap(
            driver.summary,
            &format!("{:<8} ", driver.name),
            width,
        ));
        for info in &driver.options {
            let mut help = info.help.to_owned();
            if info.per_volume {
                help.push_str(" (per volume: no configuration default)");
            }
            if !info.default.is_empty() {
                let _ = write!(help, " [default: {}]", info.default);
            }
            let lead = format!("  {}={}", info.name, info.kind.placeholder());
            let lead = format!("{lead:<19} ");
            out.push_str(&wrap(&help, &lead, width));
        }
    }
    out
}

/// `text` wrapped at `width`, its first line after `lead` and the others indented as far.
fn wrap(text: &str, lead: &str, width: usize) -> String {
    let indent = " ".repeat(lead.len());
    let mut out = String::new();
    let mut line = lead.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = indent.clone();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

/// The drivers and their options as Markdown, for docs/cli.md and docs/docker.md.
pub fn render_markdown(drivers: &[DriverDoc]) -> String {
    let mut out = String::new();
    for (i, driver) in drivers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "`{}`: {}\n", driver.name, driver.summary);
        out.push_str("| option | default | meaning |\n|---|---|---|\n");
        for info in &driver.options {
            let per_volume = match info.per_volume {
                true => " (per volume: no configuration default)",
                false => "",
            };
            let _ = writeln!(
                out,
                "| `{}={}` | {} | {}{per_volume} |",
                info.name,
                info.kind.placeholder(),
                info.default,
                info.help.replace('|', "\\|")
            );
        }
    }
    out
}

/// For each driver's tests: names are distinct, every option has help, and each one's setter
/// stores a value of its kind (a setter reading the wrong kind would drop it).
#[cfg(test)]
pub fn assert_schema_consistent<T: OptionSet>() {
    let mut names = std::collections::BTreeSet::new();
    for spec in T::SCHEMA {
        let info = &spec.info;
        assert!(names.insert(info.name), "option {} twice", info.name);
        assert!(!info.help.is_empty(), "option {} has no help", info.name);
        let mut options = T::default();
        let value = info.kind.parse(info.kind.example(), Check::New).unwrap();
        (spec.set)(&mut options, value);
        assert_ne!(options, T::default(), "option {} stores nothing", info.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Sample {
        size: Option<u64>,
        inodes: Option<u64>,
        uid: Option<u32>,
        mode: Option<u32>,
        mount: Option<PathBuf>,
        pool: Option<String>,
        timeout: Option<Duration>,
    }

    impl OptionSet for Sample {
        const SCHEMA: &'static [OptionSpec<Self>] = &[
            option("size", Kind::Size, "no limit", "byte quota", |o, v| {
                o.size = v.bytes()
            }),
            option("inodes", Kind::Count, "", "inode quota", |o, v| {
                o.inodes = v.count()
            }),
            option("uid", Kind::Id, "0", "owner", |o, v| o.uid = v.id()),
            option("mode", Kind::Mode, "", "permissions", |o, v| {
                o.mode = v.mode()
            }),
            option("mount", Kind::Path, "", "a directory", |o: &mut Self, v| {
                o.mount = v.path()
            })
            .per_volume(),
            option("pool", Kind::CephName, "rbd", "a pool", |o, v| {
                o.pool = v.name()
            }),
            option("timeout", Kind::Duration, "", "a wait", |o, v| {
                o.timeout = v.duration()
            }),
        ];
    }

    fn parse_new(pairs: &[(&str, &str)]) -> Result<Sample, DriverError> {
        let raw = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse("sample", &raw, Check::New)
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match parse_new(pairs) {
            Err(e @ DriverError::InvalidOption(_)) => e.to_string(),
            other => panic!("{pairs:?}: expected InvalidOption, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_kind() {
        let opts = parse_new(&[
            ("size", "1.5G"),
            ("inodes", "100000"),
            ("uid", "1000"),
            ("mode", "1777"),
            ("mount", "/srv/data"),
            ("pool", "ssd-1"),
            ("timeout", "2m"),
        ])
        .unwrap();
        assert_eq!(
            opts,
            Sample {
                size: Some(1_610_612_736),
                inodes: Some(100_000),
                uid: Some(1000),
                mode: Some(0o1777),
                mount: Some(PathBuf::from("/srv/data")),
                pool: Some("ssd-1".into()),
                timeout: Some(Duration::from_secs(120)),
            }
        );
        assert_eq!(parse_new(&[]).unwrap(), Sample::default());
    }

    #[test]
    fn unknown_option_lists_valid_ones_in_schema_order() {
        let e = parse_new(&[("foo", "1")]).unwrap_err();
        assert!(matches!(e, DriverError::UnknownOption { .. }));
        assert_eq!(e.class(), crate::model::ErrorClass::BadInput);
        assert_eq!(
            e.to_string(),
            "invalid option: unknown option \"foo\" for driver sample; valid options are: size, \
             inodes, uid, mode, mount, pool, timeout"
        );
        assert!(check_default::<Sample>("sample", "bar", "1").is_err());
        assert!(check_default::<Sample>("sample", "size", "1G").is_ok());
        assert!(check_default::<Sample>("sample", "size", "1").is_err());
        let e = check_default::<Sample>("sample", "mount", "/srv").unwrap_err();
        assert!(e.to_string().contains("cannot have a default"), "{e}");
    }

    #[test]
    fn modes() {
        for (text, want) in [
            ("755", 0o755),
            ("0755", 0o755),
            ("1777", 0o1777),
            ("07777", 0o7777),
            ("0", 0),
        ] {
            assert_eq!(
                parse_new(&[("mode", text)]).unwrap().mode,
                Some(want),
                "{text}"
            );
        }
        for text in [
            "", "0o755", "8", "99999", "17777", "-755", " 755", "7a", "0x1ff",
        ] {
            let e = err(&[("mode", text)]);
            assert!(e.contains("mode=") && e.contains("octal"), "{text}: {e}");
        }
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("1s", 1),
            ("30s", 30),
            ("2m", 120),
            ("1h", 3600),
            ("24h", 86400),
        ] {
            assert_eq!(
                parse_new(&[("timeout", text)]).unwrap().timeout,
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for text in [
            "", "30", "0s", "-5s", "1.5s", "90 s", "1m30s", "25h", "86401s", "s", "10ms", "1d",
        ] {
            let e = err(&[("timeout", text)]);
            assert!(
                e.contains(&format!("timeout={text:?}")) && e.contains("30s, 2m or 1h"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn bad_values_name_option_value_and_form() {
        let e = err(&[("size", "10X")]);
        assert!(
            e.starts_with("invalid option: size: invalid size \"10X\""),
            "{e}"
        );
        // A new volume's size is at least one block; a stored one is read as it is.
        let e = err(&[("size", "100")]);
        assert!(e.contains("less than one block"), "{e}");
        let raw = BTreeMap::from([("size".to_owned(), "100".to_owned())]);
        let stored: Sample = parse("sample", &raw, Check::Stored).unwrap();
        assert_eq!(stored.size, Some(100));
        for v in ["", "0", "-1", "+5", "1.5", "abc", "99999999999999999999999"] {
            let e = err(&[("inodes", v)]);
            assert!(
                e.contains(&format!("inodes={v:?}")) && e.contains("positive"),
                "{e}"
            );
        }
        for v in ["", "-1", "4294967295", "4294967296", "root", "1e3"] {
            let e = err(&[("uid", v)]);
            assert!(
                e.contains(&format!("uid={v:?}")) && e.contains("numeric id"),
                "{e}"
            );
        }
        for v in ["", "data", "./data", "srv/data"] {
            let e = err(&[("mount", v)]);
            assert!(
                e.contains(&format!("mount={v:?}")) && e.contains("absolute"),
                "{e}"
            );
        }
        for v in ["a/b", "x@snap", "", "a b"] {
            let e = err(&[("pool", v)]);
            assert!(e.contains(&format!("pool={v:?}")), "{e}");
        }
    }

    #[test]
    fn every_example_parses_as_its_kind() {
        for kind in [
            Kind::Size,
            Kind::Count,
            Kind::Id,
            Kind::Mode,
            Kind::Path,
            Kind::CephName,
            Kind::Duration,
        ] {
            kind.parse(kind.example(), Check::New).unwrap();
        }
    }

    #[test]
    fn help_wraps_and_shows_defaults() {
        let doc = DriverDoc {
            name: "sample",
            summary: "a driver for tests whose summary is long enough to be wrapped onto a \
                      second line",
            options: Sample::SCHEMA.iter().map(|s| s.info).collect(),
        };
        let help = render_help(&[doc], 60);
        assert!(help.lines().all(|l| l.len() <= 60), "{help}");
        assert!(help.contains("  size=SIZE"), "{help}");
        assert!(help.contains("byte quota [default: no limit]"), "{help}");
        assert!(
            help.contains("\n         be wrapped onto a second line\n"),
            "{help}"
        );
    }
}
