//! Image layers are untrusted input: a malicious layer on top of the fixture base, launched
//! through the real launcher (runc, overlay) as root, must not touch anything outside its
//! layer directory, must be refused with an error naming the image, the layer and the entry,
//! and must leave neither a half-unpacked directory under `rootfs/` nor a changed store.

#[path = "support/launch_fixture.rs"]
mod fixture;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use fixture::{env, read_log, Env, LONG};
use strata_oci::Digest;
use strata_oci::Store;
use strata_runc::LaunchError;
use strata_runc::{LayerCache, LayerLimits};

/// One entry of a hand-made layer.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

/// A gzip tar layer with exactly these entries, in this order.
fn layer(entries: &[E]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        match e {
            E::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, data) => {
                let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::HardLink(p, target) => {
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Char(p, major, minor) => {
                let mut h = header(tar::EntryType::Char, 0o666, 0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Fifo(p) => {
                let mut h = header(tar::EntryType::Fifo, 0o644, 0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The fixture base with `layer` added on top (and `user` as the image's User), in the
/// env's store. Returns the image's manifest digest and the layer's digest.
fn image_with_layer(env: &Env, gz: &[u8], user: Option<&str>) -> (Digest, Digest) {
    let store = env.store();
    let layer = store.put_bytes(gz).unwrap();
    let mut tar_bytes = Vec::new();
    std::io::copy(&mut flate2::read::MultiGzDecoder::new(gz), &mut tar_bytes).unwrap();
    let diff_id = Digest::of(&tar_bytes);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&env.image).unwrap()).unwrap();
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&config_digest).unwrap()).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(diff_id.to_string().into());
    if let Some(user) = user {
        config["config"]["User"] = user.into();
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_bytes(&config_bytes).unwrap();
    manifest["config"]["digest"] = config_digest.to_string().into();
    manifest["config"]["size"] = config_bytes.len().into();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer.to_string(),
            "size": gz.len(),
        }));
    let image = store
        .put_bytes(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    (image, layer)
}

/// Every file of the store (path -> size and content hash of index.json), to prove a
/// refused launch changed nothing.
fn store_snapshot(store: &Store) -> BTreeMap<PathBuf, (u64, Option<Digest>)> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (u64, Option<Digest>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&entry.path(), out);
            } else {
                let hash = (entry.file_name() == "index.json")
                    .then(|| Digest::of(&std::fs::read(entry.path()).unwrap()));
                out.insert(entry.path(), (meta.len(), hash));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(store.root(), &mut out);
    out
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// No unpacked or half-unpacked directory of `layer` under `rootfs/`.
fn assert_not_unpacked(rootfs: &Path, layer: &Digest) {
    let left: Vec<String> = names_in(rootfs)
        .into_iter()
        .filter(|n| n.contains(&layer.hex()[..12]) && !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left under rootfs/: {left:?}");
}

/// Launches `image` and expects a refusal; checks the store is as it was and nothing of the
/// layer is left. Returns the error text.
fn refused_launch(env: &Env, job: &str, image: &Digest, layer: &Digest) -> String {
    let before = store_snapshot(&env.store());
    let launcher = env.launcher();
    let mut req = env.request(job, &["sh", "-c", "true"]);
    req.image = image.clone();
    let err = match launcher.launch(&req) {
        Ok(_) => {
            let outcome = launcher.wait(job, LONG).unwrap();
            launcher.cleanup(job).unwrap();
            panic!("the launch of {image} was not refused: {outcome:?}");
        }
        Err(err) => err,
    };
    assert!(matches!(err, LaunchError::Rootfs { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(job), "{text}");
    assert!(text.contains(&image.to_string()), "no image in: {text}");
    assert!(text.contains(&layer.to_string()), "no layer in: {text}");
    assert_not_unpacked(&env.home().join("rootfs"), layer);
    assert_eq!(store_snapshot(&env.store()), before, "the store changed");
    text
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn whiteouts_through_a_symlink_do_not_touch_the_host() {
    let host = tempfile::tempdir().unwrap();
    let env = env();
    let target = host.path().to_str().unwrap();
    let gz = layer(&[
        E::Symlink("a", target),
        E::File("a/.wh.pwned", b""),
        E::File("a/s/.wh..wh..opq", b""),
    ]);
    let (image, layer) = image_with_layer(&env, &gz, None);
    let text = refused_launch(&env, "wh1", &image, &layer);
    assert!(text.contains("a/.wh.pwned"), "no entry in: {text}");
    assert!(text.contains("not a real directory"), "{text}");
    assert_eq!(
        names_in(host.path()),
        Vec::<String>::new(),
        "the host dir changed"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_opaque_marker_through_a_symlink_does_not_touch_the_host() {
    let host = tempfile::tempdir().unwrap();
    std::fs::create_dir(host.path().join("s")).unwrap();
    let env = env();
    let gz = layer(&[
        E::Symlink("a", host.path().to_str().unwrap()),
        E::File("a/s/.wh..wh..opq", b""),
    ]);
    let (image, layer) = image_with_layer(&env, &gz, None);
    let text = refused_launch(&env, "opq1", &image, &layer);
    assert!(text.contains("a/s/.wh..wh..opq"), "no entry in: {text}");
    let xattr = std::process::Command::new("getfattr")
        .args(["--absolute-names", "-n", "trusted.overlay.opaque"])
        .arg(host.path().join("s"))
        .output();
    if let Ok(out) = xattr {
        assert!(!out.status.success(), "the host dir was marked opaque");
    }
    assert_eq!(names_in(host.path()), ["s"]);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn files_and_dirs_through_a_symlink_do_not_touch_the_host() {
    let host = tempfile::tempdir().unwrap();
    let env = env();
    let gz = layer(&[
        E::Symlink("a", host.path().to_str().unwrap()),
        E::Dir("a/d"),
        E::File("a/f", b"x"),
    ]);
    let (image, layer) = image_with_layer(&env, &gz, None);
    let text = refused_launch(&env, "sym1", &image, &layer);
    assert!(text.contains("a/d"), "no entry in: {text}");
    assert_eq!(
        names_in(host.path()),
        Vec::<String>::new(),
        "the host dir changed"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn device_nodes_are_refused() {
    let env = env();
    let gz = layer(&[E::Dir("dev2"), E::Char("dev2/mem", 1, 1)]);
    let (image, layer) = image_with_layer(&env, &gz, None);
    let text = refused_launch(&env, "dev1", &image, &layer);
    assert!(text.contains("dev2/mem"), "no entry in: {text}");
    assert!(text.contains("device"), "{text}");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn hard_links_through_a_symlink_are_refused() {
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, b"host secret").unwrap();
    let env = env();
    let gz = layer(&[
        E::Symlink("h", host.path().to_str().unwrap()),
        E::HardLink("stolen", "h/secret"),
    ]);
    let (image, layer) = image_with_layer(&env, &gz, None);
    let text = refused_launch(&env, "hl1", &image, &layer);
    assert!(text.contains("stolen"), "no entry in: {text}");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().nlink(),
        1,
        "host file linked"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_good_layer_with_whiteouts_links_and_a_fifo_still_runs() {
    let env = env();
    let gz = layer(&[
        E::Dir("opt"),
        E::Dir("opt/x"),
        E::File("opt/x/.wh..wh..opq", b""),
        E::File("opt/x/data", b"hello"),
        E::HardLink("opt/x/again", "opt/x/data"),
        E::Symlink("opt/x/abs", "/etc/hostname"),
        E::Fifo("opt/x/pipe"),
        E::Dir("usr"),
        E::Dir("usr/bin"),
        E::File("usr/bin/.wh.ls", b""),
    ]);
    let (image, _) = image_with_layer(&env, &gz, None);
    let launcher = env.launcher();
    let mut req = env.request(
        "good1",
        &[
            "sh",
            "-c",
            "cat /opt/x/again; test -p /opt/x/pipe && test -L /opt/x/abs && test ! -e /usr/bin/ls && echo ok",
        ],
    );
    req.image = image;
    launcher.launch(&req).unwrap();
    let outcome = launcher.wait("good1", LONG).unwrap().expect("ended");
    launcher.cleanup("good1").unwrap();
    let log = read_log(&env.log("good1"));
    assert_eq!(outcome.exit_code, Some(0), "{log}");
    assert_eq!(log.trim(), "hellook");
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn layer_caps_refuse_too_many_entries_and_too_many_bytes() {
    let env = env();
    let store = env.store();
    let many = layer(&[
        E::Dir("d"),
        E::File("d/1", b"1"),
        E::File("d/2", b"2"),
        E::File("d/3", b"3"),
    ]);
    let big = layer(&[E::File("big", &vec![0u8; 4096])]);
    let (_, many) = image_with_layer(&env, &many, None);
    let (_, big) = image_with_layer(&env, &big, None);
    let rootfs = env.home().join("rootfs");
    let limits = LayerLimits {
        max_bytes: 1024,
        max_entries: 3,
    };
    let cache = LayerCache::open(&rootfs).unwrap().with_limits(limits);
    let err = cache.ensure(&store, &many).unwrap_err().to_string();
    assert!(
        err.contains(&many.to_string()) && err.contains("3 entries"),
        "{err}"
    );
    assert_not_unpacked(&rootfs, &many);
    let err = cache.ensure(&store, &big).unwrap_err().to_string();
    assert!(
        err.contains(&big.to_string()) && err.contains("1024 bytes"),
        "{err}"
    );
    assert!(err.contains("\"big\""), "no entry in: {err}");
    assert_not_unpacked(&rootfs, &big);
    // The defaults let both through.
    let cache = LayerCache::open(&rootfs).unwrap();
    assert!(cache.ensure(&store, &many).unwrap().extracted);
    assert!(cache.ensure(&store, &big).unwrap().extracted);
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_stale_half_unpacked_directory_is_removed() {
    let env = env();
    let store = env.store();
    let gz = layer(&[E::File("f", b"x")]);
    let (_, digest) = image_with_layer(&env, &gz, None);
    let rootfs = env.home().join("rootfs");
    let cache = LayerCache::open(&rootfs).unwrap();
    // What a launcher killed mid-unpack leaves.
    let stale = rootfs.join(format!(".tmp-{}-dead", digest.hex()));
    std::fs::create_dir_all(stale.join("half")).unwrap();
    assert!(cache.ensure(&store, &digest).unwrap().extracted);
    assert!(!stale.exists());
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn a_later_entry_replaces_an_earlier_one_as_tar_does() {
    let env = env();
    let store = env.store();
    let gz = layer(&[
        E::Dir("d"),
        E::Symlink("d", "/etc"),
        E::File("f", b"old"),
        E::File("f", b"new"),
        E::Dir("g"),
        E::Dir("g/h"),
        E::File("g/h/x", b"x"),
    ]);
    let (_, digest) = image_with_layer(&env, &gz, None);
    let cache = LayerCache::open(&env.home().join("rootfs")).unwrap();
    let dir = cache.ensure(&store, &digest).unwrap().dir;
    assert_eq!(
        std::fs::read_link(dir.join("d")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"new");
    let mtime = std::fs::metadata(dir.join("g/h")).unwrap().mtime();
    assert_eq!(mtime, 1_600_000_000, "directory mtimes are the layer's");
}

/// Runs `f` on a thread and gives up after `limit` (the thread is left behind).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("timed out: the launch hangs")
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_image_passwd_that_is_a_fifo_does_not_hang_the_launch() {
    let env = std::sync::Arc::new(env());
    let gz = layer(&[E::Dir("etc"), E::Fifo("etc/passwd")]);
    let (image, _) = image_with_layer(&env, &gz, Some("nobody"));
    let env2 = env.clone();
    let result = within(Duration::from_secs(30), move || {
        let mut req = env2.request("fifo1", &["true"]);
        req.image = image;
        env2.launcher().launch(&req).map_err(|e| e.to_string())
    });
    let err = result.expect_err("a FIFO /etc/passwd was accepted");
    assert!(
        err.contains("/etc/passwd") && err.contains("regular file"),
        "{err}"
    );
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_image_passwd_linking_out_of_the_image_reads_nothing_of_the_host() {
    let host = tempfile::tempdir().unwrap();
    let host_passwd = host.path().join("passwd");
    let mut f = std::fs::File::create(&host_passwd).unwrap();
    writeln!(f, "hostonly:x:4242:4242::/home/hostonly:/bin/sh").unwrap();
    let env = env();
    let gz = layer(&[
        E::Dir("etc"),
        E::Symlink("etc/passwd", host_passwd.to_str().unwrap()),
    ]);
    let (image, _) = image_with_layer(&env, &gz, Some("hostonly"));
    let launcher = env.launcher();
    let mut req = env.request("hostpw", &["id", "-u"]);
    req.image = image;
    match launcher.launch(&req) {
        Ok(_) => {
            launcher.wait("hostpw", LONG).unwrap();
            let log = read_log(&env.log("hostpw"));
            launcher.cleanup("hostpw").unwrap();
            panic!("the host's passwd was read: the job ran as {log}");
        }
        Err(err) => {
            let text = err.to_string();
            assert!(text.contains("no user \"hostonly\""), "{text}");
        }
    }
}

#[test]
#[cfg_attr(skip_root, ignore = "needs root; STRATA_SKIP_ROOT=1")]
fn an_image_passwd_linking_to_dev_zero_does_not_hang_the_launch() {
    let env = std::sync::Arc::new(env());
    let gz = layer(&[E::Dir("etc"), E::Symlink("etc/passwd", "/dev/zero")]);
    let (image, _) = image_with_layer(&env, &gz, None);
    let env2 = env.clone();
    let result = within(Duration::from_secs(30), move || {
        let mut req = env2.request("zero1", &["true"]);
        req.image = image;
        let launcher = env2.launcher();
        let r = launcher.launch(&req).map(|_| ());
        if r.is_ok() {
            let _ = launcher.wait("zero1", LONG);
            let _ = launcher.cleanup("zero1");
        }
        r.map_err(|e| e.to_string())
    });
    // Inside the image /dev/zero is not there when strata reads it (so no passwd: root),
    // and runc in the container gives up on its endless line: refused or run, the launch
    // returns.
    if let Err(err) = result {
        assert!(err.contains("zero1"), "{err}");
    }
}
