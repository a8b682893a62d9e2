// A minimal W3C WebDriver client (plain fetch) for the desktop app driven by
// tauri-driver + WebKitWebDriver, shared by the end-to-end test and the
// README screenshots.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const root = resolve(import.meta.dirname, "../..");
export const app = join(root, "target/debug/kickoff");
export const cli = join(root, "target/debug/kickoff-sender");
export const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `f` until it returns true; fails after `timeout` ms naming `what`. */
export async function until(what, f, timeout = 120_000) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await f()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

async function wd(base, method, path, body) {
  const res = await fetch(base + path, { signal: AbortSignal.timeout(180_000), method, headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json.value)}`);
  return json.value;
}

/**
 * Starts `n` tauri-drivers (one WebKitWebDriver session each) with a fresh
 * data directory; returns their base URLs, the directory and a stop function.
 * Drivers that do not answer within 20 s (a port another process holds, a
 * slow start) are killed and started again on other ports, twice at most.
 */
export async function startDrivers(n) {
  const data = mkdtempSync(join(tmpdir(), "kickoff-e2e-"));
  for (let attempt = 1; ; attempt++) {
    const port = 4444 + 2 * Math.floor(Math.random() * 500);
    const bases = [];
    const spawned = [];
    for (let i = 0; i < n; i++) {
      const p = spawn("tauri-driver", ["--port", String(port + i * 10_000), "--native-port", String(port + 1 + i * 10_000)], { env: { ...process.env, KICKOFF_DATA_DIR: data }, stdio: ["ignore", "inherit", "inherit"], detached: true });
      p.on("error", (e) => console.error(`tauri-driver: ${e.message}`));
      groups.add(p);
      spawned.push(p);
      bases.push(`http://127.0.0.1:${port + i * 10_000}`);
    }
    let down = null;
    for (const base of bases) {
      let up = false;
      for (let i = 0; i < 200 && !up; i++) {
        up = await fetch(`${base}/status`).then(() => true, () => false);
        if (!up) await sleep(100);
      }
      if (!up) {
        down = base;
        break;
      }
    }
    if (down === null) return { bases, data, stop: () => spawned.forEach(killGroup) };
    spawned.forEach(killGroup);
    if (attempt === 3) throw new Error(`tauri-driver at ${down} did not start (3 attempts on different ports)`);
    console.error(`tauri-driver at ${down} did not answer in 20 s; starting again on other ports`);
  }
}

// Every driver group started, killed when this process ends however it
// ends: a `timeout` or Ctrl-C signals only its own process group, which the
// detached drivers left.
const groups = new Set();
process.on("exit", () => groups.forEach(killGroup));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    groups.forEach(killGroup);
    process.exit(128 + (signal === "SIGTERM" ? 15 : 2));
  });
}

/**
 * Kills a tauri-driver with everything it started (WebKitWebDriver, the app
 * instances): they share its process group. Killing only the driver would
 * leave an app holding the test runner's output open after a failed test,
 * and the run would never end.
 */
function killGroup(p) {
  if (p.pid === undefined) return;
  try {
    process.kill(-p.pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

export class Session {
  /** A session of the app at `application` (the one `make build` made, by default). */
  static async start(base, application = app) {
    const v = await wd(base, "POST", "/session", { capabilities: { alwaysMatch: { "tauri:options": { application } } } });
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
  /** The element's visible text; an element re-rendered between finding and reading it is found again. */
  async text(testid) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.wd("GET", this.p(`/element/${await this.find(testid)}/text`));
      } catch (e) {
        if (attempt >= 5 || !/stale element/.test(e.message)) throw e;
      }
    }
  }
  async state(step) {
    return this.js("const e = document.querySelector(`[data-testid=\"step-${arguments[0]}\"]`); return e ? e.dataset.state : null;", [step]);
  }
  until(what, f, timeout = 120_000) {
    return until(what, f, timeout);
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
  /**
   * Runs the steps up to the arm and presses Arm. A runbook whose arm needs
   * a second operator (`[approvals] arm = 2`, launch day) waits for one:
   * `approve` (async) gives that approval once the arm waits for it.
   */
  async walkToArmed(approve = null) {
    for (const step of ["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm"]) await this.runStep(step);
    // Runbooks with a plan step (launch day) check it before the arm.
    if (await this.js("return document.querySelector('[data-testid=\"step-plan\"]') !== null")) await this.runStep("plan");
    await this.click("arm-button");
    const armed = async () => !(await this.js("return document.querySelector('[data-testid=fire-button]').disabled"));
    if (await this.js("return document.querySelector('[data-testid=approve-button]').hidden === false")) {
      // Approvals given earlier (within the runbook's window) may arm it at once.
      await this.until("armed or waiting for approvals", async () => (await armed()) || /waiting for approvals/.test(await this.text("step-arm")), 60_000);
      if (!(await armed())) {
        if (!approve) throw new Error(`the arm waits for a second operator and no approver was given: ${await this.text("step-arm")}`);
        await approve();
      }
    }
    await this.until("armed", armed);
  }
  /** Renames this window's operator (Settings, saved for the instances started after it). */
  async setOperator(name) {
    await this.click("tab-settings");
    await this.until("the settings loaded", async () => (await this.js("return document.querySelector('[data-testid=settings-operator]').value")) !== "");
    await this.js("document.querySelector('[data-testid=settings-operator]').value = arguments[0]", [name]);
    await this.click("settings-save");
    await this.until("the settings saved", async () => /Settings saved/.test(await this.text("toast")));
    await this.click("tab-control");
  }
  /** Approves the arm of the open runbook from this window, as its operator. */
  async approveArm() {
    await this.until("the approve button", () => this.js("const b = document.querySelector('[data-testid=approve-button]'); return !b.hidden && !b.disabled"), 30_000);
    await this.click("approve-button");
    let said = "";
    await this.until("approved", async () => {
      said = await this.text("toast");
      if (/^Approve: /.test(said)) throw new Error(`the approval failed: ${said}`);
      return /approved the arm/.test(said);
    }, 30_000).catch((e) => {
      throw new Error(`${e.message} (the window says: ${said})`);
    });
  }
  async close() {
    await this.wd("DELETE", this.p("")).catch(() => {});
  }
}


/** Saves a screenshot of the window as PNG. */
Session.prototype.screenshot = async function (path) {
  const { writeFileSync } = await import("node:fs");
  writeFileSync(path, Buffer.from(await this.wd("GET", this.p("/screenshot")), "base64"));
};
