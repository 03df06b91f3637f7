//! What the running kernel's FUSE offers, for `fvol version`: kernel passthrough and request
//! resend (Linux 6.9, FUSE protocol 7.40), and FUSE over io_uring (Linux 6.14; off unless the
//! fuse module's `enable_uring` parameter is set). Passthrough and resend are judged from the
//! kernel release (a kernel built without CONFIG_FUSE_PASSTHROUGH still refuses it at mount
//! time, which fvol handles); io_uring from the module parameter, which exists only where the
//! kernel has it.
use std::path::Path;

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuseFeatures {
    pub kernel: String,
    pub passthrough: bool,
    pub resend: bool,
    /// None: the kernel has no FUSE over io_uring; Some(enabled).
    pub io_uring: Option<bool>,
}

impl FuseFeatures {
    pub fn describe(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let uring = match self.io_uring {
            None => "no".to_owned(),
            Some(true) => "yes (enabled)".to_owned(),
            Some(false) => format!("yes (disabled: {ENABLE_URING} is N)"),
        };
        format!(
            "passthrough {}, resend {}, io_uring {uring}",
            yes_no(self.passthrough),
            yes_no(self.resend)
        )
    }
}

/// The features of the running kernel.
pub fn probe() -> FuseFeatures {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let io_uring = Path::new(ENABLE_URING)
        .exists()
        .then(|| std::fs::read_to_string(ENABLE_URING).is_ok_and(|v| v.trim() == "Y"));
    from_release(&kernel, io_uring)
}

fn from_release(kernel: &str, io_uring: Option<bool>) -> FuseFeatures {
    let mut numbers = kernel
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    FuseFeatures {
        kernel: kernel.to_owned(),
        passthrough: version >= (6, 9),
        resend: version >= (6, 9),
        io_uring,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_follow_the_release() {
        let old = from_release("6.1.0-28-amd64", None);
        assert!(!old.passthrough && !old.resend);
        assert_eq!(old.describe(), "passthrough no, resend no, io_uring no");
        let new = from_release("6.18.0", Some(false));
        assert!(new.passthrough && new.resend);
        assert!(
            new.describe().contains("io_uring yes (disabled"),
            "{}",
            new.describe()
        );
        assert!(
            from_release("7.0", Some(true))
                .describe()
                .ends_with("yes (enabled)")
        );
    }
}
