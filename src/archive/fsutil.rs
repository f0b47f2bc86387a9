//! Durable, private file creation: temp files that vanish unless persisted, no-clobber
//! publication, 0700 directories, directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::naming::TEMP_PREFIX;

/// Creates `dir` and any missing parents. New directories get mode 0700; existing ones are left
/// as they are (the user may have chosen their own permissions for the destination root).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// fsyncs a directory so that a rename or link inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// A file being written under a hidden temporary name in its final directory. Dropping it
/// without persisting removes it, so an error or a cancelled task never leaves a partial file.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl TempFile {
    /// Creates `<dir>/.tmp-<final_name>-<random>` with mode 0600 (never an existing file).
    pub fn create(dir: &Path, final_name: &str) -> io::Result<TempFile> {
        let mut attempts = 0;
        loop {
            let path = dir.join(format!(
                "{TEMP_PREFIX}{final_name}-{:016x}",
                rand::random::<u64>()
            ));
            let mut options = OpenOptions::new();
            options.write(true).read(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(&path) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        persisted: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Publishes the (already fsynced) file as `dest` without ever replacing an existing file:
    /// a hard link fails atomically if `dest` exists. Falls back to check-then-rename on file
    /// systems without hard links. Returns `AlreadyExists` if `dest` is taken.
    pub fn persist_noclobber(mut self, dest: &Path) -> io::Result<()> {
        match fs::hard_link(&self.path, dest) {
            Ok(()) => {
                self.persisted = true;
                // The data is safe under `dest`; a leftover temp name is only clutter.
                let _ = fs::remove_file(&self.path);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            Err(_) => {
                if fs::symlink_metadata(dest).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "destination already exists",
                    ));
                }
                fs::rename(&self.path, dest)?;
                self.persisted = true;
                Ok(())
            }
        }
    }

    /// Publishes the file as `dest`, atomically replacing whatever is there.
    pub fn persist_replacing(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}
