// `make screenshots`: the README's pictures of the app, taken under Xvfb:
// the control room armed, after the fire with live charts, and replay mode.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Session, root, sleep, startDrivers } from "./driver.mjs";

const out = join(root, "docs/screenshots");
mkdirSync(out, { recursive: true });
const { bases, stop } = await startDrivers(1);
try {
  const s = await Session.start(bases[0]);
  await s.js("window.resizeTo(1500, 950)").catch(() => {});
  await s.openLaunchDay();
  await s.screenshot(join(out, "runbook.png"));
  // The two-person arm, as someone alone tries it: another name, then Approve.
  await s.walkToArmed(async () => {
    await s.setOperator("sam");
    await s.approveArm();
  });
  await s.js("document.querySelector('[data-testid=step-test-send]').click()");
  await sleep(800);
  await s.screenshot(join(out, "armed.png"));
  await s.hold("fire-button", 0, 0, 1300);
  await s.until("fired", () => s.fired(), 30_000);
  await s.runStep("watch");
  await sleep(2500);
  await s.screenshot(join(out, "fired.png"));
  await s.click("tab-replay");
  await sleep(1000);
  await s.click("replay-open");
  await sleep(2500);
  await s.screenshot(join(out, "replay.png"));
  await s.close();
  console.log(`screenshots in ${out}`);
} finally {
  stop();
}
