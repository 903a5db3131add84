//! The backup file's layout, with no file system in it: frames written to any `Write`
//! and read from any `Read`.
//!
//! ```text
//! "INTEGRATIOND BACKUP\n"  u32 format
//! 'M' u32 len  manifest (JSON)
//! 'T' u32 len  table name            (then its entries)
//! 'E' u32 len  key  u32 len  value
//! 'F' u32 len  file name  u64 len  bytes
//! 'Z' [32]     SHA-256 of every byte before the digest
//! ```
//! Integers are big-endian. Lengths are checked against limits before anything is
//! allocated for them, so a hostile or damaged file costs no more memory than its real
//! bytes.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use sha2::{Digest, Sha256};

/// The first bytes of every backup.
pub const MAGIC: &[u8; 20] = b"INTEGRATIOND BACKUP\n";
/// The layout this build writes and the newest it reads.
pub const BACKUP_FORMAT: u32 = 1;

pub const TAG_MANIFEST: u8 = b'M';
pub const TAG_TABLE: u8 = b'T';
pub const TAG_ENTRY: u8 = b'E';
pub const TAG_FILE: u8 = b'F';
pub const TAG_END: u8 = b'Z';

/// The largest manifest, table name, key and value a reader accepts.
pub const MAX_MANIFEST: u32 = 1024 * 1024;
pub const MAX_NAME: u32 = 255;
pub const MAX_KEY: u32 = 1024 * 1024;
pub const MAX_VALUE: u32 = 256 * 1024 * 1024;

/// What a backup holds, written before its contents: what a restore checks first, and
/// what it counts the contents against.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The state database's format ([`crate::store::FORMAT_VERSION`] of the writer).
    pub store_format: u32,
    /// The id of the state it was taken of ([`crate::store::Store::state_id`]; empty
    /// before format 2): a restore keeps it.
    #[serde(default)]
    pub state_id: String,
    /// `integrationd` and its version, for messages ("written by integrationd 0.4.0").
    pub written_by: String,
    pub created_unix_ms: u64,
    /// The audit chain's head (`SEQ:SHA256`), empty before the first record.
    pub audit_head: String,
    /// Entries per table.
    pub tables: BTreeMap<String, u64>,
    /// Bytes per file (the audit anchor and the event log's segments).
    pub files: BTreeMap<String, u64>,
    /// How long writes waited while the database was read.
    pub paused_ms: u64,
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Writes the end frame (the digest of everything before it) and returns the inner
    /// writer with the file's size and the SHA-256 of the whole file.
    pub fn finish(mut self) -> std::io::Result<(W, u64, [u8; 32])> {
        self.write_all(&[TAG_END])?;
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        self.write_all(&digest)?;
        self.inner.flush()?;
        let whole: [u8; 32] = self.hasher.finalize().into();
        Ok((self.inner, self.bytes, whole))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn len_u32(len: usize) -> std::io::Result<[u8; 4]> {
    u32::try_from(len)
        .map(u32::to_be_bytes)
        .map_err(|_| std::io::Error::other("a record over 4 GiB"))
}

fn write_chunk(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(&len_u32(bytes.len())?)?;
    out.write_all(bytes)
}

pub fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&BACKUP_FORMAT.to_be_bytes())
}

pub fn write_manifest(out: &mut impl Write, manifest: &Manifest) -> std::io::Result<()> {
    let json = serde_json::to_vec(manifest).map_err(std::io::Error::other)?;
    out.write_all(&[TAG_MANIFEST])?;
    write_chunk(out, &json)
}

pub fn write_table(out: &mut impl Write, name: &str) -> std::io::Result<()> {
    out.write_all(&[TAG_TABLE])?;
    write_chunk(out, name.as_bytes())
}

pub fn write_entry(out: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    out.write_all(&[TAG_ENTRY])?;
    write_chunk(out, key)?;
    write_chunk(out, value)
}

/// A file frame's header; its `len` bytes follow.
pub fn write_file_header(out: &mut impl Write, name: &str, len: u64) -> std::io::Result<()> {
    out.write_all(&[TAG_FILE])?;
    write_chunk(out, name.as_bytes())?;
    out.write_all(&len.to_be_bytes())
}

