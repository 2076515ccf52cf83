//! Packing working trees against a real store and index, checked by reading the layer back
//! with `tar` and by asking real `git` what it would list.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_code::{pack, CodeError, CodeLayer, PackOptions};
use strata_index::{Index, LeaseOwner};
use strata_oci::Store;

struct World {
    _dir: tempfile::TempDir,
    base: PathBuf,
    store: Store,
    index: Index,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let store = Store::open(&base.join("oci"), &base.join("tmp")).unwrap();
        let index = Index::open(&base.join("strata.db")).unwrap();
        World {
            _dir: dir,
            base,
            store,
            index,
        }
    }

    fn tree(&self, name: &str) -> PathBuf {
        let root = self.base.join(name);
        fs::create_dir_all(&root).unwrap();
        root
    }

    fn pack_with(&self, root: &Path, options: &PackOptions) -> Result<CodeLayer, CodeError> {
        let lease = self
            .index
            .lease("test", LeaseOwner::current_process())
            .unwrap();
        pack(root, options, &self.store, &lease)
    }

    fn pack(&self, root: &Path) -> CodeLayer {
        self.pack_with(root, &PackOptions::default()).unwrap()
    }

    fn cached(&self) -> PackOptions {
        PackOptions {
            cache_dir: Some(self.base.join("code-cache")),
            ..PackOptions::default()
        }
    }

    /// The layer's entries: path -> (type, mode, mtime, uid, content or link target).
    fn entries(&self, code: &CodeLayer) -> BTreeMap<String, (char, u32, u64, u64, String)> {
        let blob = fs::read(self.store.blob_path(&code.layer.digest)).unwrap();
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(&blob[..]));
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Regular => 'f',
                other => panic!("unexpected entry type {other:?} for {path}"),
            };
            let body = match kind {
                'l' => entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                _ => {
                    let mut s = Vec::new();
                    entry.read_to_end(&mut s).unwrap();
                    String::from_utf8_lossy(&s[..s.len().min(64)]).into_owned()
                }
            };
            out.insert(
                path,
                (
                    kind,
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    body,
                ),
            );
        }
        out
    }

    /// The shipped files (not directories), relative to the code directory.
    fn files(&self, code: &CodeLayer) -> Vec<String> {
        self.entries(code)
            .into_iter()
            .filter(|(_, e)| e.0 != 'd')
            .map(|(p, _)| p.strip_prefix("work/").unwrap().to_string())
            .collect()
    }
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn set_mtime(root: &Path, rel: &str, secs: i64) {
    filetime::set_symlink_file_times(
        root.join(rel),
        filetime::FileTime::from_unix_time(secs, 0),
        filetime::FileTime::from_unix_time(secs, 0),
    )
    .unwrap();
}

/// git with no user or system configuration (no global excludes, no hooks).
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const FILES: &[(&str, &str)] = &[
    (
        "main.py",
        "from helpers import util\nprint(util.answer())\n",
    ),
    ("helpers/__init__.py", ""),
    ("helpers/util.py", "def answer():\n    return 42\n"),
    ("conf/train.yaml", "lr: 0.1\n"),
    ("README.md", "# project\n"),
];

