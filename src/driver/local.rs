//! The `local` driver: a host directory, under ROOT or given with `-o mount=`.
use super::*;
use crate::volume::Usage;

pub struct LocalDriver;

impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }
    fn option_keys(&self) -> &'static [&'static str] {
        &["size", "inodes", "uid", "gid", "mode", "mount"]
    }
    fn validate(&self, _ctx: &DriverContext, _opts: &VolumeOptions) -> Result<(), VolumeError> {
        unimplemented!()
    }
    fn create(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &VolumeOptions,
    ) -> Result<bool, VolumeError> {
        unimplemented!()
    }
    fn remove(&self, _ctx: &DriverContext, _rec: &VolumeRecord) -> Result<(), VolumeError> {
        unimplemented!()
    }
    fn activate(
        &self,
        _ctx: &DriverContext,
        _rec: &VolumeRecord,
        _opts: &VolumeOptions,
        _stored: Usage,
    ) -> Result<Activation, VolumeError> {
        unimplemented!()
    }
}
