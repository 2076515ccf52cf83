//! strata's wheel layers against the compression floor, in one run.
//!
//! Generates synthetic data-science-like wheels (a few large `.so`-like files that mix random
//! and repetitive bytes, many small `.py` files; ~300 MB as tar) deterministically in a
//! temporary directory, then times, with 2 threads over all wheels:
//! - strata: `wheel_layer` per wheel (unzip, RECORD checks, sorted tar, diff_id, compress,
//!   digest), gzip and zstd; a gzip layer carries the wheel's own DEFLATE streams, so it
//!   compresses little and comes in under the gzip floor;
//! - the floor: the same files, already in memory, as one sorted tar per wheel through the
//!   same compressor at the same level, with the same two sha256 (tar and compressed).
//!
//! Each line gives wall seconds and the CPU seconds (user+sys) of the whole process in that
//! phase: on a machine shared with other work, wall clock is noise and CPU time is the figure
//! to compare. Three floors, each a step closer to what installing must do:
//! - `floor`: the tar of files already in memory, compressed, both streams hashed (the
//!   compressor's own cost: what "the compression floor" means in the benchmarks);
//! - `floor+unzip`: the same, the files first inflated out of the wheel;
//! - `floor+unzip+record`: the same, each file also hashed with sha256 as RECORD checking
//!   needs (the least an installer that checks RECORD and writes a new one can do).
//!
//! `cargo run --release -p strata-install --example bench_compress [-- --scale 0.2 | --wheels DIR] [--floors] [--miniz]`
//! (`--wheels DIR`: the `.whl` files of DIR instead of generated ones; `--floors`: only the
//! floors, for scripts that time strata builds themselves; `--miniz`: also the floor of the
//! previous deflate backend; `--blocks`: what pigz-style block-parallel gzip would cost on the
//! largest wheel). Each floor is also printed as a `floor NAME WALL CPU` line.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use flate2::{Compression, GzBuilder};
use sha2::{Digest as _, Sha256};
use strata_install::{
    b64, inflate_entry, wheel_layer, InstallScheme, LayerCompression, GZIP_LEVEL, ZSTD_LEVEL,
};
use strata_oci::HashingWriter;
use strata_python::PythonVersion;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

const THREADS: usize = 2;

/// xorshift64*: the data only has to be the same on every run, not good randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, out: &mut Vec<u8>, n: usize) {
        for _ in 0..n.div_ceil(8) {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(out.len() - (n.div_ceil(8) * 8 - n));
    }
}

/// A shared-library-like blob: 64 KiB blocks, about a third random (code, packed tables),
/// the rest tokens from a small vocabulary (symbol tables, strings, padding), which deflate
/// compresses about 3:1 - overall close to what gzip does to numpy's or scipy's `.so` files.
fn binary(rng: &mut Rng, size: usize) -> Vec<u8> {
    let vocab: Vec<Vec<u8>> = (0..256)
        .map(|_| {
            let mut t = Vec::new();
            let len = 3 + rng.below(10) as usize;
            rng.fill(&mut t, len);
            t
        })
        .collect();
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let block = (size - out.len()).min(64 * 1024);
        if rng.below(3) == 0 {
            rng.fill(&mut out, block);
        } else {
            let end = out.len() + block;
            while out.len() < end {
                out.extend_from_slice(&vocab[rng.below(vocab.len() as u64) as usize]);
            }
            out.truncate(end);
        }
    }
    out
}

const WORDS: &[&str] = &[
    "def",
    "return",
    "self",
    "import",
    "numpy",
    "as",
    "np",
    "if",
    "else",
    "for",
    "in",
    "None",
    "array",
    "axis",
    "dtype",
    "shape",
    "raise",
    "ValueError",
    "(",
    ")",
    ":",
    "=",
    "+",
    ",",
    "kwargs",
    "index",
    "data",
    "result",
    "class",
    "\n    ",
    "\n        ",
    "\n",
    "0",
    "1",
];

fn python(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out
}

/// One wheel's files: relative paths inside site-packages and contents.
type Files = Vec<(String, Vec<u8>)>;

fn wheel_files(rng: &mut Rng, name: &str, scale: f64, big: &[usize], small: usize) -> Files {
    let mut files = Vec::new();
    for (i, mb) in big.iter().enumerate() {
        let size = ((*mb as f64) * scale * 1024.0 * 1024.0) as usize;
        files.push((
            format!("{name}/_core{i}.cpython-311-x86_64-linux-gnu.so"),
            binary(rng, size),
        ));
    }
    for i in 0..small {
        let size = 200 + rng.below(12_000) as usize;
        files.push((format!("{name}/sub{}/mod{i}.py", i % 7), python(rng, size)));
    }
    files
}