#[test]
fn the_same_tree_gives_the_same_layer_whatever_the_order_and_times() {
    let world = World::new();
    let a = world.tree("a");
    for (rel, content) in FILES {
        write(&a, rel, content);
        set_mtime(&a, rel, 1_600_000_000);
    }
    // Created in the opposite order, with other times, elsewhere.
    let b = world.tree("b");
    for (i, (rel, content)) in FILES.iter().rev().enumerate() {
        write(&b, rel, content);
        set_mtime(&b, rel, 1_700_000_000 + i as i64 * 977);
    }
    let (pa, pb) = (world.pack(&a), world.pack(&b));
    assert_eq!(pa.layer, pb.layer, "same tree, different layers");
    assert_eq!(pa.files, FILES.len());
    // Every entry normalised: mtime 0, uid 0, modes by kind.
    for (path, (kind, mode, mtime, uid, _)) in world.entries(&pa) {
        assert_eq!((mtime, uid), (0, 0), "{path}");
        let expected = if kind == 'd' { 0o755 } else { 0o644 };
        assert_eq!(mode, expected, "{path}");
    }
    // A changed byte changes the layer; so does the executable bit.
    write(&b, "helpers/util.py", "def answer():\n    return 43\n");
    let changed = world.pack(&b);
    assert_ne!(changed.layer.digest, pa.layer.digest);
    write(&b, "helpers/util.py", "def answer():\n    return 42\n");
    assert_eq!(world.pack(&b).layer, pa.layer);
    fs::set_permissions(b.join("main.py"), fs::Permissions::from_mode(0o755)).unwrap();
    let exec = world.pack(&b);
    assert_ne!(exec.layer.digest, pa.layer.digest);
    assert_eq!(world.entries(&exec)["work/main.py"].1, 0o755);
}

#[test]
fn a_git_tree_ships_what_git_ls_files_lists() {
    let world = World::new();
    let root = world.tree("repo");
    git(&root, &["init", "-q"]);
    for (rel, content) in FILES {
        write(&root, rel, content);
    }
    write(&root, ".gitignore", "data/\n*.log\n/build\n!keep.log\n");
    write(&root, "helpers/.gitignore", "scratch.py\n");
    write(&root, "helpers/scratch.py", "x = 1\n");
    write(&root, "run.log", "log\n");
    write(&root, "keep.log", "kept\n");
    write(&root, "build/out.txt", "built\n");
    write(&root, "sub/build/in.txt", "not the root build\n");
    write(&root, "local-notes.txt", "mine\n");
    fs::create_dir_all(root.join(".git/info")).unwrap();
    fs::write(root.join(".git/info/exclude"), "local-notes.txt\n").unwrap();
    // A 50 MB data file that is git-ignored (sparse: cheap to make, costly to ship).
    fs::create_dir_all(root.join("data")).unwrap();
    let big = fs::File::create(root.join("data/train.bin")).unwrap();
    big.set_len(50_000_000).unwrap();
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "first"]);
    // Tracked, then ignored: still code for git (ls-files --cached).
    write(&root, "tracked.log", "tracked\n");
    git(&root, &["add", "-f", "tracked.log"]);
    git(&root, &["commit", "-q", "-m", "second"]);
    // Untracked, not ignored: code too.
    write(&root, "new_module.py", "y = 2\n");

    let listed = git(
        &root,
        &["ls-files", "--cached", "--others", "--exclude-standard"],
    );
    let mut expected: Vec<String> = listed.lines().map(str::to_string).collect();
    expected.sort();
    let code = world.pack(&root);
    assert_eq!(world.files(&code), expected);
    assert!(expected.contains(&"tracked.log".to_string()));
    assert!(!expected.iter().any(|p| p.starts_with("data/")));
    assert!(code.bytes < 10_000, "the data file was shipped: {code:?}");
    assert!(!world.files(&code).iter().any(|p| p.starts_with(".git/")));
    let head = git(&root, &["rev-parse", "HEAD"]);
    let state = code.git.clone().expect("git state");
    assert_eq!(state.commit.as_deref(), Some(head.trim()));
    assert!(state.dirty, "an untracked file makes the tree dirty");

    fs::remove_file(root.join("new_module.py")).unwrap();
    let clean = world.pack(&root);
    assert!(!clean.git.unwrap().dirty);
}

#[test]
fn strataignore_leaves_files_out_even_tracked_ones() {
    let world = World::new();
    let root = world.tree("repo");
    git(&root, &["init", "-q"]);
    for (rel, content) in FILES {
        write(&root, rel, content);
    }
    write(&root, "notebooks/big.ipynb", "{}");
    git(&root, &["add", "-A"]);
    write(&root, ".strataignore", "notebooks/\nREADME.md\n");
    let files = world.files(&world.pack(&root));
    assert!(
        !files.iter().any(|f| f.starts_with("notebooks/")),
        "{files:?}"
    );
    assert!(!files.contains(&"README.md".to_string()), "{files:?}");
    assert!(files.contains(&"helpers/util.py".to_string()));
}

