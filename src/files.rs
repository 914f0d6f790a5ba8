//! Which files a run reads and writes, and the check that no two flags name one file, however it is
//! named: a symlink, `./x` against `x`, a hard link, or standard input redirected from it.
//!
//! Files are compared by identity, not by text: an existing file by its device and inode, a file not
//! made yet by its canonical directory and its name. Only regular files (and files still to be made)
//! count: `/dev/null` may stand for several outputs, and a pipe has no name to collide with. An output
//! may share its file with nothing else; inputs may share one (a PEM file holding both the certificate
//! and its key). This is what keeps a run from reading back what it writes: `--errors` truncating the
//! `--keys-from` list it is still reading, or appending rows it then reads as keys, forever.
//! It also checks, without leaving a trace, that an output can be written, and replaces a file
//! atomically (the report, the checkpoint). This file does no Redis I/O.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a run does with a file a flag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Only read (`--keys-from`, the TLS files).
    Read,
    /// Written, truncated, replaced or locked (`--errors`, `--report`, `--lock`, `--checkpoint`,
    /// `--diff`).
    Write,
}

/// One file a flag names: the flag, its value (`-` is standard input) and what the run does with it.
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    /// The flag, for the message (`--keys-from`).
    pub flag: &'a str,
    /// The path as given.
    pub path: &'a str,
    /// Read or written.
    pub how: Use,
}

/// The identity of a file: device and inode of an existing regular file, or canonical directory and
/// name of one not made yet; `None` for what cannot collide (a device, a pipe, a directory).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    /// An existing regular file.
    Inode(u64, u64),
    /// A file still to be made: its directory (canonical) and its name.
    Planned(PathBuf, std::ffi::OsString),
}

fn of_metadata(m: &Metadata) -> Option<Identity> {
    m.is_file().then(|| Identity::Inode(m.dev(), m.ino()))
}

/// The identity of `path` (`-` read: standard input, as it is open now; written, `-` is a file of that
/// name).
fn identity(path: &str, how: Use) -> Option<Identity> {
    if path == "-" && how == Use::Read {
        use std::os::fd::AsFd;
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        return of_metadata(&std::fs::File::from(fd).metadata().ok()?);
    }
    match std::fs::metadata(path) {
        Ok(m) => of_metadata(&m),
        Err(_) => {
            // Not there yet (or a dangling symlink: it is made where the link points).
            let p = Path::new(path);
            let target = std::fs::read_link(p)
                .map(|t| if t.is_absolute() { t } else { p.parent().unwrap_or(Path::new(".")).join(t) })
                .unwrap_or_else(|_| p.to_path_buf());
            let name = target.file_name()?.to_os_string();
            let dir = match target.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            Some(Identity::Planned(std::fs::canonicalize(dir).ok()?, name))
        }
    }
}

/// Refuses, naming both flags, two entries of `files` that are one file when at least one of them is
/// written.
pub fn refuse_shared(files: &[Named]) -> Result<(), String> {
    let ids: Vec<Option<Identity>> = files.iter().map(|f| identity(f.path, f.how)).collect();
    for (i, a) in files.iter().enumerate() {
        for (j, b) in files.iter().enumerate().skip(i + 1) {
            if a.how == Use::Read && b.how == Use::Read {
                continue;
            }
            if ids[i].is_some() && ids[i] == ids[j] {
                let name = |f: &Named| {
                    if f.path == "-" {
                        "standard input".to_string()
                    } else {
                        f.path.to_string()
                    }
                };
                return Err(format!(
                    "{} {} and {} {} are the same file; give each its own (a run must never read or \
                     overwrite what it writes)",
                    a.flag,
                    name(a),
                    b.flag,
                    name(b)
                ));
            }
        }
    }
    Ok(())
}

/// Checks, without leaving a trace, that the file `flag` names can be created or appended to; the
/// message names the flag.
pub fn check_writable(flag: &str, path: &str) -> Result<(), String> {
    let existed = std::path::Path::new(path).exists();
    let opened = if existed {
        OpenOptions::new().append(true).open(path)
    } else {
        OpenOptions::new().write(true).create_new(true).open(path)
    };
    match opened {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(format!("{flag} {path}: cannot write there ({e})")),
    }
}

