//! `--keys-from`: a list of keys, one per line, or a CSV that redis-ferry wrote (the error CSV of `copy`,
//! the diff CSV of `verify`) in any form a spreadsheet saves it again.
//!
//! A CSV is recognised by its header: the first line (after a UTF-8 byte order mark, which is ignored
//! in both forms) names only redis-ferry's columns (`time`, `key`, `stage`, `error`, `message`,
//! `difference`, in any order and case, quoted or not, some left out), `time` and `key` among them,
//! separated by `,`, `;` or a tab. Its rows are split by RFC 4180 (quotes, doubled quotes), and the `key` column
//! holds the escaped form ([`Key::parse_escaped`]). Anything else is a plain list: each line is one key,
//! taken literally (`\r\n` or `\n` ends it; empty lines are skipped).
//!
//! The whole file is read once at preflight ([`KeysFile::open`]), so that a malformed row, a line too
//! long or a directory is bad input (exit 2, naming the line) before anything is written; the stage then
//! reads it again from the start. Standard input and pipes cannot be read twice: they are copied into an
//! anonymous temporary file on the way (disk, not memory). Memory is bounded by one line
//! ([`MAX_LINE`]); a CSV field never spans lines (redis-ferry writes none that do), so an unclosed quote
//! is an error on its own line instead of a record that swallows the rest of the file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};

use super::{Batcher, Source, SourceError};
use crate::key::Key;
use crate::resume::Position;

/// The longest line read, in bytes (a key, or a CSV row with its escaped key).
pub const MAX_LINE: usize = 64 << 20;
/// The UTF-8 byte order mark some editors and spreadsheets put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The columns of redis-ferry's CSV files (error CSV and diff CSV).
const COLUMNS: [&str; 6] = ["time", "key", "stage", "error", "message", "difference"];

/// How the lines of a keys file are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One key per line.
    Lines,
    /// A redis-ferry CSV: the field separator and the index of the `key` column.
    Csv {
        /// `,`, `;` or a tab.
        delimiter: u8,
        /// Where the key is in each row.
        key_column: usize,
    },
}

/// Why a keys file cannot be read: an I/O error, or a line that is not what it should be.
#[derive(Debug)]
pub enum Bad {
    /// Reading failed.
    Io(io::Error),
    /// Line `.0` is malformed: `.1` says how.
    Line(u64, String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Io(e) => write!(f, "{e}"),
            Bad::Line(n, why) => write!(f, "line {n}: {why}"),
        }
    }
}

/// The keys of a keys file, one after the other.
pub struct KeyLines<R> {
    /// What is read.
    reader: R,
    /// Plain lines or CSV.
    format: Format,
    /// The number of the line read last (1-based).
    line: u64,
    /// The line being read.
    buf: Vec<u8>,
}

impl<R: BufRead> KeyLines<R> {
    /// Reads the first line and decides the format from it.
    pub fn new(reader: R) -> Result<KeyLines<R>, Bad> {
        let mut lines = KeyLines { reader, format: Format::Lines, line: 0, buf: Vec::new() };
        if !lines.read_line()? {
            return Ok(lines);
        }
        if lines.buf.starts_with(BOM) {
            lines.buf.drain(..BOM.len());
        }
        match header(&lines.buf) {
            Header::Csv(format) => lines.format = format,
            Header::Broken(why) => return Err(Bad::Line(1, why)),
            // The first line is a key: give it back.
            Header::None => lines.line = 0,
        }
        Ok(lines)
    }

    /// The format found.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next key, `None` at the end.
    pub fn next_key(&mut self) -> Result<Option<Key>, Bad> {
        loop {
            // Line 0 still holds the first line (a plain list's first key).
            if self.line > 0 || self.buf.is_empty() {
                if !self.read_line()? {
                    return Ok(None);
                }
            } else {
                self.line = 1;
            }
            let text = trim_eol(&self.buf);
            match self.format {
                Format::Lines if text.is_empty() => continue,
                Format::Lines => return Ok(Some(Key(text.to_vec()))),
                Format::Csv { delimiter, key_column } => {
                    let fields = split_row(text, delimiter).map_err(|why| Bad::Line(self.line, why))?;
                    if fields.iter().all(|f| f.is_empty()) {
                        continue;
                    }
                    let raw = fields.get(key_column).ok_or_else(|| {
                        Bad::Line(
                            self.line,
                            format!("{} fields, but the key is field {}", fields.len(), key_column + 1),
                        )
                    })?;
                    if raw.contains(&b'\n') || raw.contains(&b'\r') {
                        return Err(Bad::Line(self.line, "a line break inside the key field".into()));
                    }
                    return Key::parse_escaped(raw).map(Some).map_err(|why| Bad::Line(self.line, why));
                }
            }
        }
    }

