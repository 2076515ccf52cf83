//! A PNG line chart comparing metric series of several jobs: a title, axes with round tick
//! labels, one colour per series, a legend naming each series' job.
//!
//! Drawn with `plotters` on an RGB buffer and encoded with `png`. Text is set by `ab_glyph` in
//! DejaVu Sans 2.37, bundled into the binary: strata runs on minimal images that have no fonts
//! installed. The font file is Debian's `fonts-dejavu-core` copy, unmodified; its licence
//! (Bitstream Vera and Arev terms, DejaVu changes public domain) is `fonts/LICENSE-DejaVu.txt`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

/// The size `plot_png` draws at.
pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 560;
/// Below this, the title, tick labels and legend no longer fit.
pub const MIN_WIDTH: u32 = 320;
pub const MIN_HEIGHT: u32 = 200;

/// About this many ticks per axis (the round step decides the exact count).
const TICKS: usize = 6;
const MARGIN: u32 = 16;
const TITLE_SIZE: u32 = 22;
const TEXT_SIZE: u32 = 15;
const LEGEND_ROW: i32 = 22;
const LEGEND_SWATCH: i32 = 24;
const LEGEND_PAD: i32 = 10;
/// Any family: the one bundled font sets all text.
const FAMILY: &str = "sans-serif";
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

pub type Rgb = [u8; 3];

/// Series colours, in order (matplotlib's "tab10" without its grey, which reads as grid).
pub const PALETTE: [Rgb; 9] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [188, 189, 34],
    [23, 190, 207],
];

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: no series has a finite point")]
    Empty,
    #[error("a chart of {width}x{height} pixels is too small: at least {MIN_WIDTH}x{MIN_HEIGHT}")]
    TooSmall { width: u32, height: u32 },
    #[error("the chart font bundled in strata does not load")]
    Font,
    #[error("drawing the chart")]
    Draw(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("encoding the chart as PNG")]
    Encode(#[from] png::EncodingError),
    #[error("writing the chart {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn draw_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> PlotError {
    PlotError::Draw(Box::new(e))
}

/// One line of the chart: a job's metric as (step, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSeries {
    pub job_id: String,
    /// The metric's name.
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Writes the chart of `series` to `path` as a PNG, the legend naming jobs by id. Use
/// [`Chart`] to name them by their job names.
pub fn plot_png(path: &Path, series: &[PlotSeries]) -> Result<(), PlotError> {
    Chart::new(series).write_png(path)
}

/// A chart of several series, and what its legend calls each job.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    series: &'a [PlotSeries],
    job_names: BTreeMap<String, String>,
}

impl<'a> Chart<'a> {
    pub fn new(series: &'a [PlotSeries]) -> Chart<'a> {
        Chart {
            series,
            job_names: BTreeMap::new(),
        }
    }

    /// Job names by job id, for the legend; a job without one is shown by its id.
    pub fn job_names(mut self, names: impl IntoIterator<Item = (String, String)>) -> Chart<'a> {
        self.job_names.extend(names);
        self
    }

