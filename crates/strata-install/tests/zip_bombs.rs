//! Wheels are untrusted input: a wheel over its caps (entries, uncompressed bytes) or one
//! whose entry inflates past what its zip headers declare is refused quickly, with an error
//! naming the wheel, before its content is inflated.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use strata_install::b64;
use strata_install::{wheel_layer, wheels_layer_with_limits, InstallScheme, WheelLimits};
use strata_python::PythonVersion;

fn scheme() -> InstallScheme {
    InstallScheme::new(PythonVersion::new(3, 11))
}

/// One zip entry as it is stored: the method (0 stored, 8 deflate), the stored bytes, and
/// what the headers declare.
struct Raw {
    name: String,
    method: u16,
    data: Vec<u8>,
    crc: u32,
    size: u64,
}

impl Raw {
    fn stored(name: &str, content: &[u8]) -> Raw {
        let mut crc = flate2::Crc::new();
        crc.update(content);
        Raw {
            name: name.into(),
            method: 0,
            data: content.to_vec(),
            crc: crc.sum(),
            size: content.len() as u64,
        }
    }
}

fn le16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn le32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn le64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A zip written by hand, so that an entry can declare any size: every entry carries its
/// sizes in a zip64 extra field.
fn zip(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for e in entries {
        offsets.push(out.len() as u64);
        le32(&mut out, 0x0403_4b50);
        le16(&mut out, 45);
        le16(&mut out, 0);
        le16(&mut out, e.method);
        le16(&mut out, 0);
        le16(&mut out, 0x21);
        le32(&mut out, e.crc);
        le32(&mut out, u32::MAX);
        le32(&mut out, u32::MAX);
        le16(&mut out, e.name.len() as u16);
        le16(&mut out, 20);
        out.extend_from_slice(e.name.as_bytes());
        le16(&mut out, 1);
        le16(&mut out, 16);
        le64(&mut out, e.size);
        le64(&mut out, e.data.len() as u64);
        out.extend_from_slice(&e.data);
    }
    let central_start = out.len() as u64;
    for (e, offset) in entries.iter().zip(&offsets) {
        le32(&mut out, 0x0201_4b50);
        le16(&mut out, (3 << 8) | 45);
        le16(&mut out, 45);
        le16(&mut out, 0);
        le16(&mut out, e.method);
        le16(&mut out, 0);
        le16(&mut out, 0x21);
        le32(&mut out, e.crc);
        le32(&mut out, u32::MAX);
        le32(&mut out, u32::MAX);
        le16(&mut out, e.name.len() as u16);
        le16(&mut out, 28);
        le16(&mut out, 0);
        le16(&mut out, 0);
        le16(&mut out, 0);
        le32(&mut out, 0o100644 << 16);
        le32(&mut out, u32::MAX);
        out.extend_from_slice(e.name.as_bytes());
        le16(&mut out, 1);
        le16(&mut out, 24);
        le64(&mut out, e.size);
        le64(&mut out, e.data.len() as u64);
        le64(&mut out, *offset);
    }
    let central_len = out.len() as u64 - central_start;
    le32(&mut out, 0x0605_4b50);
    le16(&mut out, 0);
    le16(&mut out, 0);
    le16(&mut out, entries.len() as u16);
    le16(&mut out, entries.len() as u16);
    le32(&mut out, central_len as u32);
    le32(&mut out, central_start as u32);
    le16(&mut out, 0);
    out
}

/// A raw deflate stream that inflates to `mib` MiB of zeros, built without compressing them
/// all: after a sync flush the compressor's blocks for 1 MiB of zeros only refer back to
/// zeros, so one such chunk repeated is a valid stream of as many MiB.
fn zeros_deflate(mib: usize) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&[0u8; 64 << 10]).unwrap();
    enc.flush().unwrap();
    let head_len = enc.get_ref().len();
    enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    enc.flush().unwrap();
    let stream = enc.get_ref().clone();
    let (head, chunk) = stream.split_at(head_len);
    let mut out = head.to_vec();
    for _ in 0..mib {
        out.extend_from_slice(chunk);
    }
    // An empty final block (fixed Huffman, end of block).
    out.extend_from_slice(&[0x03, 0x00]);
    out
}

fn record_row(path: &str, content: &[u8]) -> String {
    format!(
        "{path},sha256={},{}\n",
        b64(&Sha256::digest(content)),
        content.len()
    )
}

/// `bomb-1.0` with valid metadata and the entry `bomb/zeros.bin` stored as `data` (deflate)
/// declaring `declared` bytes. RECORD lists it (with the hash of nothing), so only its size
/// can stop an installer before inflating it all.
fn bomb_wheel(dir: &Path, data: Vec<u8>, declared: u64) -> PathBuf {
    let metadata = b"Metadata-Version: 2.1\nName: bomb\nVersion: 1.0\n";
    let wheel = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let mut record = String::new();
    record += &record_row("bomb-1.0.dist-info/METADATA", metadata);
    record += &record_row("bomb-1.0.dist-info/WHEEL", wheel);
    record += &format!(
        "bomb/zeros.bin,sha256={},{declared}\n",
        b64(&Sha256::digest(b""))
    );
    record += "bomb-1.0.dist-info/RECORD,,\n";
    let entries = [
        Raw {
            name: "bomb/zeros.bin".into(),
            method: 8,
            data,
            crc: 0,
            size: declared,
        },
        Raw::stored("bomb-1.0.dist-info/METADATA", metadata),
        Raw::stored("bomb-1.0.dist-info/WHEEL", wheel),
        Raw::stored("bomb-1.0.dist-info/RECORD", record.as_bytes()),
    ];
    let path = dir.join("bomb-1.0-py3-none-any.whl");
    std::fs::write(&path, zip(&entries)).unwrap();
    path
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// Runs `f` on a thread and gives up after `limit` (the thread is left behind).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("timed out: the bomb is being inflated")
}