fn write_wheel(dir: &Path, name: &str, files: &Files) -> io::Result<PathBuf> {
    let path = dir.join(format!("{name}-1.0-cp311-cp311-linux_x86_64.whl"));
    let mut zip = ZipWriter::new(std::fs::File::create(&path)?);
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default());
    let dist = format!("{name}-1.0.dist-info");
    let mut all: Files = files.clone();
    all.push((
        format!("{dist}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n").into_bytes(),
    ));
    all.push((
        format!("{dist}/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n".to_vec(),
    ));
    let mut record = String::new();
    for (path, data) in &all {
        let hash = b64(&Sha256::digest(data));
        record.push_str(&format!("{path},sha256={hash},{}\n", data.len()));
        zip.start_file(path.as_str(), opts)?;
        zip.write_all(data)?;
    }
    record.push_str(&format!("{dist}/RECORD,,\n"));
    zip.start_file(format!("{dist}/RECORD"), opts)?;
    zip.write_all(record.as_bytes())?;
    zip.finish()?;
    Ok(path)
}

/// Every file of a wheel, read into memory with strata's own inflate (so the unzip floors
/// are what strata could do at best, not a slower reader).
fn unzip(path: &Path) -> io::Result<Files> {
    let mut archive = zip::ZipArchive::new(io::BufReader::new(std::fs::File::open(path)?))?;
    let mut files = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let name = archive.by_index_raw(i)?.name().to_string();
        let data = inflate_entry(&mut archive, i)?.expect("a stored or deflated entry");
        files.push((name, data.content));
    }
    Ok(files)
}

/// CPU seconds (user+sys) this process has used so far, from `/proc/self/stat` (fields 14
/// and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall and CPU seconds of one phase.
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} s (cpu {:.2} s)", self.wall, self.cpu)
    }
}

/// Runs `work(i)` for i in 0..n on THREADS threads, largest first as a build schedules them
/// (the caller orders them).
fn parallel(n: usize, work: impl Fn(usize) + Sync) -> Timing {
    parallel_on(THREADS, n, work)
}

fn parallel_on(threads: usize, n: usize, work: impl Fn(usize) + Sync) -> Timing {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let cpu = cpu_seconds();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                work(i);
            });
        }
    });
    Timing {
        wall: start.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
    }
}

/// The floor for one wheel: its files as one sorted tar, compressed, both streams hashed.
fn floor_layer(files: &Files, compression: LayerCompression) -> (u64, u64) {
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(path, data)| (path.as_str(), data.as_slice()))
        .collect();
    floor_of(&files, compression)
}

/// [`floor_layer`] of the files inflated out of the wheel at `path` (read into memory one
/// at a time, as an installer does), each also hashed with sha256 when `record`.
fn unzip_floor(path: &Path, compression: LayerCompression, record: bool) {
    let files = unzip(path).expect("reading a wheel");
    if record {
        for (_, data) in &files {
            std::hint::black_box(Sha256::digest(data));
        }
    }
    floor_layer(&files, compression);
}

fn floor_of(files: &[(&str, &[u8])], compression: LayerCompression) -> (u64, u64) {
    let mut sorted: Vec<&(&str, &[u8])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let compressed = HashingWriter::new(io::sink());
    let tar_bytes = |w: &mut dyn Write| -> io::Result<u64> {
        let mut hashed = HashingWriter::new(w);
        {
            let mut tar = tar::Builder::new(&mut hashed);
            for (path, data) in &sorted {
                let mut h = tar::Header::new_gnu();
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_mtime(0);
                tar.append_data(&mut h, format!("opt/venv/{path}"), *data)?;
            }
            tar.finish()?;
        }
        let (_, size, _) = hashed.finish();
        Ok(size)
    };
    let (tar_size, out) = match compression {
        LayerCompression::Gzip => {
            let mut gz = GzBuilder::new()
                .mtime(0)
                .write(compressed, Compression::new(GZIP_LEVEL));
            let size = tar_bytes(&mut gz).expect("tar to memory");
            (size, gz.finish().expect("gzip"))
        }
        LayerCompression::Zstd => {
            let mut z = zstd::stream::write::Encoder::new(compressed, ZSTD_LEVEL).expect("zstd");
            z.include_checksum(true).expect("zstd");
            let size = tar_bytes(&mut z).expect("tar to memory");
            (size, z.finish().expect("zstd"))
        }
    };
    let (_, compressed_size, _) = out.finish();
    (tar_size, compressed_size)
}

/// `--wheels DIR`: real wheels (every `.whl` in DIR) instead of generated ones.
fn wheel_dir() -> Option<PathBuf> {
    std::env::args()
        .skip_while(|a| a != "--wheels")
        .nth(1)
        .map(PathBuf::from)
}