    /// Writes the chart, `WIDTH`x`HEIGHT`, to `path` as a PNG (atomically: a reader sees the
    /// old file or the whole new one).
    pub fn write_png(&self, path: &Path) -> Result<(), PlotError> {
        let bytes = self.png()?;
        let io_err = |source| PlotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new("."))).map_err(io_err)?;
        tmp.write_all(&bytes).map_err(io_err)?;
        // A chart is for sharing: readable by others, like any file a user writes.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_err)?;
        tmp.persist(path).map_err(|e| io_err(e.error))?;
        Ok(())
    }

    /// The chart, `WIDTH`x`HEIGHT`, as PNG bytes.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        self.render(WIDTH, HEIGHT)?.png()
    }

    /// Draws the chart on an RGB image of the given size.
    pub fn render(&self, width: u32, height: u32) -> Result<Rendered, PlotError> {
        if width < MIN_WIDTH || height < MIN_HEIGHT {
            return Err(PlotError::TooSmall { width, height });
        }
        let (x, y) = self.ticks()?;
        let font = font()?;
        let mut pixels = vec![255u8; width as usize * height as usize * 3];
        let layout = {
            let bitmap = BitMapBackend::with_buffer(&mut pixels, (width, height));
            draw(Canvas { bitmap, font }.into_drawing_area(), self, x, y)?
        };
        Ok(Rendered {
            width,
            height,
            pixels,
            layout,
        })
    }

    /// Round ticks over the finite points of all series (a point needs both coordinates).
    fn ticks(&self) -> Result<(Ticks, Ticks), PlotError> {
        let points = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().copied())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (x_min, x_max) = bounds(points().map(|p| p.0)).ok_or(PlotError::Empty)?;
        let (y_min, y_max) = bounds(points().map(|p| p.1)).ok_or(PlotError::Empty)?;
        let integer_steps = points().all(|p| p.0.fract() == 0.0);
        let mut x = Ticks::new(x_min, x_max, TICKS);
        // Steps are counted in whole numbers: no tick at step 2.5.
        if integer_steps && x.step < 1.0 {
            x = Ticks::with_step(x_min, x_max, 1.0);
        }
        Ok((x, Ticks::new(y_min, y_max, TICKS)))
    }

    /// The metric every series shows, if they all show the same one: it names the chart and
    /// its y axis, and the legend need not repeat it.
    fn metric(&self) -> Option<&str> {
        let first = self.series.first()?.name.as_str();
        let shared = !first.is_empty() && self.series.iter().all(|s| s.name == first);
        shared.then_some(first)
    }

    /// One legend label per series: the job's name (or id), with its id when another plotted
    /// job has the same name, and the metric when the chart shows several.
    fn labels(&self) -> Vec<String> {
        let name = |s: &PlotSeries| {
            self.job_names
                .get(&s.job_id)
                .filter(|n| !n.is_empty())
                .cloned()
        };
        let mut jobs_by_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for s in self.series {
            if let Some(n) = name(s) {
                let ids = jobs_by_name.entry(n).or_default();
                if !ids.contains(&s.job_id.as_str()) {
                    ids.push(&s.job_id);
                }
            }
        }
        let one_metric = self.metric().is_some();
        self.series
            .iter()
            .map(|s| {
                let job = match name(s) {
                    Some(n) if jobs_by_name.get(&n).is_some_and(|ids| ids.len() > 1) => {
                        format!("{n} ({})", s.job_id)
                    }
                    Some(n) => n,
                    None => s.job_id.clone(),
                };
                if one_metric {
                    job
                } else {
                    format!("{job}: {}", s.name)
                }
            })
            .collect()
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// `label`, cut short with "…" until it is at most `room` pixels wide.
fn fit<E>(label: String, room: i32, measure: impl Fn(&str) -> Result<i32, E>) -> Result<String, E> {
    if measure(&label)? <= room {
        return Ok(label);
    }
    let mut chars: Vec<char> = label.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let cut: String = chars.iter().chain(['…'].iter()).collect();
        if measure(&cut)? <= room {
            return Ok(cut);
        }
    }
    Ok("…".to_string())
}

/// The bundled font, parsed once.
fn font() -> Result<FontRef<'static>, PlotError> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .clone()
        .ok_or(PlotError::Font)
}

/// plotters' bitmap backend with its text set by `ab_glyph` from the bundled font.
///
/// plotters' own `ab_glyph` text (0.3.7) drops each glyph's side bearing, which spaces letters
/// unevenly ("l ong"); every other drawing call goes to the bitmap backend unchanged.
struct Canvas<'a> {
    bitmap: BitMapBackend<'a>,
    font: FontRef<'static>,
}

/// Text laid out on one line: glyphs positioned from (0, 0), the top left of its box.
struct TextLine {
    glyphs: Vec<ab_glyph::OutlinedGlyph>,
    width: f32,
    height: f32,
}

impl Canvas<'_> {
    fn layout(&self, text: &str, size: f64) -> TextLine {
        let font = self.font.as_scaled(PxScale::from(size as f32));
        let (mut x, mut prev, mut glyphs) = (0.0f32, None, Vec::new());
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                x += font.kern(p, id);
            }
            let glyph = id.with_scale_and_position(font.scale(), ab_glyph::point(x, font.ascent()));
            glyphs.extend(font.outline_glyph(glyph));
            x += font.h_advance(id);
            prev = Some(id);
        }
        TextLine {
            glyphs,
            width: x,
            height: font.ascent() - font.descent(),
        }
    }
}

