//! The mark of the changes the event stream carried (`events-mark.json` in the state directory):
//! the highest journal id a running agent knew and sent. The agent sends the changes journaled
//! after it at its next start (`run/offline_changes.rs`); the journal's open takes it as a
//! witness of ids handed out, as it does the approvals file, so a journal restored from an older
//! copy does not hand those ids out again.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::JournalError;

/// The mark's file in the state directory.
pub const MARK_FILE: &str = "events-mark.json";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Mark {
    /// Every journal id up to this one was known to a running agent.
    journal_id: u64,
}

/// The highest journal id an earlier agent knew; `None` without a file: a state directory no
/// agent of this version ran on, whose journal the stream may never have carried (an upgrade
/// does not send a whole history).
pub fn load(dir: &Path) -> Result<Option<u64>, String> {
    let path = dir.join(MARK_FILE);
    // Not read through a FIFO or a device, which would hold every command's open.
    match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.is_file() => return Err(format!("{}: not a regular file", path.display())),
        _ => {}
    }
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mark: Mark =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if mark.journal_id.saturating_add(1) >= super::MAX_ID {
        return Err(format!(
            "{}: {} is past the largest journal id",
            path.display(),
            mark.journal_id
        ));
    }
    Ok(Some(mark.journal_id))
}

/// Replaces the mark atomically and durably.
pub fn save(dir: &Path, journal_id: u64) -> Result<(), JournalError> {
    let mut bytes = serde_json::to_vec(&Mark { journal_id }).expect("plain data");
    bytes.push(b'\n');
    super::store::replace(dir, MARK_FILE, &bytes)
}
