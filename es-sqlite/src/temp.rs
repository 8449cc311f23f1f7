//! The directory of a temporary store.

use std::path::{Path, PathBuf};

/// A new directory under the system's temporary directory, removed (with everything in it)
/// when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("es-sqlite-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Connections still closing keep their open files (unlinked); nothing can create a
        // file in the removed directory.
        if let Err(error) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), %error, "cannot remove a temporary store");
        }
    }
}
