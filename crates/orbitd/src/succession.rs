//! An edge's incarnation kept in its `state_dir`, so that the process that follows a crash
//! can tell the registry which one it replaces and take the edge's identity over at once
//! (a second process configured with the same identity knows no such thing, and is refused
//! while the first holds its lease). The directory is locked while a process uses it: a
//! second process started with the same config cannot read its twin's incarnation and pass
//! for its successor.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

const FILE: &str = "incarnation";
const LOCK: &str = "lock";

/// Take `dir` for this process (created 0700 if missing): the lock holds while the returned
/// file is open, and the kernel lets go of it when the process ends, however it ends.
pub fn hold(dir: &Path) -> Result<File> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "state_dir {} is in use by another process: is this edge started twice?",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// The incarnation the last process of this edge kept in `dir` (0: none).
pub fn previous(dir: &Path) -> Result<u64> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{}: not an incarnation number", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Keep `incarnation` in `dir` for this edge's next process: written whole and synced, then
/// renamed into place, so a crash leaves the old number or the new one, never half of one.
/// Call while holding `dir` ([`hold`]).
pub fn keep(dir: &Path, incarnation: u64) -> Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    // Left by a crash mid-write (the lock makes it ours): a fresh file, never a link's target.
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{incarnation}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))
        .with_context(|| format!("writing {}", dir.join(FILE).display()))?;
    // The rename itself is durable once the directory is.
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incarnation_kept_is_the_next_processs_previous_and_one_process_holds_the_dir() {
        let dir = std::env::temp_dir().join(format!("orbit-succession-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(previous(&dir).unwrap(), 0);
        let held = hold(&dir).unwrap();
        // A second holder is refused (another process alike: the lock is per open file).
        let e = hold(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by another process"), "{e}");
        keep(&dir, 42).unwrap();
        assert_eq!(previous(&dir).unwrap(), 42);
        keep(&dir, 43).unwrap();
        assert_eq!(previous(&dir).unwrap(), 43);
        std::fs::write(dir.join(FILE), "junk").unwrap();
        let e = previous(&dir).unwrap_err().to_string();
        assert!(e.contains("not an incarnation number"), "{e}");
        drop(held);
        hold(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
