//! Wheel -> layer installation, on wheels built here with the `zip` crate, read back with
//! `tar` + `flate2`.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_install::EntryPointError;
use strata_install::{b64, RecordError};
use strata_install::{decompress, LayerCompression};
use strata_install::{
    env_layer, wheel_layer, wheels_layer, InstallError, InstallScheme, MergedLayer, WheelLayer,
};
use strata_oci::Digest;
use strata_python::PythonVersion;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

#[derive(Clone)]
struct Entry {
    path: String,
    data: Vec<u8>,
    mode: u32,
    symlink: bool,
}

/// Builds a wheel with METADATA, WHEEL and a correct RECORD unless told otherwise.
#[derive(Clone)]
struct WheelBuilder {
    name: String,
    version: String,
    entries: Vec<Entry>,
    year: u16,
    metadata_name: Option<String>,
    dist_info: bool,
    record_edit: Option<fn(String) -> String>,
}

impl WheelBuilder {
    fn new(name: &str, version: &str) -> Self {
        WheelBuilder {
            name: name.into(),
            version: version.into(),
            entries: Vec::new(),
            year: 2020,
            metadata_name: None,
            dist_info: true,
            record_edit: None,
        }
    }

    fn entry(mut self, path: &str, data: &[u8], mode: u32, symlink: bool) -> Self {
        self.entries.push(Entry {
            path: path.into(),
            data: data.to_vec(),
            mode,
            symlink,
        });
        self
    }

    fn file(self, path: &str, data: &str) -> Self {
        self.entry(path, data.as_bytes(), 0o644, false)
    }

    fn exec(self, path: &str, data: &str) -> Self {
        self.entry(path, data.as_bytes(), 0o755, false)
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(path, target.as_bytes(), 0o777, true)
    }

    fn dist_info(&self) -> String {
        format!("{}-{}.dist-info", self.name, self.version)
    }

    fn all_entries(&self) -> Vec<Entry> {
        let mut entries = self.entries.clone();
        if !self.dist_info {
            return entries;
        }
        let name = self.metadata_name.as_deref().unwrap_or(&self.name);
        let metadata = format!(
            "Metadata-Version: 2.1\nName: {name}\nVersion: {}\n\nBody\n",
            self.version
        );
        let wheel =
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
        let di = self.dist_info();
        for (file, data) in [("METADATA", metadata.as_str()), ("WHEEL", wheel)] {
            entries.push(Entry {
                path: format!("{di}/{file}"),
                data: data.as_bytes().to_vec(),
                mode: 0o644,
                symlink: false,
            });
        }
        let mut record = String::new();
        for e in &entries {
            let hash = b64(&Sha256::digest(&e.data));
            record.push_str(&format!("{},sha256={hash},{}\n", e.path, e.data.len()));
        }
        record.push_str(&format!("{di}/RECORD,,\n"));
        let record = self.record_edit.map_or(record.clone(), |edit| edit(record));
        entries.push(Entry {
            path: format!("{di}/RECORD"),
            data: record.into_bytes(),
            mode: 0o644,
            symlink: false,
        });
        entries
    }

    fn zip_bytes(&self, entries: &[Entry]) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let time = DateTime::from_date_and_time(self.year, 3, 4, 5, 6, 8).unwrap();
        for e in entries {
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Deflated)
                .last_modified_time(time)
                .unix_permissions(e.mode);
            if e.symlink {
                let target = String::from_utf8(e.data.clone()).unwrap();
                zip.add_symlink(e.path.as_str(), target, options).unwrap();
            } else {
                zip.start_file(e.path.as_str(), options).unwrap();
                zip.write_all(&e.data).unwrap();
            }
        }
        zip.finish().unwrap().into_inner()
    }

    fn file_name(&self) -> String {
        format!("{}-{}-py3-none-any.whl", self.name, self.version)
    }

    fn build(&self, dir: &Path) -> PathBuf {
        self.build_with(dir, |entries| entries)
    }

    /// Builds after reordering (or otherwise changing) the final entry list.
    fn build_with(&self, dir: &Path, f: impl FnOnce(Vec<Entry>) -> Vec<Entry>) -> PathBuf {
        let bytes = self.zip_bytes(&f(self.all_entries()));
        let path = dir.join(self.file_name());
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn scheme() -> InstallScheme {
    InstallScheme::new(PythonVersion::new(3, 11))
}

const SP: &str = "opt/venv/lib/python3.11/site-packages";

#[derive(Debug)]
struct TarEntry {
    path: String,
    kind: char,
    mode: u32,
    data: Vec<u8>,
    link: Option<String>,
}

/// Reads a layer back, checking the header invariants of every entry on the way.
fn read_layer(gz: &[u8]) -> Vec<TarEntry> {
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(gz));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        assert_eq!(h.mtime().unwrap(), 0, "{path}");
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{path}");
        assert_eq!(h.username().unwrap(), Some(""), "{path}");
        assert_eq!(h.groupname().unwrap(), Some(""), "{path}");
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            tar::EntryType::Symlink => 'l',
            other => panic!("unexpected entry type {other:?} for {path}"),
        };
        let mode = h.mode().unwrap();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.push(TarEntry {
            path,
            kind,
            mode,
            data,
            link,
        });
    }
    out
}

