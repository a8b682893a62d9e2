//! Charts rendered in Rust with plotters: SVG for the app's live view and
//! the HTML report, PNG for the report and the README.
//!
//! A [`Chart`] is plain data (lines, markers, shaded periods), so the same
//! description renders live from the fire's counters or from a replayed
//! recorder file.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) in x order.
    pub points: Vec<(f64, f64)>,
    /// RGB.
    pub color: (u8, u8, u8),
}

/// A labelled vertical line (an operator action, a percentile).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Marker {
    /// Where.
    pub x: f64,
    /// What.
    pub label: String,
}

/// A shaded x range (a zombie period).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Band {
    /// Start.
    pub x0: f64,
    /// End.
    pub x1: f64,
    /// What.
    pub label: String,
}

/// A line chart.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
    /// Shaded periods.
    pub bands: Vec<Band>,
    /// Fixed top of the y axis (a percentage chart uses 100).
    pub y_max: Option<f64>,
    /// Put the legend at the lower right (for rising curves).
    pub legend_low: bool,
}

/// Colours used across charts.
pub mod palette {
    /// iOS.
    pub const IOS: (u8, u8, u8) = (0, 113, 227);
    /// Android.
    pub const ANDROID: (u8, u8, u8) = (61, 161, 70);
    /// Errors, p99.
    pub const RED: (u8, u8, u8) = (200, 40, 40);
    /// p95, warnings.
    pub const ORANGE: (u8, u8, u8) = (230, 140, 0);
    /// Neutral lines.
    pub const GREY: (u8, u8, u8) = (90, 90, 90);
    /// Extra series.
    pub const MORE: [(u8, u8, u8); 6] = [(140, 60, 170), (0, 150, 150), (170, 110, 40), (220, 60, 140), (80, 80, 200), (120, 120, 0)];
}

static FONT: Once = Once::new();
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Charts measure and (in bitmaps) draw text with a bundled font (DejaVu Sans, see
/// `assets/fonts/DejaVu-LICENSE.txt`), so charts look the same on every
/// machine and need no system font library.
fn register_font() {
    FONT.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_err() {
            tracing::warn!("the bundled chart font could not be loaded; PNG charts will have no text");
        }
    });
}

/// The largest coordinate a chart draws. Charts are drawn from recordings,
/// which a crash or a hand edit can damage; plotters overflows on ranges far
/// beyond any real one, so such values are left out rather than drawn.
const DRAWABLE: f64 = 1e9;

fn drawable(v: f64) -> bool {
    v.is_finite() && v.abs() <= DRAWABLE
}

impl Chart {
    /// The chart without points, markers or bands it cannot draw.
    fn drawable(&self) -> Self {
        let mut c = self.clone();
        for s in &mut c.series {
            s.points.retain(|(x, y)| drawable(*x) && drawable(*y));
        }
        c.markers.retain(|m| drawable(m.x));
        c.bands.retain(|b| drawable(b.x0) && drawable(b.x1));
        c.y_max = c.y_max.filter(|m| drawable(*m) && *m > 0.0);
        c
    }

