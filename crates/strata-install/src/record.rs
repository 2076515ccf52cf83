//! RECORD: the wheel's list of files with hashes (read and verified) and the installed
//! environment's list (written), in the CSV form pip reads.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// A hash algorithm RECORD may name. PEP 427 forbids md5 and sha1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Self::Sha256 => Hasher::Sha256(Sha256::new()),
            Self::Sha384 => Hasher::Sha384(Sha384::new()),
            Self::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
}

/// A running hash of one of the RECORD algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest in RECORD's encoding: urlsafe base64 without padding.
    pub fn finish_b64(self) -> String {
        match self {
            Hasher::Sha256(h) => b64(&h.finalize()),
            Hasher::Sha384(h) => b64(&h.finalize()),
            Hasher::Sha512(h) => b64(&h.finalize()),
        }
    }
}

/// The expected hash and size of one wheel file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    pub hash: Option<(HashAlgorithm, String)>,
    pub size: Option<u64>,
}

/// What is wrong with a row of RECORD.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("unterminated quote")]
    UnterminatedQuote,
    /// A row is `path,hash,size`.
    #[error("expected 3 fields, found {found}")]
    FieldCount { found: usize },
    #[error("hash {field:?} is not <algorithm>=<value>")]
    HashFormat { field: String },
    /// md5 and sha1 (forbidden by PEP 427), or anything else unknown.
    #[error("hash algorithm {name:?} is not sha256, sha384 or sha512")]
    HashAlgorithm { name: String },
    #[error("size {field:?} is not a number")]
    Size { field: String },
    /// Two rows for one path could disagree.
    #[error("{path:?} is listed twice")]
    Duplicate { path: String },
}

/// A row of the RECORD file that could not be understood: its 1-based line and why.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct RecordSyntax {
    pub line: usize,
    #[source]
    pub error: RecordError,
}

/// Parses a wheel's RECORD into path -> expectation. A path listed twice is an error: the two
/// rows could disagree.
pub fn parse(text: &str) -> Result<BTreeMap<String, RecordEntry>, RecordSyntax> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |error: RecordError| RecordSyntax {
            line: line_no,
            error,
        };
        if line.trim().is_empty() {
            continue;
        }
        let fields = split_csv(line).map_err(err)?;
        let [path, hash, size] = fields.as_slice() else {
            return Err(err(RecordError::FieldCount {
                found: fields.len(),
            }));
        };
        let entry = RecordEntry {
            hash: parse_hash(hash).map_err(err)?,
            size: parse_size(size).map_err(err)?,
        };
        if out.insert(path.clone(), entry).is_some() {
            return Err(err(RecordError::Duplicate { path: path.clone() }));
        }
    }
    Ok(out)
}

fn parse_hash(field: &str) -> Result<Option<(HashAlgorithm, String)>, RecordError> {
    if field.is_empty() {
        return Ok(None);
    }
    let (name, value) = field
        .split_once('=')
        .ok_or_else(|| RecordError::HashFormat {
            field: field.to_string(),
        })?;
    let algorithm = HashAlgorithm::parse(name).ok_or_else(|| RecordError::HashAlgorithm {
        name: name.to_string(),
    })?;
    // Some tools pad; the spec does not. Compare without padding.
    Ok(Some((algorithm, value.trim_end_matches('=').to_string())))
}

fn parse_size(field: &str) -> Result<Option<u64>, RecordError> {
    if field.is_empty() {
        return Ok(None);
    }
    field.parse().map(Some).map_err(|_| RecordError::Size {
        field: field.to_string(),
    })
}

/// Splits one CSV line (Python's csv dialect: `"` quotes, `""` escapes a quote).
fn split_csv(line: &str) -> Result<Vec<String>, RecordError> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return Err(RecordError::UnterminatedQuote);
    }
    fields.push(field);
    Ok(fields)
}