type CanvasError = DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

impl DrawingBackend for Canvas<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), CanvasError> {
        self.bitmap.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), CanvasError> {
        self.bitmap.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), CanvasError> {
        self.bitmap.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), CanvasError> {
        self.bitmap.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), CanvasError> {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), CanvasError> {
        self.bitmap.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), CanvasError> {
        self.bitmap.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), CanvasError> {
        self.bitmap.fill_polygon(vert, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), CanvasError> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let line = self.layout(text, style.size());
        let (w, h) = (line.width.round() as i32, line.height.round() as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -w / 2,
            HPos::Right => -w,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let turn = style.transform();
        for glyph in &line.glyphs {
            let min = glyph.px_bounds().min;
            let mut pixels = Vec::new();
            glyph.draw(|x, y, coverage| {
                let (x, y) = (min.x as i32 + x as i32 + dx, min.y as i32 + y as i32 + dy);
                pixels.push((turn.transform(x, y), coverage));
            });
            for ((x, y), coverage) in pixels {
                let shade = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                self.bitmap.draw_pixel((pos.0 + x, pos.1 + y), shade)?;
            }
        }
        Ok(())
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), CanvasError> {
        let line = self.layout(text, style.size());
        Ok((line.width.ceil() as u32, line.height.ceil() as u32))
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), CanvasError> {
        self.bitmap.blit_bitmap(pos, size, src)
    }
}

/// An RGB image of a chart, and where its parts landed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub width: u32,
    pub height: u32,
    /// Rows top to bottom, three bytes (R, G, B) per pixel.
    pub pixels: Vec<u8>,
    pub layout: Layout,
}

impl Rendered {
    /// The image as a PNG: 8-bit RGB.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.pixels)?;
        writer.finish()?;
        Ok(out)
    }
}

/// A rectangle of pixels: `left..right` by `top..bottom`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    pub left: i32,
    pub top: i32,
    pub right: i32,
    pub bottom: i32,
}

/// Where the chart's parts are on the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The area inside the axes.
    pub plot: PixelRect,
    /// The legend's box.
    pub legend: PixelRect,
    pub x: Ticks,
    pub y: Ticks,
    pub title: String,
    /// Per series, in the order given: its legend label and colour.
    pub labels: Vec<String>,
    pub colours: Vec<Rgb>,
}

impl Layout {
    /// The pixel a data point is drawn at (plotters' own mapping).
    pub fn to_pixel(&self, x: f64, y: f64) -> (i32, i32) {
        (
            self.x.map(x, (self.plot.left, self.plot.right - 1)),
            self.y.map(y, (self.plot.bottom - 1, self.plot.top)),
        )
    }
}

/// Past the palette, colours repeat with dashed lines, so that the legend still tells
/// series apart.
fn dashed(i: usize) -> bool {
    (i / PALETTE.len()) % 2 == 1
}

