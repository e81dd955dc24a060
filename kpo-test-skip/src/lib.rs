//! A test that cannot run on this machine (not root, no IPv6, no `unshare`, ...) says why and is
//! counted as skipped by `cargo xtask test`, never as passed.
//!
//! Why by hand: libtest, on stable Rust, has no skip decided at run time. `#[ignore]` is fixed at
//! compile time, and a test that returns early is reported `ok`. So a test that finds out at run
//! time that it cannot run calls [`skip`] and returns; [`skip`] appends the test's name and the
//! reason to the file named by [`RECORD_VAR`], and the runner (`cargo xtask test`) moves each
//! recorded test from passed to skipped and lists it with its reason. Under a plain `cargo test`
//! (no record file) the reason is still printed, in the test's captured output.
use std::io::Write;
use std::path::Path;

/// The environment variable that names the record file, set by `cargo xtask test`.
pub const RECORD_VAR: &str = "KPO_TEST_SKIPS";

/// Says why the calling test cannot run here and records it as skipped. Call it right before
/// the test returns, on the test's own thread (libtest names that thread after the test).
///
/// Panics when the record file cannot be written: a skip that is not recorded would count as a
/// pass, so the test fails instead.
pub fn skip(reason: &str) {
    let record = std::env::var_os(RECORD_VAR).map(std::path::PathBuf::from);
    skip_to(record.as_deref(), reason);
}

/// [`skip`] for a test that runs on a thread not named after it: the root integration tests
/// (libtest-mimic runs them on its own threads, or on the main one), which name themselves.
pub fn skip_test(test: &str, reason: &str) {
    let record = std::env::var_os(RECORD_VAR).map(std::path::PathBuf::from);
    record_skip(record.as_deref(), test, reason);
}

fn skip_to(record: Option<&Path>, reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(a test on an unnamed thread)")
        .to_owned();
    record_skip(record, &test, reason);
}

fn record_skip(record: Option<&Path>, test: &str, reason: &str) {
    println!("SKIPPED {test}: {reason}");
    let Some(path) = record else {
        return;
    };
    let line = format!("{}\t{}\n", one_line(test), one_line(reason));
    // One write of a short line to a file opened for appending: tests running in parallel (and
    // the several test binaries of one run, one after another) never interleave within a line.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(line.as_bytes()))
        .unwrap_or_else(|e| {
            panic!(
                "recording the skip of {test} in {} ({RECORD_VAR}): {e}",
                path.display()
            )
        });
}

/// A test recorded as skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub test: String,
    pub reason: String,
}

/// The skips recorded in `path`, in the order they were recorded; none when the file does not
/// exist (no test skipped).
pub fn read_record(path: &Path) -> std::io::Result<Vec<Skipped>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .map(|line| {
            let (test, reason) = line.split_once('\t').ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a skip record: {line:?}", path.display()),
                )
            })?;
            Ok(Skipped {
                test: test.to_owned(),
                reason: reason.to_owned(),
            })
        })
        .collect()
}

/// The record is one line per skip, the name and the reason split by a tab.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `skip` writes, `read_record` reads back: the test's name (its thread's) and the
    /// reason, with a reason's line breaks and tabs flattened so one skip stays one record.
    #[test]
    fn a_recorded_skip_is_read_back_with_the_test_name() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("skips");
        assert_eq!(read_record(&record).unwrap(), Vec::new());
        // A thread named as libtest names a test's; the record's path is passed rather than
        // set in the environment, which the tests running beside this one share.
        let writer = {
            let record = record.clone();
            std::thread::Builder::new()
                .name("module::a_test".into())
                .spawn(move || skip_to(Some(&record), "not root:\tthe test\nmakes namespaces"))
                .unwrap()
        };
        writer.join().unwrap();
        assert_eq!(
            read_record(&record).unwrap(),
            vec![Skipped {
                test: "module::a_test".into(),
                reason: "not root: the test makes namespaces".into(),
            }]
        );
        // A root integration test names itself, whatever its thread.
        record_skip(Some(&record), "listener_carry::a_root_test", "no inode");
        assert_eq!(
            read_record(&record).unwrap().last(),
            Some(&Skipped {
                test: "listener_carry::a_root_test".into(),
                reason: "no inode".into(),
            })
        );
        std::fs::write(&record, "no tab here\n").unwrap();
        let err = read_record(&record).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
