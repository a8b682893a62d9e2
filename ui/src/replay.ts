// Replay mode: open a recorded event, play, pause, change speed, scrub; see
// its charts and summary; export the report.
import * as api from "./api/control";
import { errorText, type Frame, type ReplayView } from "./api/types";
import { chartImage } from "./control";
import { el } from "./dom";
import { count } from "./format";
import { offsetLabel } from "./steps";

/** The frame shown at position `i` of `frames`, as text. */
export function frameText(f: Frame): string {
  const actions = f.actions.filter((a) => a.actor !== "kickoff").map((a) => `${a.actor}: ${a.action}${a.step ? ` ${a.step}` : ""}`);
  return `${offsetLabel(Math.round(f.offset_s) * 1000)} · sent/s iOS ${count(f.sent[0])}, Android ${count(f.sent[1])} · delivered ${count(f.delivered)} (${f.delivered_pct.toFixed(1)}%) · failed ${count(f.failed)}${f.zombies.length ? ` · zombie: ${f.zombies.join(", ")}` : ""}${actions.length ? ` · ${actions.join("; ")}` : ""}`;
}

export function replayMode(root: HTMLElement, notify: (text: string, bad?: boolean) => void): { refresh: () => void } {
  const select = el("select", { "data-testid": "replay-select" });
  const openButton = el("button", { type: "button", "data-testid": "replay-open" }, "Open recording");
  const play = el("button", { type: "button", "data-testid": "replay-play", disabled: true }, "Play");
  const speed = el("select", { "data-testid": "replay-speed" }, ...["1", "2", "5", "10", "30"].map((s) => el("option", { value: s, selected: s === "10" }, `${s}×`)));
  const scrub = el("input", { type: "range", min: "0", max: "0", value: "0", "data-testid": "replay-scrub", disabled: true });
  const exportButton = el("button", { type: "button", class: "secondary", "data-testid": "replay-export", disabled: true }, "Export report");
  const now = el("p", { class: "caption", "data-testid": "replay-frame" }, "No recording open.");
  const summary = el("p", { "data-testid": "replay-summary" });
  const charts = el("div", { class: "charts", "data-testid": "replay-charts" });
  root.append(el("section", { class: "card" }, el("h2", {}, "Replay"), el("div", { class: "row" }, select, openButton), el("div", { class: "row" }, play, speed, scrub, exportButton), now, summary), el("section", { class: "card" }, charts));

  let data: ReplayView | null = null;
  let file = "";
  let timer = 0;
  const show = (i: number): void => {
    if (!data || data.frames.length === 0) return;
    const f = data.frames[Math.max(0, Math.min(i, data.frames.length - 1))];
    scrub.value = String(i);
    now.textContent = frameText(f);
  };
  const stop = (): void => {
    clearInterval(timer);
    timer = 0;
    play.textContent = "Play";
  };
  play.addEventListener("click", () => {
    if (timer) return stop();
    play.textContent = "Pause";
    timer = window.setInterval(() => {
      const next = Number(scrub.value) + 1;
      if (!data || next >= data.frames.length) return stop();
      show(next);
    }, 1000 / Number(speed.value));
  });
  speed.addEventListener("change", () => {
    if (timer) {
      stop();
      play.click();
    }
  });
  scrub.addEventListener("input", () => show(Number(scrub.value)));
  openButton.addEventListener("click", async () => {
    if (!select.value) return;
    stop();
    try {
      file = select.value;
      data = await api.openRecording(file);
      const s = data.summary;
      summary.textContent = `${data.runbook}: ${count(s.delivered)} of ${count(s.devices)} delivered · ${count(s.duplicates)} duplicates · ${count(s.missing)} missing · p50 ${s.p50_s.toFixed(2)} s · p95 ${s.p95_s.toFixed(2)} s · p99 ${s.p99_s.toFixed(2)} s${s.fired_by ? ` · fired by ${s.fired_by}` : ""}`;
      charts.replaceChildren(...data.charts.map(chartImage));
      scrub.max = String(Math.max(0, data.frames.length - 1));
      for (const b of [play, scrub, exportButton]) b.disabled = data.frames.length === 0;
      exportButton.disabled = false;
      show(0);
    } catch (e) {
      notify(errorText(e), true);
    }
  });
  exportButton.addEventListener("click", async () => {
    try {
      notify(`Report written: ${await api.exportReport(file)}`);
    } catch (e) {
      notify(errorText(e), true);
    }
  });
  const refresh = (): void => {
    void api.listRecordings().then((list) => {
      select.replaceChildren(...list.map((r) => el("option", { value: r.file }, `${r.runbook} · ${new Date(r.created_ms).toISOString().slice(0, 19).replace("T", " ")}`)));
    });
  };
  refresh();
  return { refresh };
}
