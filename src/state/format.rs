//! The framing of every checkpoint file: a 24-byte header, then the body.
//!
//! ```text
//! 0..6    magic "EDDYST"
//! 6..8    format version, u16 little-endian (VERSION)
//! 8       kind: 1 = manifest, 2 = state run
//! 9..12   zero
//! 12..20  body length in bytes, u64 little-endian
//! 20..24  CRC32C of bytes 0..20 and of the body, u32 little-endian
//! 24..    body: bincode (varint integers) of the kind's type
//! ```
//!
//! The checksum covers the header too, so a flipped bit anywhere, a truncated file and a file of
//! another kind or version are each told apart by [`open`], before any decoding. Bodies use
//! bincode's default options (little-endian, variable-length integers), which keep small counts
//! and offsets to a byte or two.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version written; a reader refuses any other, so a format change bumps it.
pub const VERSION: u16 = 3;

const MAGIC: &[u8; 6] = b"EDDYST";
const HEADER: usize = 24;

/// What a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A checkpoint's manifest.
    Manifest = 1,
    /// A run of one section's state entries, written by one worker.
    Run = 2,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Shorter than its header says (or than a header).
    #[error("truncated: {actual} bytes where the header promises {expected}")]
    Truncated {
        /// Header and body, as the header gives them (or the header alone).
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// Longer than its header says.
    #[error("{actual} bytes where the header promises {expected}")]
    Overlong {
        /// Header and body.
        expected: u64,
        /// The file's length.
        actual: u64,
    },
    /// Not a checkpoint file.
    #[error("not an Eddy checkpoint file (bad magic)")]
    Magic,
    /// Written by a format this build does not read.
    #[error("format version {0}, but this build reads version {VERSION}")]
    Version(u16),
    /// A file of another kind where this one was expected.
    #[error("a file of kind {found} where kind {expected} was expected")]
    Kind {
        /// The kind wanted.
        expected: u8,
        /// The kind in the header.
        found: u8,
    },
    /// The checksum does not match: some byte changed.
    #[error(
        "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupt"
    )]
    Checksum {
        /// CRC32C in the header.
        stored: u32,
        /// CRC32C of what was read.
        computed: u32,
    },
    /// The body passed the checksum but does not decode as the expected type.
    #[error("body does not decode: {0}")]
    Decode(String),
    /// A value could not be encoded (a sequence of unknown length, say).
    #[error("cannot encode: {0}")]
    Encode(String),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// A file being written: its header is filled in by [`Frame::finish`] once the body is complete.
pub struct Frame {
    kind: Kind,
    bytes: Vec<u8>,
}

impl Frame {
    /// An empty file of `kind`.
    pub fn new(kind: Kind) -> Frame {
        let mut bytes = Vec::with_capacity(4096);
        bytes.resize(HEADER, 0);
        Frame { kind, bytes }
    }

    /// Appends `value`'s encoding to the body.
    pub fn encode<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), FormatError> {
        encode_into(&mut self.bytes, value)
    }

    /// Appends bytes already encoded (by [`encode_into`]) to the body.
    pub fn append(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
    }

    /// The complete file: header, then body.
    pub fn finish(mut self) -> Vec<u8> {
        let body = (self.bytes.len() - HEADER) as u64;
        let header = &mut self.bytes[..HEADER];
        header[..6].copy_from_slice(MAGIC);
        header[6..8].copy_from_slice(&VERSION.to_le_bytes());
        header[8] = self.kind as u8;
        header[12..20].copy_from_slice(&body.to_le_bytes());
        let crc = checksum(&self.bytes);
        self.bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        self.bytes
    }
}

/// CRC32C of the header's first 20 bytes and the body.
fn checksum(file: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&file[..20]), &file[HEADER..])
}

/// Appends `value`'s encoding, as a body holds it, to `bytes`.
pub fn encode_into<T: Serialize + ?Sized>(
    bytes: &mut Vec<u8>,
    value: &T,
) -> Result<(), FormatError> {
    options()
        .serialize_into(bytes, value)
        .map_err(|e| FormatError::Encode(e.to_string()))
}

