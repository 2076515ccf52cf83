//! The comparison chart as a user gets it: a PNG file, decoded here and read pixel by pixel.

use std::path::Path;

use strata_metrics::plot::{
    plot_png, Chart, Layout, PixelRect, PlotError, PlotSeries, Rgb, HEIGHT, PALETTE, WIDTH,
};

struct Decoded {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Decoded {
    fn pixel(&self, x: i32, y: i32) -> Rgb {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Whether `colour` is at (x, y) or a pixel next to it (lines are two pixels wide and
    /// plotters rounds their ends).
    fn colour_near(&self, (x, y): (i32, i32), colour: Rgb) -> bool {
        (-2..=2).any(|dy| (-2..=2).any(|dx| self.pixel(x + dx, y + dy) == colour))
    }

    /// Pixels in `r` dark enough to be text or lines (not white, not the light grid).
    fn dark_in(&self, r: PixelRect) -> usize {
        (r.top..r.bottom)
            .flat_map(|y| (r.left..r.right).map(move |x| (x, y)))
            .filter(|&(x, y)| self.pixel(x, y).iter().all(|&c| c < 128))
            .count()
    }

    fn count(&self, colour: Rgb) -> usize {
        self.pixels.chunks(3).filter(|p| *p == colour).count()
    }
}

fn decode(path: &Path) -> Decoded {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    pixels.truncate(info.buffer_size());
    Decoded {
        width: info.width,
        height: info.height,
        pixels,
    }
}

fn loss(job: &str, points: Vec<(f64, f64)>) -> PlotSeries {
    PlotSeries {
        job_id: job.into(),
        name: "loss".into(),
        points,
    }
}

/// Two jobs: a falling curve and a flat line well above it.
fn two_jobs() -> Vec<PlotSeries> {
    vec![
        loss(
            "j-aaaaaaaaaa",
            (0..200)
                .map(|i| (i as f64, 1.0 / (1.0 + i as f64 / 20.0)))
                .collect(),
        ),
        loss("j-bbbbbbbbbb", (0..200).map(|i| (i as f64, 1.5)).collect()),
    ]
}

/// Writes the chart and returns it decoded, with where plotting put things.
fn write_and_decode(chart: &Chart, dir: &Path) -> (Decoded, Layout) {
    let path = dir.join("chart.png");
    chart.write_png(&path).unwrap();
    let layout = chart.render(WIDTH, HEIGHT).unwrap().layout;
    (decode(&path), layout)
}

#[test]
fn each_series_is_drawn_in_its_colour_where_its_data_lies() {
    let dir = tempfile::tempdir().unwrap();
    let series = two_jobs();
    let (png, layout) = write_and_decode(&Chart::new(&series), dir.path());
    assert_eq!((png.width, png.height), (WIDTH, HEIGHT));
    assert_eq!(layout.colours, &PALETTE[..2]);

    for (s, &colour) in series.iter().zip(&layout.colours) {
        for &(x, y) in s.points.iter().step_by(10) {
            let at = layout.to_pixel(x, y);
            assert!(
                png.colour_near(at, colour),
                "{} at ({x}, {y}) = {at:?}",
                s.job_id
            );
        }
    }
    // Where only the other series is, this one is not: the flat line's colour is absent
    // at the curve's start (y = 1), the curve's at the flat line's end (y = 1.5).
    let curve_start = layout.to_pixel(0.0, 1.0);
    let flat_end = layout.to_pixel(199.0, 1.5);
    assert!(!png.colour_near((curve_start.0 + 20, flat_end.1), PALETTE[0]));
    assert!(!png.colour_near(layout.to_pixel(100.0, 0.6), PALETTE[1]));
    // No third colour anywhere.
    assert_eq!(png.count(PALETTE[2]), 0);
    // Data inside the axes: the y axis runs 0..1.6 in steps of 0.2.
    assert_eq!(layout.y.values.first(), Some(&0.0));
    assert_eq!(layout.y.values.last(), Some(&1.6));
    assert_eq!(layout.x.values, [0.0, 50.0, 100.0, 150.0, 200.0]);
}

#[test]
fn a_png_holds_exactly_the_rendered_image() {
    let dir = tempfile::tempdir().unwrap();
    let series = two_jobs();
    let chart = Chart::new(&series);
    let path = dir.path().join("loss.png");
    chart.write_png(&path).unwrap();
    let rendered = chart.render(WIDTH, HEIGHT).unwrap();
    assert_eq!(decode(&path).pixels, rendered.pixels);
    // Shared, like any file a user writes; and no temporary file left beside it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["loss.png"]);
}

#[test]
fn the_legend_title_and_axes_carry_text() {
    let dir = tempfile::tempdir().unwrap();
    let series = two_jobs();
    let named = Chart::new(&series).job_names([
        ("j-aaaaaaaaaa".to_string(), "baseline".to_string()),
        (
            "j-bbbbbbbbbb".to_string(),
            "a much longer job name".to_string(),
        ),
    ]);
    let (png, layout) = write_and_decode(&named, dir.path());
    assert_eq!(layout.labels, ["baseline", "a much longer job name"]);
    assert_eq!(layout.title, "loss");

    // The legend lies right of the axes and holds, per row, a swatch and then text.
    let legend = layout.legend;
    assert!(legend.left > layout.plot.right, "{layout:?}");
    let row = 22;
    let mut text_widths = Vec::new();
    for (i, &colour) in layout.colours.iter().enumerate() {
        let top = legend.top + 10 + i as i32 * row;
        let swatch = PixelRect {
            left: legend.left + 1,
            top,
            right: legend.left + 40,
            bottom: top + row,
        };
        let text = PixelRect {
            left: legend.left + 40,
            top,
            right: legend.right,
            bottom: top + row,
        };
        let swatch_pixels = (swatch.top..swatch.bottom)
            .flat_map(|y| (swatch.left..swatch.right).map(move |x| (x, y)))
            .filter(|&(x, y)| png.pixel(x, y) == colour)
            .count();
        assert!(
            swatch_pixels >= 40,
            "row {i}: {swatch_pixels} swatch pixels"
        );
        let dark = png.dark_in(text);
        assert!(
            dark > 40,
            "row {i}: the legend text is blank ({dark} dark pixels)"
        );
        let columns = (text.left..text.right)
            .filter(|&x| (text.top..text.bottom).any(|y| png.pixel(x, y)[0] < 128))
            .count();
        text_widths.push(columns);
    }
    // The longer name takes more room: the text is the names, not a fixed mark.
    assert!(text_widths[1] > 2 * text_widths[0], "{text_widths:?}");

    // The title above the axes, the tick labels left of and below them.
    let title = PixelRect {
        left: layout.plot.left,
        top: 0,
        right: layout.plot.right,
        bottom: layout.plot.top - 4,
    };
    assert!(png.dark_in(title) > 30, "no title");
    let y_labels = PixelRect {
        left: 0,
        top: layout.plot.top - 8,
        right: layout.plot.left - 8,
        bottom: layout.plot.bottom,
    };
    assert!(png.dark_in(y_labels) > 100, "no y tick labels");
    let x_labels = PixelRect {
        left: layout.plot.left - 8,
        top: layout.plot.bottom + 8,
        right: layout.plot.right + 8,
        bottom: HEIGHT as i32,
    };
    assert!(png.dark_in(x_labels) > 100, "no x tick labels");
}

#[test]
fn a_single_point_shows_on_round_axes() {
    let dir = tempfile::tempdir().unwrap();
    let series = [loss("j-aaaaaaaaaa", vec![(7.0, 0.00031)])];
    let (png, layout) = write_and_decode(&Chart::new(&series), dir.path());
    assert!(png.colour_near(layout.to_pixel(7.0, 0.00031), PALETTE[0]));
    assert_eq!(layout.x.values, [6.0, 7.0, 8.0]);
    assert_eq!(layout.y.step, 5e-5);
    assert!(layout.y.lo <= 0.00031 && layout.y.hi >= 0.00031);
}

#[test]
fn a_gap_in_the_data_breaks_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let points = vec![
        (0.0, 0.0),
        (1.0, 1.0),
        (2.0, f64::NAN),
        (3.0, 3.0),
        (4.0, 4.0),
    ];
    let series = [loss("j-aaaaaaaaaa", points)];
    let (png, layout) = write_and_decode(&Chart::new(&series), dir.path());
    assert!(png.colour_near(layout.to_pixel(0.5, 0.5), PALETTE[0]));
    assert!(png.colour_near(layout.to_pixel(3.5, 3.5), PALETTE[0]));
    // Joining (1, 1) to (3, 3) would pass through (2, 2).
    assert!(!png.colour_near(layout.to_pixel(2.0, 2.0), PALETTE[0]));
}

#[test]
fn nothing_to_plot_is_an_error_and_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.png");
    let no_points = [
        loss("j-aaaaaaaaaa", vec![]),
        loss("j-b", vec![(f64::NAN, 1.0)]),
    ];
    for series in [&[][..], &no_points[..]] {
        let err = plot_png(&path, series).unwrap_err();
        assert!(matches!(err, PlotError::Empty), "{err}");
    }
    assert!(!path.exists());
}

#[test]
fn a_chart_too_small_to_read_is_refused() {
    let series = two_jobs();
    let err = Chart::new(&series).render(100, 80).unwrap_err();
    assert!(matches!(err, PlotError::TooSmall { .. }), "{err}");
}
