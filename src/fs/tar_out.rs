//! Writes a tree (`TreeSource`) as a POSIX tar stream (pax), for `fvol export` of volumes
//! whose data lives in their filesystem core (tmpfs, rbd): streamed straight from the core or
//! its capture, with no copy staged on the host first.
//!
//! The stream is what GNU tar writes with `--format=posix --xattrs --acls --numeric-owner
//! --sparse`, and GNU tar extracts it with those options: owners by number, modes, times
//! (nanoseconds), xattrs (`SCHILY.xattr.*`), POSIX ACLs as text (`SCHILY.acl.access`,
//! `SCHILY.acl.default`), hard links, every file type but sockets (which tar skips too), and
//! files with holes in GNU's sparse format 1.0 (holes stay holes). Entries come in a
//! depth-first walk, names sorted, each directory before what it holds.
//!
//! Invariant: the source does not change while it is written (a capture, a core whose gate
//! holds every change, or a read-only snapshot); a file whose data disagrees with its size is
//! an error, never a stream that lies.
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::acl::{self, Acl};
use super::tree_copy::{CopyStats, TreeSource};
use super::{Attr, FileKind, Ino, ROOT_INO};

const BLOCK: usize = 512;
/// GNU tar pads a stream to whole records of 20 blocks.
const RECORD: usize = 20 * BLOCK;

const REGULAR: u8 = b'0';
const HARD_LINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const CHAR_DEVICE: u8 = b'3';
const BLOCK_DEVICE: u8 = b'4';
const DIRECTORY: u8 = b'5';
const FIFO: u8 = b'6';
const PAX: u8 = b'x';

/// Writes the whole tree of `source` to `out`; `done` counts the bytes of file data written
/// so far (for progress).
pub fn write_tar(
    source: &dyn TreeSource,
    out: &mut dyn Write,
    done: &AtomicU64,
) -> io::Result<CopyStats> {
    let mut writer = TarWriter {
        out: Counting { out, written: 0 },
        source,
        links: HashMap::new(),
        stats: CopyStats::default(),
        done,
    };
    let root = source.attr(ROOT_INO)?;
    writer.node(b"./".to_vec(), &root)?;
    writer.dir(ROOT_INO, b"./")?;
    let end = writer.out.written + 2 * BLOCK as u64;
    let padded = end.div_ceil(RECORD as u64) * RECORD as u64;
    writer.out.zeros(padded - writer.out.written)?;
    writer.out.out.flush()?;
    Ok(writer.stats)
}

/// A writer that knows how much it wrote.
struct Counting<'a> {
    out: &'a mut dyn Write,
    written: u64,
}

impl Counting<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        while n > 0 {
            let take = n.min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..take])?;
            n -= take as u64;
        }
        Ok(())
    }

    /// Zeros up to the next block boundary.
    fn pad(&mut self) -> io::Result<()> {
        let rest = self.written % BLOCK as u64;
        if rest != 0 {
            self.zeros(BLOCK as u64 - rest)?;
        }
        Ok(())
    }
}

struct TarWriter<'a, 'o> {
    out: Counting<'o>,
    source: &'a dyn TreeSource,
    /// The path of the first name of each inode with more than one (later ones are hard links).
    links: HashMap<Ino, Vec<u8>>,
    stats: CopyStats,
    done: &'a AtomicU64,
}

