//! What the analysis may learn from the disk: how many files a deletion would remove. The
//! analysis itself reads nothing; a caller that wants counts puts a [`Disk`] in the
//! [`Context`](crate::Context) ([`LocalDisk`] reads the real filesystem, bounded).

use std::fs;
use std::path::Path;

/// Which files under a path a deletion reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select<'a> {
    /// The path itself if it is not a directory (`rm FILE`, `truncate FILE`).
    File,
    /// The path and everything under it (`rm -r DIR`, `rsync --delete SRC DIR`).
    Tree,
    /// The entries of the directory whose names match a glob (`rm DIR/*.o`); with `recursive`,
    /// the whole tree of each matching directory too (`rm -r DIR/*`).
    Glob { pattern: &'a str, recursive: bool },
    /// Files anywhere under the directory whose names match a glob (`find DIR -name P -delete`);
    /// `None` matches every file.
    Named(Option<&'a str>),
}

/// Counts files for the analysis.
pub trait Disk: std::fmt::Debug + Send + Sync {
    /// How many files (anything but a directory) `select` reaches from `path`, counting at most
    /// `limit`; symbolic links are counted, never followed. A path that does not exist
    /// reaches none; `None` when the answer cannot be known (unreadable).
    fn count_files(&self, path: &Path, select: Select<'_>, limit: u64) -> Option<u64>;
}

/// The real filesystem, read with `lstat` and `readdir`, stopping at `limit` files and at
/// [`LocalDisk::MAX_ENTRIES`] directory entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalDisk;

impl LocalDisk {
    /// Directory entries visited at most for one count; past it the count is unknown.
    pub const MAX_ENTRIES: u64 = 200_000;
}

fn name_matches(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(name))
}

struct Budget {
    found: u64,
    limit: u64,
    visited: u64,
}

impl Budget {
    fn full(&self) -> bool {
        self.found >= self.limit
    }
}

/// Counts the files of a tree; `Err(())` when a directory cannot be read or the walk is too big.
fn tree(path: &Path, name: Option<&str>, b: &mut Budget) -> Result<(), ()> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if b.full() {
            return Ok(());
        }
        let entries = fs::read_dir(&dir).map_err(|_| ())?;
        for e in entries {
            let e = e.map_err(|_| ())?;
            b.visited += 1;
            if b.visited > LocalDisk::MAX_ENTRIES {
                return Err(());
            }
            let ty = e.file_type().map_err(|_| ())?;
            if ty.is_dir() {
                stack.push(e.path());
            } else if name.is_none_or(|p| name_matches(p, &e.file_name().to_string_lossy())) {
                b.found += 1;
                if b.full() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

impl Disk for LocalDisk {
    fn count_files(&self, path: &Path, select: Select<'_>, limit: u64) -> Option<u64> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(0),
            Err(_) => return None,
        };
        let mut b = Budget {
            found: 0,
            limit,
            visited: 0,
        };
        match select {
            Select::File => return Some(u64::from(!meta.is_dir())),
            Select::Tree if !meta.is_dir() => return Some(1),
            Select::Tree => tree(path, None, &mut b).ok()?,
            Select::Named(_) | Select::Glob { .. } if !meta.is_dir() => return Some(0),
            Select::Named(name) => tree(path, name, &mut b).ok()?,
            Select::Glob { pattern, recursive } => {
                for e in fs::read_dir(path).ok()? {
                    let e = e.ok()?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    // The shell leaves dot files out of `*` unless the pattern starts with a dot.
                    if (name.starts_with('.') && !pattern.starts_with('.'))
                        || !name_matches(pattern, &name)
                    {
                        continue;
                    }
                    if e.file_type().ok()?.is_dir() {
                        if recursive {
                            tree(&e.path(), None, &mut b).ok()?;
                        }
                    } else {
                        b.found += 1;
                    }
                    if b.full() {
                        break;
                    }
                }
            }
        }
        Some(b.found.min(limit))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn counts_files_bounded() {
        let dir = std::env::temp_dir().join(format!("rf-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src/deep")).unwrap();
        for i in 0..5 {
            fs::write(dir.join(format!("src/f{i}.rs")), "").unwrap();
            fs::write(dir.join(format!("src/deep/g{i}.o")), "").unwrap();
        }
        let d = LocalDisk;
        assert_eq!(d.count_files(&dir.join("src"), Select::Tree, 100), Some(10));
        assert_eq!(d.count_files(&dir.join("src"), Select::Tree, 3), Some(3));
        assert_eq!(d.count_files(&dir.join("src"), Select::File, 100), Some(0));
        assert_eq!(
            d.count_files(&dir.join("src/f1.rs"), Select::File, 100),
            Some(1)
        );
        assert_eq!(d.count_files(&dir.join("gone"), Select::Tree, 100), Some(0));
        assert_eq!(
            d.count_files(&dir.join("src"), Select::Named(Some("*.o")), 100),
            Some(5)
        );
        let glob = |pattern, recursive| Select::Glob { pattern, recursive };
        assert_eq!(
            d.count_files(&dir.join("src"), glob("*.rs", false), 100),
            Some(5)
        );
        assert_eq!(
            d.count_files(&dir.join("src"), glob("*", false), 100),
            Some(5)
        );
        assert_eq!(
            d.count_files(&dir.join("src"), glob("*", true), 100),
            Some(10)
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
