//! A runbook as a printable launch-day checklist: one self-contained HTML
//! page (no scripts, no outside resources) with the event, the roles, the
//! two-person rule, the abort plan, and per step a box to tick, its time,
//! who does it, what must hold first and its backup plan.
//! `kickoff-sender runbook print` writes it.

use std::fmt::Write;

use super::file::{Params, Runbook, Step, ZombieWhen};

/// HTML-escapes `s` (text and attribute values).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the step's parameters ask for, for people.
fn what(step: &Step) -> String {
    let dur = |d: std::time::Duration| humantime::format_duration(d).to_string();
    match &step.params {
        Params::Scale { desired, timeout } => format!("to {desired}, within {}", dur(*timeout)),
        Params::ScaleDown { asg, ecs } => format!("ASG to {asg}, ECS to {ecs}"),
        Params::TestSend { silent: true } => "silent (background / data-only)".to_owned(),
        Params::Watch { max_missing, timeout } => format!("at most {max_missing} missing, within {}", dur(*timeout)),
        Params::Zombie { backend, duration, retry_after_s, when } => format!(
            "{backend} for {}, clients retry after {retry_after_s} s{}",
            dur(*duration),
            if *when == ZombieWhen::OverCapacity { ", only if over capacity" } else { "" }
        ),
        Params::Checklist { items } => items.join("; "),
        Params::Plan(p) => {
            let mut parts = Vec::new();
            if let Some(q) = p.fcm_quota_per_minute {
                parts.push(format!("FCM quota {q}/min"));
            }
            parts.extend(p.accept.iter().map(|(gate, why)| format!("{gate} accepted: {why}")));
            parts.join("; ")
        }
        _ => String::new(),
    }
}

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:24px;color:#111}\
h1{font-size:20px;margin:0 0 4px}table{border-collapse:collapse;width:100%}\
th,td{border:1px solid #999;padding:4px 6px;vertical-align:top;text-align:left}\
th{background:#eee}td.box{width:18px;font-size:16px}td.sign{width:150px}.muted{color:#555}\
@media print{body{margin:10mm}tr{break-inside:avoid}}";

/// The checklist of `runbook`, as one HTML page.
pub fn checklist_html(runbook: &Runbook) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{name}: launch checklist</title><style>{STYLE}</style></head><body>\n<h1>{name}</h1>\n",
        name = esc(&runbook.name)
    );
    let when = runbook.event_time_ms.map_or("T is set on the day".to_owned(), |ms| format!("T = {}", crate::clock::rfc3339_s(ms)));
    let _ = writeln!(
        h,
        "<p class=\"muted\">{} · campaign {} · from {}{}</p>",
        esc(&when),
        esc(&runbook.campaign.display().to_string()),
        esc(&runbook.path.display().to_string()),
        if runbook.silent { " · silent rehearsal" } else { "" }
    );
    if !runbook.roles.is_empty() {
        h.push_str("<h2>Roles</h2><table><tr><th>role</th><th>does</th><th>who (name, phone)</th></tr>\n");
        for (role, does) in &runbook.roles {
            let _ = writeln!(h, "<tr><td>{}</td><td>{}</td><td class=\"sign\"></td></tr>", role.as_str(), esc(does));
        }
        h.push_str("</table>\n");
    }
    if let Some(a) = runbook.arm_approvals {
        let _ = writeln!(
            h,
            "<p><strong>Two-person arm:</strong> the arm needs {} different operators, approvals within {}.</p>",
            a.count,
            humantime::format_duration(a.within)
        );
    }
    if !runbook.backend_capacity.is_empty() {
        let backends: Vec<String> = runbook.backend_capacity.iter().map(|(b, c)| format!("{} ({c:.0} req/s)", esc(b))).collect();
        let _ = writeln!(h, "<p><strong>Backends with zombie mode:</strong> {}</p>", backends.join(", "));
    }
    h.push_str("<h2>Steps</h2><table><tr><th></th><th>when</th><th>step</th><th>role</th><th>first</th><th>backup plan</th><th>done by, at</th></tr>\n");
    for step in &runbook.steps {
        let time = match (step.at, step.deadline) {
            (Some(at), Some(d)) => format!("{}<br><span class=\"muted\">by {}</span>", esc(&at.display()), esc(&d.display())),
            (Some(at), None) => esc(&at.display()),
            (None, Some(d)) => format!("by {}", esc(&d.display())),
            (None, None) => String::new(),
        };
        let mut first: Vec<String> = step.after.iter().map(|a| format!("after {}", esc(a))).collect();
        first.extend(step.checks.iter().map(|c| esc(c.as_str())));
        if let Some(of) = &step.backup_for {
            first.push(format!("only if {} fails", esc(of)));
        }
        let backup = step
            .backup
            .as_ref()
            .map_or(String::new(), |b| esc(&b.text) + &b.step.as_ref().map_or(String::new(), |s| format!(" <em>(step {})</em>", esc(s))));
        let detail = what(step);
        let _ = writeln!(
            h,
            "<tr id=\"step-{id}\"><td class=\"box\">☐</td><td>{time}</td><td><strong>{title}</strong><br><span class=\"muted\">{kind}{sep}{detail}</span></td><td>{role}</td><td>{first}</td><td>{backup}</td><td class=\"sign\"></td></tr>",
            id = esc(&step.id),
            title = esc(&step.title),
            kind = step.kind.as_str(),
            sep = if detail.is_empty() { "" } else { " · " },
            detail = esc(&detail),
            role = step.role.as_str(),
            first = first.join("<br>"),
        );
    }
    h.push_str("</table>\n");
    let _ = writeln!(h, "<h2>Abort</h2><p>{}</p>", esc(&runbook.abort_plan).replace('\n', "<br>"));
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_file_is_escaped() {
        assert_eq!(esc("<b>\"a\" & 'b'</b>"), "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;");
    }
}