impl TarWriter<'_, '_> {
    /// The entries of directory `dir` (at `path`, ending in `/`), depth first.
    fn dir(&mut self, dir: Ino, path: &[u8]) -> io::Result<()> {
        let mut entries: Vec<(OsString, Attr)> = self.source.entries(dir)?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, attr) in entries {
            let mut child = path.to_vec();
            child.extend_from_slice(name.as_bytes());
            if attr.kind == FileKind::Dir {
                child.push(b'/');
                self.node(child.clone(), &attr)?;
                self.dir(attr.ino, &child)?;
            } else {
                self.node(child, &attr)?;
            }
        }
        Ok(())
    }

    fn node(&mut self, path: Vec<u8>, attr: &Attr) -> io::Result<()> {
        let mut pax = Pax::default();
        let mut header = Header::new(attr);
        if attr.kind != FileKind::Dir && attr.nlink > 1 {
            if let Some(first) = self.links.get(&attr.ino) {
                header.kind = HARD_LINK;
                pax.link(&mut header, first.clone());
                return self.entry(&path, header, pax, Body::None);
            }
            self.links.insert(attr.ino, path.clone());
        }
        if attr.kind != FileKind::Symlink {
            self.xattrs(attr.ino, &mut pax)?;
        }
        let body = match attr.kind {
            FileKind::Dir => {
                header.kind = DIRECTORY;
                Body::None
            }
            FileKind::Symlink => {
                header.kind = SYMLINK;
                pax.link(&mut header, self.source.readlink(attr.ino)?);
                Body::None
            }
            FileKind::CharDevice | FileKind::BlockDevice => {
                header.kind = match attr.kind {
                    FileKind::CharDevice => CHAR_DEVICE,
                    _ => BLOCK_DEVICE,
                };
                let rdev = u64::from(attr.rdev);
                header.device = Some((libc::major(rdev), libc::minor(rdev)));
                Body::None
            }
            FileKind::Fifo => {
                header.kind = FIFO;
                Body::None
            }
            // tar has no socket entries (GNU tar skips them too).
            FileKind::Socket => return Ok(()),
            FileKind::File => {
                header.kind = REGULAR;
                self.stats.files += 1;
                if attr.blocks * 512 >= attr.size {
                    header.size = attr.size;
                    Body::Dense(*attr)
                } else {
                    let extents = self.extents(attr)?;
                    let map = sparse_map(&extents, attr.size);
                    let data: u64 = extents.iter().map(|e| e.1).sum();
                    pax.sparse(&path, attr.size);
                    header.size = map.len() as u64 + data;
                    Body::Sparse(*attr, map, data)
                }
            }
        };
        self.entry(&path, header, pax, body)
    }

    /// The xattrs of `ino` as pax records; the ACLs as GNU tar's text.
    fn xattrs(&mut self, ino: Ino, pax: &mut Pax) -> io::Result<()> {
        for (name, value) in self.source.xattrs(ino)? {
            match acl::kind_of(&name) {
                Some(kind) => {
                    let Some(acl) = Acl::parse(&value).ok().flatten() else {
                        continue;
                    };
                    let key = match kind {
                        acl::Kind::Access => "SCHILY.acl.access",
                        acl::Kind::Default => "SCHILY.acl.default",
                    };
                    pax.record(key, acl.to_text().as_bytes());
                }
                None => {
                    let mut key = b"SCHILY.xattr.".to_vec();
                    key.extend_from_slice(name.as_bytes());
                    pax.record_raw(&key, &value);
                }
            }
        }
        Ok(())
    }

    /// The data ranges of a file with holes, adjacent ranges merged.
    fn extents(&self, attr: &Attr) -> io::Result<Vec<(u64, u64)>> {
        let mut extents: Vec<(u64, u64)> = Vec::new();
        self.source.data(attr, &mut |offset, bytes| {
            match extents.last_mut() {
                Some(last) if last.0 + last.1 == offset => last.1 += bytes.len() as u64,
                _ => extents.push((offset, bytes.len() as u64)),
            }
            Ok(())
        })?;
        Ok(extents)
    }

    fn entry(&mut self, path: &[u8], header: Header, mut pax: Pax, body: Body) -> io::Result<()> {
        let name = pax.name(path, matches!(body, Body::Sparse(..)));
        pax.numbers(&header);
        if !pax.records.is_empty() {
            let (_, base) = split_path(path.strip_suffix(b"/").unwrap_or(path));
            let mut pax_path = b"./PaxHeaders/".to_vec();
            pax_path.extend_from_slice(&base[..base.len().min(80)]);
            let pax_header = Header::new_pax(&header, pax.records.len() as u64);
            self.out.put(&pax_header.encode(&pax_path))?;
            self.out.put(&pax.records)?;
            self.out.pad()?;
        }
        self.out.put(&header.encode(&name))?;
        match body {
            Body::None => {}
            Body::Dense(attr) => self.dense(&attr)?,
            Body::Sparse(attr, map, data) => {
                self.out.put(&map)?;
                self.sparse_data(&attr, data)?;
            }
        }
        self.out.pad()
    }

    /// A file's bytes, its holes as zeros.
    fn dense(&mut self, attr: &Attr) -> io::Result<()> {
        let mut at = 0u64;
        let (source, done) = (self.source, self.done);
        let out = &mut self.out;
        source.data(attr, &mut |offset, bytes| {
            if offset < at || offset + bytes.len() as u64 > attr.size {
                return Err(changed());
            }
            out.zeros(offset - at)?;
            out.put(bytes)?;
            at = offset + bytes.len() as u64;
            done.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(())
        })?;
        out.zeros(attr.size - at)?;
        self.stats.bytes += attr.size;
        Ok(())
    }

    /// The data ranges of a file with holes, back to back (the map says where they go).
    fn sparse_data(&mut self, attr: &Attr, expected: u64) -> io::Result<()> {
        let mut written = 0u64;
        let (source, done) = (self.source, self.done);
        let out = &mut self.out;
        source.data(attr, &mut |_, bytes| {
            written += bytes.len() as u64;
            if written > expected {
                return Err(changed());
            }
            done.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            out.put(bytes)
        })?;
        if written != expected {
            return Err(changed());
        }
        self.stats.bytes += written;
        Ok(())
    }
}

