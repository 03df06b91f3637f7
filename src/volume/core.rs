//! The volume logic under `VolumeManager`: validation, driver dispatch, references, mounts.
