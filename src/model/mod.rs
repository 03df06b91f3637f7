//! Plain data every layer above shares: what the catalog keeps per volume (`record`), and the
//! classes errors fall into (`ErrorClass`). Imports nothing else of fvol, so `volume`, `store`
//! and `driver` can all use it without importing each other.
pub mod class;
pub mod histogram;
pub mod record;

pub use class::ErrorClass;
pub use histogram::{Histogram, HistogramSnapshot};
pub use record::{DirIdentity, MountRef, RefKind, Usage, VolumeRecord, VolumeState};