fn check_order(entries: &[TarEntry]) {
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(paths, sorted, "entries are sorted by path bytes");
    for (i, path) in paths.iter().enumerate() {
        if let Some((parent, _)) = path.rsplit_once('/') {
            let at = paths.iter().position(|p| *p == parent);
            assert!(at.is_some_and(|at| at < i), "parent of {path} comes first");
        }
    }
}

fn install(path: &Path) -> (WheelLayer, Vec<u8>) {
    let mut out = Vec::new();
    let layer = wheel_layer(path, &scheme(), &mut out).unwrap();
    (layer, out)
}

fn by_path(entries: &[TarEntry]) -> BTreeMap<&str, &TarEntry> {
    entries.iter().map(|e| (e.path.as_str(), e)).collect()
}

fn demo() -> WheelBuilder {
    WheelBuilder::new("demo", "1.0")
        .file("demo/__init__.py", "")
        .file(
            "demo/cli.py",
            "def main():\n    return 0\nclass App:\n    run = main\n",
        )
        .exec("demo/tool.sh", "#!/bin/sh\necho tool\n")
        .file("demo-1.0.data/purelib/demo_extra.py", "X = 1\n")
        .file("demo-1.0.data/scripts/demo-run", "#!python\nprint('hi')\n")
        .file("demo-1.0.data/scripts/raw.sh", "#!/bin/sh\necho raw\n")
        .file("demo-1.0.data/data/share/demo/config.json", "{}\n")
        .file("demo-1.0.data/headers/demo.h", "#define DEMO 1\n")
        .file(
            "demo-1.0.dist-info/entry_points.txt",
            "[console_scripts]\ndemo = demo.cli:main\n[gui_scripts]\ndemo-gui = demo.cli:App.run\n",
        )
}

#[test]
fn installs_every_category_with_expected_paths_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, out) = install(&demo().build(dir.path()));
    assert_eq!(layer.name.as_str(), "demo");
    assert_eq!(layer.version, "1.0");
    assert_eq!(layer.descriptor.digest, Digest::of(&out));
    assert_eq!(layer.descriptor.size, out.len() as u64);
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(out.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(layer.descriptor.diff_id, Digest::of(&tar));

    let entries = read_layer(&out);
    check_order(&entries);
    let listing: Vec<String> = entries
        .iter()
        .map(|e| format!("{} {} {:o}", e.kind, e.path.replace(SP, "SP"), e.mode))
        .collect();
    let expected = [
        "d opt 755",
        "d opt/venv 755",
        "d opt/venv/bin 755",
        "f opt/venv/bin/demo 755",
        "f opt/venv/bin/demo-gui 755",
        "f opt/venv/bin/demo-run 755",
        "f opt/venv/bin/raw.sh 755",
        "d opt/venv/include 755",
        "d opt/venv/include/site 755",
        "d opt/venv/include/site/python3.11 755",
        "d opt/venv/include/site/python3.11/demo 755",
        "f opt/venv/include/site/python3.11/demo/demo.h 644",
        "d opt/venv/lib 755",
        "d opt/venv/lib/python3.11 755",
        "d SP 755",
        "d SP/demo 755",
        "d SP/demo-1.0.dist-info 755",
        "f SP/demo-1.0.dist-info/INSTALLER 644",
        "f SP/demo-1.0.dist-info/METADATA 644",
        "f SP/demo-1.0.dist-info/RECORD 644",
        "f SP/demo-1.0.dist-info/WHEEL 644",
        "f SP/demo-1.0.dist-info/entry_points.txt 644",
        "f SP/demo/__init__.py 644",
        "f SP/demo/cli.py 644",
        "f SP/demo/tool.sh 755",
        "f SP/demo_extra.py 644",
        "d opt/venv/share 755",
        "d opt/venv/share/demo 755",
        "f opt/venv/share/demo/config.json 644",
    ];
    assert_eq!(listing, expected);
    assert_eq!(
        layer.files,
        entries.iter().filter(|e| e.kind != 'd').count()
    );

    let files = by_path(&entries);
    let text = |p: &str| String::from_utf8(files[p].data.clone()).unwrap();
    assert_eq!(
        text("opt/venv/bin/demo-run"),
        "#!/opt/venv/bin/python\nprint('hi')\n"
    );
    assert_eq!(text("opt/venv/bin/raw.sh"), "#!/bin/sh\necho raw\n");
    let console = text("opt/venv/bin/demo");
    assert!(console.starts_with("#!/opt/venv/bin/python\n"), "{console}");
    assert!(
        console.contains("from demo.cli import main\n") && console.contains("sys.exit(main())")
    );
    let gui = text("opt/venv/bin/demo-gui");
    assert!(gui.contains("from demo.cli import App\n") && gui.contains("sys.exit(App.run())"));
    assert_eq!(
        text(&format!("{SP}/demo-1.0.dist-info/INSTALLER")),
        "strata\n"
    );
}

