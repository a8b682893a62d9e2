//! The after-event report: charts (PNG and SVG) and a Markdown and an HTML
//! page with the numbers that matter: devices, delivery-time percentiles,
//! errors, duplicates, who pressed fire and when, each step's plan against
//! what happened.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::EventLog;
use super::charts::{Band, Chart, Marker, Series, palette};
use super::replay::{self, EventSummary, StepTiming};
use crate::clock::rfc3339_ms as rfc3339;
use crate::plan::{Plan, PlanInput};

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 400);

/// Actions marked on the throughput chart.
const MARKED: &[&str] = &["arm", "disarm", "fire", "abort", "zombie-on", "zombie-off"];

fn x_of(t_ms: u64, origin: u64) -> f64 {
    (t_ms as f64 - origin as f64) / 1000.0
}

/// Series of `name` split by the dimension `dim`.
fn split(log: &EventLog, name: &str, dim: &str, origin: u64, scale: f64) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for p in log.series(name) {
        out.entry(p.dim(dim).unwrap_or("").to_owned()).or_default().push((x_of(p.t_ms, origin), p.value * scale));
    }
    out
}

/// Deliveries per second, by platform: a second written in parts (counts
/// that arrived after it closed) is one point.
fn sent_by_platform(log: &EventLog, origin: u64) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut seconds: BTreeMap<String, BTreeMap<u64, f64>> = BTreeMap::new();
    for p in log.series("sent") {
        *seconds.entry(p.dim("platform").unwrap_or("").to_owned()).or_default().entry(p.t_ms).or_default() += p.value;
    }
    seconds.into_iter().map(|(platform, s)| (platform, s.into_iter().map(|(t, n)| (x_of(t, origin), n)).collect())).collect()
}

fn color_for(key: &str, i: usize) -> (u8, u8, u8) {
    match key {
        "ios" => palette::IOS,
        "android" => palette::ANDROID,
        "p99" => palette::RED,
        "p95" => palette::ORANGE,
        "p50" => palette::GREY,
        _ => palette::MORE[i % palette::MORE.len()],
    }
}

fn lines(map: BTreeMap<String, Vec<(f64, f64)>>, prefix: &str) -> Vec<Series> {
    map.into_iter().enumerate().map(|(i, (k, points))| Series { color: color_for(&k, i), name: format!("{prefix}{k}"), points }).collect()
}

/// The plan's charts, by file stem: `plan-delivery` (the expected share
/// delivered over time per platform, with the target and the expected
/// percentiles) and, when the runbook declares backends, `plan-load` (the
/// forecast return traffic against each backend's capacity, with the
/// zombie period that keeps it under).
pub fn plan_charts(plan: &Plan) -> Vec<(&'static str, Chart)> {
    let mut markers = vec![
        Marker { x: plan.p95_s, label: format!("p95 {:.1} s", plan.p95_s) },
        Marker { x: plan.p99_s, label: format!("p99 {:.1} s", plan.p99_s) },
    ];
    if let Some(t) = plan.input.target_s {
        markers.push(Marker { x: t, label: format!("target {t:.0} s") });
    }
    let series = plan
        .delivery_curves()
        .into_iter()
        .enumerate()
        .map(|(i, (platform, points))| Series { name: platform.to_owned(), points, color: color_for(platform, i) })
        .collect();
    let mut out = vec![(
        "plan-delivery",
        Chart {
            title: "Plan: expected share delivered, by platform".into(),
            x_label: "seconds after the fire".into(),
            y_label: "% delivered".into(),
            series,
            markers,
            y_max: Some(100.0),
            legend_low: true,
            ..Chart::default()
        },
    )];
    if plan.backends.is_empty() {
        return out;
    }
    // Up to where every backend's forecast has settled (under a hundredth
    // of its peak), at least past the last delivery.
    let settled = plan
        .backends
        .iter()
        .map(|b| b.load.iter().rposition(|v| *v > b.peak_rps / 100.0).map_or(0, |k| k + 1))
        .chain([plan.delivered.len()])
        .max()
        .unwrap_or(0)
        .max(2);
    let mut series = Vec::new();
    let mut bands = Vec::new();
    for (i, b) in plan.backends.iter().enumerate() {
        let color = palette::MORE[i % palette::MORE.len()];
        let points = b.load.iter().take(settled).enumerate().map(|(k, v)| (k as f64, *v)).collect();
        series.push(Series { name: format!("{} forecast", b.name), points, color });
        series.push(Series {
            name: format!("{} capacity", b.name),
            points: vec![(0.0, b.capacity_rps), ((settled - 1) as f64, b.capacity_rps)],
            color: palette::RED,
        });
        if b.zombie_for_s > 0.0 {
            bands.push(Band { x0: 0.0, x1: b.zombie_for_s, label: format!("zombie {} keeps it under", b.name) });
        }
    }
    out.push((
        "plan-load",
        Chart {
            title: "Plan: forecast backend load against capacity".into(),
            x_label: "seconds after the fire".into(),
            y_label: "requests/s".into(),
            series,
            bands,
            ..Chart::default()
        },
    ));
    out
}