/// One row of the installed RECORD; `hash` is sha256 base64, `None` for RECORD itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledFile {
    pub path: String,
    pub hash: Option<String>,
    pub size: u64,
}

/// The installed RECORD, rows sorted by path so the bytes never depend on install order.
pub fn write(mut files: Vec<InstalledFile>, record_path: &str) -> Vec<u8> {
    files.sort();
    let mut out = String::new();
    for file in &files {
        let hash = file
            .hash
            .as_ref()
            .map(|h| format!("sha256={h}"))
            .unwrap_or_default();
        out.push_str(&format!("{},{},{}\n", quote(&file.path), hash, file.size));
    }
    out.push_str(&format!("{},,\n", quote(record_path)));
    out.into_bytes()
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// urlsafe base64 without padding, as RECORD encodes digests.
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The RECORD form of a sha256 digest.
pub fn sha256_b64(bytes: &[u8]) -> String {
    b64(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_python() {
        // python3 -c "import base64,hashlib;print(base64.urlsafe_b64encode(hashlib.sha256(b'').digest()).rstrip(b'='))"
        assert_eq!(
            sha256_b64(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(b64(b"f"), "Zg");
        assert_eq!(b64(b"fo"), "Zm8");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn parses_rows_with_quotes_and_empty_hashes() {
        let text =
            "a/b.py,sha256=abc,12\n\"we,ird\"\"x\",sha512=def==,3\nx-1.0.dist-info/RECORD,,\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows["a/b.py"],
            RecordEntry {
                hash: Some((HashAlgorithm::Sha256, "abc".into())),
                size: Some(12)
            }
        );
        assert_eq!(
            rows["we,ird\"x"].hash,
            Some((HashAlgorithm::Sha512, "def".into()))
        );
        assert_eq!(rows["x-1.0.dist-info/RECORD"].hash, None);
    }

    #[test]
    fn rejects_bad_rows() {
        for (text, line) in [
            ("a,md5=x,1\n", 1),
            ("a,sha256=x\n", 1),
            ("a,,\nb,sha256=x,big\n", 2),
            ("a,,\na,,\n", 2),
            ("\"a,,\n", 1),
        ] {
            assert_eq!(parse(text).unwrap_err().line, line, "{text}");
        }
    }

    #[test]
    fn says_what_is_wrong_with_a_row() {
        let text = |s: &str| s.to_string();
        let cases = [
            ("\"a,,\n", RecordError::UnterminatedQuote),
            ("a,sha256=x\n", RecordError::FieldCount { found: 2 }),
            ("a,x,1,2\n", RecordError::FieldCount { found: 4 }),
            (
                "a,sha256,1\n",
                RecordError::HashFormat {
                    field: text("sha256"),
                },
            ),
            (
                "a,md5=x,1\n",
                RecordError::HashAlgorithm { name: text("md5") },
            ),
            ("a,,-1\n", RecordError::Size { field: text("-1") }),
            ("a,,\na,,\n", RecordError::Duplicate { path: text("a") }),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input).unwrap_err().error, want, "{input:?}");
        }
        let err = parse("ok,,\nb,sha256=x,big\n").unwrap_err();
        assert_eq!(err.to_string(), "line 2: size \"big\" is not a number");
    }

    #[test]
    fn writes_sorted_rows_and_record_last() {
        let files = vec![
            InstalledFile {
                path: "z.py".into(),
                hash: Some("h".into()),
                size: 1,
            },
            InstalledFile {
                path: "../../../bin/a,b".into(),
                hash: Some("g".into()),
                size: 2,
            },
        ];
        let text = String::from_utf8(write(files, "x-1.dist-info/RECORD")).unwrap();
        assert_eq!(
            text,
            "\"../../../bin/a,b\",sha256=g,2\nz.py,sha256=h,1\nx-1.dist-info/RECORD,,\n"
        );
        assert_eq!(parse(&text).unwrap().len(), 3);
    }
}