fn changed() -> io::Error {
    io::Error::other("a file changed while it was written to the tar stream")
}

enum Body {
    None,
    Dense(Attr),
    /// The attributes, the sparse map block(s), and the bytes of data after it.
    Sparse(Attr, Vec<u8>, u64),
}

/// GNU sparse format 1.0: the number of ranges, then each range's offset and length, one
/// decimal per line, padded to a block. A file that ends in a hole gets a last empty range
/// at its end, so its size comes back.
fn sparse_map(extents: &[(u64, u64)], size: u64) -> Vec<u8> {
    let mut ranges = extents.to_vec();
    if ranges.last().is_none_or(|&(o, l)| o + l < size) {
        ranges.push((size, 0));
    }
    let mut map = format!("{}\n", ranges.len());
    for (offset, len) in ranges {
        map.push_str(&format!("{offset}\n{len}\n"));
    }
    let mut map = map.into_bytes();
    map.resize(map.len().div_ceil(BLOCK) * BLOCK, 0);
    map
}

/// The records of a pax extended header (`LEN KEY=VALUE\n`, LEN counting the whole record).
#[derive(Default)]
struct Pax {
    records: Vec<u8>,
}

impl Pax {
    fn record(&mut self, key: &str, value: &[u8]) {
        self.record_raw(key.as_bytes(), value);
    }

    fn record_raw(&mut self, key: &[u8], value: &[u8]) {
        let rest = 1 + key.len() + 1 + value.len() + 1;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        self.records.extend_from_slice(format!("{len} ").as_bytes());
        self.records.extend_from_slice(key);
        self.records.push(b'=');
        self.records.extend_from_slice(value);
        self.records.push(b'\n');
    }

    /// A link target: in the header if it fits, else as a record.
    fn link(&mut self, header: &mut Header, target: Vec<u8>) {
        if target.len() >= 100 || !target.is_ascii() {
            self.record("linkpath", &target);
        }
        header.link = target;
    }

    fn sparse(&mut self, path: &[u8], size: u64) {
        self.record("GNU.sparse.major", b"1");
        self.record("GNU.sparse.minor", b"0");
        self.record("GNU.sparse.name", path);
        self.record("GNU.sparse.realsize", size.to_string().as_bytes());
    }

    /// The name the ustar header carries: the path if it fits, else the path as a record and
    /// a shortened name (a sparse file's header name is GNU's `GNUSparseFile.0` form).
    fn name(&mut self, path: &[u8], sparse: bool) -> Vec<u8> {
        let name = if sparse {
            let (dir, base) = split_path(path);
            let mut name = dir.to_vec();
            name.extend_from_slice(b"GNUSparseFile.0/");
            name.extend_from_slice(base);
            name
        } else {
            path.to_vec()
        };
        if name.len() >= 100 || !name.is_ascii() {
            if !sparse {
                self.record("path", path);
            }
            let keep = name.len().min(99);
            return name[name.len() - keep..].to_vec();
        }
        name
    }

    /// Numbers too large for the header's octal fields, and times with their nanoseconds.
    fn numbers(&mut self, header: &Header) {
        if header.size > OCTAL_11 {
            self.record("size", header.size.to_string().as_bytes());
        }
        for (key, id) in [("uid", header.uid), ("gid", header.gid)] {
            if u64::from(id) > OCTAL_7 {
                self.record(key, id.to_string().as_bytes());
            }
        }
        self.record("mtime", time_text(header.mtime).as_bytes());
        self.record("atime", time_text(header.atime).as_bytes());
    }
}

