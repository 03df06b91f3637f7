//! The catalog: volumes, options, labels, mount references and usage, in one redb file.
//!
//! Tables (all `&str -> &[u8]`): `volumes` (name -> VolumeRecord), `usage` (name -> Usage) and
//! `meta` (`format` -> catalog format, u32 little-endian). Values go through `codec`.
//! Invariants: every write is one durable transaction; a usage row exists only beside its
//! volume row; an existing file is never initialized over; every transaction begins and ends
//! inside one method of `Store`, under the read guard of `Store::db`.
//!
//! After an I/O error (a full disk, above all) redb refuses every later transaction of that
//! handle ("Previous I/O error occurred"). The store then closes the handle and opens the file
//! again (redb recovers the last committed state), so the failed operation is reported as an
//! error and the next one works as soon as the cause is gone.
mod codec;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use redb::backends::FileBackend;
use redb::{
    Builder, Database, ReadableDatabase, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};
use thiserror::Error;

use crate::model::{Usage, VolumeRecord};
use codec::Stored;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("catalog {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("catalog entry {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("catalog: {0}")]
    Db(String),
    /// Reading or writing the file failed (a full disk, an I/O error); the store has opened
    /// the file again, or tries to at its next use.
    #[error("catalog: {0}")]
    Io(String),
}

type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const VOLUMES: Table = TableDefinition::new("volumes");
const USAGE: Table = TableDefinition::new("usage");
const META: Table = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
/// Bump when tables or keys change incompatibly; values carry their own schema byte.
const FORMAT: u32 = 1;

/// Opens an existing catalog file as a redb database.
type Opener = Box<dyn Fn(&Path) -> Result<Database, String> + Send + Sync>;

/// How long catalog commits take (each an fsync), over every store of the process.
static COMMIT_LATENCY: crate::model::Histogram = crate::model::Histogram::new();

/// The latency of catalog commits so far.
pub fn commit_latency() -> crate::model::HistogramSnapshot {
    COMMIT_LATENCY.snapshot()
}

pub struct Store {
    path: PathBuf,
    /// The open database, or why opening it again after an I/O error failed (the next use
    /// tries again). Transactions live under the read guard only, so whoever holds the write
    /// guard knows that none is alive.
    db: RwLock<Result<Database, String>>,
    opener: Opener,
}