    /// Reads the next line into `buf` (with its end of line); false at the end of the input.
    fn read_line(&mut self) -> Result<bool, Bad> {
        self.buf.clear();
        let limit = MAX_LINE as u64 + 1;
        let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf).map_err(Bad::Io)?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        if self.buf.len() > MAX_LINE && !self.buf.ends_with(b"\n") {
            return Err(Bad::Line(self.line, format!("longer than {} MiB", MAX_LINE >> 20)));
        }
        Ok(true)
    }
}

/// What the first line says.
enum Header {
    /// It is a redis-ferry CSV header.
    Csv(Format),
    /// It looks like one but cannot be read as one.
    Broken(String),
    /// It is the first key of a plain list.
    None,
}

fn header(first: &[u8]) -> Header {
    let line = trim_eol(first);
    let lower = line.to_ascii_lowercase();
    let bare: Vec<u8> = lower.iter().copied().filter(|&b| b != b'"' && b != b' ').collect();
    for delimiter in [b',', b';', b'\t'] {
        // The start of redis-ferry's own header, `time` then `key` as whole fields.
        let looks = [&b"time"[..], &[delimiter], b"key"].concat();
        let looks = bare.starts_with(&looks) && bare.get(looks.len()).is_none_or(|&b| b == delimiter);
        let fields = match split_row(&lower, delimiter) {
            Ok(fields) => fields,
            Err(why) if looks => return Header::Broken(format!("a CSV header that cannot be read: {why}")),
            Err(_) => continue,
        };
        let names: Vec<&[u8]> = fields.iter().map(|f| f.trim_ascii()).collect();
        // Both `time` and `key`, and only redis-ferry's columns.
        let known =
            names.contains(&&b"time"[..]) && names.iter().all(|n| COLUMNS.iter().any(|c| c.as_bytes() == *n));
        match names.iter().position(|n| *n == b"key") {
            Some(key_column) if known => return Header::Csv(Format::Csv { delimiter, key_column }),
            _ if looks => {
                return Header::Broken(format!(
                    "a CSV header that names columns redis-ferry does not write (expected {})",
                    COLUMNS.join(", ")
                ))
            }
            _ => {}
        }
    }
    Header::None
}

