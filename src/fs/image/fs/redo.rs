//! The records of the redo journal (`journal`): one per logged transaction, the operation with
//! what its first run decided (inode numbers, the time, the bytes written), and their replay
//! at a takeover after a crash.
//!
//! Replay starts from the image's last durable commit, which holds every record up to the
//! number it stores (`store::JOURNAL_SEQ`) and none after: each later record is run once, in
//! order, on exactly the state its first run saw, so it does what that run did. Operations
//! that make a change in several transactions (a long truncate, a delete) log their last one,
//! and what the earlier ones did (unmapping towards the same end) is what the replay does
//! again. Inodes left without a name stay until the kernel's handles are restored
//! (`handles_restored`), as after any crash.
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::store::{CLOCK, FORCED_INO, InodeRec, time};
use super::{ImageFs, journal};
use crate::fs::{Caller, FsError, Ino, Rename, SetAttr, TimeSet, VolumeFs};

type Stamp = (i64, u32);

#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    Make {
        uid: u32,
        gid: u32,
        umask: u32,
        parent: Ino,
        name: Vec<u8>,
        rec: InodeRec,
        ino: Ino,
    },
    Remove {
        parent: Ino,
        name: Vec<u8>,
        dir: bool,
    },
    Rename {
        uid: u32,
        gid: u32,
        parent: Ino,
        name: Vec<u8>,
        new_parent: Ino,
        new_name: Vec<u8>,
        flags: u32,
        whiteout: Option<Ino>,
    },
    Link {
        ino: Ino,
        new_parent: Ino,
        name: Vec<u8>,
    },
    /// Times: None, not set; Some(None), now (the record's time).
    SetAttr {
        uid: u32,
        ino: Ino,
        mode: Option<u32>,
        owner: Option<u32>,
        group: Option<u32>,
        size: Option<u64>,
        atime: Option<Option<Stamp>>,
        mtime: Option<Option<Stamp>>,
        ctime: Option<Stamp>,
    },
    /// A write by an unprivileged caller drops setuid, setgid and capabilities.
    KillPrivileges {
        ino: Ino,
    },
    /// The bytes written follow the record's head.
    Write {
        ino: Ino,
        offset: u64,
    },
    SetXattr {
        ino: Ino,
        name: Vec<u8>,
        value: Vec<u8>,
        flags: i32,
        kill_sgid: bool,
    },
    RemoveXattr {
        ino: Ino,
        name: Vec<u8>,
    },
    Fallocate {
        ino: Ino,
        offset: u64,
        len: u64,
        mode: i32,
    },
    /// An inode without a name that nothing held any more was deleted (in steps).
    Reap {
        ino: Ino,
    },
}

#[derive(Serialize, Deserialize)]
struct Head {
    time: Stamp,
    op: Op,
}

/// A record's payload without its data: a length, then the head.
pub fn encode(op: Op, time: Stamp) -> Vec<u8> {
    let head = Head { time, op };
    let bytes = postcard::to_allocvec(&head).expect("a record encodes");
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
    out
}

fn decode(payload: &[u8]) -> Result<(Head, &[u8]), String> {
    let len = payload
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
        .ok_or("a record shorter than its length")?;
    let head = payload
        .get(4..4 + len)
        .ok_or("a record shorter than its head")?;
    let head: Head = postcard::from_bytes(head).map_err(|e| format!("a record: {e}"))?;
    Ok((head, &payload[4 + len..]))
}

fn when(t: Option<Stamp>) -> TimeSet {
    t.map_or(TimeSet::Now, |s| TimeSet::At(time(s)))
}

pub fn time_of(t: TimeSet) -> Option<Stamp> {
    match t {
        TimeSet::Now => None,
        TimeSet::At(t) => Some(super::store::stamp(t)),
    }
}

fn caller(uid: u32, gid: u32, umask: u32) -> Caller {
    Caller {
        uid,
        gid,
        pid: 0,
        umask,
    }
}