/// What went wrong reading a backup, with the byte offset it was found at.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("it ends early, at byte {at}")]
    Truncated { at: u64 },
    #[error("at byte {at}: {what}")]
    Malformed { at: u64, what: String },
    #[error("reading it: {0}")]
    Io(std::io::Error),
}

/// One frame as read. A file frame's bytes are left in the reader for the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Manifest(Manifest),
    Table(String),
    Entry(Vec<u8>, Vec<u8>),
    File { name: String, len: u64 },
    End([u8; 32]),
}

/// Reads frames, counting bytes for its messages.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    at: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, at: 0 }
    }

    /// Where the next byte would be read from.
    pub fn position(&self) -> u64 {
        self.at
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::UnexpectedEof => FrameError::Truncated { at: self.at },
                _ => FrameError::Io(err),
            })?;
        self.at += N as u64;
        Ok(buf)
    }

    /// A length-prefixed chunk of at most `max` bytes; `what` names it in errors.
    fn chunk(&mut self, max: u32, what: &str) -> Result<Vec<u8>, FrameError> {
        let at = self.at;
        let len = u32::from_be_bytes(self.exact::<4>()?);
        if len > max {
            return Err(FrameError::Malformed {
                at,
                what: format!("a {what} of {len} bytes (at most {max})"),
            });
        }
        let mut bytes = Vec::new();
        // Grows with what is really there: a false length in a short file fails as
        // truncated without first allocating it.
        let read = (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut bytes)
            .map_err(FrameError::Io)?;
        if read < len as usize {
            return Err(FrameError::Truncated {
                at: self.at + read as u64,
            });
        }
        self.at += u64::from(len);
        Ok(bytes)
    }

    /// The magic and the format version. Refusing a newer format is the caller's.
    pub fn header(&mut self) -> Result<Option<u32>, FrameError> {
        let magic = match self.exact::<20>() {
            Ok(magic) => magic,
            Err(FrameError::Truncated { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        if &magic != MAGIC {
            return Ok(None);
        }
        Ok(Some(u32::from_be_bytes(self.exact::<4>()?)))
    }

    pub fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let at = self.at;
        let [tag] = self.exact::<1>()?;
        match tag {
            TAG_MANIFEST => {
                let json = self.chunk(MAX_MANIFEST, "manifest")?;
                serde_json::from_slice(&json)
                    .map(Frame::Manifest)
                    .map_err(|err| FrameError::Malformed {
                        at,
                        what: format!("the manifest is not valid: {err}"),
                    })
            }
            TAG_TABLE => {
                let name = self.chunk(MAX_NAME, "table name")?;
                String::from_utf8(name)
                    .map(Frame::Table)
                    .map_err(|_| FrameError::Malformed {
                        at,
                        what: "a table name that is not UTF-8".to_owned(),
                    })
            }
            TAG_ENTRY => {
                let key = self.chunk(MAX_KEY, "key")?;
                let value = self.chunk(MAX_VALUE, "value")?;
                Ok(Frame::Entry(key, value))
            }
            TAG_FILE => {
                let name = self.chunk(MAX_NAME, "file name")?;
                let name = String::from_utf8(name).map_err(|_| FrameError::Malformed {
                    at,
                    what: "a file name that is not UTF-8".to_owned(),
                })?;
                let len = u64::from_be_bytes(self.exact::<8>()?);
                Ok(Frame::File { name, len })
            }
            TAG_END => Ok(Frame::End(self.exact::<32>()?)),
            other => Err(FrameError::Malformed {
                at,
                what: format!("an unknown frame tag 0x{other:02x}"),
            }),
        }
    }

    /// Copies a file frame's `len` bytes to `out`.
    pub fn copy_file(&mut self, len: u64, out: &mut impl Write) -> Result<(), FrameError> {
        let copied =
            std::io::copy(&mut (&mut self.inner).take(len), out).map_err(FrameError::Io)?;
        if copied < len {
            return Err(FrameError::Truncated {
                at: self.at + copied,
            });
        }
        self.at += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            store_format: 1,
            state_id: String::new(),
            written_by: "integrationd test".to_owned(),
            created_unix_ms: 1,
            audit_head: String::new(),
            tables: BTreeMap::from([("tenants".to_owned(), 1)]),
            files: BTreeMap::from([("audit.anchor".to_owned(), 3)]),
            paused_ms: 0,
        }
    }

    fn sample() -> (Vec<u8>, [u8; 32]) {
        let mut out = Hashing::new(Vec::new());
        write_header(&mut out).expect("header");
        write_manifest(&mut out, &manifest()).expect("manifest");
        write_table(&mut out, "tenants").expect("table");
        write_entry(&mut out, b"acme", b"{}").expect("entry");
        write_file_header(&mut out, "audit.anchor", 3).expect("file");
        out.write_all(b"abc").expect("bytes");
        let (bytes, len, whole) = out.finish().expect("finish");
        assert_eq!(len, bytes.len() as u64);
        (bytes, whole)
    }

    #[test]
    fn frames_round_trip_and_the_digest_covers_everything_before_it() {
        let (bytes, whole) = sample();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&bytes)), whole);
        let body = &bytes[..bytes.len() - 32];
        assert_eq!(
            &bytes[bytes.len() - 32..],
            Sha256::digest(body).as_slice(),
            "the end frame's digest"
        );
        let mut reader = FrameReader::new(bytes.as_slice());
        assert_eq!(reader.header().expect("header"), Some(BACKUP_FORMAT));
        assert_eq!(reader.next_frame().expect("m"), Frame::Manifest(manifest()));
        assert_eq!(
            reader.next_frame().expect("t"),
            Frame::Table("tenants".into())
        );
        assert_eq!(
            reader.next_frame().expect("e"),
            Frame::Entry(b"acme".to_vec(), b"{}".to_vec())
        );
        let Frame::File { name, len } = reader.next_frame().expect("f") else {
            panic!("a file frame");
        };
        assert_eq!((name.as_str(), len), ("audit.anchor", 3));
        let mut file = Vec::new();
        reader.copy_file(len, &mut file).expect("copy");
        assert_eq!(file, b"abc");
        assert!(matches!(reader.next_frame().expect("z"), Frame::End(_)));
    }

    #[test]
    fn every_truncation_is_reported_as_one() {
        let (bytes, _) = sample();
        for cut in 0..bytes.len() {
            let mut reader = FrameReader::new(&bytes[..cut]);
            let outcome = (|| {
                if reader.header()?.is_none() {
                    return Ok(());
                }
                loop {
                    match reader.next_frame()? {
                        Frame::File { len, .. } => reader.copy_file(len, &mut std::io::sink())?,
                        Frame::End(_) => return Err(FrameError::Io(std::io::Error::other("end"))),
                        _ => {}
                    }
                }
            })();
            match outcome {
                Ok(()) => assert!(cut < 20, "only a short header reads as not a backup"),
                Err(FrameError::Truncated { at }) => assert!(at <= cut as u64),
                Err(other) => panic!("cut at {cut}: {other}"),
            }
        }
    }

    #[test]
    fn hostile_lengths_and_tags_are_refused_without_allocating_them() {
        let mut frame = vec![TAG_ENTRY];
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        let err = FrameReader::new(frame.as_slice())
            .next_frame()
            .expect_err("too long");
        assert_eq!(
            err.to_string(),
            format!("at byte 1: a key of {} bytes (at most {MAX_KEY})", u32::MAX)
        );
        // A value that claims 200 MiB in a file of a few bytes: truncated, not allocated.
        let mut frame = vec![TAG_ENTRY, 0, 0, 0, 1, b'k'];
        frame.extend_from_slice(&(200u32 * 1024 * 1024).to_be_bytes());
        frame.extend_from_slice(b"short");
        let err = FrameReader::new(frame.as_slice())
            .next_frame()
            .expect_err("short");
        assert!(matches!(err, FrameError::Truncated { at: 15 }), "{err}");
        let err = FrameReader::new([b'?'].as_slice())
            .next_frame()
            .expect_err("tag");
        assert_eq!(err.to_string(), "at byte 0: an unknown frame tag 0x3f");
        let mut frame = vec![TAG_MANIFEST];
        frame.extend_from_slice(&2u32.to_be_bytes());
        frame.extend_from_slice(b"{}");
        let err = FrameReader::new(frame.as_slice())
            .next_frame()
            .expect_err("manifest");
        assert!(
            err.to_string()
                .starts_with("at byte 0: the manifest is not valid"),
            "{err}"
        );
    }
}
