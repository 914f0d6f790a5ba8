//! The `--lock` file that keeps two runs from overlapping.
//!
//! The lock is an exclusive advisory `flock` on FILE, taken with `File::try_lock` before any connection
//! is made and held until the report has been written; the holder writes its PID into the file so that a
//! run turned away (exit 4) can name it. The file is never deleted: unlinking a flock'd file races with a
//! run that has just opened it, and two runs could then each lock a different file of the same name.
//! This file does no Redis I/O.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::thread;
use std::time::Duration;

use crate::exit::{Exit, Fatal};

/// How often, and how long apart, a run turned away re-reads an empty lock file: the holder writes its
/// PID a moment after it took the lock.
const PID_READ_ATTEMPTS: u32 = 5;
const PID_READ_PAUSE: Duration = Duration::from_millis(20);

/// An exclusive advisory lock on the `--lock` file; closing the file (dropping this) releases it.
#[derive(Debug)]
pub struct RunLock {
    /// The open lock file: the `flock` lives exactly as long as this handle.
    _file: File,
}

impl RunLock {
    /// Takes the lock without waiting and writes this process's PID into the file. Another run holding
    /// it is exit 4, naming its PID; a file that cannot be opened or locked is exit 2.
    pub fn acquire(path: &str) -> Result<RunLock, Fatal> {
        // Not truncated on open: until we hold the lock, the content is the holder's PID.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Fatal::bad_input(format!("--lock {path}: cannot open it ({e})")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = match holder_pid(&mut file) {
                    Some(pid) => format!("pid {pid}"),
                    None => "pid unknown".to_string(),
                };
                return Err(Fatal {
                    exit: Exit::Locked,
                    message: format!("--lock {path} is held by another run ({holder}); this run did nothing"),
                });
            }
            Err(TryLockError::Error(e)) => {
                return Err(Fatal::bad_input(format!("--lock {path}: cannot lock it ({e})")));
            }
        }
        // The file may still hold the PID of an earlier run that has ended.
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // The lock itself is what keeps runs apart; without the PID a second run says "pid unknown".
            log::warn!("--lock {path}: locked, but cannot write our pid into it ({e})");
        }
        Ok(RunLock { _file: file })
    }
}

/// The PID the holder wrote into the lock file, waiting briefly if it has not written it yet.
fn holder_pid(file: &mut File) -> Option<u32> {
    for attempt in 0..PID_READ_ATTEMPTS {
        if attempt > 0 {
            thread::sleep(PID_READ_PAUSE);
        }
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut text)).is_err() {
            return None;
        }
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_the_lock_is_free_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let path = path.to_str().unwrap();
        let first = RunLock::acquire(path).unwrap();
        assert_eq!(fs::read_to_string(path).unwrap(), format!("{}\n", std::process::id()));
        // flock locks belong to the open file, so a second open in the same process is refused too.
        let refused = RunLock::acquire(path).unwrap_err();
        assert_eq!(refused.exit, Exit::Locked);
        assert!(refused.message.contains(&format!("pid {}", std::process::id())), "{}", refused.message);
        assert!(refused.message.contains(path), "{}", refused.message);
        drop(first);
        let _again = RunLock::acquire(path).unwrap();
        assert!(Path::new(path).exists());
    }

    #[test]
    fn a_stale_pid_is_overwritten_and_garbage_reads_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.lock");
        let path = path.to_str().unwrap();
        fs::write(path, "99999999\nleftover text\n").unwrap();
        let held = RunLock::acquire(path).unwrap();
        assert_eq!(fs::read_to_string(path).unwrap(), format!("{}\n", std::process::id()));
        drop(held);
        fs::write(path, "not a pid").unwrap();
        let mut file = File::open(path).unwrap();
        assert_eq!(holder_pid(&mut file), None);
    }

    #[test]
    fn an_unopenable_lock_is_bad_input() {
        let err = RunLock::acquire("/nonexistent-dir/run.lock").unwrap_err();
        assert_eq!(err.exit, Exit::BadInput);
        assert!(err.message.starts_with("--lock /nonexistent-dir/run.lock"), "{}", err.message);
    }
}