/// The plan of the event's last passed plan step, redrawn from the input
/// it recorded. The app redraws the charts every second during an event:
/// the last plan computed is kept, keyed by its input.
pub fn recorded_plan(log: &EventLog) -> Option<Plan> {
    static LAST: std::sync::Mutex<Option<(PlanInput, Plan)>> = std::sync::Mutex::new(None);
    let input = log.audit.iter().rev().filter(|a| a.action == "done" && a.outcome == "ok").find_map(|a| {
        let payload: serde_json::Value = serde_json::from_str(&a.payload).ok()?;
        serde_json::from_value::<PlanInput>(payload.get("result")?.get("input")?.clone()).ok()
    })?;
    let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((i, plan)) = last.as_ref()
        && *i == input
    {
        return Some(plan.clone());
    }
    let plan = crate::plan::plan(input.clone());
    *last = Some((input, plan.clone()));
    Some(plan)
}

/// The event's charts, by file stem.
pub fn charts(log: &EventLog, summary: &EventSummary) -> Vec<(&'static str, Chart)> {
    let origin = replay::origin_ms(log);
    let x_label = if replay::fire_entry(log).is_some() { "seconds since fire" } else { "seconds since start" };
    let actions: Vec<Marker> = log
        .audit
        .iter()
        .filter(|a| MARKED.contains(&a.action.as_str()) && a.outcome == "ok")
        .map(|a| Marker { x: x_of(a.t_ms, origin), label: format!("{} by {}", a.action, a.actor) })
        .collect();
    let mut out = Vec::new();

    out.push((
        "throughput",
        Chart {
            title: "Delivered per second, by platform".into(),
            x_label: x_label.into(),
            y_label: "notifications/s".into(),
            series: lines(sent_by_platform(log, origin), ""),
            markers: actions.clone(),
            ..Chart::default()
        },
    ));

    let mut cumulative = Vec::new();
    let mut total = 0.0;
    let mut per_second: BTreeMap<u64, f64> = BTreeMap::new();
    for p in log.series("sent") {
        *per_second.entry(p.t_ms).or_default() += p.value;
    }
    if let Some(first) = per_second.keys().next().copied() {
        cumulative.push((x_of(first, origin), 0.0));
    }
    for (t, n) in per_second {
        total += n;
        // Deliveries of a second are complete at its end.
        let pct = if summary.devices > 0 { total * 100.0 / summary.devices as f64 } else { 0.0 };
        cumulative.push((x_of(t + 1000, origin), pct));
    }
    let mut markers = Vec::new();
    if summary.delivered > 0 {
        markers.push(Marker { x: summary.p95_s, label: format!("p95 {:.2} s", summary.p95_s) });
        markers.push(Marker { x: summary.p99_s, label: format!("p99 {:.2} s", summary.p99_s) });
    }
    out.push((
        "delivered",
        Chart {
            title: "Cumulative share of devices delivered".into(),
            x_label: x_label.into(),
            y_label: "% delivered".into(),
            series: vec![Series { name: "delivered".into(), points: cumulative, color: palette::IOS }],
            markers,
            y_max: Some(100.0),
            legend_low: true,
            ..Chart::default()
        },
    ));

    out.push((
        "errors",
        Chart {
            title: "Failures by reason (running total)".into(),
            x_label: x_label.into(),
            y_label: "notifications".into(),
            series: lines(split(log, "failed_total", "reason", origin, 1.0), ""),
            ..Chart::default()
        },
    ));

    out.push((
        "latency",
        Chart {
            title: "Provider round trip".into(),
            x_label: x_label.into(),
            y_label: "ms".into(),
            series: lines(split(log, "rtt_s", "q", origin, 1000.0), "round trip "),
            ..Chart::default()
        },
    ));

    // Zombie periods as bands, with each backend's modelled load.
    let mut bands = Vec::new();
    let end = log.span_ms().map_or(origin, |s| s.1);
    for (backend, pts) in split(log, "zombie", "backend", origin, 1.0) {
        let mut on_since = None;
        for (x, v) in pts {
            match (on_since, v > 0.0) {
                (None, true) => on_since = Some(x),
                (Some(x0), false) => {
                    bands.push(Band { x0, x1: x, label: format!("zombie {backend}") });
                    on_since = None;
                }
                _ => {}
            }
        }
        if let Some(x0) = on_since {
            bands.push(Band { x0, x1: x_of(end, origin), label: format!("zombie {backend}") });
        }
    }
    // Measured (simulated clients at the flag server) or modelled, next to
    // the plan's forecast and each backend's capacity when the event planned.
    let measured = log.meta.get("backend_load").is_some_and(|s| s.starts_with("measured"));
    let mut series = lines(split(log, "backend_rps", "backend", origin, 1.0), if measured { "measured " } else { "" });
    let plan = recorded_plan(log);
    let fired = replay::fire_entry(log).is_some();
    if let (Some(plan), true) = (&plan, fired) {
        let end = series.iter().flat_map(|s| s.points.last().map(|p| p.0)).fold(0.0, f64::max).max(1.0);
        for (i, b) in plan.backends.iter().enumerate() {
            let points = b.load.iter().enumerate().map(|(k, v)| (k as f64, *v)).take_while(|p| p.0 <= end).collect();
            series.push(Series { name: format!("{} forecast", b.name), points, color: palette::MORE[(i + 3) % palette::MORE.len()] });
            series.push(Series {
                name: format!("{} capacity", b.name),
                points: vec![(0.0, b.capacity_rps), (end, b.capacity_rps)],
                color: palette::RED,
            });
        }
    }
    out.push((
        "zombie",
        Chart {
            title: if measured {
                "Backend load (measured at the flag server) and zombie periods"
            } else {
                "Backend load and zombie periods"
            }
            .into(),
            x_label: x_label.into(),
            y_label: "requests/s".into(),
            series,
            bands,
            markers: actions,
            ..Chart::default()
        },
    ));

    let mut fleet = BTreeMap::new();
    for name in ["asg_running", "asg_desired", "ecs_running", "ecs_desired"] {
        let pts: Vec<(f64, f64)> = log.series(name).map(|p| (x_of(p.t_ms, origin), p.value)).collect();
        if !pts.is_empty() {
            fleet.insert(name.to_owned(), pts);
        }
    }
    out.push((
        "fleet",
        Chart {
            title: "Fleet: instances and tasks".into(),
            x_label: x_label.into(),
            y_label: "count".into(),
            series: lines(fleet, ""),
            ..Chart::default()
        },
    ));
    if let Some(plan) = plan {
        out.extend(plan_charts(&plan));
    }
    out
}

