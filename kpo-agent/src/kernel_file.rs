//! One way to read a kernel file (procfs, sysfs) or a small configuration file: whole, bounded in
//! size, with errors that name the file.
//!
//! Every read is bounded because a path can be anything: `--config /dev/zero`, or a /proc tree
//! whose file is a link to it, would otherwise fill memory within a second. procfs and sysfs
//! report a size of 0 for their files, so the bound cannot come from `stat`; it is what the source
//! can hold ([`limit`]), and a read that goes past it stops there with [`KernelFileError::TooLarge`].
//!
//! The callers map these errors into their own (`ProcError`, `EnergyError`, `ActuateError`,
//! `ConfigError`); [`KernelFileError::hint_if`] adds a sentence for an error the operator can fix
//! (e.g. a permission only root has).
use std::{
    fmt::Display,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    str::FromStr,
};

/// Bounds on what one file can hold, by kind of source.
pub mod limit {
    /// A sysfs attribute (`energy_uj`, `scaling_max_freq`): the kernel formats it into one page,
    /// and pages are at most 64 KiB.
    pub const ATTRIBUTE: usize = 64 * 1024;
    /// A /proc file whose size does not grow with the machine (`loadavg`, `meminfo`,
    /// `pressure/*`, `net/netstat`, `net/snmp`, `net/snmp6`, `<pid>/comm`): a few KiB today; the
    /// bound leaves room for decades of new fields.
    pub const FIXED: usize = 256 * 1024;
    /// A /proc file with a line or a column per CPU, IRQ or device (`stat`, `interrupts`,
    /// `softirqs`, `net/softnet_stat`, `schedstat`, `diskstats`): `interrupts` on 512 CPUs with
    /// 1000 IRQ lines is about 6 MB.
    pub const PER_CPU: usize = 32 * 1024 * 1024;
}

#[derive(Debug, thiserror::Error)]
pub enum KernelFileError {
    #[error("cannot read {}: {source}{hint}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
        /// Empty, or a sentence starting with a space (see [`KernelFileError::hint_if`]).
        hint: &'static str,
    },
    #[error("{} is larger than {limit} bytes, more than this file can hold; is it the right file?", .path.display())]
    TooLarge { path: PathBuf, limit: usize },
    #[error("{}: cannot parse {text:?} as {what}", .path.display())]
    Parse {
        path: PathBuf,
        /// What the file held, trimmed (at most [`PARSE_TEXT_SHOWN`] characters).
        text: String,
        what: &'static str,
    },
}

/// How much of an unparsable file's content a [`KernelFileError::Parse`] repeats.
pub const PARSE_TEXT_SHOWN: usize = 64;

impl KernelFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. } | Self::TooLarge { path, .. } | Self::Parse { path, .. } => path,
        }
    }

    /// The I/O error's kind, `None` for a file that was read but is too large or unparsable.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// Adds `hint` (a sentence starting with a space, e.g. `" (readable by root only)"`) to an
    /// I/O error of `kind`; any other error is returned unchanged.
    pub fn hint_if(self, kind: io::ErrorKind, hint: &'static str) -> Self {
        match self {
            Self::Io { path, source, .. } if source.kind() == kind => {
                Self::Io { path, source, hint }
            }
            other => other,
        }
    }
}

/// The whole of `path`, at most `limit` bytes.
pub fn read_bytes(path: &Path, limit: usize) -> Result<Vec<u8>, KernelFileError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    read_bounded(file, path, limit)
}

/// The whole of `path` as text, at most `limit` bytes. Text that is not UTF-8 is an I/O error of
/// kind `InvalidData`, as with [`std::fs::read_to_string`].
pub fn read_text(path: &Path, limit: usize) -> Result<String, KernelFileError> {
    utf8(read_bytes(path, limit)?, path)
}

/// Reads an open file again from its start: for a file opened once and read every tick (a
/// namespace's `net/netstat`, opened from inside it). `path` names it in errors.
pub fn reread_text(file: &mut File, path: &Path, limit: usize) -> Result<String, KernelFileError> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(path, e))?;
    utf8(read_bounded(&mut *file, path, limit)?, path)
}

/// A file holding one value (a sysfs attribute such as `energy_uj` or `scaling_max_freq`), parsed
/// after trimming whitespace. `what` says what was expected ("a frequency in kHz").
pub fn read_value<T: FromStr>(path: &Path, what: &'static str) -> Result<T, KernelFileError> {
    let text = read_text(path, limit::ATTRIBUTE)?;
    parse_value(&text, path, what)
}