/// Checks, without leaving a trace, that `path` can be replaced atomically by [`replace_file`]:
/// it is not a directory and `FILE.tmp` can be created next to it.
pub fn check_replaceable(flag: &str, path: &str) -> Result<(), String> {
    let refuse = |why: String| format!("{flag} {path}: cannot write there ({why})");
    if std::path::Path::new(path).is_dir() {
        return Err(refuse("it is a directory".into()));
    }
    let tmp = format!("{path}.tmp");
    let existed = std::path::Path::new(&tmp).exists();
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(|e| refuse(e.to_string()))?;
    if !existed {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(())
}

/// Writes `bytes` to `path`, atomically by [`replace_file`] where it can, in place (truncated, written,
/// synced) where it cannot: an existing path that is not a regular file (a device, a pipe: renaming over
/// `/dev/null` would replace it), or a file that rename cannot replace (one bind-mounted into a container,
/// as Kubernetes mounts `/dev/termination-log`).
pub fn write_file(path: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let in_place = || -> io::Result<()> {
        let mut file = open_in_place(path, true)?;
        file.write_all(bytes)?;
        file.sync_all().or_else(|e| if e.kind() == io::ErrorKind::InvalidInput { Ok(()) } else { Err(e) })
    };
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return in_place(),
        Ok(_) => {}
        Err(_) => return replace_file(path, bytes),
    }
    replace_file(path, bytes).or_else(|_| in_place())
}

/// Checks, without leaving a trace, that [`write_file`] can write `path`: replaced atomically, or, for an
/// existing file or device, in place.
pub fn check_writable_somehow(flag: &str, path: &str) -> Result<(), String> {
    // A device or a pipe is only ever written in place (a pipe without a reader is refused here).
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return open_in_place(path, false)
            .map(drop)
            .map_err(|e| format!("{flag} {path}: cannot write to it ({e})"));
    }
    // Replaced atomically; else, for an existing file, in place; else the reason it cannot be replaced.
    check_replaceable(flag, path).or_else(|why| open_in_place(path, false).map(drop).map_err(|_| why))
}

/// Opens an existing `path` for writing in place, without waiting: a pipe with no reader is an error
/// (ENXIO) rather than a wait for one (O_NONBLOCK, which changes nothing for files and devices).
fn open_in_place(path: &str, truncate: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).truncate(truncate).custom_flags(libc::O_NONBLOCK).open(path)
}

/// Replaces `path` with `bytes` atomically: writes `FILE.tmp` in the same directory, syncs it, renames
/// it over FILE. A reader sees the old file or the new one, never half of one.
pub fn replace_file(path: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = format!("{path}.tmp");
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named<'a>(flag: &'a str, path: &'a str, how: Use) -> Named<'a> {
        Named { flag, path, how }
    }

    #[test]
    fn one_file_under_other_names_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.csv");
        std::fs::write(&file, "a\n").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let hard = dir.path().join("hard.csv");
        std::fs::hard_link(&file, &hard).unwrap();
        let dotted = format!("{}/./keys.csv", dir.path().display());
        let file = file.to_str().unwrap();
        for other in [link.to_str().unwrap(), hard.to_str().unwrap(), dotted.as_str(), file] {
            let err =
                refuse_shared(&[named("--keys-from", file, Use::Read), named("--errors", other, Use::Write)])
                    .unwrap_err();
            assert!(
                err.starts_with(&format!("--keys-from {file} and --errors {other} are the same file")),
                "{err}"
            );
        }
        // Two inputs may share a file; a file not made yet collides by its place.
        refuse_shared(&[named("--a", file, Use::Read), named("--b", hard.to_str().unwrap(), Use::Read)])
            .unwrap();
        let new = dir.path().join("new.json");
        let new_dotted = format!("{}/./new.json", dir.path().display());
        assert!(refuse_shared(&[
            named("--report", new.to_str().unwrap(), Use::Write),
            named("--lock", &new_dotted, Use::Write)
        ])
        .is_err());
        refuse_shared(&[
            named("--errors", "/dev/null", Use::Write),
            named("--report", "/dev/null", Use::Write),
        ])
        .unwrap();
        // An output named `-` is a file of that name, not standard input: two of them are one file.
        assert!(
            refuse_shared(&[named("--errors", "-", Use::Write), named("--report", "-", Use::Write)]).is_err()
        );
    }
}