/// Splits one CSV line into its fields (RFC 4180: a quoted field may hold the separator and doubled
/// quotes); an unclosed quote or text after a closing quote is an error.
fn split_row(line: &[u8], delimiter: u8) -> Result<Vec<Vec<u8>>, String> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = Vec::new();
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match line.get(i) {
                    None => return Err(format!("field {} has an unclosed quote", fields.len() + 1)),
                    Some(b'"') if line.get(i + 1) == Some(&b'"') => {
                        field.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&b) => {
                        field.push(b);
                        i += 1;
                    }
                }
            }
            match line.get(i) {
                None => {}
                Some(&b) if b == delimiter => {}
                Some(_) => return Err(format!("text after the closing quote of field {}", fields.len() + 1)),
            }
        } else {
            while let Some(&b) = line.get(i).filter(|&&b| b != delimiter) {
                field.push(b);
                i += 1;
            }
        }
        fields.push(field);
        if i >= line.len() {
            return Ok(fields);
        }
        i += 1; // the delimiter
        if i == line.len() {
            fields.push(Vec::new());
            return Ok(fields);
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A `--keys-from` file read through once and checked, ready to be read again from its start.
pub struct KeysFile {
    /// The keys, from the first.
    pub lines: KeyLines<Box<dyn BufRead + Send>>,
    /// How many keys it holds.
    pub keys: u64,
}

impl Source for KeysFile {
    /// Reads the keys in order, always from the first (a file has no resume point); only an I/O error
    /// can stop it, since every line was checked at preflight.
    fn feed(self: Box<Self>, _start: &[Option<Position>], batcher: &mut Batcher) -> Result<(), SourceError> {
        let mut lines = self.lines;
        loop {
            let key = match lines.next_key() {
                Ok(Some(key)) => key,
                Ok(None) => return Ok(()),
                Err(e) => return Err(SourceError::new(format!("cannot read --keys-from: {e}"))),
            };
            if !batcher.push(key) {
                return Ok(());
            }
        }
    }
}

/// Copies what is read into a file on the way.
struct Tee<R, W> {
    /// Read from.
    inner: R,
    /// Written to.
    copy: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

impl KeysFile {
    /// Opens `path` (`-` is standard input), reads it through and checks every line; the message of an
    /// error names the flag, the file and the line.
    pub fn open(flag: &str, path: &str) -> Result<KeysFile, String> {
        let name = if path == "-" { "standard input" } else { path };
        let fail = |e: Bad| format!("{flag} {name}: {e}");
        let (mut copy, source): (File, Box<dyn Read + Send>) = if path == "-" {
            (tempfile(flag)?, Box::new(io::stdin()))
        } else {
            let file = File::open(path).map_err(|e| format!("{flag} {path}: cannot open it ({e})"))?;
            let meta = file.metadata().map_err(|e| format!("{flag} {path}: {e}"))?;
            if meta.is_dir() {
                return Err(format!("{flag} {path} is a directory, not a file of keys"));
            }
            if meta.is_file() {
                // A regular file is read twice, the second time no further than the first: what another
                // process appends meanwhile was never checked.
                let (keys, _) = count(BufReader::new(&file)).map_err(fail)?;
                let mut file = file;
                let checked = file.stream_position().map_err(|e| format!("{flag} {path}: {e}"))?;
                file.rewind().map_err(|e| format!("{flag} {path}: {e}"))?;
                let lines =
                    KeyLines::new(Box::new(BufReader::new(file.take(checked))) as Box<dyn BufRead + Send>)
                        .map_err(fail)?;
                return Ok(KeysFile { lines, keys });
            }
            (tempfile(flag)?, Box::new(file))
        };
        // A pipe or a device: kept in a temporary file while it is checked, then read from there.
        let tee = Tee { inner: source, copy: io::BufWriter::new(&mut copy) };
        let (keys, tee) = count(BufReader::new(tee)).map_err(fail)?;
        tee.into_inner().copy.flush().map_err(|e| format!("{flag}: temporary copy of {name}: {e}"))?;
        copy.rewind().map_err(|e| format!("{flag}: temporary copy of {name}: {e}"))?;
        let lines = KeyLines::new(Box::new(BufReader::new(copy)) as Box<dyn BufRead + Send>).map_err(fail)?;
        Ok(KeysFile { lines, keys })
    }
}

fn tempfile(flag: &str) -> Result<File, String> {
    tempfile::tempfile().map_err(|e| format!("{flag}: cannot make a temporary copy of standard input ({e})"))
}

/// Reads every key of `reader`: how many there are, and the reader at its end.
fn count<R: BufRead>(reader: R) -> Result<(u64, R), Bad> {
    let mut lines = KeyLines::new(reader)?;
    let mut n = 0;
    while lines.next_key()?.is_some() {
        n += 1;
    }
    Ok((n, lines.reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &[u8]) -> Result<(Format, Vec<Vec<u8>>), String> {
        let mut lines = KeyLines::new(text).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(k) = lines.next_key().map_err(|e| e.to_string())? {
            out.push(k.0);
        }
        Ok((lines.format(), out))
    }

    #[test]
    fn plain_lists_take_each_line_literally() {
        let (f, k) = keys(b"a\r\n\nb,c\n\"q\"\n\xEF\xBB\xBFnot-a-bom-here\nlast").unwrap();
        assert_eq!(f, Format::Lines);
        assert_eq!(k, [&b"a"[..], b"b,c", b"\"q\"", b"\xEF\xBB\xBFnot-a-bom-here", b"last"]);
        let (_, k) = keys(b"\xEF\xBB\xBFfirst\nsecond\n").unwrap();
        assert_eq!(k, [&b"first"[..], b"second"]);
        assert_eq!(keys(b"").unwrap().1, Vec::<Vec<u8>>::new());
    }

    #[test]
    fn csv_in_every_form_redis_ferry_or_a_spreadsheet_writes() {
        let ours = b"time,key,stage,error,message\n2026-01-01T00:00:00.000Z,\"a,\"\"b\\x0a\\xff\",write,OOM,\"x, y\"\n";
        let bom_quoted = b"\xEF\xBB\xBF\"time\",\"key\",\"stage\",\"error\",\"message\"\r\n\"t\",\"a,\"\"b\\x0a\\xff\",\"w\",\"OOM\",\"m\"\r\n,,,,\r\n";
        let semicolons = b"Time;Key;Difference;Message\r\nt;\"a,\"\"b\\x0a\\xff\";value;m\r\n";
        let reordered = b"key\tmessage\ttime\n\"a,\"\"b\\x0a\\xff\"\tm\tt\n";
        for text in [&ours[..], bom_quoted, semicolons, reordered] {
            let (f, k) = keys(text).unwrap();
            assert!(matches!(f, Format::Csv { .. }), "{}", String::from_utf8_lossy(text));
            assert_eq!(k, [b"a,\"b\n\xff".to_vec()], "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn plain_keys_that_start_like_a_header_stay_keys() {
        for first in [&b"time,keyring:1"[..], b"key,message", b"time;keys"] {
            let text = [first, b"\nnext\n"].concat();
            let (f, k) = keys(&text).unwrap();
            assert_eq!(f, Format::Lines, "{}", String::from_utf8_lossy(first));
            assert_eq!(k, [first.to_vec(), b"next".to_vec()]);
        }
    }

    #[test]
    fn a_file_that_looks_like_a_csv_but_is_not_one_is_refused_by_line() {
        for (text, line) in [
            (
                &b"\"time\",\"key\nx\n"[..],
                "line 1: a CSV header that cannot be read: field 2 has an unclosed quote",
            ),
            (b"time,key,stage\nt,\"open,w\n", "line 2: field 2 has an unclosed quote"),
            (b"time,key,stage\nt,\"a\"b,w\n", "line 2: text after the closing quote of field 2"),
            (b"time,key,stage\nt\n", "line 2: 1 fields, but the key is field 2"),
            (b"time,key,stage\nt,bad\\q,w\n", "line 2: key `bad\\q` has an unknown escape \\q at byte 3"),
            (b"time,key,when\n", "line 1: a CSV header that names columns"),
        ] {
            let err = keys(text).unwrap_err();
            assert!(err.starts_with(line), "{err}");
        }
    }

    #[test]
    fn every_truncation_reads_or_is_refused_without_panic() {
        let text = b"\xEF\xBB\xBF\"time\",\"key\",\"stage\"\r\n\"t\",\"a\\x0a\"\"b\",\"w\"\r\nt,plain,w\n";
        for end in 0..=text.len() {
            let _ = keys(&text[..end]);
        }
        for i in 0..text.len() {
            for b in [b'"', b',', b'\\', b'\n', 0xff] {
                let mut t = text.to_vec();
                t[i] = b;
                let _ = keys(&t);
            }
        }
    }

    #[test]
    fn lines_appended_after_the_check_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        std::fs::write(&path, "a\nb\n").unwrap();
        let mut file = KeysFile::open("--keys-from", path.to_str().unwrap()).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"c\nbad\\q\n").unwrap();
        let mut read = Vec::new();
        while let Some(k) = file.lines.next_key().unwrap() {
            read.push(k.0);
        }
        assert_eq!((file.keys, read), (2, vec![b"a".to_vec(), b"b".to_vec()]));
    }

    #[test]
    fn rows_split_by_rfc_4180() {
        assert_eq!(split_row(b"a,\"b,\"\"c\",", b',').unwrap(), [&b"a"[..], b"b,\"c", b""]);
        assert_eq!(split_row(b"", b',').unwrap(), [&b""[..]]);
        assert_eq!(split_row(b"a;b", b';').unwrap(), [&b"a"[..], b"b"]);
    }
}