const OCTAL_7: u64 = 0o7_777_777;
const OCTAL_11: u64 = 0o77_777_777_777;

fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Seconds since the epoch, with the nanoseconds when there are any (before 1970: negative).
fn time_text(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => format!("-{}", d.as_secs()),
                n => format!("-{}.{:09}", d.as_secs() + 1, 1_000_000_000 - n),
            }
        }
    }
}

/// A ustar header.
struct Header {
    kind: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: SystemTime,
    atime: SystemTime,
    link: Vec<u8>,
    device: Option<(u32, u32)>,
}

impl Header {
    fn new(attr: &Attr) -> Header {
        Header {
            kind: REGULAR,
            mode: u32::from(attr.perm) & 0o7777,
            uid: attr.uid,
            gid: attr.gid,
            size: 0,
            mtime: attr.mtime,
            atime: attr.atime,
            link: Vec::new(),
            device: None,
        }
    }

    /// The header of the pax record block that goes before `of`.
    fn new_pax(of: &Header, size: u64) -> Header {
        Header {
            kind: PAX,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: of.mtime,
            atime: of.atime,
            link: Vec::new(),
            device: None,
        }
    }

    fn encode(&self, name: &[u8]) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        let put = |b: &mut [u8; BLOCK], at: usize, len: usize, bytes: &[u8]| {
            let n = bytes.len().min(len);
            b[at..at + n].copy_from_slice(&bytes[..n]);
        };
        let octal = |b: &mut [u8; BLOCK], at: usize, len: usize, value: u64| {
            // Too large for the field: 0, and the pax record says it (`Pax::numbers`).
            let max = (1u64 << (3 * (len - 1) as u32)) - 1;
            let value = if value > max { 0 } else { value };
            let text = format!("{value:0width$o}", width = len - 1);
            b[at..at + len - 1].copy_from_slice(text.as_bytes());
        };
        put(&mut b, 0, 100, name);
        octal(&mut b, 100, 8, u64::from(self.mode));
        octal(&mut b, 108, 8, u64::from(self.uid));
        octal(&mut b, 116, 8, u64::from(self.gid));
        octal(&mut b, 124, 12, self.size);
        let secs = self
            .mtime
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        octal(&mut b, 136, 12, secs);
        b[156] = self.kind;
        put(&mut b, 157, 100, &self.link);
        put(&mut b, 257, 6, b"ustar\0");
        put(&mut b, 263, 2, b"00");
        if let Some((major, minor)) = self.device {
            octal(&mut b, 329, 8, u64::from(major));
            octal(&mut b, 337, 8, u64::from(minor));
        }
        // The checksum is taken with its own field as spaces.
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        let text = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(text.as_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pax_record_counts_its_own_length() {
        let mut pax = Pax::default();
        pax.record("path", b"x");
        assert_eq!(pax.records, b"9 path=x\n");
        let mut pax = Pax::default();
        let value = vec![b'a'; 91];
        pax.record("path", &value);
        // 98 bytes without the length: a 2-digit length would make 100, which has 3 digits.
        let text = String::from_utf8(pax.records.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), pax.records.len());
    }

    #[test]
    fn a_sparse_map_ends_with_the_file_size() {
        let map = sparse_map(&[(4096, 8192)], 1 << 20);
        assert_eq!(map.len(), BLOCK);
        let text = String::from_utf8(map).unwrap();
        assert!(text.starts_with("2\n4096\n8192\n1048576\n0\n"), "{text:?}");
        let full = sparse_map(&[(0, 10)], 10);
        assert!(String::from_utf8(full).unwrap().starts_with("1\n0\n10\n"));
    }

    #[test]
    fn times_before_the_epoch_are_negative() {
        let t = UNIX_EPOCH - std::time::Duration::new(1, 250_000_000);
        assert_eq!(time_text(t), "-2.750000000");
        assert_eq!(time_text(UNIX_EPOCH + std::time::Duration::new(5, 0)), "5");
    }

    #[test]
    fn a_header_checksum_is_what_tar_expects() {
        let attr = Attr {
            ino: 2,
            size: 6,
            blocks: 8,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            kind: FileKind::File,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
        };
        let mut h = Header::new(&attr);
        h.size = 6;
        let b = h.encode(b"./a");
        let mut copy = b;
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|&x| u32::from(x)).sum();
        let field = std::str::from_utf8(&b[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
    }
}