#[test]
fn record_lists_every_installed_file_with_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = install(&demo().build(dir.path()));
    let entries = read_layer(&out);
    let record_path = format!("{SP}/demo-1.0.dist-info/RECORD");
    let record = String::from_utf8(by_path(&entries)[record_path.as_str()].data.clone()).unwrap();
    let rows: BTreeMap<&str, (&str, &str)> = record
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0], (f[1], f[2]))
        })
        .collect();
    assert_eq!(rows["demo-1.0.dist-info/RECORD"], ("", ""));
    assert!(rows.contains_key("../../../bin/demo"));
    assert!(rows.contains_key("../../../include/site/python3.11/demo/demo.h"));
    assert!(rows.contains_key("../../../share/demo/config.json"));
    let installed: Vec<&TarEntry> = entries.iter().filter(|e| e.kind == 'f').collect();
    assert_eq!(rows.len(), installed.len());
    for e in installed {
        if e.path == record_path {
            continue;
        }
        let rel = relative(&e.path);
        let (hash, size) = rows
            .get(rel.as_str())
            .unwrap_or_else(|| panic!("{rel} in RECORD"));
        assert_eq!(
            *hash,
            format!("sha256={}", b64(&Sha256::digest(&e.data))),
            "{rel}"
        );
        assert_eq!(*size, e.data.len().to_string(), "{rel}");
    }
}

/// A layer path relative to site-packages, as pip writes it.
fn relative(path: &str) -> String {
    match path.strip_prefix(&format!("{SP}/")) {
        Some(rest) => rest.to_string(),
        None => format!("../../../{}", path.strip_prefix("opt/venv/").unwrap()),
    }
}

#[test]
fn same_contents_give_the_same_layer_whatever_mtimes_order_or_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = demo().build(&a_dir);
    let mut later = demo();
    later.year = 2024;
    let b = later.build_with(&b_dir, |mut entries| {
        entries.reverse();
        entries
    });
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let (first, bytes) = install(&a);
    let (again, _) = install(&a);
    assert_eq!(first.descriptor, again.descriptor);
    let digests: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = [&b, &a, &b, &a]
            .into_iter()
            .map(|p| s.spawn(move || install(p).0.descriptor))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for d in digests {
        assert_eq!(d, first.descriptor);
    }
    // And a different content gives a different layer.
    let other = demo().file("demo/more.py", "").build(dir.path());
    assert_ne!(install(&other).0.descriptor.digest, first.descriptor.digest);
    assert!(!bytes.is_empty());
}

/// zstd layers: deterministic across runs and threads as gzip ones are, with the zstd media
/// type and the diff_id of the same tar.
#[test]
fn zstd_layers_are_deterministic_and_hold_the_gzip_layers_tar() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = demo().build(dir.path());
    let zstd = scheme().with_compression(LayerCompression::Zstd);
    let install_zstd = |path: &Path| {
        let mut out = Vec::new();
        let layer = wheel_layer(path, &zstd, &mut out).unwrap();
        (layer.descriptor, out)
    };
    let (first, bytes) = install_zstd(&wheel);
    assert_eq!(
        first.media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(first.digest, Digest::of(&bytes));
    let threaded: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| install_zstd(&wheel).0)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for d in threaded {
        assert_eq!(d, first);
    }
    let (gzip, _) = install(&wheel);
    assert_eq!(first.diff_id, gzip.descriptor.diff_id);
    assert_ne!(first.digest, gzip.descriptor.digest);
    let mut tar = Vec::new();
    decompress(&first.media_type, &bytes[..])
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(Digest::of(&tar), first.diff_id);
}