/// Parses one trimmed value; the error names the file and repeats what it held.
pub fn parse_value<T: FromStr>(
    text: &str,
    path: &Path,
    what: &'static str,
) -> Result<T, KernelFileError> {
    let text = text.trim();
    text.parse().map_err(|_| KernelFileError::Parse {
        path: path.to_path_buf(),
        text: text.chars().take(PARSE_TEXT_SHOWN).collect(),
        what,
    })
}

/// Reads at most `limit` bytes, by hand rather than with `read_to_end`: a /proc/sys handler prints
/// its value on the first read only (a read at an offset past 0 gives nothing), and so does a
/// sysfs attribute, so the first read must have room for the whole value, while std's
/// `read_to_end` starts with a 32-byte probe. Those are read with [`limit::ATTRIBUTE`] and get the
/// whole bound at once. The larger bounds are for /proc files that read on in pieces (seq_file),
/// read 8 KiB at first and then in a buffer that doubles: zeroing the whole bound for each read of
/// each namespace's `net/netstat`, every tick, would cost more than the read.
fn read_bounded(
    mut file: impl Read,
    path: &Path,
    limit: usize,
) -> Result<Vec<u8>, KernelFileError> {
    const PIECE: usize = 8 * 1024;
    // One byte past the bound tells a file of exactly `limit` bytes from a longer one.
    let most = limit.saturating_add(1);
    let first = if limit <= limit::ATTRIBUTE {
        most
    } else {
        PIECE
    };
    let mut bytes = vec![0; first];
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            if filled >= most {
                return Err(KernelFileError::TooLarge {
                    path: path.to_path_buf(),
                    limit,
                });
            }
            bytes.resize(filled.saturating_mul(2).min(most), 0);
        }
        match file.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path, e)),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String, KernelFileError> {
    String::from_utf8(bytes).map_err(|e| io_error(path, not_utf8(&e)))
}

/// Text that is not UTF-8, where its first invalid byte is: the line and column an editor shows
/// (an operator's file names no key there), and the byte's offset.
pub fn not_utf8(e: &std::string::FromUtf8Error) -> io::Error {
    let valid = e.utf8_error().valid_up_to();
    // What precedes the first invalid byte is valid UTF-8.
    let before = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or_default();
    let (line, column) = line_and_column(before);
    io::Error::new(
        io::ErrorKind::InvalidData,
        NotUtf8 {
            line,
            column,
            offset: valid,
        },
    )
}

/// The line and column (in characters, from 1) an editor shows for the place right after
/// `before`, the text that precedes it.
pub fn line_and_column(before: &str) -> (usize, usize) {
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

#[derive(Debug)]
struct NotUtf8 {
    line: usize,
    column: usize,
    offset: usize,
}

impl Display for NotUtf8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not UTF-8 text (an invalid byte at line {}, column {}: byte offset {})",
            self.line, self.column, self.offset
        )
    }
}

impl std::error::Error for NotUtf8 {}