impl ImageFs {
    /// Replays the records a crashed predecessor acknowledged after the image's last durable
    /// commit (which covers up to `committed`), then commits durably. Fails, naming the record,
    /// when one cannot be read or does not do what it did the first time.
    pub(super) fn replay(
        &self,
        found: Vec<journal::Found>,
        committed: u64,
    ) -> Result<usize, String> {
        let later: Vec<_> = found.into_iter().filter(|f| f.seq > committed).collect();
        if let Some(first) = later.first()
            && first.seq != committed + 1
        {
            return Err(format!(
                "the redo journal starts at record {} but the image's last durable commit \
                 covers records up to {committed}: records in between are missing",
                first.seq
            ));
        }
        let count = later.len();
        for f in later {
            let (head, data) =
                decode(&f.payload).map_err(|e| format!("redo journal record {}: {e}", f.seq))?;
            let what = format!("{:?}", head.op);
            self.replaying.store(f.seq, Ordering::SeqCst);
            CLOCK.with(|c| c.set(Some(head.time)));
            let done = self.apply(head.op, data);
            CLOCK.with(|c| c.set(None));
            FORCED_INO.with(|c| c.set(None));
            self.replaying.store(0, Ordering::SeqCst);
            done.map_err(|e| format!("replaying redo journal record {} ({what}): {e}", f.seq))?;
        }
        // What the kernel looks up is not known here (lookups are not carried over).
        self.live.lock().clear();
        if count > 0 {
            self.commit_durably()
                .map_err(|e| format!("the durable commit after the replay: {e}"))?;
        }
        Ok(count)
    }

    fn apply(&self, op: Op, data: &[u8]) -> Result<(), String> {
        let show = |e: FsError| format!("{e} ({e:?})");
        let name = |n: &[u8]| OsStr::from_bytes(n).to_os_string();
        match op {
            Op::Make {
                uid,
                gid,
                umask,
                parent,
                name: n,
                rec,
                ino,
            } => {
                FORCED_INO.with(|f| f.set(Some(ino)));
                let entry = self
                    .make(&caller(uid, gid, umask), parent, &name(&n), rec)
                    .map_err(show)?;
                if entry.attr.ino != ino {
                    return Err(format!("made inode {} instead of {ino}", entry.attr.ino));
                }
            }
            Op::Remove {
                parent,
                name: n,
                dir,
            } => self.remove(parent, &name(&n), dir).map_err(show)?,
            Op::Rename {
                uid,
                gid,
                parent,
                name: n,
                new_parent,
                new_name,
                flags,
                whiteout,
            } => {
                FORCED_INO.with(|f| f.set(whiteout));
                let (a, b) = (name(&n), name(&new_name));
                self.rename(&Rename {
                    caller: caller(uid, gid, 0),
                    parent,
                    name: &a,
                    new_parent,
                    new_name: &b,
                    flags,
                })
                .map_err(show)?;
            }
            Op::Link {
                ino,
                new_parent,
                name: n,
            } => {
                self.link(&caller(0, 0, 0), ino, new_parent, &name(&n))
                    .map_err(show)?;
            }
            Op::SetAttr {
                uid,
                ino,
                mode,
                owner,
                group,
                size,
                atime,
                mtime,
                ctime,
            } => {
                let change = SetAttr {
                    mode,
                    uid: owner,
                    gid: group,
                    size,
                    atime: atime.map(when),
                    mtime: mtime.map(when),
                    ctime: ctime.map(time),
                    fh: None,
                };
                self.setattr(&caller(uid, 0, 0), ino, &change)
                    .map_err(show)?;
            }
            Op::KillPrivileges { ino } => self.kill_privileges(ino).map_err(show)?,
            Op::Write { ino, offset } => {
                let n = self.write_data(ino, offset, data).map_err(show)?;
                if n as usize != data.len() {
                    return Err(format!("wrote {n} of {} bytes at {offset}", data.len()));
                }
            }
            Op::SetXattr {
                ino,
                name: n,
                value,
                flags,
                kill_sgid,
            } => self
                .setxattr(ino, &name(&n), &value, flags, kill_sgid)
                .map_err(show)?,
            Op::RemoveXattr { ino, name: n } => self.removexattr(ino, &name(&n)).map_err(show)?,
            Op::Fallocate {
                ino,
                offset,
                len,
                mode,
            } => self.fallocate_data(ino, offset, len, mode).map_err(show)?,
            Op::Reap { ino } => self.delete_unlinked(ino).map_err(show)?,
        }
        Ok(())
    }
}