fn colour(i: usize) -> RGBColor {
    let [r, g, b] = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    x: Ticks,
    y: Ticks,
) -> Result<Layout, PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_err)?;
    let title = chart.metric().unwrap_or("metrics").to_string();
    let text = TextStyle::from((FAMILY, TEXT_SIZE).into_font());
    let (width, height) = root.dim_in_pixel();
    let measure = |s: &str| root.estimate_text_size(s, &text).map(|(w, _)| w as i32);
    // The legend sits right of the chart, never over the data; at most a third of the width.
    let room = width as i32 / 3 - LEGEND_SWATCH - 3 * LEGEND_PAD;
    let labels = chart
        .labels()
        .into_iter()
        .map(|l| fit(l, room, measure))
        .collect::<Result<Vec<String>, _>>()
        .map_err(draw_err)?;
    let widest = labels
        .iter()
        .map(|l| measure(l))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(draw_err)?
        .into_iter()
        .max()
        .unwrap_or(0);
    let legend_w = widest + LEGEND_SWATCH + 3 * LEGEND_PAD;
    let (left, right) = root.split_horizontally(width as i32 - legend_w - MARGIN as i32);

    let y_label_w = y
        .values
        .iter()
        .map(|v| root.estimate_text_size(&y.label(*v), &text).map(|(w, _)| w))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(draw_err)?
        .into_iter()
        .max()
        .unwrap_or(0);
    let mut cc = ChartBuilder::on(&left)
        .caption(&title, (FAMILY, TITLE_SIZE))
        .margin(MARGIN)
        .x_label_area_size(2 * TEXT_SIZE + 16)
        .y_label_area_size(y_label_w + TEXT_SIZE + 20)
        .build_cartesian_2d(RoundAxis(x.clone()), RoundAxis(y.clone()))
        .map_err(draw_err)?;
    let x_label = |v: &f64| x.label(*v);
    let y_label = |v: &f64| y.label(*v);
    cc.configure_mesh()
        .label_style(text.clone())
        .axis_desc_style(text.clone())
        .x_desc("step")
        .y_desc(chart.metric().unwrap_or("value"))
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(draw_err)?;
    for (i, s) in chart.series.iter().enumerate() {
        draw_series(&mut cc, &s.points, i)?;
    }
    let (xs, ys) = cc.plotting_area().get_pixel_range();
    let plot = PixelRect {
        left: xs.start,
        top: ys.start,
        right: xs.end,
        bottom: ys.end,
    };
    let legend = draw_legend(&right, &labels, plot.top, height as i32 - MARGIN as i32)?;
    root.present().map_err(draw_err)?;
    Ok(Layout {
        plot,
        legend,
        x,
        y,
        title,
        colours: (0..labels.len())
            .map(|i| PALETTE[i % PALETTE.len()])
            .collect(),
        labels,
    })
}

type Cartesian = Cartesian2d<RoundAxis, RoundAxis>;

/// An f64 axis whose grid lines and labels are our round ticks (plotters' own choice is
/// not always 1, 2, 5 × 10^k, and its labels show float noise).
struct RoundAxis(Ticks);

impl Ranged for RoundAxis {
    // Labels come from the mesh's formatters; the default only satisfies the trait bound.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.0.map(*value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold lines at the ticks, no light lines between them.
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        self.0.values.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.0.lo..self.0.hi
    }
}

/// A series as lines through its finite points; a non-finite point breaks the line, and a
/// point with no finite neighbour is a dot, so that it shows.
fn draw_series<DB: DrawingBackend>(
    cc: &mut ChartContext<'_, DB, Cartesian>,
    points: &[(f64, f64)],
    index: usize,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let colour = colour(index);
    let style = Color::stroke_width(&colour, 2);
    let runs = points.split(|(x, y)| !x.is_finite() || !y.is_finite());
    for run in runs.filter(|r| !r.is_empty()) {
        if let [p] = run {
            cc.draw_series(std::iter::once(Circle::new(*p, 3, colour.filled())))
                .map_err(draw_err)?;
            continue;
        }
        let points = run.iter().copied();
        if dashed(index) {
            cc.draw_series(DashedLineSeries::new(points, 8, 5, style))
        } else {
            cc.draw_series(LineSeries::new(points, style))
        }
        .map_err(draw_err)?;
    }
    Ok(())
}

