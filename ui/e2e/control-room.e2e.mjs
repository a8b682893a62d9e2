// End-to-end: the real desktop binary under Xvfb, driven by tauri-driver and
// WebKitWebDriver over the W3C WebDriver protocol (./driver.mjs). Run by
// `make e2e` (part of `make test`).
//
// Walks runbooks/launch-day.toml in embedded mode from scale to fire (the
// arm approved by a second operator in a second instance) with a
// 200,000-device audience and checks, in the app and in the recorder:
// delivered = 200,000, 0 duplicates, 0 missing; the fire button is inert
// before arm; a press 2 px outside the square's corner does nothing; a
// second press sends nothing; a second app instance pressing fire sends
// nothing; a recorded event opens in replay mode with its charts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { Session, cli, sleep, startDrivers } from "./driver.mjs";

test("launch day in the desktop app: one square button, one send", { timeout: 900_000 }, async () => {
  const { bases, data, stop } = await startDrivers(2);
  try {
    const a = await Session.start(bases[0]);
    await a.openLaunchDay();
    const fireDisabled = () => a.js("return document.querySelector('[data-testid=fire-button]').disabled");
    assert.equal(await fireDisabled(), true, "the fire button is disabled before arm");
    // Holding the inert button does nothing.
    await a.hold("fire-button", 0, 0, 1300);
    assert.equal(await a.fired(), false);

    // The two-person arm: a second app instance, as another operator,
    // approves the arm pressed here.
    let b = null;
    await a.walkToArmed(async () => {
      b = await Session.start(bases[1]);
      // Settings' About names the version and where the data lives.
      await b.click("tab-settings");
      await b.until("about", async () => /^Kickoff \d+\.\d+\.\d+ · embedded mode · \d+ cores · data directory: \//.test(await b.text("about")), 30_000);
      assert.ok((await b.text("about")).endsWith(data), await b.text("about"));
      await b.setOperator("sam");
      await b.openLaunchDay();
      await b.approveArm();
    });
    assert.match(await a.text("armed-banner"), /ARMED/);
    assert.match(await a.text("step-arm"), /approved by sam \(2 of 2\)/);
    await b.close();
    // The plan step's charts: the expected delivery per platform and the
    // forecast backend load, drawn as images in the Plan card.
    const drawn = (id) => `const i = document.querySelector('[data-testid=plan-charts] [data-testid=chart-${id}]'); return i !== null && i.complete && i.naturalWidth > 0`;
    await a.until("the plan's charts", async () => (await a.js(drawn("plan-delivery"))) && (await a.js(drawn("plan-load"))), 30_000);
    assert.match(await a.js("return document.querySelector('[data-testid=chart-plan-load]').alt"), /forecast backend load/);
    // The square is exactly square, with square corners.
    const box = await a.js("const b = document.querySelector('[data-testid=fire-button]'); const r = b.getBoundingClientRect(); return [r.width, r.height, getComputedStyle(b).borderTopLeftRadius];");
    assert.equal(box[0], box[1], "square");
    assert.equal(box[2], "0px", "no rounded corners");
    // 2 px outside the bottom-right corner: a full hold does nothing.
    const half = box[0] / 2;
    await a.hold("fire-button", Math.ceil(half) + 2, Math.ceil(half) + 2, 1300);
    await sleep(500);
    assert.equal(await a.fired(), false, "a press outside the square does nothing");
    // A quick double click on the armed square is not a hold: nothing fires.
    await a.hold("fire-button", 0, 0, 60);
    await a.hold("fire-button", 0, 0, 60);
    await sleep(1200);
    assert.equal(await a.fired(), false, "a double click does not fire");
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
    // The return traffic, measured at the flag server from the simulated clients, charted live.
    assert.match(await a.js("return document.querySelector('[data-testid=live-charts] [data-testid=chart-zombie]').alt"), /measured at the flag server/);

    // A second app instance on the same runbook (sam's) joins the event;
    // its arm counts the two approvals above, and its fire sends nothing.
    const c = await Session.start(bases[1]);
    await c.openLaunchDay();
    await c.walkToArmed();
    await c.hold("fire-button", 0, 0, 1300);
    await c.until("C sees the earlier fire", () => c.fired(), 30_000);
    const cText = await c.text("fire-status");
    assert.ok(cText.includes(firedText.replace(/\.$/, "")) || cText.startsWith("Fired at"), cText);
    await c.close();

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
    assert.ok(await a.js("return document.querySelector('[data-testid=replay-charts] [data-testid=chart-plan-delivery]') !== null"), "the replay redraws the plan");
    await a.click("replay-play");
    await sleep(1500);
    // The frame's clock: `T` at the fire itself, `T-…`/`T+…` around it.
    assert.match(await a.text("replay-frame"), /^T(?:[+-]\S+)? · sent\/s /);
    await a.close();
  } finally {
    stop();
  }
});