impl Store {
    /// Opens the catalog, creating it only when the file does not exist. A file that exists but
    /// cannot be read as an fvol catalog is an error; it is never recreated.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let fail = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        // create_new, not exists() then create: no window in which another file could appear.
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(file) => Self::create(path, file).map_err(|reason| {
                // The file is ours and holds no catalog; leaving it would block the next start.
                let _ = std::fs::remove_file(path);
                fail(reason)
            }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Self::open_existing(path, Box::new(open_file)).map_err(fail)
            }
            Err(e) => Err(fail(format!("cannot create it: {e}"))),
        }
    }

    fn create(path: &Path, file: File) -> Result<Store, String> {
        let backend = FileBackend::new(file).map_err(open_reason)?;
        let db = Builder::new()
            .create_with_backend(backend)
            .map_err(open_reason)?;
        let txn = db.begin_write().map_err(open_reason)?;
        {
            txn.open_table(VOLUMES).map_err(open_reason)?;
            txn.open_table(USAGE).map_err(open_reason)?;
            let mut meta = txn.open_table(META).map_err(open_reason)?;
            meta.insert(FORMAT_KEY, FORMAT.to_le_bytes().as_slice())
                .map_err(open_reason)?;
        }
        txn.commit().map_err(open_reason)?;
        // The new directory entry must survive a crash too, or the next start finds no catalog.
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync its directory: {e}"))?;
        Ok(Store::with_db(path, db, Box::new(open_file)))
    }

    fn with_db(path: &Path, db: Database, opener: Opener) -> Store {
        Store {
            path: path.to_path_buf(),
            db: RwLock::new(Ok(db)),
            opener,
        }
    }

    fn open_existing(path: &Path, opener: Opener) -> Result<Store, String> {
        // Only a first start interrupted before its first commit leaves an empty file.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err("it is empty, so it holds no catalog; remove it to start a new one".into());
        }
        let db = opener(path)?;
        let store = Store::with_db(path, db, opener);
        store.check_format()?;
        // Refuse a corrupt catalog now, at daemon start, rather than on first use.
        let corrupt = |e: StoreError| match e {
            StoreError::Corrupt { what, reason } => format!("{what} is corrupt: {reason}"),
            other => other.to_string(),
        };
        store.check_records().map_err(corrupt)?;
        store.migrate_records();
        Ok(store)
    }

    fn check_format(&self) -> Result<(), String> {
        let not_ours = "it is a redb database but not an fvol catalog (it has no format version)";
        let db = self.db.read();
        let db = db.as_ref().map_err(Clone::clone)?;
        let txn = db.begin_read().map_err(open_reason)?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => return Err(not_ours.to_string()),
            Err(e) => return Err(open_reason(e)),
        };
        let raw = meta.get(FORMAT_KEY).map_err(open_reason)?.ok_or(not_ours)?;
        let format = <[u8; 4]>::try_from(raw.value())
            .map(u32::from_le_bytes)
            .map_err(|_| format!("its format version is unreadable ({:?})", raw.value()))?;
        if format != FORMAT {
            return Err(format!(
                "catalog format {format} is not supported; this fvol reads format {FORMAT}"
            ));
        }
        Ok(())
    }

    fn check_records(&self) -> Result<(), StoreError> {
        let op = "checking the catalog";
        self.run(op, |db| {
            let txn = db.begin_read().context(op)?;
            for entry in txn.open_table(VOLUMES).context(op)?.iter().context(op)? {
                let (key, value) = entry.context(op)?;
                let name = key.value();
                let what = volume_what(name);
                let rec: VolumeRecord = codec::decode(&what, value.value())?;
                if rec.name != name {
                    return Err(StoreError::Corrupt {
                        what,
                        reason: format!("it holds the record of {:?}", rec.name),
                    });
                }
            }
            for entry in txn.open_table(USAGE).context(op)?.iter().context(op)? {
                let (key, value) = entry.context(op)?;
                codec::decode::<Usage>(&usage_what(key.value()), value.value())?;
            }
            Ok(())
        })
    }

    /// Rewrites records of an older schema in the current one, in one transaction. Old records
    /// read correctly either way, so a failure (a full disk at start) is only logged; the next
    /// start tries again.
    fn migrate_records(&self) {
        let op = "migrating volume records to the current schema";
        let migrated = self.write(op, |txn, op| {
            let mut volumes = txn.open_table(VOLUMES).context(op)?;
            let mut old = Vec::new();
            for entry in volumes.iter().context(op)? {
                let (key, value) = entry.context(op)?;
                if codec::schema_of(value.value()) != Some(VolumeRecord::SCHEMA) {
                    let what = volume_what(key.value());
                    let rec: VolumeRecord = codec::decode(&what, value.value())?;
                    old.push((key.value().to_string(), codec::encode(&what, &rec)?));
                }
            }
            for (name, value) in &old {
                volumes
                    .insert(name.as_str(), value.as_slice())
                    .context(op)?;
            }
            if !old.is_empty() {
                log::info!(
                    "catalog: {} volume record(s) rewritten in schema {}",
                    old.len(),
                    VolumeRecord::SCHEMA
                );
            }
            Ok(())
        });
        if let Err(e) = migrated {
            log::warn!("{e}; old records are still read as they are");
        }
    }

    /// The record of `name`, in whatever state (see `VolumeState`).
    pub fn get(&self, name: &str) -> Result<Option<VolumeRecord>, StoreError> {
        self.read(VOLUMES, name, &volume_what(name))
    }

    /// Every record, in name order, in whatever state.
    pub fn list(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        let op = "listing volumes";
        self.run(op, |db| {
            let txn = db.begin_read().context(op)?;
            let table = txn.open_table(VOLUMES).context(op)?;
            // redb iterates &str keys in byte order, which is name order.
            let records = table.iter().context(op)?.map(|entry| {
                let (key, value) = entry.context(op)?;
                codec::decode(&volume_what(key.value()), value.value())
            });
            records.collect()
        })
    }

    pub fn put(&self, rec: &VolumeRecord) -> Result<(), StoreError> {
        let what = volume_what(&rec.name);
        let value = codec::encode(&what, rec)?;
        self.write(&format!("writing {what}"), |txn, op| {
            let mut volumes = txn.open_table(VOLUMES).context(op)?;
            volumes
                .insert(rec.name.as_str(), value.as_slice())
                .context(op)?;
            Ok(())
        })
    }

    /// Writes a record and its usage in one transaction.
    pub fn put_with_usage(&self, rec: &VolumeRecord, usage: Usage) -> Result<(), StoreError> {
        let what = volume_what(&rec.name);
        let value = codec::encode(&what, rec)?;
        let usage = codec::encode(&usage_what(&rec.name), &usage)?;
        self.write(&format!("writing {what}"), |txn, op| {
            txn.open_table(VOLUMES)
                .context(op)?
                .insert(rec.name.as_str(), value.as_slice())
                .context(op)?;
            txn.open_table(USAGE)
                .context(op)?
                .insert(rec.name.as_str(), usage.as_slice())
                .context(op)?;
            Ok(())
        })
    }

    /// Removes the volume and its usage.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.write(&format!("removing {}", volume_what(name)), |txn, op| {
            txn.open_table(VOLUMES)
                .context(op)?
                .remove(name)
                .context(op)?;
            txn.open_table(USAGE)
                .context(op)?
                .remove(name)
                .context(op)?;
            Ok(())
        })
    }

    /// The last persisted usage; the default (all zero, not clean) when none was stored.
    pub fn usage(&self, name: &str) -> Result<Usage, StoreError> {
        Ok(self
            .read(USAGE, name, &usage_what(name))?
            .unwrap_or_default())
    }

    /// Fails when the volume is not in the catalog, so a late flush after `remove` cannot
    /// leave a usage row that a new volume of the same name would inherit.
    pub fn set_usage(&self, name: &str, usage: Usage) -> Result<(), StoreError> {
        let what = usage_what(name);
        let value = codec::encode(&what, &usage)?;
        self.write(&format!("writing {what}"), |txn, op| {
            let known = txn
                .open_table(VOLUMES)
                .context(op)?
                .get(name)
                .context(op)?
                .is_some();
            if !known {
                return Err(StoreError::Db(format!(
                    "{op}: no such volume in the catalog"
                )));
            }
            txn.open_table(USAGE)
                .context(op)?
                .insert(name, value.as_slice())
                .context(op)?;
            Ok(())
        })
    }

    fn read<T: Stored>(
        &self,
        table: Table,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let op = format!("reading {what}");
        self.run(&op, |db| {
            let txn = db.begin_read().context(&op)?;
            let table = txn.open_table(table).context(&op)?;
            match table.get(key).context(&op)? {
                Some(value) => codec::decode(what, value.value()).map(Some),
                None => Ok(None),
            }
        })
    }

    /// One write transaction, committed with immediate (fsync) durability only if `body`
    /// succeeds; on error it is dropped, which aborts it.
    fn write(
        &self,
        op: &str,
        body: impl FnOnce(&WriteTransaction, &str) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.run(op, |db| {
            let txn = db.begin_write().context(op)?;
            body(&txn, op)?;
            let started = std::time::Instant::now();
            let committed = txn.commit().context(op);
            COMMIT_LATENCY.observe(started.elapsed());
            committed
        })
    }

    /// Runs `f`, which begins and ends its transactions, on the open database. After an I/O
    /// error the handle is closed and the file opened again before the error is returned: redb
    /// refuses every later transaction of a handle that saw one. A closed handle (the last
    /// reopen failed) is opened again first.
    fn run<T>(
        &self,
        op: &str,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.db.read().is_err() {
            self.reopen();
        }
        let result = match &*self.db.read() {
            Ok(db) => f(db),
            Err(why) => Err(StoreError::Io(format!(
                "{op}: it is closed after an I/O error and cannot be opened again yet: {why}"
            ))),
        };
        if let Err(StoreError::Io(e)) = &result {
            log::warn!("catalog: {e}; opening {} again", self.path.display());
            self.reopen();
        }
        result
    }

    /// Closes the database and opens the file again; redb recovers the last committed state.
    fn reopen(&self) {
        // The write guard: no transaction is alive (they live under the read guard only).
        let mut db = self.db.write();
        // The old handle must be closed (and its file locks gone) before the file is opened
        // again.
        *db = Err("it was being opened again".to_string());
        *db = (self.opener)(&self.path);
        match &*db {
            Ok(_) => log::info!("catalog {}: opened again", self.path.display()),
            Err(e) => log::warn!("catalog {}: cannot open it again: {e}", self.path.display()),
        }
    }
}