/// The legend in its own area: a colour swatch and a label per series, as many rows as fit,
/// then a row saying how many more there are.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    labels: &[String],
    top: i32,
    bottom: i32,
) -> Result<PixelRect, PlotError>
where
    DB::ErrorType: 'static,
{
    let (xs, _) = area.get_pixel_range();
    let room = ((bottom - top - 2 * LEGEND_PAD) / LEGEND_ROW).max(1) as usize;
    let (shown, more) = if labels.len() > room {
        (room - 1, labels.len() - (room - 1))
    } else {
        (labels.len(), 0)
    };
    let rows = shown + usize::from(more > 0);
    let rect = PixelRect {
        left: 0,
        top,
        right: xs.end - xs.start - 1 - MARGIN as i32,
        bottom: top + 2 * LEGEND_PAD + rows as i32 * LEGEND_ROW,
    };
    area.draw(&Rectangle::new(
        [(rect.left, rect.top), (rect.right, rect.bottom)],
        RGBColor(120, 120, 120),
    ))
    .map_err(draw_err)?;
    // Anchored at the row's middle, level with its swatch.
    let text =
        TextStyle::from((FAMILY, TEXT_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let text_x = LEGEND_PAD + LEGEND_SWATCH + LEGEND_PAD;
    for (i, label) in labels.iter().take(shown).enumerate() {
        let row = top + LEGEND_PAD + i as i32 * LEGEND_ROW;
        let mid = row + LEGEND_ROW / 2;
        let swatch = |from: i32, to: i32| {
            Rectangle::new(
                [(LEGEND_PAD + from, mid - 2), (LEGEND_PAD + to, mid + 2)],
                colour(i).filled(),
            )
        };
        if dashed(i) {
            area.draw(&swatch(0, 9)).map_err(draw_err)?;
            area.draw(&swatch(15, LEGEND_SWATCH)).map_err(draw_err)?;
        } else {
            area.draw(&swatch(0, LEGEND_SWATCH)).map_err(draw_err)?;
        }
        area.draw(&Text::new(label.as_str(), (text_x, mid), text.clone()))
            .map_err(draw_err)?;
    }
    if more > 0 {
        let mid = top + LEGEND_PAD + shown as i32 * LEGEND_ROW + LEGEND_ROW / 2;
        area.draw(&Text::new(
            format!("… and {more} more"),
            (text_x, mid),
            text.clone(),
        ))
        .map_err(draw_err)?;
    }
    Ok(PixelRect {
        left: rect.left + xs.start,
        right: rect.right + xs.start,
        ..rect
    })
}

/// Round axis ticks: multiples of a step of 1, 2 or 5 × 10^k; the axis runs from the first
/// tick to the last, which enclose the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticks {
    pub step: f64,
    /// Tick positions, increasing; the first is `lo`, the last `hi`.
    pub values: Vec<f64>,
    /// The axis' ends.
    pub lo: f64,
    pub hi: f64,
    /// `step` is `mantissa` × 10^`exponent`, `mantissa` one of 1, 2, 5.
    mantissa: u8,
    exponent: i32,
}

/// More ticks than this means the step was lost to rounding.
const MAX_TICKS: f64 = 200.0;

impl Ticks {
    /// About `target` round ticks enclosing `min..=max` (in either order). A single value gets
    /// a unit of its own magnitude either side. Non-finite bounds are read as 0..1.
    pub fn new(min: f64, max: f64, target: usize) -> Ticks {
        let (min, max) = finite_range(min, max);
        // Divided before subtracting: max - min can overflow where the data is huge.
        let raw = max / target.max(1) as f64 - min / target.max(1) as f64;
        let Some((mantissa, exponent)) = round_step(raw, Rounding::Nearest) else {
            return Ticks::unrounded(min, max);
        };
        Ticks::from_step(min, max, mantissa, exponent).unwrap_or_else(|| Ticks::unrounded(min, max))
    }

    /// Ticks at a given round step (1, 2 or 5 × 10^k; anything else is rounded up to one).
    pub fn with_step(min: f64, max: f64, step: f64) -> Ticks {
        let (min, max) = finite_range(min, max);
        match round_step(step, Rounding::Up) {
            Some((mantissa, exponent)) => Ticks::from_step(min, max, mantissa, exponent),
            None => None,
        }
        .unwrap_or_else(|| Ticks::new(min, max, TICKS))
    }

    fn from_step(min: f64, max: f64, mantissa: u8, exponent: i32) -> Option<Ticks> {
        let step = mantissa as f64 * pow10(exponent);
        let (first, last) = (snap(min / step).floor(), snap(max / step).ceil());
        if !first.is_finite() || !last.is_finite() || last - first > MAX_TICKS {
            return None;
        }
        let value = |k: f64| tick_value(k, mantissa, exponent);
        // The outer ticks may overflow right at f64's limits: then the data's ends bound the axis.
        let values: Vec<f64> = (0..=(last - first) as i64)
            .map(|i| value(first + i as f64))
            .filter(|v| v.is_finite())
            .collect();
        if values.len() < 2 || values.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        // Ends snapped to a tick enclose the data up to rounding; an end lost to overflow
        // is the data's own.
        let end = |k: f64, data: f64| Some(value(k)).filter(|v| v.is_finite()).unwrap_or(data);
        let (lo, hi) = (end(first, min), end(last, max));
        Some(Ticks {
            step,
            values,
            lo,
            hi,
            mantissa,
            exponent,
        })
    }

    /// The pixel of `v` on an axis drawn from pixel `limit.0` (at `lo`) to `limit.1`.
    fn map(&self, v: f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.lo..self.hi).map(&v, limit)
    }

    /// The last resort, where no round step can be represented: the data's two ends.
    fn unrounded(min: f64, max: f64) -> Ticks {
        Ticks {
            step: max / 2.0 - min / 2.0,
            values: vec![min, max],
            lo: min,
            hi: max,
            mantissa: 1,
            exponent: if max == min {
                0
            } else {
                (max - min).abs().log10().floor() as i32
            },
        }
    }

    /// A tick's label: as many decimals as the step needs, so that all labels of an axis are
    /// alike; scientific notation where plain digits would be long.
    pub fn label(&self, v: f64) -> String {
        if v == 0.0 {
            return "0".to_string();
        }
        let decimals = (-self.exponent).max(0) as usize;
        let magnitude = v.abs().log10().floor() as i32;
        let plain_len = magnitude.max(0) as usize + 1 + decimals + usize::from(decimals > 0);
        if (-5..6).contains(&self.exponent) && plain_len <= 10 {
            return format!("{v:.decimals$}");
        }
        let digits = (magnitude - self.exponent).clamp(0, 16) as usize;
        let text = format!("{v:.digits$e}");
        match text.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => text,
        }
    }
}