#[test]
fn namespace_package_dirs_are_in_both_layers() {
    let dir = tempfile::tempdir().unwrap();
    let a = WheelBuilder::new("nsp_a", "1.0")
        .file("nsp/a/__init__.py", "A = 1\n")
        .build(dir.path());
    let b = WheelBuilder::new("nsp_b", "2.0")
        .file("nsp/b/__init__.py", "B = 1\n")
        .build(dir.path());
    let (la, oa) = install(&a);
    let (lb, ob) = install(&b);
    assert_ne!(la.descriptor.digest, lb.descriptor.digest);
    let (ea, eb) = (read_layer(&oa), read_layer(&ob));
    for (entries, mine, theirs) in [(&ea, "nsp/a", "nsp/b"), (&eb, "nsp/b", "nsp/a")] {
        let files = by_path(entries);
        let nsp = files[format!("{SP}/nsp").as_str()];
        assert_eq!((nsp.kind, nsp.mode), ('d', 0o755));
        assert!(files.contains_key(format!("{SP}/{mine}/__init__.py").as_str()));
        assert!(!files.keys().any(|p| p.contains(theirs)));
    }
}

#[test]
fn symlinks_inside_the_venv_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = WheelBuilder::new("linky", "1.0")
        .file("linky/real.py", "")
        .symlink("linky/alias.py", "real.py")
        .build(dir.path());
    let (_, out) = install(&path);
    let entries = read_layer(&out);
    let link = by_path(&entries)[format!("{SP}/linky/alias.py").as_str()];
    assert_eq!(
        (link.kind, link.mode, link.link.as_deref()),
        ('l', 0o777, Some("real.py"))
    );
}

/// Installs and returns the full error chain; the output must stay empty.
fn rejected(path: &Path) -> String {
    let mut out = Vec::new();
    let err = wheel_layer(path, &scheme(), &mut out).expect_err("wheel must be rejected");
    assert!(out.is_empty(), "nothing is written for a bad wheel");
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

fn assert_rejected(builder: WheelBuilder, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = builder.build(dir.path());
    let msg = rejected(&path);
    assert!(msg.contains(&builder.file_name()), "names the wheel: {msg}");
    assert!(msg.contains(needle), "{needle:?} in {msg}");
}

#[test]
fn rejects_path_traversal_absolute_and_windows_paths() {
    let base = || WheelBuilder::new("bad", "1.0").file("bad/__init__.py", "");
    assert_rejected(base().file("../evil", "x"), "\"../evil\"");
    assert_rejected(base().file("bad/../../evil", "x"), "\"bad/../../evil\"");
    assert_rejected(base().file("/etc/passwd", "x"), "\"/etc/passwd\"");
    assert_rejected(base().file("C:/windows/evil", "x"), "\"C:/windows/evil\"");
    assert_rejected(base().file("bad\\evil.py", "x"), "bad\\\\evil.py");
}

#[test]
fn rejects_escaping_symlinks() {
    let base = || WheelBuilder::new("bad", "1.0").file("bad/__init__.py", "");
    assert_rejected(
        base().symlink("etc", "../../../../etc"),
        "\"etc\": symlink target escapes",
    );
    assert_rejected(
        base().symlink("bad/passwd", "/etc/passwd"),
        "\"bad/passwd\"",
    );
    assert_rejected(
        base().symlink("bad/x", "a/../../../../../../etc"),
        "\"bad/x\"",
    );
}

#[test]
fn bad_record_and_entry_point_lines_are_named_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = || WheelBuilder::new("bad", "1.0").file("bad/__init__.py", "");
    let mut bad_row = base();
    bad_row.record_edit = Some(|r| format!("{r}x,,big\n"));
    let err = wheel_layer(&bad_row.build(dir.path()), &scheme(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, InstallError::Record { file, line: 5, source: RecordError::Size { field }, .. }
            if file == "bad-1.0.dist-info/RECORD" && field == "big"),
        "{err:?}"
    );
    let bad_script = base().file(
        "bad-1.0.dist-info/entry_points.txt",
        "[console_scripts]\nx = a\n",
    );
    let err = wheel_layer(&bad_script.build(dir.path()), &scheme(), &mut Vec::new()).unwrap_err();
    assert!(
        matches!(&err, InstallError::EntryPoints { file, line: 2, source: EntryPointError::NoColon { .. }, .. }
            if file == "bad-1.0.dist-info/entry_points.txt"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "wheel bad-1.0-py3-none-any.whl: bad-1.0.dist-info/entry_points.txt line 2: \"a\" is not `module:attr`"
    );
}

#[test]
fn rejects_corrupt_wheels() {
    let base = || WheelBuilder::new("bad", "1.0").file("bad/__init__.py", "print(1)\n");
    let mut lying = base();
    lying.record_edit = Some(|r| r.replacen("sha256=", "sha256=AAAA", 1));
    assert_rejected(lying, "\"bad/__init__.py\": hash mismatch");
    let mut wrong_size = base();
    wrong_size.record_edit = Some(|r| r.replacen(",9\n", ",10\n", 1));
    assert_rejected(wrong_size, "\"bad/__init__.py\": size mismatch");
    let mut unlisted = base();
    unlisted.record_edit = Some(|r| r.lines().skip(1).map(|l| format!("{l}\n")).collect());
    assert_rejected(unlisted, "\"bad/__init__.py\": not listed in RECORD");
    let mut ghost = base();
    ghost.record_edit = Some(|r| format!("bad/ghost.py,sha256=abc,1\n{r}"));
    assert_rejected(ghost, "\"bad/ghost.py\": listed in RECORD but missing");
    let mut no_dist_info = base();
    no_dist_info.dist_info = false;
    assert_rejected(no_dist_info, "no .dist-info directory");
    let mut renamed = base();
    renamed.metadata_name = Some("other".into());
    assert_rejected(
        renamed,
        "bad-1.0.dist-info/METADATA names project \"other\"",
    );
    assert_rejected(
        base().file("bad-1.0.data/weird/x", ""),
        "\"bad-1.0.data/weird/x\"",
    );
    assert_rejected(base().file("bad/.wh.other", ""), "\"bad/.wh.other\"");
    assert_rejected(
        base().file("bad-1.0.data/purelib/bad/__init__.py", ""),
        "\"bad-1.0.data/purelib/bad/__init__.py\"",
    );
}

#[test]
fn rejects_duplicate_zip_entries() {
    let dir = tempfile::tempdir().unwrap();
    let builder = WheelBuilder::new("dup", "1.0")
        .file("dup/aaa.py", "x = 1\n")
        .file("dup/bbb.py", "x = 2\n");
    let path = builder.build(dir.path());
    // The zip writer refuses duplicates: rename bbb to aaa in the local and central headers.
    let bytes = std::fs::read(&path).unwrap();
    let patched = replace_all(&bytes, b"dup/bbb.py", b"dup/aaa.py");
    std::fs::write(&path, patched).unwrap();
    let msg = rejected(&path);
    assert!(
        msg.contains("\"dup/aaa.py\" appears more than once"),
        "{msg}"
    );
}

fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = haystack.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    out
}

