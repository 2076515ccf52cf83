//! A PNG line chart comparing metric series of several jobs: axes with tick labels, one
//! colour per series, a legend. Drawn on a plain RGB canvas with a built-in 3x5 pixel
//! font and encoded by hand (zlib from flate2), so it needs no font or system library.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

const WIDTH: usize = 900;
const HEIGHT: usize = 520;
const LEFT: usize = 80;
const RIGHT: usize = 24;
const TOP: usize = 24;
const BOTTOM: usize = 48;
const SCALE: usize = 2;
const TICKS: usize = 5;

const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const PALETTE: [Rgb; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

type Rgb = [u8; 3];

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: no series has a finite point")]
    Empty,
    #[error("writing the chart {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One line of the chart: a job's metric as (step, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSeries {
    pub job_id: String,
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// An RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: WHITE.repeat(width * height),
        }
    }

    pub fn pixel(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&c);
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for dy in 0..h {
            for dx in 0..w {
                self.set(x + dx, y + dy, c);
            }
        }
    }

    /// Bresenham, two pixels thick.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            self.set(x + 1, y, c);
            self.set(x, y + 1, c);
            if x == x1 && y == y1 {
                return;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let glyph = glyph(ch);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        let px = x + (i * 4 * SCALE + col * SCALE) as i64;
                        let py = y + (row * SCALE) as i64;
                        self.rect(px, py, SCALE as i64, SCALE as i64, c);
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> i64 {
    (s.chars().count() * 4 * SCALE) as i64
}

/// Writes the chart of `series` to `path` as a PNG.
pub fn plot_png(path: &Path, series: &[PlotSeries]) -> Result<(), PlotError> {
    let canvas = render(series, WIDTH, HEIGHT)?;
    let bytes = encode_png(&canvas);
    let io_err = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new("."))).map_err(io_err)?;
    tmp.write_all(&bytes).map_err(io_err)?;
    // A chart is for sharing: readable by others, like any file a user writes.
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

struct Range {
    min: f64,
    max: f64,
}

impl Range {
    fn of(values: impl Iterator<Item = f64>) -> Option<Range> {
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if min > max {
            return None;
        }
        if min == max {
            return Some(Range {
                min: min - 1.0,
                max: max + 1.0,
            });
        }
        Some(Range { min, max })
    }

    fn frac(&self, v: f64) -> f64 {
        (v - self.min) / (self.max - self.min)
    }
}

/// Draws the chart on a canvas of the given size.
pub fn render(series: &[PlotSeries], width: usize, height: usize) -> Result<Canvas, PlotError> {
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    let xr =
        Range::of(points().filter(|p| p.1.is_finite()).map(|p| p.0)).ok_or(PlotError::Empty)?;
    let mut yr =
        Range::of(points().filter(|p| p.0.is_finite()).map(|p| p.1)).ok_or(PlotError::Empty)?;
    let pad = (yr.max - yr.min) * 0.05;
    yr.min -= pad;
    yr.max += pad;
    let mut c = Canvas::new(width, height);
    let (x0, y0) = (LEFT as i64, (height - BOTTOM) as i64);
    let (pw, ph) = (
        (width - LEFT - RIGHT) as i64,
        (height - TOP - BOTTOM) as i64,
    );
    let to_px = |x: f64, y: f64| {
        (
            x0 + (xr.frac(x) * pw as f64).round() as i64,
            y0 - (yr.frac(y) * ph as f64).round() as i64,
        )
    };
    for i in 0..=TICKS {
        let f = i as f64 / TICKS as f64;
        let gx = x0 + (f * pw as f64).round() as i64;
        let gy = y0 - (f * ph as f64).round() as i64;
        c.rect(gx, y0 - ph, 1, ph, GRID);
        c.rect(x0, gy, pw, 1, GRID);
        c.rect(gx, y0, 1, 6, BLACK);
        c.rect(x0 - 6, gy, 6, 1, BLACK);
        let xl = tick_label(xr.min + f * (xr.max - xr.min));
        c.text(gx - text_width(&xl) / 2, y0 + 10, &xl, BLACK);
        let yl = tick_label(yr.min + f * (yr.max - yr.min));
        c.text(x0 - 10 - text_width(&yl), gy - 5, &yl, BLACK);
    }
    c.rect(x0, y0 - ph, 1, ph + 1, BLACK);
    c.rect(x0, y0, pw + 1, 1, BLACK);
    c.text(x0 + pw - text_width("step"), y0 + 30, "step", BLACK);
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in &s.points {
            if !x.is_finite() || !y.is_finite() {
                prev = None;
                continue;
            }
            let p = to_px(x, y);
            match prev {
                Some(q) => c.line(q, p, colour),
                None => c.rect(p.0, p.1, 2, 2, colour),
            }
            prev = Some(p);
        }
    }
    legend(&mut c, series, x0 + pw, y0 - ph);
    Ok(c)
}

