//! The thread that owns a CSV file (the error CSV of `copy`, the diff CSV of `verify`): it opens the file
//! at the first row, so a run with nothing to report leaves none, and flushes whenever its queue is empty;
//! and the RFC 3339 time of its rows. One thread per file owns its `csv::Writer`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::{Failure, Stop};

/// The CSV header, as the product contract fixes it.
pub const CSV_HEADER: [&str; 5] = ["time", "key", "stage", "error", "message"];

/// One CSV file redis-ferry writes (the error CSV of `copy`, the diff CSV of `verify`): where it goes,
/// its header, and how it is named in messages.
#[derive(Debug, Clone, Copy)]
pub struct CsvFile<'a> {
    /// The path.
    pub path: &'a str,
    /// Append to an existing file (its header is written only if it is empty) rather than overwrite it.
    pub append: bool,
    /// The header row.
    pub header: &'a [&'a str],
    /// What the file is, for messages (`error CSV`, `diff CSV`).
    pub what: &'a str,
}

/// The CSV thread: opens `file` at the first row (so a run with nothing to report leaves no file),
/// writes one record per item with `row`, flushes whenever the queue is empty, and returns how many
/// rows it wrote. A write error is fatal for the run: it is recorded in `stop` and returned.
pub fn write_csv<T, R>(rx: Receiver<T>, file: CsvFile, stop: &Stop, row: impl Fn(T) -> R) -> io::Result<u64>
where
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut writer: Option<csv::Writer<BufWriter<File>>> = None;
    let mut rows = 0u64;
    let result = (|| -> io::Result<()> {
        while let Ok(first) = rx.recv() {
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(open_csv(&file)?),
            };
            let mut next = Some(first);
            while let Some(item) = next {
                w.write_record(row(item))?;
                rows += 1;
                next = rx.try_recv().ok();
            }
            w.flush()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(rows),
        Err(e) => {
            stop.fatal(format!("cannot write the {} {}: {e}", file.what, file.path));
            Err(e)
        }
    }
}

/// The error CSV thread: [`write_csv`] with the header `time,key,stage,error,message`.
pub fn write_errors(rx: Receiver<Failure>, path: &str, append: bool, stop: &Stop) -> io::Result<u64> {
    let file = CsvFile { path, append, header: &CSV_HEADER, what: "error CSV" };
    write_csv(rx, file, stop, |f: Failure| {
        [rfc3339(f.time), f.key.escaped(), f.stage.name().to_string(), f.code, f.message]
    })
}

fn open_csv(file: &CsvFile) -> io::Result<csv::Writer<BufWriter<File>>> {
    let path = file.path;
    let f = if file.append {
        OpenOptions::new().create(true).append(true).open(path)?
    } else {
        File::create(path)?
    };
    let needs_header = f.metadata()?.len() == 0;
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(BufWriter::new(f));
    if needs_header {
        w.write_record(file.header)?;
    }
    Ok(w)
}

/// Formats a time as RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T22:39:12.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Stage;
    use crate::key::Key;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_300_752_123);
        assert_eq!(rfc3339(t), "2026-11-21T22:39:12.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn csv_rows_quote_and_escape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        let path = path.to_str().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(Failure {
            time: UNIX_EPOCH,
            key: Key(b"a,\"b\n\xff".to_vec()),
            stage: Stage::Check,
            code: "NOPERM".into(),
            message: "no, \"perm\"".into(),
        })
        .unwrap();
        drop(tx);
        assert_eq!(write_errors(rx, path, false, &Stop::default()).unwrap(), 1);
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "time,key,stage,error,message\n1970-01-01T00:00:00.000Z,\"a,\"\"b\\x0a\\xff\",check,NOPERM,\"no, \"\"perm\"\"\"\n"
        );
    }

    #[test]
    fn no_failure_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        let (tx, rx) = crossbeam_channel::unbounded::<Failure>();
        drop(tx);
        write_errors(rx, path.to_str().unwrap(), false, &Stop::default()).unwrap();
        assert!(!path.exists());
    }
}
