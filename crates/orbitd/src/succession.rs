//! An edge's incarnation kept in its `state_dir`, so that the process that follows a crash
//! can tell the registry which one it replaces and take the edge's identity over at once
//! (a second process configured with the same identity knows no such thing, and is refused
//! while the first holds its lease).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

const FILE: &str = "incarnation";

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
pub fn keep(dir: &Path, incarnation: u64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{incarnation}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE))
        .with_context(|| format!("writing {}", dir.join(FILE).display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incarnation_kept_is_the_next_processs_previous() {
        let dir = std::env::temp_dir().join(format!("orbit-succession-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(previous(&dir).unwrap(), 0);
        keep(&dir, 42).unwrap();
        assert_eq!(previous(&dir).unwrap(), 42);
        keep(&dir, 43).unwrap();
        assert_eq!(previous(&dir).unwrap(), 43);
        std::fs::write(dir.join(FILE), "junk").unwrap();
        let e = previous(&dir).unwrap_err().to_string();
        assert!(e.contains("not an incarnation number"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