#[test]
fn env_layer_makes_a_venv() {
    let extra = vec![("strata.lock".to_string(), b"lock\n".to_vec())];
    let mut out = Vec::new();
    let desc = env_layer(&scheme(), "/usr/bin/python3.11", "3.11.2", &extra, &mut out).unwrap();
    assert_eq!(desc.digest, Digest::of(&out));
    let entries = read_layer(&out);
    check_order(&entries);
    let listing: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{} {} {:o} {}",
                e.kind,
                e.path,
                e.mode,
                e.link.as_deref().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        listing,
        [
            "d opt 755 ",
            "d opt/venv 755 ",
            "d opt/venv/bin 755 ",
            "l opt/venv/bin/python 777 /usr/bin/python3.11",
            "l opt/venv/bin/python3 777 python",
            "l opt/venv/bin/python3.11 777 python",
            "d opt/venv/lib 755 ",
            "d opt/venv/lib/python3.11 755 ",
            "d opt/venv/lib/python3.11/site-packages 755 ",
            "l opt/venv/lib64 777 lib",
            "f opt/venv/pyvenv.cfg 644 ",
            "f opt/venv/strata.lock 644 ",
        ]
    );
    let cfg = &by_path(&entries)["opt/venv/pyvenv.cfg"].data;
    assert_eq!(
        String::from_utf8_lossy(cfg),
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n"
    );
    let mut again = Vec::new();
    let desc2 = env_layer(
        &scheme(),
        "/usr/bin/python3.11",
        "3.11.2",
        &extra,
        &mut again,
    )
    .unwrap();
    assert_eq!(desc, desc2);
    let bad = vec![("../escape".to_string(), vec![])];
    assert!(env_layer(
        &scheme(),
        "/usr/bin/python3.11",
        "3.11.2",
        &bad,
        std::io::sink()
    )
    .is_err());
    assert!(env_layer(&scheme(), "python3", "3.11.2", &[], std::io::sink()).is_err());
}

