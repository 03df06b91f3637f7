//! Creates one node with a given umask and mode, as a program would (the umask is per process,
//! so tests that run in threads cannot set it themselves). Prints `ok` or the errno's name.
//! Usage: make-node UMASK file|dir|fifo MODE PATH (UMASK and MODE in octal)
use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, mkdirat, mknod, umask};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, mask, kind, mode, path] = &args[..] else {
        eprintln!("usage: make-node UMASK file|dir|fifo MODE PATH");
        std::process::exit(2);
    };
    let octal = |s: &str| u32::from_str_radix(s, 8).expect("an octal number");
    umask(Mode::from_bits_truncate(octal(mask)));
    let mode = Mode::from_bits_truncate(octal(mode));
    let path = std::path::Path::new(path);
    let made = match kind.as_str() {
        "file" => open(path, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY, mode).map(drop),
        "dir" => mkdirat(nix::fcntl::AT_FDCWD, path, mode),
        "fifo" => mknod(path, SFlag::S_IFIFO, mode, 0),
        other => panic!("unknown kind {other}"),
    };
    match made {
        Ok(()) => println!("ok"),
        Err(e) => println!("{e:?}"),
    }
}
