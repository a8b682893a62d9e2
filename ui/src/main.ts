// Kickoff's window: the control room (runbook, fire, live charts, zombie
// toggles, event log), replay, the drill and the settings. Every backend
// call goes through src/api/.
import { appInfo, runDrill } from "./api/drill";
import { controlRoom } from "./control";
import { replayMode } from "./replay";
import { settingsPanel } from "./settings";
import { isCommandError, type DrillRequest } from "./api/types";
import { el } from "./dom";
import { count } from "./format";
import { progressOf, summaryRows } from "./summary";

const MAX_DEVICES = 10_000_000;

function render(root: HTMLElement): void {
  const devices = el("input", {
    id: "devices",
    type: "number",
    min: "1",
    max: String(MAX_DEVICES),
    step: "1",
    value: "200000",
    "data-testid": "drill-devices",
  });
  const provider = el(
    "select",
    { id: "provider", "data-testid": "drill-provider" },
    el("option", { value: "gateway" }, "Loopback gateway (real HTTP/2, APNs and FCM)"),
    el("option", { value: "null" }, "Null provider (engine speed)"),
    el("option", { value: "model" }, "Latency model (20–60 ms round trips)"),
  );
  const silent = el("input", { id: "silent", type: "checkbox", "data-testid": "drill-silent" });
  const run = el("button", { type: "submit", "data-testid": "drill-run" }, "Run drill");
  const bar = el("div", { class: "bar-fill" });
  const caption = el("p", { class: "caption", "data-testid": "drill-progress" }, "Ready.");
  const table = el("table", { class: "summary", "data-testid": "drill-summary", hidden: true });
  const error = el("p", { class: "error", role: "alert", "data-testid": "drill-error", hidden: true });
  const mode = el("span", { class: "mode", "data-testid": "app-mode" }, "embedded");

  const form = el(
    "form",
    { class: "card" },
    el("h2", {}, "Drill"),
    el(
      "p",
      { class: "hint" },
      "Generates a synthetic audience, warms the workers, fires the demo campaign and counts every delivery at the receiving end.",
    ),
    el("label", { for: "devices" }, "Devices", devices),
    el("label", { for: "provider" }, "Provider", provider),
    el("label", { for: "silent", class: "inline" }, silent, "Silent rehearsal payloads"),
    run,
    el("div", { class: "bar" }, bar),
    caption,
    error,
    table,
  );

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const n = Math.floor(Number(devices.value));
    if (!Number.isFinite(n) || n < 1 || n > MAX_DEVICES) {
      showError(`Devices must be between 1 and ${count(MAX_DEVICES)}.`);
      return;
    }
    const request: DrillRequest = {
      devices: n,
      provider: provider.value === "model" ? "model" : provider.value === "null" ? "null" : "gateway",
      silent: silent.checked,
    };
    run.disabled = true;
    error.hidden = true;
    table.hidden = true;
    bar.style.width = "0%";
    runDrill(request, (e) => {
      const p = progressOf(e);
      bar.style.width = `${Math.round(p.fraction * 100)}%`;
      caption.textContent = p.caption;
    })
      .then((summary) => {
        bar.style.width = "100%";
        caption.textContent = `Drill ${summary.campaign_id} finished: ${summary.provider} provider, ${summary.workers} workers.`;
        table.replaceChildren(
          ...summaryRows(summary).map((r) =>
            el("tr", { class: r.tone }, el("th", {}, r.label), el("td", { "data-testid": r.testid }, r.value)),
          ),
        );
        table.hidden = false;
      })
      .catch((e: unknown) => showError(isCommandError(e) ? `${e.message} (${e.code})` : String(e)))
      .finally(() => {
        run.disabled = false;
      });
  });

  function showError(message: string): void {
    error.textContent = message;
    error.hidden = false;
  }

  const toast = el("p", { class: "toast", role: "status", "data-testid": "toast", hidden: true });
  let toastTimer = 0;
  const notify = (text: string, bad = false): void => {
    toast.textContent = text;
    toast.className = `toast${bad ? " bad" : ""}`;
    toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = window.setTimeout(() => (toast.hidden = true), bad ? 9000 : 5000);
  };
  const pages: Record<string, HTMLElement> = {
    control: el("main", { class: "wide", "data-page": "control" }),
    replay: el("main", { class: "wide", "data-page": "replay", hidden: true }),
    drill: el("main", { "data-page": "drill", hidden: true }, form),
    settings: el("main", { "data-page": "settings", hidden: true }),
  };
  controlRoom(pages.control, notify);
  const replay = replayMode(pages.replay, notify);
  settingsPanel(pages.settings, notify);
  const tabs = Object.keys(pages).map((name) => {
    const b = el("button", { type: "button", class: `tab${name === "control" ? " active" : ""}`, "data-testid": `tab-${name}` }, { control: "Control room", replay: "Replay", drill: "Drill", settings: "Settings" }[name] ?? name);
    b.addEventListener("click", () => {
      for (const [n, page] of Object.entries(pages)) page.hidden = n !== name;
      for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === b);
      if (name === "replay") replay.refresh();
    });
    return b;
  });
  root.replaceChildren(
    el("header", {}, el("div", { class: "logo", "aria-hidden": "true" }), el("h1", {}, "Kickoff"), el("nav", {}, ...tabs), mode),
    toast,
    ...Object.values(pages),
  );
  appInfo()
    .then((info) => {
      mode.textContent = `${info.mode} · v${info.version} · ${info.cores} cores`;
      mode.title = `Data: ${info.data_dir}`;
    })
    .catch(() => {
      mode.textContent = "embedded";
    });
}

const root = document.getElementById("app");
if (root) render(root);