/// Pins the bytes of single-wheel layers (first recorded before `wheel_layer` became the one-wheel
/// case of `wheels_layer`; re-recorded for layer format 2, zlib-rs, and 3, carried DEFLATE
/// streams): layers already in caches
/// and registries must keep their digests.
/// If this fails with layer.rs's known answer, the compressor changed; otherwise the
/// installer did: bump LAYER_FORMAT_VERSION.
#[test]
fn single_wheel_layers_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let linky = WheelBuilder::new("linky", "1.0")
        .file("linky/real.py", "")
        .symlink("linky/alias.py", "real.py");
    for (builder, digest) in [
        (
            demo(),
            "sha256:5eda138bb3e6da112b80da90250b24c81fa11e813c537db9c7f2b5ef77033d6d",
        ),
        (
            linky,
            "sha256:99a7792aaf0bea5807ee73d5b14ab7580fd7236981547ddcd5c53d23c489b9b0",
        ),
    ] {
        let (layer, _) = install(&builder.build(dir.path()));
        assert_eq!(
            layer.descriptor.digest.to_string(),
            digest,
            "{}",
            builder.name
        );
    }
}

fn merge(paths: &[&Path]) -> (MergedLayer, Vec<u8>) {
    let mut out = Vec::new();
    let layer = wheels_layer(paths, &scheme(), &mut out).unwrap();
    (layer, out)
}

/// Merges and returns the error with its chain; the output must stay empty.
fn merge_rejected(paths: &[&Path]) -> (InstallError, String) {
    let mut out = Vec::new();
    let err = wheels_layer(paths, &scheme(), &mut out).expect_err("merge must be rejected");
    assert!(out.is_empty(), "nothing is written for a rejected merge");
    let mut msg = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    (err, msg)
}

/// Three wheels sharing the `nsp` namespace directory, one with a symlink, one with every
/// data category and launchers.
fn trio(dir: &Path) -> [PathBuf; 3] {
    [
        demo().build(dir),
        WheelBuilder::new("nsp_a", "1.0")
            .file("nsp/a/__init__.py", "A = 1\n")
            .symlink("nsp/a/alias.py", "__init__.py")
            .build(dir),
        WheelBuilder::new("nsp_b", "2.0")
            .file("nsp/b/__init__.py", "B = 1\n")
            .exec("nsp_b-2.0.data/scripts/nsp-b", "#!python\nimport nsp.b\n")
            .build(dir),
    ]
}

fn entry_key(e: &TarEntry) -> (String, char, u32, Vec<u8>, Option<String>) {
    (
        e.path.clone(),
        e.kind,
        e.mode,
        e.data.clone(),
        e.link.clone(),
    )
}

#[test]
fn merged_layer_holds_every_file_of_each_wheel_with_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let wheels = trio(dir.path());
    let paths: Vec<&Path> = wheels.iter().map(PathBuf::as_path).collect();
    let (merged, out) = merge(&paths);
    assert_eq!(merged.descriptor.digest, Digest::of(&out));
    assert_eq!(merged.descriptor.size, out.len() as u64);
    let packages: Vec<(&str, &str)> = merged
        .packages
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        packages,
        [("demo", "1.0"), ("nsp-a", "1.0"), ("nsp-b", "2.0")]
    );

    let entries = read_layer(&out);
    check_order(&entries);
    assert_eq!(
        merged.files,
        entries.iter().filter(|e| e.kind != 'd').count()
    );
    // Exactly the union of the wheels' own layers: every file with the bytes of the right
    // wheel (so every streamed key went to the right zip), every RECORD as if alone.
    let mut union = BTreeMap::new();
    let mut files = 0;
    for path in &wheels {
        let (single, bytes) = install(path);
        files += single.files;
        for e in read_layer(&bytes) {
            let key = entry_key(&e);
            if let Some(other) = union.insert(e.path.clone(), key.clone()) {
                assert_eq!(other, key, "a shared path is a directory in both");
                assert_eq!(e.kind, 'd', "{}", e.path);
            }
        }
    }
    assert_eq!(merged.files, files);
    let got: BTreeMap<String, _> = entries
        .iter()
        .map(|e| (e.path.clone(), entry_key(e)))
        .collect();
    assert_eq!(got, union);

    // And each RECORD lists exactly its own wheel's files, with the merged layer's bytes.
    let by = by_path(&entries);
    for (dist_info, own) in [
        ("demo-1.0.dist-info", "demo"),
        ("nsp_a-1.0.dist-info", "nsp/a/"),
        ("nsp_b-2.0.dist-info", "nsp/b/"),
    ] {
        let record =
            String::from_utf8(by[format!("{SP}/{dist_info}/RECORD").as_str()].data.clone())
                .unwrap();
        for line in record.lines() {
            let f: Vec<&str> = line.split(',').collect();
            let rel = f[0];
            assert!(
                rel.starts_with(dist_info) || rel.contains(own) || rel.starts_with("../../../"),
                "{dist_info} lists {rel}"
            );
            if f[1].is_empty() {
                assert_eq!(rel, format!("{dist_info}/RECORD"));
                continue;
            }
            let layer_path = match rel.strip_prefix("../../../") {
                Some(rest) => format!("opt/venv/{rest}"),
                None => format!("{SP}/{rel}"),
            };
            let e = by[layer_path.as_str()];
            let expected = match &e.link {
                Some(target) => target.as_bytes().to_vec(),
                None => e.data.clone(),
            };
            assert_eq!(
                f[1],
                format!("sha256={}", b64(&Sha256::digest(&expected))),
                "{rel}"
            );
            assert_eq!(f[2], expected.len().to_string(), "{rel}");
        }
    }
    let nsp_b_record = String::from_utf8(
        by[format!("{SP}/nsp_b-2.0.dist-info/RECORD").as_str()]
            .data
            .clone(),
    )
    .unwrap();
    assert!(
        nsp_b_record.contains("../../../bin/nsp-b,"),
        "{nsp_b_record}"
    );
    assert!(!nsp_b_record.contains("bin/demo"), "{nsp_b_record}");
}