/// An ordered, finite, non-empty range: a single value is widened by a unit of its magnitude.
fn finite_range(a: f64, b: f64) -> (f64, f64) {
    if !a.is_finite() || !b.is_finite() {
        return (0.0, 1.0);
    }
    let (min, max) = if a <= b { (a, b) } else { (b, a) };
    if min < max {
        return (min, max);
    }
    let unit = match 10f64.powf(min.abs().log10().floor()) {
        u if min != 0.0 && u.is_finite() && u > 0.0 => u,
        _ if min != 0.0 => f64::MIN_POSITIVE,
        _ => 1.0,
    };
    ((min - unit).max(f64::MIN), (max + unit).min(f64::MAX))
}

/// How a step is made round.
#[derive(Clone, Copy)]
enum Rounding {
    /// The round step nearest on a log scale (so the tick count stays near the target).
    Nearest,
    /// The smallest round step at least as large.
    Up,
}

/// A round step (1, 2 or 5 × 10^k) for `raw`, as (mantissa, k).
fn round_step(raw: f64, rounding: Rounding) -> Option<(u8, i32)> {
    if !raw.is_finite() || raw <= 0.0 {
        return None;
    }
    let mut exponent = raw.log10().floor() as i32;
    let norm = raw / pow10(exponent);
    // Nearest: the limits are the geometric means of neighbours (√2, √10, √50). Up: a hair of
    // tolerance, as log10 and the division round and 2.0000000000000004 is 2.
    let limits = match rounding {
        Rounding::Nearest => [2f64.sqrt(), 10f64.sqrt(), 50f64.sqrt()],
        Rounding::Up => [1.0 + 1e-9, 2.0 + 1e-9, 5.0 + 1e-9],
    };
    let mantissa = match norm {
        n if n <= limits[0] => 1,
        n if n <= limits[1] => 2,
        n if n <= limits[2] => 5,
        _ => {
            exponent += 1;
            1
        }
    };
    let step = mantissa as f64 * pow10(exponent);
    (step.is_finite() && step > 0.0).then_some((mantissa, exponent))
}

/// A quotient within rounding error of a whole number is that number: -0.04 / 0.005 is
/// -8.000000000000002, and the axis must not get a tick at -0.045 for it.
fn snap(q: f64) -> f64 {
    if (q - q.round()).abs() < 1e-9 * q.abs().max(1.0) {
        q.round()
    } else {
        q
    }
}

/// 10^e; `powf` is accurate into the subnormals, where repeated multiplication is not.
fn pow10(e: i32) -> f64 {
    10f64.powf(e as f64)
}