    /// True when no series has a point.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.is_empty())
    }

    fn x_range(&self) -> (f64, f64) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.markers.iter().map(|m| m.x))
            .chain(self.bands.iter().flat_map(|b| [b.x0, b.x1]));
        let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if lo.is_finite() && hi - lo > 1e-6 * lo.abs().max(1.0) {
            (lo, hi)
        } else if lo.is_finite() {
            (lo, lo + 1.0)
        } else {
            (0.0, 1.0)
        }
    }

    fn y_top(&self) -> f64 {
        if let Some(m) = self.y_max {
            return m;
        }
        let hi = self.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0_f64, f64::max);
        if hi > 0.0 { hi * 1.1 } else { 1.0 }
    }

    /// Draws the chart on `root`.
    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), ChartError>
    where
        DB::ErrorType: 'static,
    {
        // Both backends measure text with the font to lay the chart out.
        register_font();
        let this = self.drawable();
        let e = |err: DrawingAreaErrorKind<DB::ErrorType>| ChartError { path: None, message: err.to_string() };
        root.fill(&WHITE).map_err(e)?;
        let (x0, x1) = this.x_range();
        let y1 = this.y_top();
        let mut chart = ChartBuilder::on(root)
            .caption(&this.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(this.x_label.as_str())
            .y_desc(this.y_label.as_str())
            .label_style(("sans-serif", 12))
            .light_line_style(RGBColor(235, 235, 235))
            .y_label_formatter(&|v: &f64| if y1 >= 10.0 { format!("{v:.0}") } else { format!("{v:.2}") })
            .draw()
            .map_err(e)?;
        for b in &this.bands {
            let shade = RGBColor(255, 200, 120).mix(0.35);
            chart.draw_series(std::iter::once(Rectangle::new([(b.x0, 0.0), (b.x1, y1)], shade.filled()))).map_err(e)?;
            chart
                .draw_series(std::iter::once(Text::new(b.label.clone(), (b.x0, y1 * 0.97), ("sans-serif", 12).into_font().color(&BLACK))))
                .map_err(e)?;
        }
        for (i, m) in this.markers.iter().enumerate() {
            let grey = RGBColor(120, 120, 120);
            chart.draw_series(std::iter::once(PathElement::new(vec![(m.x, 0.0), (m.x, y1)], grey.stroke_width(1)))).map_err(e)?;
            // Stagger labels so neighbours do not overwrite each other.
            let y = y1 * (0.92 - 0.07 * (i % 4) as f64);
            chart
                .draw_series(std::iter::once(Text::new(m.label.clone(), (m.x, y), ("sans-serif", 12).into_font().color(&grey))))
                .map_err(e)?;
        }
        for s in &this.series {
            let color = RGBColor(s.color.0, s.color.1, s.color.2);
            chart
                // The y axis runs from 0 to y1: a point outside it (a negative
                // rate from a damaged recording, one above a fixed scale) is
                // drawn at the edge; plotters overflows on far-off pixels.
                .draw_series(LineSeries::new(s.points.iter().map(|&(x, y)| (x, y.clamp(0.0, y1))), color.stroke_width(2)))
                .map_err(e)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        if !this.series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .label_font(("sans-serif", 12))
                .position(if this.legend_low { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight })
                .draw()
                .map_err(e)?;
        }
        if this.is_empty() {
            root.draw(&Text::new("no data", (root.dim_in_pixel().0 as i32 / 2 - 30, root.dim_in_pixel().1 as i32 / 2), ("sans-serif", 18)))
                .map_err(e)?;
        }
        root.present().map_err(e)?;
        Ok(())
    }

    /// The chart as an SVG document.
    pub fn svg(&self, width: u32, height: u32) -> Result<String, ChartError> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
            self.draw(&root)?;
        }
        Ok(out)
    }

    /// Writes the chart as a PNG file.
    pub fn png(&self, path: &Path, width: u32, height: u32) -> Result<(), ChartError> {
        let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
        self.draw(&root).map_err(|e| ChartError { path: Some(path.to_owned()), ..e })
    }
}

/// A chart could not be drawn or written. plotters' backend errors carry no
/// source worth keeping beyond their text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}chart: {message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
pub struct ChartError {
    /// The file, when writing one.
    pub path: Option<std::path::PathBuf>,
    /// What plotters said.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Chart {
        Chart {
            title: "sent/s".into(),
            x_label: "s".into(),
            y_label: "n".into(),
            series: vec![Series { name: "ios".into(), points: vec![(0.0, 1.0), (1.0, 5.0), (2.0, 3.0)], color: palette::IOS }],
            markers: vec![Marker { x: 0.5, label: "fire".into() }],
            bands: vec![Band { x0: 1.0, x1: 2.0, label: "zombie api".into() }],
            y_max: None,
            legend_low: false,
        }
    }

    #[test]
    fn svg_has_the_title_series_and_markers() {
        let svg = sample().svg(640, 360).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["sent/s", "ios", "fire", "zombie api", "<polyline"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(Chart::default().svg(200, 100).unwrap().contains("no data"));
    }

    /// Found by `props::recorder_files_never_panic`: a damaged recording's
    /// rate of -25,348,481 req/s, alone on a chart whose axis is 0..1.
    #[test]
    fn points_outside_the_axis_are_drawn_at_its_edge() {
        let mut c = sample();
        c.series[0].points = vec![(0.0, -25_348_481.504_866_91)];
        assert!(c.svg(640, 360).unwrap().contains("<polyline"));
        c.series[0].points = vec![(0.0, 1.0), (1.0, 5.0e8)];
        c.y_max = Some(10.0);
        assert!(c.svg(640, 360).is_ok());
        let png = tempfile::tempdir().unwrap();
        c.png(&png.path().join("c.png"), 320, 200).unwrap();
    }
}