#[test]
fn without_git_the_gitignore_rules_apply() {
    let world = World::new();
    let root = world.tree("plain");
    write(&root, "main.py", "print(1)\n");
    write(&root, ".gitignore", "*.ckpt\n");
    write(&root, "model.ckpt", "weights");
    let code = world.pack(&root);
    assert_eq!(world.files(&code), [".gitignore", "main.py"]);
    assert!(code.git.is_none());
}

#[test]
fn secrets_are_refused_by_name_unless_included() {
    let world = World::new();
    let root = world.tree("secret");
    write(&root, "main.py", "print(1)\n");
    write(&root, ".env", "TOKEN=hunter2\n");
    write(&root, "certs/server.pem", "-----BEGIN PRIVATE KEY-----\n");
    write(&root, ".env.example", "TOKEN=\n");
    let err = world.pack_with(&root, &PackOptions::default()).unwrap_err();
    match &err {
        CodeError::Secrets { files } => assert_eq!(files, &[".env", "certs/server.pem"]),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(".env, certs/server.pem"), "{text}");
    assert!(text.contains("--include"), "{text}");
    assert!(!text.contains("hunter2"));
    // Only what is included passes.
    let only_env = PackOptions {
        include: vec![".env".into()],
        ..PackOptions::default()
    };
    let err = world.pack_with(&root, &only_env).unwrap_err();
    assert!(matches!(&err, CodeError::Secrets { files } if files == &["certs/server.pem"]));
    let both = PackOptions {
        include: vec![".env".into(), "certs/*.pem".into()],
        ..PackOptions::default()
    };
    let code = world.pack_with(&root, &both).unwrap();
    assert_eq!(code.included, [".env", "certs/server.pem"]);
    let entries = world.entries(&code);
    assert_eq!(entries["work/.env"].4, "TOKEN=hunter2\n");
}

#[test]
fn a_tree_over_the_limit_is_refused_with_its_largest_files() {
    let world = World::new();
    let root = world.tree("large");
    for i in 0..12 {
        write(
            &root,
            &format!("data/f{i:02}.bin"),
            &"x".repeat(1000 + i * 100),
        );
    }
    write(&root, "main.py", "print(1)\n");
    let options = PackOptions {
        max_size: 10_000,
        ..PackOptions::default()
    };
    let err = world.pack_with(&root, &options).unwrap_err();
    let CodeError::TooLarge { largest, total, .. } = &err else {
        panic!("expected a refusal for size, got {err:?}");
    };
    assert_eq!(largest.len(), 10);
    assert_eq!(largest[0], ("data/f11.bin".to_string(), 2100));
    assert_eq!(largest[9].0, "data/f02.bin");
    assert!(*total > 10_000);
    let text = err.to_string();
    assert!(text.contains("data/f11.bin (2.1 kB)"), "{text}");
    assert!(text.contains("--max-code-size"), "{text}");
    // Under a larger limit it ships.
    let bigger = PackOptions {
        max_size: 100_000,
        ..PackOptions::default()
    };
    assert_eq!(world.pack_with(&root, &bigger).unwrap().files, 13);
}

#[test]
fn symlinks_are_shipped_as_links_never_followed() {
    let world = World::new();
    let outside = world.tree("outside");
    write(&outside, "secret.txt", "outside the tree\n");
    write(&outside, "dir/x.txt", "x\n");
    let root = world.tree("links");
    write(&root, "main.py", "print(1)\n");
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../outside/dir", root.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("main.py", root.join("alias.py")).unwrap();
    let code = world.pack(&root);
    let entries = world.entries(&code);
    let abs = &entries["work/abs-link"];
    assert_eq!(
        (abs.0, abs.4.as_str()),
        ('l', outside.join("secret.txt").to_str().unwrap())
    );
    assert_eq!(entries["work/dir-link"].0, 'l');
    assert_eq!(entries["work/dir-link"].4, "../outside/dir");
    assert_eq!(entries["work/alias.py"].4, "main.py");
    assert!(!entries.keys().any(|p| p.starts_with("work/dir-link/")));
    assert!(!entries.values().any(|e| e.4.contains("outside the tree")));
}