/// What [`write`] produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportFiles {
    /// The Markdown report.
    pub markdown: PathBuf,
    /// The HTML report (charts inline).
    pub html: PathBuf,
    /// Every chart file.
    pub charts: Vec<PathBuf>,
    /// The summary.
    pub summary: EventSummary,
}

fn step_rows(steps: &[StepTiming], origin: u64) -> Vec<[String; 6]> {
    let t = |ms: Option<u64>| ms.map_or_else(|| "—".to_owned(), |m| replay::format_offset(x_of(m, origin)));
    steps
        .iter()
        .map(|s| {
            let late = match (s.planned_ms, s.started_ms) {
                (Some(p), Some(a)) if a > p + 60_000 => {
                    format!(" (late {})", humantime::format_duration(Duration::from_secs((a - p) / 1000)))
                }
                _ => String::new(),
            };
            [
                s.id.clone(),
                s.title.clone(),
                s.planned.clone().unwrap_or_else(|| "—".into()),
                format!("{}{late}", t(s.started_ms)),
                t(s.finished_ms),
                format!("{}{}", s.outcome, s.by.as_ref().map(|b| format!(" ({b})")).unwrap_or_default()),
            ]
        })
        .collect()
}

/// The report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or the output directory.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A chart.
    #[error(transparent)]
    Chart(#[from] super::charts::ChartError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io { path: path.to_owned(), source }
}

