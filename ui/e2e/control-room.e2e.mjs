// End-to-end: the real desktop binary under Xvfb, driven by tauri-driver and
// WebKitWebDriver over the W3C WebDriver protocol (plain fetch, no client
// library). Run by `make e2e` (part of `make test`).
//
// Walks runbooks/launch-day.toml in embedded mode from scale to fire with a
// 200,000-device audience and checks, in the app and in the recorder:
// delivered = 200,000, 0 duplicates, 0 missing; the fire button is inert
// before arm; a press 2 px outside the square's corner does nothing; a
// second press sends nothing; a second app instance pressing fire sends
// nothing; a recorded event opens in replay mode with its charts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "../..");
const app = join(root, "target/debug/kickoff");
const cli = join(root, "target/debug/kickoff-sender");
// Two drivers (one WebKitWebDriver session each): the second app instance
// needs its own.
const port = 4444 + 2 * Math.floor(Math.random() * 500);
const bases = [`http://127.0.0.1:${port}`, `http://127.0.0.1:${port + 10_000}`];
const data = mkdtempSync(join(tmpdir(), "kickoff-e2e-"));
const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function wd(base, method, path, body) {
  const res = await fetch(base + path, { signal: AbortSignal.timeout(180_000), method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json.value)}`);
  return json.value;
}

class Session {
  static async start(base) {
    const v = await wd(base, "POST", "/session", { capabilities: { alwaysMatch: { "tauri:options": { application: app } } } });
    const s = new Session(base, v.sessionId);
    await s.until("runbooks listed", async () => (await s.js("return document.querySelectorAll('[data-testid=runbook-select] option').length")) > 0, 30_000);
    return s;
  }
  constructor(base, id) {
    this.base = base;
    this.id = id;
  }
  wd(method, path, body) {
    return wd(this.base, method, path, body);
  }
  p(path) {
    return `/session/${this.id}${path}`;
  }
  async js(script, args = []) {
    return this.wd("POST", this.p("/execute/sync"), { script, args });
  }
  async find(testid) {
    const v = await this.wd("POST", this.p("/element"), { using: "css selector", value: `[data-testid="${testid}"]` });
    return v[ELEMENT];
  }
  async click(testid) {
    await this.wd("POST", this.p(`/element/${await this.find(testid)}/click`), {});
  }
  async text(testid) {
    return this.wd("GET", this.p(`/element/${await this.find(testid)}/text`));
  }
  async state(step) {
    return this.js("const e = document.querySelector(`[data-testid=\"step-${arguments[0]}\"]`); return e ? e.dataset.state : null;", [step]);
  }
  async until(what, f, timeout = 120_000) {
    const end = Date.now() + timeout;
    for (;;) {
      if (await f()) return;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(250);
    }
  }
  async runStep(step) {
    // The panel re-renders as the event changes: press the step's button
    // once it is enabled, until the step has started.
    await this.until(`${step} started`, async () => {
      if (["running", "done", "failed"].includes(await this.state(step))) return true;
      await this.js("const b = document.querySelector(`[data-testid=\"run-${arguments[0]}\"]`); if (b && !b.disabled) b.click();", [step]);
      await sleep(400);
      return ["running", "done", "failed"].includes(await this.state(step));
    });
    await this.until(`${step} done`, async () => {
      const s = await this.state(step);
      if (s === "failed") throw new Error(`${step} failed: ${await this.text(`step-${step}`)}`);
      return s === "done";
    });
  }
  /** Press at (dx, dy) from the element's centre, hold `ms`, release. */
  async hold(testid, dx, dy, ms) {
    const origin = { [ELEMENT]: await this.find(testid) };
    await this.wd("POST", this.p("/actions"), {
      actions: [
        {
          type: "pointer",
          id: "mouse",
          parameters: { pointerType: "mouse" },
          actions: [
            { type: "pointerMove", duration: 0, origin, x: dx, y: dy },
            { type: "pointerDown", button: 0 },
            { type: "pause", duration: ms },
            { type: "pointerUp", button: 0 },
          ],
        },
      ],
    });
    await this.wd("DELETE", this.p("/actions"));
  }
  async fired() {
    return this.js("return document.querySelector('[data-testid=fire-status]').textContent.startsWith('Fired at')");
  }
  async openLaunchDay() {
    await this.js("const s = document.querySelector('[data-testid=runbook-select]'); s.value = [...s.options].find(o => o.value.endsWith('launch-day.toml')).value;");
    await this.click("runbook-open");
    await this.until("the runbook panel", async () => (await this.state("scale-asg")) !== null, 60_000);
  }
  async walkToArmed() {
    for (const step of ["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm"]) await this.runStep(step);
    await this.click("arm-button");
    await this.until("armed", async () => !(await this.js("return document.querySelector('[data-testid=fire-button]').disabled")));
  }
  async close() {
    await this.wd("DELETE", this.p("")).catch(() => {});
  }
}

