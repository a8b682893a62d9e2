// The control room: runbook panel, step detail, armed banner and the square
// fire button, live charts, zombie toggles, the event log.
import * as api from "./api/control";
import { errorText, type AuditEntry, type ChartSvg, type EventUpdate, type EventView, type Preview, type StepDef, type StepStatus } from "./api/types";
import { el } from "./dom";
import { count } from "./format";
import { Hold } from "./hold";
import { fireStatus, flagCaption, gateSummary, stateLabel, stepTimer } from "./steps";

/** Shows SVG produced by the backend as an image (no script can run in it). */
export function chartImage(chart: ChartSvg): HTMLImageElement {
  return el("img", { src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(chart.svg)}`, alt: chart.title, "data-testid": `chart-${chart.name}`, class: "chart" });
}

/** Makes `button` act only after a one-second press (pointer, or Space/Enter held). */
function pressAndHold(button: HTMLButtonElement, onHeld: () => void): void {
  const hold = new Hold();
  const fill = button.querySelector<HTMLElement>(".fire-fill");
  let frame = 0;
  const animate = (): void => {
    const { progress, fire } = hold.tick(performance.now());
    if (fill) fill.style.height = `${progress * 100}%`;
    if (fire) {
      button.classList.add("firing");
      onHeld();
      setTimeout(() => button.classList.remove("firing"), 600);
    }
    frame = hold.holding ? requestAnimationFrame(animate) : 0;
    if (!hold.holding && fill && !fire) fill.style.height = "0";
  };
  button.addEventListener("pointerdown", (e) => {
    if (button.disabled) return;
    e.preventDefault();
    hold.press(performance.now(), !button.disabled);
    if (!frame) frame = requestAnimationFrame(animate);
  });
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) button.addEventListener(ev, () => hold.release());
  // Keyboard: holding Space or Enter works the same way.
  button.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat && !button.disabled) {
      e.preventDefault();
      hold.press(performance.now(), true);
      if (!frame) frame = requestAnimationFrame(animate);
    }
  });
  button.addEventListener("keyup", () => hold.release());
}

export function controlRoom(root: HTMLElement, notify: (text: string, bad?: boolean) => void): void {
  let view: EventView | null = null;
  let selected: string | null = null;
  const openDetails = new Set<string>();
  let previews: Preview[] | null = null;

  const runbookSelect = el("select", { "data-testid": "runbook-select" });
  const openButton = el("button", { type: "button", "data-testid": "runbook-open" }, "Open runbook");
  const eventLine = el("span", { class: "muted", "data-testid": "event-id" }, "No event open.");
  const stepsList = el("ol", { class: "steps", "data-testid": "runbook-panel" });
  const detail = el("section", { class: "card detail", "data-testid": "step-detail" }, el("p", { class: "hint" }, "Select a step."));
  const banner = el("div", { class: "armed-banner", "data-testid": "armed-banner", hidden: true }, "ARMED");
  const fireButton = el("button", { type: "button", class: "fire", "data-testid": "fire-button", disabled: true, "aria-label": "Fire: press and hold for one second" }, el("span", { class: "fire-fill" }), el("span", { class: "fire-label" }, "FIRE"));
  const fireStatusText = el("p", { class: "fire-status", "data-testid": "fire-status", role: "status" }, "Open a runbook to begin.");
  const armButton = el("button", { type: "button", "data-testid": "arm-button", disabled: true }, "Arm");
  const disarmButton = el("button", { type: "button", class: "secondary", "data-testid": "disarm-button", disabled: true }, "Disarm");
  // A two-person arm: another operator approves from here.
  const approveButton = el("button", { type: "button", class: "secondary", "data-testid": "approve-button", hidden: true }, "Approve arm");
  const abortButton = el("button", { type: "button", class: "danger", "data-testid": "abort-button", disabled: true }, "Abort");
  const resumeButton = el(
    "button",
    { type: "button", class: "resume", "data-testid": "resume-button", hidden: true, "aria-label": "Resume the interrupted fire: press and hold for one second" },
    el("span", { class: "fire-fill" }),
    el("span", { class: "fire-label" }, "Resume"),
  );
  const charts = el("div", { class: "charts", "data-testid": "live-charts" });
  // The plan step's charts: expected delivery per platform, forecast backend load.
  const planCharts = el("div", { class: "charts", "data-testid": "plan-charts" });
  const planCard = el("section", { class: "card", hidden: true }, el("h2", {}, "Plan"), planCharts);
  let planShown = "";
  const zombies = el("div", { class: "zombies", "data-testid": "zombie-panel" });
  const log = el("table", { class: "log", "data-testid": "event-log" });
  const outcome = el("p", { class: "outcome", "data-testid": "event-outcome", hidden: true });

  root.append(
    el("div", { class: "toolbar" }, runbookSelect, openButton, eventLine),
    el(
      "div",
      { class: "room" },
      el("section", { class: "card" }, el("h2", {}, "Runbook"), stepsList),
      el(
        "div",
        { class: "center" },
        banner,
        el("section", { class: "card fire-panel" }, el("h2", {}, "Fire"), el("div", { class: "fire-row" }, fireButton, el("div", { class: "fire-side" }, fireStatusText, el("div", { class: "row" }, armButton, approveButton, disarmButton, abortButton, resumeButton), outcome))),
        detail,
        el("section", { class: "card" }, el("h2", {}, "Live"), charts),
        planCard,
      ),
      el("div", { class: "right" }, el("section", { class: "card" }, el("h2", {}, "Zombie mode"), zombies), el("section", { class: "card" }, el("h2", {}, "Event log"), log)),
    ),
  );

  // --- actions -----------------------------------------------------------
  async function act(what: string, f: () => Promise<unknown>): Promise<void> {
    try {
      await f();
    } catch (e) {
      notify(`${what}: ${errorText(e)}`, true);
    }
    await refresh();
  }

  async function refresh(): Promise<void> {
    try {
      render(await api.eventView());
    } catch {
      // No event open yet.
    }
  }

  openButton.addEventListener("click", async () => {
    if (!runbookSelect.value) return;
    openButton.disabled = true;
    try {
      const v = await api.openEvent(runbookSelect.value);
      previews = null;
      selected = null;
      render(v);
      notify(v.joined ? `Joined event ${v.state.event_id}, opened elsewhere.` : `Opened event ${v.state.event_id}.`);
      void api.watchEvent(onUpdate).catch((e: unknown) => notify(errorText(e), true));
    } catch (e) {
      notify(errorText(e), true);
    } finally {
      openButton.disabled = false;
    }
  });

  armButton.addEventListener("click", () => {
    const arm = view?.steps.find((s) => s.kind === "arm");
    if (arm) void act("Arm", () => api.runStep(arm.id));
  });
  disarmButton.addEventListener("click", () => void act("Disarm", () => api.disarm()));
  approveButton.addEventListener("click", () => void act("Approve", async () => notify(await api.approve())));
  abortButton.addEventListener("click", () => {
    const plan = view?.abort_plan ?? "";
    if (window.confirm(`Abort the event?\n\n${plan}`)) void act("Abort", () => api.abort("aborted from the control room"));
  });

  // --- the square fire button (and Resume): press and hold ---------------
  pressAndHold(fireButton, () => void act("Fire", () => api.fire()));
  pressAndHold(resumeButton, () => void act("Resume", () => api.resume().then((f) => notify(`Resumed the fire ${f.fire_id}.`))));

  // --- closing the window while the fire sends asks first ----------------
  let askingClose = false;
  function askClose(): void {
    if (askingClose) return;
    askingClose = true;
    const close = window.confirm(
      "A fire is sending from this window.\n\nClosing stops it here: the fire becomes INTERRUPTED, and an engineer can resume it later (Resume sends exactly the devices without a final answer).\n\nClose anyway?",
    );
    void api
      .confirmClose(close)
      .catch((e: unknown) => notify(errorText(e), true))
      .finally(() => (askingClose = false));
  }

  // --- rendering ---------------------------------------------------------
  function onUpdate(u: EventUpdate): void {
    render(u.view);
    if (u.close_asked) askClose();
    if (u.charts) {
      // The backend load (measured at the flag server in embedded mode) sits
      // next to the send, so zombie mode's effect shows live.
      charts.replaceChildren(...u.charts.filter((c) => ["throughput", "delivered", "errors", "latency", "zombie"].includes(c.name)).map(chartImage));
      const plan = u.charts.filter((c) => c.name.startsWith("plan-"));
      // Redrawn only when the plan changes (a step run again).
      const shown = plan.map((c) => c.svg).join();
      if (shown !== planShown) {
        planShown = shown;
        planCharts.replaceChildren(...plan.map(chartImage));
      }
      planCard.hidden = plan.length === 0;
    }
    if (u.log) renderLog(u.log);
  }

  function renderLog(entries: AuditEntry[]): void {
    const rows = entries.slice(-200).reverse().map((a) =>
      el("tr", {}, el("td", {}, new Date(a.t_ms).toISOString().slice(11, 19)), el("td", {}, a.actor), el("td", {}, a.step), el("td", {}, a.action), el("td", { class: a.outcome === "ok" ? "" : "bad" }, a.outcome)),
    );
    log.replaceChildren(el("tr", {}, el("th", {}, "time"), el("th", {}, "who"), el("th", {}, "step"), el("th", {}, "action"), el("th", {}, "outcome")), ...rows);
  }

  function render(v: EventView): void {
    view = v;
    const s = v.state;
    eventLine.textContent = `Event ${s.event_id} · ${s.runbook}${v.joined ? " (joined)" : ""} · campaign ${s.campaign_hash.slice(0, 12)}`;
    renderSteps(v);
    renderDetail(v);
    const fs = fireStatus(v);
    fireButton.disabled = !fs.armed;
    fireStatusText.textContent = fs.text;
    banner.hidden = !fs.armed;
    if (fs.armed) banner.textContent = `ARMED by ${s.armed?.by ?? ""}: hold FIRE for one second`;
    const armStep = v.steps.find((x) => x.kind === "arm");
    const armState = s.steps.find(([st]) => st.id === armStep?.id)?.[0].state;
    armButton.disabled = !armStep || armState !== "ready";
    disarmButton.disabled = !s.armed || s.fired !== null;
    approveButton.hidden = v.arm_approvals < 2;
    approveButton.disabled = s.armed !== null || s.fired !== null || s.aborted !== null;
    abortButton.disabled = s.aborted !== null;
    resumeButton.hidden = s.interrupted === null;
    resumeButton.disabled = s.interrupted === null;
    if (s.summary) {
      const m = s.summary;
      outcome.hidden = false;
      outcome.textContent = `Delivered ${count(m.delivered)} of ${count(m.devices)} · ${count(m.duplicates)} duplicates · ${count(m.missing)} missing · p95 ${m.p95_s.toFixed(2)} s · p99 ${m.p99_s.toFixed(2)} s`;
    } else outcome.hidden = true;
    renderZombies(v);
  }

  function renderSteps(v: EventView): void {
    const rows = v.steps.map((def, i) => {
      const [status, gates] = v.state.steps[i];
      const backup = def.backup
        ? el("details", { "data-testid": `backup-${def.id}`, open: openDetails.has(def.id) }, el("summary", {}, "Backup plan"), el("p", {}, def.backup.text + (def.backup.step ? ` (step ${def.backup.step})` : "")))
        : null;
      backup?.addEventListener("toggle", () => (backup.open ? openDetails.add(def.id) : openDetails.delete(def.id)));
      const run = el("button", { type: "button", class: "small", "data-testid": `run-${def.id}`, disabled: !["ready", "failed"].includes(status.state) || def.kind === "fire" }, def.kind === "fire" ? "use FIRE" : status.state === "failed" ? "Retry" : "Run");
      run.addEventListener("click", (e) => {
        e.stopPropagation();
        selected = def.id;
        void act(def.title, () => api.runStep(def.id));
      });
      const li = el(
        "li",
        { class: `step ${status.state}${selected === def.id ? " selected" : ""}`, "data-testid": `step-${def.id}`, "data-state": status.state },
        el("div", { class: "step-head" }, el("span", { class: "badge" }, stateLabel(status.state)), el("strong", {}, def.title), run),
        el("div", { class: "step-meta" }, `${def.role} · ${stepTimer(def, status, v.event_time_ms, Date.now())} · ${gateSummary(gates)}`),
        status.progress ? el("progress", { max: String(status.progress.total || 1), value: String(status.progress.done) }) : "",
        status.note ? el("div", { class: "step-note" }, status.note) : status.progress ? el("div", { class: "step-note" }, status.progress.label) : "",
        backup ?? "",
      );
      li.addEventListener("click", () => {
        selected = def.id;
        render(v);
      });
      return li;
    });
    stepsList.replaceChildren(...rows);
  }

  function renderDetail(v: EventView): void {
    const id = selected ?? v.state.steps.find(([s]) => ["ready", "running", "failed"].includes(s.state))?.[0].id ?? null;
    const i = v.steps.findIndex((s) => s.id === id);
    if (i < 0) return;
    const def: StepDef = v.steps[i];
    const [status] = v.state.steps[i];
    const parts: (Node | string)[] = [el("h2", {}, def.title), el("p", { class: "hint" }, `${def.kind} · ${def.role} · ${stateLabel(status.state)}${status.by ? ` · by ${status.by}` : ""}`)];
    if (status.progress) {
      const p = status.progress;
      parts.push(el("p", { "data-testid": "step-progress" }, `${p.label}: ${count(p.done)} of ${count(p.total)} · ${p.elapsed_s.toFixed(1)} s`), el("progress", { max: String(p.total || 1), value: String(p.done) }));
    }
    if (status.note) parts.push(el("p", {}, status.note));
    if (def.kind === "verify-warm" && v.state.warm) {
      const w = v.state.warm;
      parts.push(el("table", { class: "summary", "data-testid": "warm-table" }, ...w.workers.map((x) => el("tr", {}, el("th", {}, x.worker), el("td", {}, `${x.shards} of ${x.shards_total} shards`)))));
    }
    if (def.kind === "test-send" || def.kind === "confirm") parts.push(previewPanel(status));
    if (def.backup) parts.push(el("p", { class: "hint" }, `Backup plan: ${def.backup.text}`));
    detail.replaceChildren(...parts);
  }

  function previewPanel(status: StepStatus): HTMLElement {
    const box = el("div", { class: "previews", "data-testid": "previews" });
    const draw = (list: Preview[]): void => {
      box.replaceChildren(
        ...list.map((p) =>
          el(
            "div",
            { class: "preview" },
            el("div", { class: "phone ios", "data-testid": `preview-ios-${p.locale}` }, el("div", { class: "notif" }, el("b", {}, p.title), el("span", {}, p.body)), el("small", {}, `iOS · ${p.locale}`)),
            el("div", { class: "phone android", "data-testid": `preview-android-${p.locale}` }, el("div", { class: "notif" }, el("b", {}, p.title), el("span", {}, p.body)), el("small", {}, `Android · ${p.locale}`)),
          ),
        ),
      );
    };
    if (previews) draw(previews);
    else
      void api.campaignPreview().then((p) => {
        previews = p;
        draw(p);
      });
    if (status.state === "done" && status.result) box.prepend(el("p", { class: "hint" }, "Sent; check your devices, then run the confirm step."));
    return box;
  }

  function renderZombies(v: EventView): void {
    const rows = v.backends.map((b) => {
      const cap = flagCaption(v.flags.find((f) => f.backend === b), Date.now());
      const toggle = el("button", { type: "button", class: `toggle ${cap.on ? "on" : ""}`, role: "switch", "aria-checked": cap.on ? "true" : "false", "data-testid": `zombie-toggle-${b}` }, cap.on ? "ON" : "OFF");
      toggle.addEventListener("click", () => void act(`Zombie ${b}`, () => api.switchZombie(b, !cap.on, 2, "switched in the control room")));
      return el("div", { class: "zombie" }, el("strong", {}, b), toggle, el("span", { class: "muted", "data-testid": `zombie-caption-${b}` }, cap.text));
    });
    zombies.replaceChildren(...(rows.length ? rows : [el("p", { class: "hint" }, "This runbook lists no backends.")]));
    if (v.flag_url) zombies.append(el("p", { class: "hint" }, `Clients read ${v.flag_url}`));
  }

  void api.listRunbooks().then((list) => {
    runbookSelect.replaceChildren(...list.map((r) => el("option", { value: r.file, disabled: "Err" in r.name }, "Ok" in r.name ? r.name.Ok : `${r.file}: ${r.name.Err}`)));
    const launch = list.find((r) => r.file.endsWith("launch-day.toml"));
    if (launch) runbookSelect.value = launch.file;
  });
  setInterval(() => {
    if (view) renderSteps(view);
  }, 1000);
}