#[test]
fn merged_layer_does_not_depend_on_the_order_of_the_wheels() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = trio(dir.path());
    // A wheel with nothing but its dist-info owns no streamed keys: an empty key range.
    // In a directory that sorts first: the layer's order is by name, not by path.
    let early = dir.path().join("0");
    std::fs::create_dir_all(&early).unwrap();
    let meta = WheelBuilder::new("meta", "1.0").build(&early);
    let (first, bytes) = merge(&[&a, &b, &c, &meta]);
    for order in [
        [&meta, &c, &b, &a],
        [&b, &meta, &a, &c],
        [&c, &a, &meta, &b],
        [&a, &c, &b, &meta],
    ] {
        let paths: Vec<&Path> = order.iter().map(|p| p.as_path()).collect();
        let (again, again_bytes) = merge(&paths);
        assert_eq!(again, first);
        assert_eq!(again_bytes, bytes);
    }
    let names: Vec<&str> = first.packages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["demo", "meta", "nsp-a", "nsp-b"]);
    let entries = read_layer(&bytes);
    assert!(by_path(&entries).contains_key(format!("{SP}/meta-1.0.dist-info/RECORD").as_str()));
    // Another set of wheels is another layer.
    assert_ne!(merge(&[&a, &b, &c]).0.descriptor, first.descriptor);
}

#[test]
fn merged_layer_of_one_wheel_is_its_wheel_layer() {
    let dir = tempfile::tempdir().unwrap();
    for path in trio(dir.path()) {
        let (single, single_bytes) = install(&path);
        let (merged, merged_bytes) = merge(&[&path]);
        assert_eq!(merged_bytes, single_bytes);
        assert_eq!(merged.descriptor, single.descriptor);
        assert_eq!(merged.files, single.files);
        assert_eq!(merged.packages, [(single.name, single.version)]);
    }
}

#[test]
fn wheels_writing_the_same_file_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let a = WheelBuilder::new("alpha", "1.0")
        .file("alpha/__init__.py", "")
        .file("shared/util.py", "A\n")
        .build(dir.path());
    let b = WheelBuilder::new("beta", "2.0")
        .file("beta/__init__.py", "")
        .file("shared/util.py", "B\n")
        .build(dir.path());
    for order in [[&a, &b], [&b, &a]] {
        let (err, msg) = merge_rejected(&[order[0], order[1]]);
        assert!(matches!(err, InstallError::Conflict { .. }), "{err:?}");
        assert!(
            msg.contains("alpha-1.0-py3-none-any.whl and beta-2.0-py3-none-any.whl")
                && msg.contains(&format!("\"{SP}/shared/util.py\"")),
            "{msg}"
        );
    }
}

