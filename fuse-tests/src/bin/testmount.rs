//! Mounts a filesystem core at a directory until stdin closes: for debugging by hand.
//! Usage: testmount BACKING MOUNTPOINT [SIZE_BYTES]
use std::sync::Arc;

use fvol::fs::passthrough::PassthroughFs;
use fvol::fs::quota::Limits;
use fvol::fuse::ServeOptions;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = args.get(3).map(|s| s.parse().expect("size in bytes"));
    let limits = Limits {
        bytes,
        inodes: None,
    };
    let fs = PassthroughFs::new(args[1].as_ref(), limits, None)
        .expect("open")
        .with_passthrough(true);
    let passthrough = fs.passthrough();
    let m = fvol::fuse::mount(
        Arc::new(fs),
        args[2].as_ref(),
        "debug",
        ServeOptions {
            passthrough,
            exclusive: true,
            readahead_kb: None,
            threads: 4,
        },
        &mut fvol::fs::resume::Carry::none(),
    )
    .expect("mount");
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
    m.unmount().unwrap();
}