/// Opens an existing catalog file. With the integrity check, a file damaged outside redb is
/// an error rather than a panic.
fn open_file(path: &Path) -> Result<Database, String> {
    Builder::new()
        .set_check_integrity_on_open(true)
        .open(path)
        .map_err(open_reason)
}

fn volume_what(name: &str) -> String {
    format!("volume {name:?}")
}

fn usage_what(name: &str) -> String {
    format!("usage of volume {name:?}")
}

/// Why an existing file could not be opened as a catalog, in words a user can act on.
fn open_reason(e: impl Into<redb::Error>) -> String {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            "it is in use by another process (is another fvol daemon running on this root?)"
                .to_string()
        }
        redb::Error::Corrupted(detail) => {
            format!("it is not a readable redb database ({detail}); it is corrupt or not a catalog")
        }
        redb::Error::UpgradeRequired(version) => {
            format!("its redb file format {version} is not supported by this fvol")
        }
        // redb reports a file that is not a redb database (bad magic, empty) as InvalidData.
        redb::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
            format!("it is not a readable redb database ({e}); it is corrupt or not a catalog")
        }
        redb::Error::Io(e) => format!("cannot read or write it: {e}"),
        other => other.to_string(),
    }
}

/// Adds which operation failed to a redb error; I/O errors become `StoreError::Io`.
trait Context<T> {
    fn context(self, op: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Context<T> for Result<T, E> {
    fn context(self, op: &str) -> Result<T, StoreError> {
        self.map_err(|e| match e.into() {
            e @ (redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed) => {
                StoreError::Io(format!("{op}: {e}"))
            }
            e => StoreError::Db(format!("{op}: {e}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use rand::Rng;

    use super::*;
    use crate::model::{MountRef, RefKind, VolumeState};

    fn record(name: &str) -> VolumeRecord {
        VolumeRecord {
            name: name.to_string(),
            driver: "local".to_string(),
            options: BTreeMap::from([("size".to_string(), "10G".to_string())]),
            labels: BTreeMap::from([("team".to_string(), "storage".to_string())]),
            created_at: 1_700_000_000,
            mount_refs: BTreeMap::from([(
                "cli:/mnt/x".to_string(),
                MountRef {
                    kind: RefKind::Cli,
                    target: Some(PathBuf::from("/mnt/x")),
                    since: 1_700_000_001,
                    bind_mount_id: Some(42),
                },
            )]),
            owns_backing: true,
            backing_identity: None,
            state: VolumeState::Ready,
        }
    }

    fn open_reason_of(path: &Path) -> String {
        match Store::open(path) {
            Err(StoreError::Open { path: p, reason }) => {
                assert_eq!(p, path.display().to_string());
                reason
            }
            Err(other) => panic!("expected StoreError::Open, got {other:?}"),
            Ok(_) => panic!("expected StoreError::Open, got a store"),
        }
    }

    /// Writes raw bytes into a table of the catalog, behind the store's back.
    fn poke(path: &Path, table: Table, key: &str, value: &[u8]) {
        let db = Database::open(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(table).unwrap().insert(key, value).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("fvol.redb")).unwrap();
        assert_eq!(store.get("v1").unwrap(), None);
        assert!(store.list().unwrap().is_empty());

        for name in ["b1", "a1", "C1"] {
            store.put(&record(name)).unwrap();
        }
        assert_eq!(store.get("a1").unwrap(), Some(record("a1")));
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["C1", "a1", "b1"]);

        let mut changed = record("a1");
        changed.mount_refs.clear();
        store.put(&changed).unwrap();
        assert_eq!(store.get("a1").unwrap(), Some(changed));

        assert_eq!(store.usage("a1").unwrap(), Usage::default());
        let usage = Usage {
            bytes: 5 << 30,
            inodes: 42,
            clean: true,
        };
        store.set_usage("a1", usage).unwrap();
        assert_eq!(store.usage("a1").unwrap(), usage);

        store.remove("a1").unwrap();
        assert_eq!(store.get("a1").unwrap(), None);
        assert_eq!(store.usage("a1").unwrap(), Usage::default());
        store.remove("a1").unwrap();
        assert_eq!(store.list().unwrap().len(), 2);

        // No usage row without its volume: a new "a1" must not inherit the old usage.
        let err = store.set_usage("a1", usage).unwrap_err().to_string();
        assert!(
            err.contains("no such volume") && err.contains("\"a1\""),
            "{err}"
        );
        store.put(&record("a1")).unwrap();
        assert_eq!(store.usage("a1").unwrap(), Usage::default());
    }

    #[test]
    fn reopen_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        let usage = Usage {
            bytes: 1,
            inodes: 2,
            clean: false,
        };
        {
            let store = Store::open(&path).unwrap();
            store.put(&record("v1")).unwrap();
            store.set_usage("v1", usage).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list().unwrap(), vec![record("v1")]);
        assert_eq!(store.usage("v1").unwrap(), usage);
    }

    #[test]
    fn new_file_records_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        drop(Store::open(&path).unwrap());
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(
            meta.get(FORMAT_KEY).unwrap().unwrap().value(),
            1u32.to_le_bytes()
        );
    }

    #[test]
    fn garbage_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        let mut garbage = vec![0u8; 8192];
        rand::rng().fill(garbage.as_mut_slice());
        std::fs::write(&path, &garbage).unwrap();

        let reason = open_reason_of(&path);
        assert!(reason.contains("not a readable redb database"), "{reason}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn empty_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        std::fs::write(&path, b"").unwrap();
        assert!(open_reason_of(&path).contains("it is empty"));
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn corrupt_value_is_refused_naming_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        Store::open(&path).unwrap().put(&record("good")).unwrap();
        poke(&path, VOLUMES, "broken", &[1, 0xff, 0xff]);
        let reason = open_reason_of(&path);
        assert!(
            reason.starts_with("volume \"broken\" is corrupt: "),
            "{reason}"
        );
    }

    #[test]
    fn bad_usage_and_misfiled_record_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        Store::open(&path).unwrap().put(&record("v1")).unwrap();
        poke(&path, USAGE, "v1", &[7, 0, 0, 0]);
        let reason = open_reason_of(&path);
        assert!(
            reason.contains("usage of volume \"v1\" is corrupt: unknown schema version 7"),
            "{reason}"
        );

        let path = dir.path().join("other.redb");
        drop(Store::open(&path).unwrap());
        poke(
            &path,
            VOLUMES,
            "v2",
            &codec::encode("", &record("v3")).unwrap(),
        );
        let reason = open_reason_of(&path);
        assert!(
            reason.contains("volume \"v2\" is corrupt: it holds the record of \"v3\""),
            "{reason}"
        );
    }

    #[test]
    fn foreign_or_newer_catalog_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("foreign.redb");
        drop(Database::create(&foreign).unwrap());
        assert!(open_reason_of(&foreign).contains("not an fvol catalog"));

        let newer = dir.path().join("newer.redb");
        drop(Store::open(&newer).unwrap());
        poke(&newer, META, FORMAT_KEY, &2u32.to_le_bytes());
        let reason = open_reason_of(&newer);
        assert!(
            reason.contains("catalog format 2 is not supported"),
            "{reason}"
        );
    }

    #[test]
    fn second_open_is_refused_while_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        let _store = Store::open(&path).unwrap();
        assert!(open_reason_of(&path).contains("in use by another process"));
    }

    #[test]
    fn damaged_pages_are_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        {
            let store = Store::open(&path).unwrap();
            for i in 0..50 {
                store.put(&record(&format!("v{i}"))).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // Past the header: flip every byte of the data pages.
        for b in &mut bytes[4096..] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let reason = open_reason_of(&path);
        assert!(reason.contains("not a readable redb database"), "{reason}");
    }

    /// A file backend that fails on demand, as a full disk does.
    #[derive(Debug)]
    struct FlakyBackend {
        inner: FileBackend,
        faults: Arc<Faults>,
    }

    /// What fails: writes (and syncs and resizes), or also reads.
    #[derive(Debug, Default)]
    struct Faults {
        writes: AtomicBool,
        reads: AtomicBool,
    }

    fn no_space() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    impl redb::StorageBackend for FlakyBackend {
        fn len(&self) -> Result<u64, io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            if self.faults.reads.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            if self.faults.writes.load(Ordering::SeqCst) {
                return Err(no_space());
            }
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), io::Error> {
            if self.faults.writes.load(Ordering::SeqCst) {
                return Err(no_space());
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            if self.faults.writes.load(Ordering::SeqCst) {
                return Err(no_space());
            }
            self.inner.write(offset, data)
        }
        fn close(&self) -> Result<(), io::Error> {
            self.inner.close()
        }
        fn try_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.inner.try_lock_range(start, end)
        }
        fn try_lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.inner.try_lock_shared_range(start, end)
        }
        fn lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.inner.lock_range(start, end)
        }
        fn lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.inner.lock_shared_range(start, end)
        }
        fn unlock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<(), redb::BackendError> {
            self.inner.unlock_range(start, end)
        }
        fn query_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> Result<bool, redb::BackendError> {
            self.inner.query_lock_range(start, end)
        }
    }

    /// A catalog at `path` (created normally first) served through a `FlakyBackend`; every
    /// reopen gets a new backend with the same faults.
    fn flaky_store(path: &Path) -> (Store, Arc<Faults>) {
        drop(Store::open(path).unwrap());
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let opener: Opener = Box::new(move |path: &Path| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| e.to_string())?;
            let backend = FlakyBackend {
                inner: FileBackend::new(file).map_err(open_reason)?,
                faults: shared.clone(),
            };
            Builder::new()
                .create_with_backend(backend)
                .map_err(open_reason)
        });
        (Store::open_existing(path, opener).unwrap(), faults)
    }

    #[test]
    fn writes_work_again_after_an_io_error_without_losing_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        let (store, faults) = flaky_store(&path);
        store.put(&record("before")).unwrap();

        faults.writes.store(true, Ordering::SeqCst);
        let err = store.put(&record("failed")).unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err:?}");
        assert!(err.to_string().contains("No space left"), "{err}");
        // Writes keep failing while the disk is full.
        assert!(store.set_usage("before", Usage::default()).is_err());

        // Space is back: the same store writes again, without a restart.
        faults.writes.store(false, Ordering::SeqCst);
        store.put(&record("after")).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["after", "before"]);

        // What was acknowledged is on disk; what failed is not.
        drop(store);
        let store = Store::open(&path).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["after", "before"]);
    }

    #[test]
    fn a_failed_reopen_is_tried_again_at_the_next_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        let (store, faults) = flaky_store(&path);
        store.put(&record("v1")).unwrap();

        // While writes fail, the file cannot even be opened again (redb repairs a file that
        // was not closed cleanly, which writes): every use fails, naming the cause.
        faults.writes.store(true, Ordering::SeqCst);
        assert!(store.put(&record("v2")).is_err());
        let err = store.get("v1").unwrap_err().to_string();
        assert!(
            err.contains("cannot be opened again yet") && err.contains("No space left"),
            "{err}"
        );
        // So does a read error at the reopen.
        faults.reads.store(true, Ordering::SeqCst);
        let err = store.list().unwrap_err().to_string();
        assert!(err.contains("cannot be opened again yet"), "{err}");

        faults.writes.store(false, Ordering::SeqCst);
        faults.reads.store(false, Ordering::SeqCst);
        assert_eq!(store.get("v1").unwrap(), Some(record("v1")));
        store.put(&record("v3")).unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn a_schema_1_catalog_opens_and_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fvol.redb");
        drop(Store::open(&path).unwrap());
        // Written by fvol before schema 2 (the tables and format have not changed).
        poke(&path, VOLUMES, "old", codec::tests::old_record_bytes());
        poke(&path, USAGE, "old", &[1, 128, 64, 2, 1]);

        let store = Store::open(&path).unwrap();
        assert_eq!(store.get("old").unwrap(), Some(codec::tests::old_record()));
        assert_eq!(
            store.usage("old").unwrap(),
            Usage {
                bytes: 8192,
                inodes: 2,
                clean: true
            }
        );
        drop(store);
        // The open rewrote the record in the current schema.
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let volumes = txn.open_table(VOLUMES).unwrap();
        let raw = volumes.get("old").unwrap().unwrap();
        assert_eq!(codec::schema_of(raw.value()), Some(VolumeRecord::SCHEMA));
    }

    #[test]
    fn intents_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("fvol.redb")).unwrap();
        for state in [VolumeState::Creating, VolumeState::Removing] {
            let mut rec = record("v1");
            rec.state = state;
            store.put(&rec).unwrap();
            assert_eq!(store.get("v1").unwrap().unwrap().state, state);
        }
        let usage = Usage {
            bytes: 4096,
            inodes: 1,
            clean: true,
        };
        store.put_with_usage(&record("v1"), usage).unwrap();
        assert_eq!(store.get("v1").unwrap(), Some(record("v1")));
        assert_eq!(store.usage("v1").unwrap(), usage);
    }
}