#[test]
fn an_unchanged_tree_is_answered_from_the_cache() {
    let world = World::new();
    let root = world.tree("cached");
    for (rel, content) in FILES {
        write(&root, rel, content);
        // Older than the racy window: the stat alone is trusted.
        set_mtime(&root, rel, 1_600_000_000);
    }
    let options = world.cached();
    let first = world.pack_with(&root, &options).unwrap();
    assert!(!first.reused);
    let second = world.pack_with(&root, &options).unwrap();
    assert!(second.reused, "unchanged tree packed again");
    assert_eq!(second.layer, first.layer);
    // A change (same size, and the old mtime put back: ctime still moves) is seen.
    write(&root, "helpers/util.py", "def answer():\n    return 24\n");
    set_mtime(&root, "helpers/util.py", 1_600_000_000);
    let changed = world.pack_with(&root, &options).unwrap();
    assert!(!changed.reused);
    assert_ne!(changed.layer.digest, first.layer.digest);
    // A layer gone from the store is written again, never answered from the cache.
    let again = world.pack_with(&root, &options).unwrap();
    assert!(again.reused);
    fs::remove_file(world.store.blob_path(&again.layer.digest)).unwrap();
    let rewritten = world.pack_with(&root, &options).unwrap();
    assert!(!rewritten.reused);
    assert!(world.store.has_blob(&rewritten.layer.digest));
    assert_eq!(rewritten.layer, again.layer);
}

#[test]
fn racy_files_are_checked_by_content() {
    let world = World::new();
    let root = world.tree("racy");
    write(&root, "main.py", "print(1)\n");
    let options = world.cached();
    // Just written: racy, so its content digest is kept and checked again.
    let first = world.pack_with(&root, &options).unwrap();
    let second = world.pack_with(&root, &options).unwrap();
    assert!(second.reused);
    assert_eq!(second.layer, first.layer);
    // The stat of a file rewritten within one timestamp tick can be unchanged; then only
    // the kept content digest tells. Make the kept digest disagree with the file: the
    // lookup must read the file and miss.
    let cache_dir = options.cache_dir.clone().unwrap();
    let cache_file = fs::read_dir(&cache_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut entry: serde_json::Value =
        serde_json::from_slice(&fs::read(&cache_file).unwrap()).unwrap();
    assert!(
        entry["racy"]["main.py"].is_string(),
        "racy file not recorded: {entry}"
    );
    entry["racy"]["main.py"] = serde_json::json!(strata_oci::Digest::of(b"other").to_string());
    fs::write(&cache_file, serde_json::to_vec(&entry).unwrap()).unwrap();
    let third = world.pack_with(&root, &options).unwrap();
    assert!(!third.reused, "a racy file was trusted by its stat");
    assert_eq!(third.layer, first.layer);
}

#[test]
fn excluded_directories_and_special_files_are_not_shipped() {
    let world = World::new();
    let root = world.tree("proj");
    write(&root, "main.py", "print(1)\n");
    write(&root, "strata-home/oci/blob", "a store inside the project");
    let fifo = root.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string and mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let options = PackOptions {
        exclude: vec![root.join("strata-home")],
        ..PackOptions::default()
    };
    let code = world.pack_with(&root, &options).unwrap();
    assert_eq!(world.files(&code), ["main.py"]);
    assert_eq!(code.skipped, ["pipe"]);
}

#[test]
fn a_missing_directory_is_named() {
    let world = World::new();
    let err = world
        .pack_with(&world.base.join("nope"), &PackOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