/// Writes the charts (PNG and SVG), `report.md`, `report.html` and
/// `summary.json` into `out` (created if needed).
pub fn write(log: &EventLog, source: &Path, out: &Path) -> Result<ReportFiles, ReportError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let summary = replay::summarize(log);
    let origin = replay::origin_ms(log);
    let mut files = Vec::new();
    let mut svgs = Vec::new();
    for (stem, chart) in charts(log, &summary) {
        let png = out.join(format!("{stem}.png"));
        chart.png(&png, SIZE.0, SIZE.1)?;
        let svg = chart.svg(SIZE.0, SIZE.1)?;
        let svg_path = out.join(format!("{stem}.svg"));
        std::fs::write(&svg_path, &svg).map_err(io(&svg_path))?;
        files.push(png);
        files.push(svg_path);
        svgs.push((stem, chart.title.clone(), svg));
    }
    let steps = replay::step_timings(log);
    let rows = step_rows(&steps, origin);
    let title = log.meta.get("runbook").cloned().unwrap_or_else(|| "Kickoff event".into());
    let fired = match (&summary.fired_by, summary.fired_at_ms) {
        (Some(by), Some(at)) => format!("{by} at {}", rfc3339(at)),
        _ => "not fired".into(),
    };
    let facts: Vec<(&str, String)> = vec![
        ("Campaign", format!("{} ({})", summary.campaign_id, summary.campaign_hash.get(..12).unwrap_or(&summary.campaign_hash))),
        ("Fired", fired),
        ("Devices", summary.devices.to_string()),
        ("Delivered", summary.delivered.to_string()),
        ("Failed", summary.failed.to_string()),
        ("Duplicates", summary.duplicates.to_string()),
        ("Missing", summary.missing.to_string()),
        ("Delivery time p50 / p95 / p99", format!("{:.2} s / {:.2} s / {:.2} s", summary.p50_s, summary.p95_s, summary.p99_s)),
        (
            "Errors",
            if summary.failed_by_reason.is_empty() {
                "none".into()
            } else {
                summary.failed_by_reason.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>().join(", ")
            },
        ),
    ];

    let mut md = format!("# {title}\n\nRecorded in `{}`.\n\n| | |\n|---|---|\n", source.display());
    for (k, v) in &facts {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push_str("\n## Steps: plan and actual\n\n| step | title | planned | started | finished | outcome |\n|---|---|---|---|---|---|\n");
    for r in &rows {
        let _ = writeln!(md, "| {} |", r.join(" | "));
    }
    md.push_str("\n## Charts\n\n");
    for (stem, title, _) in &svgs {
        let _ = writeln!(md, "### {title}\n\n![{title}]({stem}.png)\n");
    }
    md.push_str("## Audit log\n\n| time | who | role | step | action | outcome |\n|---|---|---|---|---|---|\n");
    for a in &log.audit {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            replay::format_offset(x_of(a.t_ms, origin)),
            a.actor,
            a.role,
            a.step,
            a.action,
            a.outcome
        );
    }

    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}</style></head><body><h1>{t}</h1>\
         <p>Recorded in <code>{src}</code>.</p><table>",
        t = esc(&title),
        src = esc(&source.display().to_string())
    );
    for (k, v) in &facts {
        let _ = write!(html, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    html.push_str("</table><h2>Steps: plan and actual</h2><table><tr><th>step</th><th>title</th><th>planned</th><th>started</th><th>finished</th><th>outcome</th></tr>");
    for r in &rows {
        html.push_str("<tr>");
        for c in r {
            let _ = write!(html, "<td>{}</td>", esc(c));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table><h2>Charts</h2>");
    for (_, title, svg) in &svgs {
        let _ = write!(html, "<h3>{}</h3>{svg}", esc(title));
    }
    html.push_str("<h2>Audit log</h2><table><tr><th>time</th><th>who</th><th>role</th><th>step</th><th>action</th><th>outcome</th><th>details</th></tr>");
    for a in &log.audit {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            replay::format_offset(x_of(a.t_ms, origin)),
            esc(&a.actor),
            esc(&a.role),
            esc(&a.step),
            esc(&a.action),
            esc(&a.outcome),
            esc(&a.payload)
        );
    }
    html.push_str("</table></body></html>\n");

    let markdown = out.join("report.md");
    let html_path = out.join("report.html");
    let summary_path = out.join("summary.json");
    for (path, text) in
        [(&markdown, md), (&html_path, html), (&summary_path, serde_json::to_string_pretty(&summary).expect("summary serializes"))]
    {
        std::fs::write(path, text).map_err(io(path))?;
    }
    Ok(ReportFiles { markdown, html: html_path, charts: files, summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BackendInput;
    use crate::recorder::AuditEntry;

    fn input(backends: Vec<BackendInput>) -> PlanInput {
        PlanInput { fcm_quota_per_minute: 100_000_000, backends, ..crate::plan::tests::input(600_000, 400_000) }
    }

    fn api(capacity_rps: f64) -> BackendInput {
        BackendInput { name: "api".into(), capacity_rps, requests_per_open: 20.0, open_share: 0.05, open_delay_s: 30.0 }
    }

    #[test]
    fn the_plan_charts_show_each_platform_reaching_everyone_and_the_load_against_capacity() {
        let plan = crate::plan::plan(input(vec![api(3_000.0)]));
        let charts = plan_charts(&plan);
        let names: Vec<&str> = charts.iter().map(|c| c.0).collect();
        assert_eq!(names, ["plan-delivery", "plan-load"]);
        let delivery = &charts[0].1;
        assert_eq!(delivery.series.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["ios", "android"]);
        for s in &delivery.series {
            assert_eq!(s.points[0].1, 0.0, "{}: nothing before the first round trip", s.name);
            assert!((s.points.last().unwrap().1 - 100.0).abs() < 1e-9, "{}: everyone by the end", s.name);
        }
        assert!(delivery.markers.iter().any(|m| m.label == "target 5 s"));
        let load = &charts[1].1;
        let forecast = &load.series[0];
        let capacity = &load.series[1];
        assert_eq!((forecast.name.as_str(), capacity.name.as_str()), ("api forecast", "api capacity"));
        assert!(forecast.points.iter().any(|p| p.1 > 3_000.0), "the forecast goes over capacity");
        assert_eq!(load.bands.len(), 1);
        assert_eq!(load.bands[0].x1, plan.backends[0].zombie_for_s);
        assert!(charts.iter().all(|(_, c)| c.svg(640, 300).unwrap().starts_with("<svg")));

        // Under capacity: no zombie period to suggest.
        let calm = crate::plan::plan(input(vec![api(1e9)]));
        assert!(plan_charts(&calm)[1].1.bands.is_empty());
        // No backends: only the delivery chart.
        assert_eq!(plan_charts(&crate::plan::plan(input(Vec::new()))).len(), 1);
    }

    #[test]
    fn a_recorded_plan_step_is_redrawn_from_its_input() {
        let plan = crate::plan::plan(input(vec![api(3_000.0)]));
        let mut log = EventLog::default();
        assert!(recorded_plan(&log).is_none());
        log.audit
            .push(AuditEntry::new("ana", "done", "ok").step("plan").payload(&serde_json::json!({ "note": "n", "result": plan.summary() })));
        let again = recorded_plan(&log).expect("the plan step's input is recorded");
        assert_eq!(again.p99_s, plan.p99_s);
        assert_eq!(again.backends[0].load, plan.backends[0].load);
        let summary = replay::summarize(&log);
        let names: Vec<&str> = charts(&log, &summary).into_iter().map(|c| c.0).collect();
        assert!(names.ends_with(&["plan-delivery", "plan-load"]), "{names:?}");
    }
}