fn legend(c: &mut Canvas, series: &[PlotSeries], right: i64, top: i64) {
    let labels: Vec<String> = series
        .iter()
        .map(|s| format!("{} {}", s.job_id, s.name))
        .collect();
    let widest = labels.iter().map(|l| text_width(l)).max().unwrap_or(0);
    let (w, h) = (widest + 40, labels.len() as i64 * 16 + 8);
    let (x, y) = (right - w - 8, top + 8);
    c.rect(x, y, w, h, WHITE);
    c.rect(x, y, w, 1, BLACK);
    c.rect(x, y + h, w, 1, BLACK);
    c.rect(x, y, 1, h, BLACK);
    c.rect(x + w, y, 1, h + 1, BLACK);
    for (i, label) in labels.iter().enumerate() {
        let row = y + 6 + i as i64 * 16;
        c.rect(x + 6, row + 2, 20, 6, PALETTE[i % PALETTE.len()]);
        c.text(x + 32, row, label, BLACK);
    }
}

/// A short label: up to four significant digits, scientific when very large or small.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = if a >= 100.0 {
        0
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The 3x5 glyph of a character (rows top to bottom, 3 bits each); letters case-folded.
fn glyph(ch: char) -> [u8; 5] {
    let rows: &str = match ch.to_ascii_lowercase() {
        '0' => "111 101 101 101 111",
        '1' => "010 110 010 010 111",
        '2' => "111 001 111 100 111",
        '3' => "111 001 011 001 111",
        '4' => "101 101 111 001 001",
        '5' => "111 100 111 001 111",
        '6' => "111 100 111 101 111",
        '7' => "111 001 010 010 010",
        '8' => "111 101 111 101 111",
        '9' => "111 101 111 001 111",
        '.' => "000 000 000 000 010",
        '-' => "000 000 111 000 000",
        '+' => "000 010 111 010 000",
        '_' => "000 000 000 000 111",
        ':' => "000 010 000 010 000",
        '/' => "001 001 010 100 100",
        ' ' => "000 000 000 000 000",
        'a' => "010 101 111 101 101",
        'b' => "110 101 110 101 110",
        'c' => "011 100 100 100 011",
        'd' => "110 101 101 101 110",
        'e' => "111 100 110 100 111",
        'f' => "111 100 110 100 100",
        'g' => "011 100 101 101 011",
        'h' => "101 101 111 101 101",
        'i' => "111 010 010 010 111",
        'j' => "001 001 001 101 010",
        'k' => "101 101 110 101 101",
        'l' => "100 100 100 100 111",
        'm' => "101 111 111 101 101",
        'n' => "110 101 101 101 101",
        'o' => "010 101 101 101 010",
        'p' => "110 101 110 100 100",
        'q' => "010 101 101 110 011",
        'r' => "110 101 110 101 101",
        's' => "011 100 010 001 110",
        't' => "111 010 010 010 010",
        'u' => "101 101 101 101 111",
        'v' => "101 101 101 101 010",
        'w' => "101 101 111 111 101",
        'x' => "101 101 010 101 101",
        'y' => "101 101 010 010 010",
        'z' => "111 001 010 100 111",
        _ => "111 001 010 000 010",
    };
    let mut out = [0u8; 5];
    for (slot, row) in out.iter_mut().zip(rows.split(' ')) {
        *slot = u8::from_str_radix(row, 2).unwrap_or(0);
    }
    out
}

/// Encodes an RGB canvas as a PNG (8-bit truecolour, no filtering, zlib-compressed).
pub fn encode_png(c: &Canvas) -> Vec<u8> {
    let mut raw = Vec::with_capacity((c.width * 3 + 1) * c.height);
    for row in c.pixels.chunks(c.width * 3) {
        raw.push(0); // filter type: none
        raw.extend_from_slice(row);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let idat = z
        .write_all(&raw)
        .and_then(|_| z.finish())
        .unwrap_or_default();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(c.width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(c.height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // depth 8, RGB, deflate, no filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(1000.0), "1000");
        assert_eq!(tick_label(2.5e7), "2.50e7");
    }

    #[test]
    fn each_series_gets_its_colour_on_the_canvas() {
        let series = vec![
            PlotSeries {
                job_id: "a".into(),
                name: "loss".into(),
                points: (0..50)
                    .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                    .collect(),
            },
            PlotSeries {
                job_id: "b".into(),
                name: "loss".into(),
                points: (0..50).map(|i| (i as f64, 0.5)).collect(),
            },
        ];
        let c = render(&series, 400, 300).unwrap();
        let count = |colour: Rgb| {
            (0..c.height)
                .flat_map(|y| (0..c.width).map(move |x| (x, y)))
                .filter(|&(x, y)| c.pixel(x, y) == colour)
                .count()
        };
        assert!(count(PALETTE[0]) > 100);
        assert!(count(PALETTE[1]) > 100);
        assert!(count(PALETTE[2]) == 0);
        assert!(matches!(render(&[], 400, 300), Err(PlotError::Empty)));
    }
}