/// k steps, computed so that the tick is the double nearest its decimal (0.3, not
/// 0.30000000000000004): dividing by an exact power of ten rounds once.
fn tick_value(k: f64, mantissa: u8, exponent: i32) -> f64 {
    let v = if (-22..0).contains(&exponent) {
        k * mantissa as f64 / pow10(-exponent)
    } else {
        k * mantissa as f64 * pow10(exponent)
    };
    v + 0.0 // no "-0"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(job: &str, metric: &str) -> PlotSeries {
        PlotSeries {
            job_id: job.into(),
            name: metric.into(),
            points: vec![(0.0, 1.0)],
        }
    }

    #[test]
    fn ticks_are_round_multiples_enclosing_the_data() {
        let cases: &[(f64, f64, &[f64])] = &[
            (0.0, 10.0, &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
            (10.0, 0.0, &[0.0, 2.0, 4.0, 6.0, 8.0, 10.0]),
            (0.0, 1.0, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            (0.05, 1.19, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]),
            (0.0, 999.0, &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]),
            (
                -3.7,
                12.2,
                &[-4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0],
            ),
            (-250.0, -20.0, &[-250.0, -200.0, -150.0, -100.0, -50.0, 0.0]),
            // A single point: a unit of its magnitude either side.
            (5.0, 5.0, &[4.0, 4.5, 5.0, 5.5, 6.0]),
            (0.0, 0.0, &[-1.0, -0.5, 0.0, 0.5, 1.0]),
            (-0.03, -0.03, &[-0.04, -0.035, -0.03, -0.025, -0.02]),
            (0.0, 3e12, &[0.0, 5e11, 1e12, 1.5e12, 2e12, 2.5e12, 3e12]),
            (1e-9, 7e-9, &[1e-9, 2e-9, 3e-9, 4e-9, 5e-9, 6e-9, 7e-9]),
        ];
        for &(min, max, want) in cases {
            let t = Ticks::new(min, max, 6);
            assert_eq!(t.values, want, "ticks of {min}..{max}");
            assert_eq!((t.lo, t.hi), (want[0], want[want.len() - 1]));
        }
    }

    /// Over magnitudes from 1e-300 to 1e300, both signs, wide and narrow spans: the step is
    /// 1, 2 or 5 × 10^k, every tick a multiple of it, the ticks increase and enclose the data,
    /// there are neither too few nor too many, and no two share a label.
    #[test]
    fn ticks_are_round_for_any_magnitude() {
        let mut checked = 0;
        for e in (-300..=300).step_by(7) {
            let unit = 10f64.powi(e);
            for (a, b) in [
                (0.0, 1.0),
                (-1.0, 1.0),
                (-7.3, -2.1),
                (3.0, 3.0),
                (1e3, 1e3 + 7.0),
            ] {
                let (min, max) = (a * unit, b * unit);
                let t = Ticks::new(min, max, 6);
                let ctx = format!("{min:e}..{max:e}: {t:?}");
                assert!([1, 2, 5].contains(&t.mantissa), "{ctx}");
                let step = t.mantissa as f64 * 10f64.powf(t.exponent as f64);
                assert!((t.step / step - 1.0).abs() < 1e-12, "{ctx}");
                for v in &t.values {
                    let k = v / t.step;
                    assert!((k - k.round()).abs() < 1e-6, "{v:e} not a multiple: {ctx}");
                }
                assert!(t.values.windows(2).all(|w| w[0] < w[1]), "{ctx}");
                let slack = t.step * 1e-9;
                assert!(t.lo <= min + slack && t.hi >= max - slack, "{ctx}");
                assert!((3..=14).contains(&t.values.len()), "{ctx}");
                let labels: Vec<String> = t.values.iter().map(|v| t.label(*v)).collect();
                let mut distinct = labels.clone();
                distinct.dedup();
                assert_eq!(distinct, labels, "{ctx}");
                checked += 1;
            }
        }
        assert_eq!(checked, 86 * 5);
    }

    #[test]
    fn ticks_survive_the_limits_of_f64() {
        for (min, max) in [
            (-f64::MAX, f64::MAX),
            (f64::MAX, f64::MAX),
            (0.0, 1e-320),
            (5e-324, 5e-324),
            (f64::NAN, 1.0),
            (0.0, f64::INFINITY),
        ] {
            let t = Ticks::new(min, max, 6);
            let ctx = format!("{min:e}..{max:e}: {t:?}");
            assert!(t.values.len() >= 2, "{ctx}");
            assert!(t.values.iter().all(|v| v.is_finite()), "{ctx}");
            assert!(t.values.windows(2).all(|w| w[0] < w[1]), "{ctx}");
            if min.is_finite() && max.is_finite() {
                assert!(t.lo <= min && t.hi >= max, "{ctx}");
            }
        }
        // Not a number or unbounded: read as 0..1.
        assert_eq!(Ticks::new(f64::NAN, 1.0, 6), Ticks::new(0.0, 1.0, 6));
    }

    #[test]
    fn an_integer_step_is_at_least_one() {
        let t = Ticks::with_step(0.0, 2.0, 1.0);
        assert_eq!(t.values, [0.0, 1.0, 2.0]);
        // Not round: rounded up.
        assert_eq!(
            Ticks::with_step(0.0, 9.0, 1.5).values,
            [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
    }

    #[test]
    fn tick_labels_show_what_the_step_needs() {
        let labels = |min, max| {
            let t = Ticks::new(min, max, 6);
            t.values.iter().map(|v| t.label(*v)).collect::<Vec<_>>()
        };
        assert_eq!(labels(0.0, 1.0), ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(
            labels(0.0, 999.0),
            ["0", "200", "400", "600", "800", "1000"]
        );
        assert_eq!(labels(-1.0, 1.0)[2], "0");
        assert_eq!(
            labels(0.0, 3e12),
            ["0", "5e11", "1e12", "1.5e12", "2e12", "2.5e12", "3e12"]
        );
        assert_eq!(labels(1e-9, 3e-9)[..3], ["1e-9", "1.5e-9", "2e-9"]);
        assert_eq!(labels(0.0002, 0.0004)[..2], ["0.00020", "0.00025"]);
        assert_eq!(labels(1e6, 1e6 + 10.0)[0], "1000000");
    }

    #[test]
    fn legend_labels_name_jobs() {
        let all = [
            series("j-a", "loss"),
            series("j-b", "loss"),
            series("j-c", "loss"),
            series("j-d", "loss"),
        ];
        let names = [
            ("j-a", "baseline"),
            ("j-b", "lr-0.1"),
            ("j-c", "lr-0.1"),
            ("j-d", ""),
        ]
        .map(|(id, n)| (id.to_string(), n.to_string()));
        let chart = Chart::new(&all).job_names(names);
        assert_eq!(chart.metric(), Some("loss"));
        // A shared name gets the id; an empty name is no name.
        assert_eq!(
            chart.labels(),
            ["baseline", "lr-0.1 (j-b)", "lr-0.1 (j-c)", "j-d"]
        );
        let mixed = [series("j-a", "loss"), series("j-a", "acc")];
        let chart = Chart::new(&mixed).job_names([("j-a".into(), "baseline".into())]);
        assert_eq!(chart.metric(), None);
        assert_eq!(chart.labels(), ["baseline: loss", "baseline: acc"]);
    }

    #[test]
    fn long_labels_are_cut_to_fit() {
        let chars = |s: &str| Ok::<i32, ()>(s.chars().count() as i32);
        assert_eq!(fit("abcdef".into(), 6, chars).unwrap(), "abcdef");
        assert_eq!(fit("abcdefg".into(), 6, chars).unwrap(), "abcde…");
        assert_eq!(fit("abcdefg".into(), 0, chars).unwrap(), "…");
    }

    #[test]
    fn text_is_laid_out_with_the_bundled_font() {
        let mut pixels = vec![255u8; 200 * 50 * 3];
        let canvas = Canvas {
            bitmap: BitMapBackend::with_buffer(&mut pixels, (200, 50)),
            font: font().unwrap(),
        };
        let wide = canvas.layout("WWWW", 15.0);
        let narrow = canvas.layout("iiii", 15.0);
        // A proportional font with kerning: W is much wider than i; all glyphs have outlines.
        assert!(
            wide.width > 2.0 * narrow.width,
            "{} {}",
            wide.width,
            narrow.width
        );
        assert_eq!(wide.glyphs.len(), 4);
        // 15 px text is about 15 px tall.
        assert!((14.0..=19.0).contains(&wide.height), "{}", wide.height);
    }
}