fn real_wheels(dir: &Path) -> io::Result<Vec<(PathBuf, Files)>> {
    let mut wheels = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            let files = unzip(&path)?;
            wheels.push((path, files));
        }
    }
    Ok(wheels)
}

type Shape<'a> = (&'a str, &'a [usize], usize);

fn generated_wheels(dir: &Path, shapes: &[Shape], scale: f64) -> io::Result<Vec<(PathBuf, Files)>> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut wheels = Vec::new();
    for (name, big, small) in shapes {
        let small = ((*small as f64) * scale.max(0.05)) as usize;
        let files = wheel_files(&mut rng, name, scale, big, small);
        let path = write_wheel(dir, name, &files)?;
        wheels.push((path, files));
    }
    Ok(wheels)
}

fn main() -> io::Result<()> {
    let scale: f64 = std::env::args()
        .skip_while(|a| a != "--scale")
        .nth(1)
        .map(|s| s.parse().expect("--scale takes a number"))
        .unwrap_or(1.0);
    let dir = tempfile::tempdir()?;
    // MB of the large files per wheel: a scipy, a numpy, a pandas, ... and small ones.
    let shapes: &[Shape] = &[
        ("scipylike", &[30, 20, 12, 8], 900),
        ("torchlike", &[60, 15], 400),
        ("numpylike", &[18, 6], 500),
        ("pandaslike", &[14, 8, 4], 1200),
        ("sklearnlike", &[10, 6, 3], 700),
        ("matplotlike", &[8, 4], 600),
        ("pyarrowlike", &[40, 8], 300),
        ("smallpkg", &[1], 150),
        ("purepy", &[], 400),
        ("tinypkg", &[], 60),
    ];
    let generated = Instant::now();
    let mut wheels = match wheel_dir() {
        Some(dir) => real_wheels(&dir)?,
        None => generated_wheels(dir.path(), shapes, scale)?,
    };
    // Largest first, as a build would want them.
    wheels.sort_by_key(|(_, files)| {
        std::cmp::Reverse(files.iter().map(|f| f.1.len()).sum::<usize>())
    });
    println!(
        "{} wheels ready in {:.1} s",
        wheels.len(),
        generated.elapsed().as_secs_f64()
    );
    let floors_only = std::env::args().any(|a| a == "--floors");
    let scheme = InstallScheme::new(PythonVersion::new(3, 11));
    for compression in [LayerCompression::Gzip, LayerCompression::Zstd] {
        let sizes = Mutex::new((0u64, 0u64));
        let floor = parallel(wheels.len(), |i| {
            let (tar, compressed) = floor_layer(&wheels[i].1, compression);
            let mut s = sizes.lock().unwrap();
            s.0 += tar;
            s.1 += compressed;
        });
        let (tar, floor_bytes) = *sizes.lock().unwrap();
        // Machine-readable, for scripts/bench-regcache: name, wall, cpu.
        println!("floor {compression} {:.3} {:.3}", floor.wall, floor.cpu);
        println!(
            "{compression} ({}): tar {:.0} MB -> {:.0} MB; floor {floor}",
            compression.id(),
            tar as f64 / 1e6,
            floor_bytes as f64 / 1e6,
        );
        let unzipped = parallel(wheels.len(), |i| {
            unzip_floor(&wheels[i].0, compression, false)
        });
        let recorded = parallel(wheels.len(), |i| {
            unzip_floor(&wheels[i].0, compression, true)
        });
        for (name, t) in [("unzip", unzipped), ("unzip+record", recorded)] {
            println!("floor {compression}+{name} {:.3} {:.3}", t.wall, t.cpu);
        }
        println!("  floor+unzip {unzipped}; floor+unzip+record {recorded}");
        if floors_only {
            continue;
        }
        let scheme = scheme.clone().with_compression(compression);
        let strata = parallel(wheels.len(), |i| {
            wheel_layer(&wheels[i].0, &scheme, io::sink()).expect("wheel layer");
        });
        let ratio = |of: Timing, to: Timing| {
            format!("{:.2}x (cpu {:.2}x)", of.wall / to.wall, of.cpu / to.cpu)
        };
        println!("  strata {strata}");
        println!(
            "  strata/floor {}; strata/(floor+unzip) {}; strata/(floor+unzip+record) {}",
            ratio(strata, floor),
            ratio(strata, unzipped),
            ratio(strata, recorded),
        );
    }
    if std::env::args().any(|a| a == "--blocks") {
        blocks(&wheels[0].1);
    }
    if !std::env::args().any(|a| a == "--miniz") {
        return Ok(());
    }
    // The previous backend: flate2 cannot have both in one build (zlib-rs wins when its
    // feature is on), so miniz_oxide, which flate2's default backend wraps, is called directly:
    // deflate at level 6 of the same tars, with the same two sha256.
    let miniz = parallel(wheels.len(), |i| miniz_floor(&wheels[i].1));
    println!("floor with miniz_oxide (the previous backend), gzip-6: {miniz}");
    Ok(())
}