/// pkgutil-style namespace packages ship the same `__init__.py` in every portion: the same
/// bytes at one path are written once, and the layer's paths say who installed it.
#[test]
fn the_same_bytes_at_one_path_are_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let init = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n";
    let a = WheelBuilder::new("ns_one", "1.0")
        .file("ns/__init__.py", init)
        .file("ns/one.py", "ONE = 1\n")
        .build(dir.path());
    let b = WheelBuilder::new("ns_two", "1.0")
        .file("ns/__init__.py", init)
        .file("ns/two.py", "TWO = 2\n")
        .build(dir.path());
    let (merged, out) = merge(&[&a, &b]);
    let entries = read_layer(&out);
    let init_path = format!("{SP}/ns/__init__.py");
    assert_eq!(entries.iter().filter(|e| e.path == init_path).count(), 1);
    let owner = merged.paths.iter().find(|p| p.path == init_path).unwrap();
    assert_eq!(owner.wheel, "ns_one-1.0-py3-none-any.whl");
    // The paths are what the layer holds, as read back from it.
    let listed = strata_install::layer_paths(&out[..]).map(|_| ());
    assert!(listed.is_err(), "a compressed layer is not a tar");
    let tar = strata_install::decompress(&merged.descriptor.media_type, &out[..]).unwrap();
    let listed = strata_install::layer_paths(tar).unwrap();
    let from_install: Vec<(String, String)> = merged
        .paths
        .iter()
        .map(|p| (p.path.clone(), p.content.clone()))
        .collect();
    assert_eq!(listed, from_install);
}

#[test]
fn generated_scripts_and_file_versus_directory_conflict_too() {
    let dir = tempfile::tempdir().unwrap();
    let tool = |name: &str| {
        WheelBuilder::new(name, "1.0")
            .file(&format!("{name}/__init__.py"), "")
            .file(
                &format!("{name}-1.0.dist-info/entry_points.txt"),
                &format!("[console_scripts]\ntool = {name}:main\n"),
            )
            .build(dir.path())
    };
    let (one, two) = (tool("one"), tool("two"));
    let (_, msg) = merge_rejected(&[&one, &two]);
    assert!(
        msg.contains("one-1.0-py3-none-any.whl and two-1.0-py3-none-any.whl both install \"opt/venv/bin/tool\""),
        "{msg}"
    );
    // A module file in one wheel, a package directory of that name in the other, whichever
    // comes first.
    let file = |name: &str| {
        WheelBuilder::new(name, "1.0")
            .file(&format!("{name}/__init__.py"), "")
            .file("clash", "x\n")
            .build(dir.path())
    };
    let package = |name: &str| {
        WheelBuilder::new(name, "1.0")
            .file(&format!("{name}/__init__.py"), "")
            .file("clash/__init__.py", "")
            .build(dir.path())
    };
    for (first, second) in [(file("aaa"), package("zzz")), (package("aaa"), file("zzz"))] {
        let (err, msg) = merge_rejected(&[&second, &first]);
        assert!(matches!(err, InstallError::Conflict { .. }), "{err:?}");
        assert!(
            msg.contains("aaa-1.0-py3-none-any.whl and zzz-1.0-py3-none-any.whl both install")
                && msg.contains(&format!("\"{SP}/clash\"")),
            "{msg}"
        );
    }
}

#[test]
fn merging_rejects_bad_wheels_two_versions_and_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, _] = trio(dir.path());
    let other_dir = dir.path().join("v2");
    std::fs::create_dir_all(&other_dir).unwrap();
    let a2 = WheelBuilder::new("nsp_a", "1.1")
        .file("nsp/a/__init__.py", "A = 2\n")
        .build(&other_dir);
    let (err, msg) = merge_rejected(&[&a, &b, &a2]);
    assert!(matches!(err, InstallError::SameProject { .. }), "{msg}");
    assert!(
        msg.contains("nsp_a-1.0-py3-none-any.whl and nsp_a-1.1-py3-none-any.whl"),
        "{msg}"
    );
    let (err, _) = merge_rejected(&[&a, &a]);
    assert!(matches!(err, InstallError::SameProject { .. }), "{err:?}");

    let mut lying = WheelBuilder::new("bad", "1.0").file("bad/__init__.py", "print(1)\n");
    lying.record_edit = Some(|r| r.replacen("sha256=", "sha256=AAAA", 1));
    let bad = lying.build(dir.path());
    let (_, msg) = merge_rejected(&[&a, &bad, &b]);
    assert!(
        msg.contains("bad-1.0-py3-none-any.whl")
            && msg.contains("\"bad/__init__.py\": hash mismatch"),
        "{msg}"
    );
    let (err, _) = merge_rejected(&[]);
    assert!(matches!(err, InstallError::NoWheels), "{err:?}");
}