/// Installs `wheel` with the default caps into a file, and returns the error and the size of
/// what was written.
fn install_refused(wheel: PathBuf, out: PathBuf) -> (String, u64) {
    within(Duration::from_secs(20), move || {
        let file = std::fs::File::create(&out).unwrap();
        let err = match wheel_layer(&wheel, &scheme(), file) {
            Ok(layer) => panic!("the bomb was installed: {layer:?}"),
            Err(e) => chain(&e),
        };
        (err, std::fs::metadata(&out).unwrap().len())
    })
}

#[test]
fn a_wheel_declaring_more_than_8_gib_is_refused_before_inflating() {
    let dir = tempfile::tempdir().unwrap();
    // 9 GiB of zeros in about 9 MB.
    let data = zeros_deflate(9 << 10);
    assert!(data.len() < 32 << 20, "{}", data.len());
    let wheel = bomb_wheel(dir.path(), data, 9 << 30);
    let started = Instant::now();
    let (err, written) = install_refused(wheel, dir.path().join("layer.tar.gz"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("bomb-1.0-py3-none-any.whl"), "{err}");
    assert!(err.contains(&format!("{} bytes", 8u64 << 30)), "{err}");
    assert_eq!(written, 0);
}

#[test]
fn an_entry_inflating_past_its_declared_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Declares 1 KiB, inflates to 4 GiB.
    let wheel = bomb_wheel(dir.path(), zeros_deflate(4 << 10), 1024);
    let started = Instant::now();
    let (err, written) = install_refused(wheel, dir.path().join("layer.tar.gz"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("bomb-1.0-py3-none-any.whl"), "{err}");
    assert!(err.contains("bomb/zeros.bin"), "{err}");
    assert!(err.contains("past its declared size"), "{err}");
    assert_eq!(written, 0);
}

/// A small valid wheel of `files` entries of `size` bytes each.
fn plain_wheel(dir: &Path, files: usize, size: usize) -> PathBuf {
    let metadata = b"Metadata-Version: 2.1\nName: plain\nVersion: 1.0\n";
    let wheel = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let content = vec![b'x'; size];
    let mut entries = Vec::new();
    let mut record = String::new();
    for i in 0..files {
        let name = format!("plain/f{i}.py");
        record += &record_row(&name, &content);
        entries.push(Raw::stored(&name, &content));
    }
    record += &record_row("plain-1.0.dist-info/METADATA", metadata);
    record += &record_row("plain-1.0.dist-info/WHEEL", wheel);
    record += "plain-1.0.dist-info/RECORD,,\n";
    entries.push(Raw::stored("plain-1.0.dist-info/METADATA", metadata));
    entries.push(Raw::stored("plain-1.0.dist-info/WHEEL", wheel));
    entries.push(Raw::stored("plain-1.0.dist-info/RECORD", record.as_bytes()));
    let path = dir.join("plain-1.0-py3-none-any.whl");
    std::fs::write(&path, zip(&entries)).unwrap();
    path
}

fn install_with(wheel: &Path, limits: WheelLimits) -> Result<(), String> {
    let mut out = Vec::new();
    wheels_layer_with_limits(&[wheel], &scheme(), &limits, &mut out)
        .map(|_| ())
        .map_err(|e| chain(&e))
}

#[test]
fn small_caps_refuse_too_many_entries_and_too_many_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // 10 files + METADATA, WHEEL, RECORD; 10 x 100 bytes of files.
    let wheel = plain_wheel(dir.path(), 10, 100);
    let roomy = WheelLimits {
        max_bytes: 1 << 20,
        max_entries: 13,
    };
    install_with(&wheel, roomy).unwrap();
    let err = install_with(
        &wheel,
        WheelLimits {
            max_entries: 12,
            ..roomy
        },
    )
    .unwrap_err();
    assert!(
        err.contains("plain-1.0-py3-none-any.whl") && err.contains("12 entries"),
        "{err}"
    );
    let err = install_with(
        &wheel,
        WheelLimits {
            max_bytes: 999,
            ..roomy
        },
    )
    .unwrap_err();
    assert!(
        err.contains("plain-1.0-py3-none-any.whl") && err.contains("999 bytes"),
        "{err}"
    );
}

#[test]
fn default_caps_are_8_gib_and_200000_entries() {
    let limits = WheelLimits::default();
    assert_eq!(limits.max_bytes, 8 << 30);
    assert_eq!(limits.max_entries, 200_000);
}

#[test]
fn the_bomb_stream_really_inflates_to_zeros() {
    let mut inflated = Vec::new();
    let stream = zeros_deflate(3);
    let mut dec = flate2::read::DeflateDecoder::new(&stream[..]);
    std::io::Read::read_to_end(&mut dec, &mut inflated).unwrap();
    assert_eq!(inflated.len(), (64 << 10) + (3 << 20));
    assert!(inflated.iter().all(|&b| b == 0));
}