/// One wheel's files as the floor's sorted tar, in memory.
fn tar_bytes(files: &Files) -> Vec<u8> {
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in &sorted {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, format!("opt/venv/{path}"), data.as_slice())
            .expect("tar to memory");
    }
    tar.into_inner().expect("tar to memory")
}

fn miniz_floor(files: &Files) {
    let tar = tar_bytes(files);
    let diff_id = Sha256::digest(&tar);
    let deflated = miniz_oxide::deflate::compress_to_vec(&tar, GZIP_LEVEL as u8);
    let digest = Sha256::digest(&deflated);
    std::hint::black_box((diff_id, digest));
}

/// The block of pigz-style gzip: a fixed size, whatever the thread count.
const BLOCK: usize = 1 << 20;
/// Deflate's window: each block is primed with the input before it, as pigz does.
const WINDOW: usize = 32 << 10;

/// Raw deflate of block `i` of `tar`: primed with the window before it, ended by a sync flush
/// (byte-aligned, so blocks concatenate into one stream) or, for the last, finished.
fn deflate_block(tar: &[u8], i: usize) -> Vec<u8> {
    let start = i * BLOCK;
    let end = (start + BLOCK).min(tar.len());
    let last = end == tar.len();
    let mut deflate = flate2::Compress::new(Compression::new(GZIP_LEVEL), false);
    if start > 0 {
        deflate
            .set_dictionary(&tar[start.saturating_sub(WINDOW)..start])
            .expect("deflate dictionary");
    }
    let data = &tar[start..end];
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 4096);
    let flush = if last {
        flate2::FlushCompress::Finish
    } else {
        flate2::FlushCompress::Sync
    };
    deflate
        .compress_vec(data, &mut out, flush)
        .expect("deflate");
    assert_eq!(
        deflate.total_in() as usize,
        data.len(),
        "output space too small"
    );
    out
}

/// All blocks of `tar` on `threads` threads, concatenated.
fn block_deflate(tar: &[u8], threads: usize) -> (Timing, Vec<u8>) {
    let n = tar.len().div_ceil(BLOCK).max(1);
    let outs: Vec<Mutex<Vec<u8>>> = (0..n).map(|_| Mutex::default()).collect();
    let timing = parallel_on(threads, n, |i| {
        *outs[i].lock().unwrap() = deflate_block(tar, i);
    });
    let out = outs
        .into_iter()
        .flat_map(|o| o.into_inner().unwrap())
        .collect();
    (timing, out)
}

/// `--blocks`: the largest wheel's tar as one deflate stream and as 1 MiB blocks, on one
/// thread and on THREADS: CPU, size, and that the blocks are one valid stream whose bytes do
/// not depend on the thread count (what a layer format of block-parallel gzip would need).
fn blocks(files: &Files) {
    let tar = tar_bytes(files);
    let one = Mutex::new(Vec::new());
    let single = parallel_on(1, 1, |_| {
        let mut deflate = flate2::Compress::new(Compression::new(GZIP_LEVEL), false);
        let mut out = Vec::with_capacity(tar.len() + tar.len() / 16 + 4096);
        deflate
            .compress_vec(&tar, &mut out, flate2::FlushCompress::Finish)
            .expect("deflate");
        *one.lock().unwrap() = out;
    });
    let one = one.into_inner().unwrap();
    let (serial, by_one) = block_deflate(&tar, 1);
    let (threaded, by_many) = block_deflate(&tar, THREADS);
    assert!(
        by_one == by_many,
        "block deflate depends on the thread count"
    );
    let mut back = Vec::with_capacity(tar.len());
    io::Read::read_to_end(
        &mut flate2::read::DeflateDecoder::new(&by_one[..]),
        &mut back,
    )
    .expect("the blocks are not one deflate stream");
    assert!(back == tar, "the blocks do not inflate to the tar");
    println!(
        "blocks: the largest wheel's tar ({:.0} MB), deflate-{GZIP_LEVEL}: one stream {single} -> {} B; {} KiB blocks on 1 thread {serial}, on {THREADS} {threaded} -> {} B ({:+.2}%), the same bytes on both, one valid stream",
        tar.len() as f64 / 1e6,
        one.len(),
        BLOCK >> 10,
        by_one.len(),
        100.0 * (by_one.len() as f64 / one.len() as f64 - 1.0),
    );
}