fn io_error(path: &Path, source: io::Error) -> KernelFileError {
    KernelFileError::Io {
        path: path.to_path_buf(),
        source,
        hint: "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_the_bound_and_no_further() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "12345678").unwrap();
        assert_eq!(read_text(&path, 8).unwrap(), "12345678");
        let e = read_text(&path, 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is larger than 7 bytes, more than this file can hold; is it the right file?",
                path.display()
            )
        );
        assert_eq!(e.io_kind(), None);
    }

    /// Defect: a /proc/sys integer list (`ip_local_reserved_ports`) longer than 32 bytes was read
    /// as its first 32: `read_to_end` began with a 32-byte read, and the handler prints only on the
    /// first read. Put back, the cut value was accepted by the kernel.
    #[test]
    fn a_file_that_answers_only_its_first_read_is_read_whole() {
        struct PrintsOnce(Option<Vec<u8>>);
        impl Read for PrintsOnce {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let Some(value) = self.0.take() else {
                    return Ok(0);
                };
                let n = value.len().min(buf.len());
                buf[..n].copy_from_slice(&value[..n]);
                Ok(n)
            }
        }
        let value = b"8080,8443,9000-9100,10000-10100,20000-20100\n".to_vec();
        let path = Path::new("/proc/sys/net/ipv4/ip_local_reserved_ports");
        let read = read_bounded(PrintsOnce(Some(value.clone())), path, limit::ATTRIBUTE).unwrap();
        assert_eq!(read, value);
    }

    /// A file read in pieces (seq_file) past the first buffer is read to its end, and one byte
    /// past the bound is still refused.
    #[test]
    fn a_file_read_in_pieces_is_read_past_the_first_buffer_up_to_the_bound() {
        struct Pieces(usize);
        impl Read for Pieces {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.min(buf.len()).min(1000);
                buf[..n].fill(b'x');
                self.0 -= n;
                Ok(n)
            }
        }
        let path = Path::new("/proc/interrupts");
        let size = 300_000;
        assert_eq!(read_bounded(Pieces(size), path, size).unwrap().len(), size);
        let e = read_bounded(Pieces(size + 1), path, size).unwrap_err();
        assert!(
            matches!(e, KernelFileError::TooLarge { limit, .. } if limit == size),
            "{e}"
        );
    }

    /// A file that never ends stops at the bound instead of filling memory.
    #[test]
    fn dev_zero_stops_at_the_bound() {
        let e = read_bytes(Path::new("/dev/zero"), limit::FIXED).unwrap_err();
        assert!(
            matches!(e, KernelFileError::TooLarge { limit: l, .. } if l == limit::FIXED),
            "{e}"
        );
        assert_eq!(e.path(), Path::new("/dev/zero"));
    }

    #[test]
    fn errors_name_the_file_and_carry_hints() {
        let e = read_text(Path::new("/nonexistent/kpo"), 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read /nonexistent/kpo: No such file or directory (os error 2)"
        );
        assert_eq!(e.io_kind(), Some(io::ErrorKind::NotFound));
        let hinted = e.hint_if(io::ErrorKind::NotFound, " (is the driver loaded?)");
        assert_eq!(
            hinted.to_string(),
            "cannot read /nonexistent/kpo: No such file or directory (os error 2) (is the driver loaded?)"
        );
        let unhinted = read_text(Path::new("/nonexistent/kpo"), 10)
            .unwrap_err()
            .hint_if(io::ErrorKind::PermissionDenied, " (root only)");
        assert!(!unhinted.to_string().contains("root only"), "{unhinted}");
    }

    #[test]
    fn values_are_trimmed_and_parse_errors_repeat_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scaling_max_freq");
        std::fs::write(&path, "2400000\n").unwrap();
        assert_eq!(
            read_value::<u64>(&path, "a frequency in kHz").unwrap(),
            2_400_000
        );
        std::fs::write(&path, "fast\n").unwrap();
        let e = read_value::<u64>(&path, "a frequency in kHz").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: cannot parse \"fast\" as a frequency in kHz",
                path.display()
            )
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_invalid_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ab\xffc").unwrap();
        let e = read_text(&path, 100).unwrap_err();
        assert_eq!(e.io_kind(), Some(io::ErrorKind::InvalidData));
        assert_eq!(
            e.to_string(),
            format!(
                "cannot read {}: not UTF-8 text (an invalid byte at line 1, column 3: byte \
                 offset 2)",
                path.display()
            )
        );
        // Where an editor shows it: lines counted, a column in characters (é is two bytes).
        let second = dir.path().join("g");
        let text = "a = 1\nb = \"é".bytes().chain(*b"\xc3(\"\n");
        std::fs::write(&second, text.collect::<Vec<_>>()).unwrap();
        assert_eq!(
            read_text(&second, 100).unwrap_err().to_string(),
            format!(
                "cannot read {}: not UTF-8 text (an invalid byte at line 2, column 7: byte \
                 offset 13)",
                second.display()
            )
        );
        assert_eq!(read_bytes(&path, 100).unwrap(), b"ab\xffc");
    }

    #[test]
    fn an_open_file_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netstat");
        std::fs::write(&path, "one").unwrap();
        let mut file = File::open(&path).unwrap();
        assert_eq!(reread_text(&mut file, &path, 10).unwrap(), "one");
        std::fs::write(&path, "two!").unwrap();
        assert_eq!(reread_text(&mut file, &path, 10).unwrap(), "two!");
        assert!(matches!(
            reread_text(&mut file, &path, 3),
            Err(KernelFileError::TooLarge { limit: 3, .. })
        ));
    }
}