test("launch day in the desktop app: one square button, one send", { timeout: 900_000 }, async () => {
  const drivers = [0, 1].map((i) =>
    spawn("tauri-driver", ["--port", String(port + i * 10_000), "--native-port", String(port + 1 + i * 10_000)], { env: { ...process.env, KICKOFF_DATA_DIR: data }, stdio: ["ignore", "inherit", "inherit"] }),
  );
  try {
    for (const base of bases) {
      let up = false;
      for (let i = 0; i < 100 && !up; i++) {
        up = await fetch(`${base}/status`).then(() => true, () => false);
        if (!up) await sleep(100);
      }
      if (!up) throw new Error(`tauri-driver at ${base} did not start`);
    }
    const a = await Session.start(bases[0]);
    await a.openLaunchDay();
    const fireDisabled = () => a.js("return document.querySelector('[data-testid=fire-button]').disabled");
    assert.equal(await fireDisabled(), true, "the fire button is disabled before arm");
    // Holding the inert button does nothing.
    await a.hold("fire-button", 0, 0, 1300);
    assert.equal(await a.fired(), false);

    await a.walkToArmed();
    assert.match(await a.text("armed-banner"), /ARMED/);
    // The square is exactly square, with square corners.
    const box = await a.js("const b = document.querySelector('[data-testid=fire-button]'); const r = b.getBoundingClientRect(); return [r.width, r.height, getComputedStyle(b).borderTopLeftRadius];");
    assert.equal(box[0], box[1], "square");
    assert.equal(box[2], "0px", "no rounded corners");
    // 2 px outside the bottom-right corner: a full hold does nothing.
    const half = box[0] / 2;
    await a.hold("fire-button", Math.ceil(half) + 2, Math.ceil(half) + 2, 1300);
    await sleep(500);
    assert.equal(await a.fired(), false, "a press outside the square does nothing");
    // Just inside the same corner: fires.
    await a.hold("fire-button", Math.floor(half) - 2, Math.floor(half) - 2, 1300);
    await a.until("fired", () => a.fired(), 30_000);
    const firedText = await a.text("fire-status");
    // Pressing again (the button is inert now; force a click too) sends nothing more.
    await a.js("document.querySelector('[data-testid=fire-button]').disabled = false");
    await a.hold("fire-button", 0, 0, 1300);
    await a.runStep("watch");
    await a.until("the outcome", async () => /Delivered 200,000 of 200,000/.test(await a.text("event-outcome")), 300_000);
    const outcome = await a.text("event-outcome");
    assert.match(outcome, /Delivered 200,000 of 200,000 · 0 duplicates · 0 missing/);
    assert.equal(await a.text("fire-status"), firedText, "still the first fire");
    assert.ok(await a.js("return document.querySelector('[data-testid=chart-throughput]') !== null"), "live throughput chart");

    // A second app instance on the same runbook joins the event; its fire sends nothing.
    const b = await Session.start(bases[1]);
    await b.openLaunchDay();
    await b.walkToArmed();
    await b.hold("fire-button", 0, 0, 1300);
    await b.until("B sees the earlier fire", () => b.fired(), 30_000);
    const bText = await b.text("fire-status");
    assert.ok(bText.includes(firedText.replace(/\.$/, "")) || bText.startsWith("Fired at"), bText);
    await b.close();

    // The recorder agrees: one file with the whole send.
    const files = readdirSync(join(data, "events")).filter((f) => f.endsWith(".kickoff.sqlite"));
    const summaries = files.map((f) => JSON.parse(execFileSync(cli, ["replay", join(data, "events", f), "--speed", "0", "--json"], { encoding: "utf8" }).trim().split("\n").pop()).summary);
    const sent = summaries.filter((s) => s.delivered > 0);
    assert.equal(sent.length, 1, "exactly one recorded event sent anything");
    assert.deepEqual([sent[0].delivered, sent[0].duplicates, sent[0].missing], [200_000, 0, 0]);

    // Replay mode: open the recording that sent, see its charts.
    await a.click("tab-replay");
    await a.until("recordings listed", async () => (await a.js("return document.querySelectorAll('[data-testid=replay-select] option').length")) >= 2, 30_000);
    const options = await a.js("return [...document.querySelectorAll('[data-testid=replay-select] option')].map(o => o.value)");
    let opened = false;
    for (const value of options) {
      await a.js("document.querySelector('[data-testid=replay-select]').value = arguments[0]", [value]);
      await a.click("replay-open");
      await sleep(1500);
      if (/200,000 of 200,000 delivered/.test(await a.text("replay-summary"))) {
        opened = true;
        break;
      }
    }
    assert.ok(opened, "the recorded event opens in replay mode");
    await a.until("replay charts drawn", () => a.js("const i = document.querySelector('[data-testid=replay-charts] [data-testid=chart-throughput]'); return i !== null && i.complete && i.naturalWidth > 0"), 30_000);
    await a.click("replay-play");
    await sleep(1500);
    assert.match(await a.text("replay-frame"), /^T[+-]/);
    await a.close();
  } finally {
    for (const d of drivers) d.kill();
  }
});