/// The file `kind` holding just `value`.
///
/// # Examples
///
/// ```
/// use eddy::state::format::{self, Kind};
///
/// let file = format::write(Kind::Run, &vec![(1u64, "a".to_string())]).unwrap();
/// let back: Vec<(u64, String)> = format::read(Kind::Run, &file).unwrap();
/// assert_eq!(back, vec![(1, "a".to_string())]);
/// assert!(format::read::<Vec<(u64, String)>>(Kind::Run, &file[..file.len() - 1]).is_err());
/// ```
pub fn write<T: Serialize + ?Sized>(kind: Kind, value: &T) -> Result<Vec<u8>, FormatError> {
    let mut frame = Frame::new(kind);
    frame.encode(value)?;
    Ok(frame.finish())
}

/// Checks `file` (length, magic, version, kind, checksum) and gives its body.
pub fn open(kind: Kind, file: &[u8]) -> Result<&[u8], FormatError> {
    let actual = file.len() as u64;
    if file.len() < HEADER {
        return Err(FormatError::Truncated {
            expected: HEADER as u64,
            actual,
        });
    }
    if &file[..6] != MAGIC {
        return Err(FormatError::Magic);
    }
    let version = u16::from_le_bytes([file[6], file[7]]);
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let expected = HEADER as u64 + u64::from_le_bytes(file[12..20].try_into().unwrap());
    if actual < expected {
        return Err(FormatError::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(FormatError::Overlong { expected, actual });
    }
    let stored = u32::from_le_bytes(file[20..24].try_into().unwrap());
    let computed = checksum(file);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    if file[8] != kind as u8 || file[9..12] != [0, 0, 0] {
        return Err(FormatError::Kind {
            expected: kind as u8,
            found: file[8],
        });
    }
    Ok(&file[HEADER..])
}

/// Decodes a body that [`open`] gave, as a `T`, requiring that it is used up.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FormatError> {
    options()
        .reject_trailing_bytes()
        .deserialize(body)
        .map_err(|e| FormatError::Decode(e.to_string()))
}

/// Checks `file` and decodes its body as a `T`.
pub fn read<T: DeserializeOwned>(kind: Kind, file: &[u8]) -> Result<T, FormatError> {
    decode(open(kind, file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        write(Kind::Run, &(vec![(7u64, "key".to_string(), 42i64)], 3u32)).unwrap()
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let back: (Vec<(u64, String, i64)>, u32) = read(Kind::Run, &sample()).unwrap();
        assert_eq!(back, (vec![(7, "key".into(), 42)], 3));
    }

    #[test]
    fn every_truncation_is_detected() {
        let file = sample();
        for len in 0..file.len() {
            let error = open(Kind::Run, &file[..len]).unwrap_err();
            assert!(
                matches!(error, FormatError::Truncated { .. }),
                "{len}: {error}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(matches!(
            open(Kind::Run, &longer),
            Err(FormatError::Overlong { .. })
        ));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let file = sample();
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x10;
            assert!(open(Kind::Run, &bad).is_err(), "a flip at byte {at} passed");
        }
    }

    #[test]
    fn another_kind_or_version_is_refused() {
        let file = sample();
        assert_eq!(
            open(Kind::Manifest, &file),
            Err(FormatError::Kind {
                expected: Kind::Manifest as u8,
                found: Kind::Run as u8
            })
        );
        let mut newer = file.clone();
        newer[6..8].copy_from_slice(&(VERSION + 1).to_le_bytes());
        assert_eq!(
            open(Kind::Run, &newer),
            Err(FormatError::Version(VERSION + 1))
        );
    }

    #[test]
    fn a_body_of_another_type_is_a_decode_error() {
        let error = read::<(Vec<(u64, String, i64)>, u32, u64)>(Kind::Run, &sample()).unwrap_err();
        assert!(matches!(error, FormatError::Decode(_)), "{error}");
        let error = read::<Vec<(u64, String, i64)>>(Kind::Run, &sample()).unwrap_err();
        assert!(
            matches!(error, FormatError::Decode(_)),
            "trailing bytes: {error}"
        );
    }
}
