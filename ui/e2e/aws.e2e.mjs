// End-to-end in AWS mode: the real desktop binary under Xvfb (tauri-driver +
// WebKitWebDriver), an AWS API emulator (moto server on 127.0.0.1, installed
// by `make deps-moto`), two `kickoff-sender worker` processes (what the ECS
// service runs) and the loopback push gateway as its own process, counting
// every token. Run by `make e2e` (part of `make test`).
//
// The app's Settings are in AWS mode; the operator walks a rehearsal runbook
// in the control room: the scale steps call the emulator's ASG and ECS,
// verify-warm waits for both workers to report the campaign warm from S3,
// the square button fires through the S3 ledger and SQS (the runbook is
// sender/tests/aws-rehearsal.toml, which the CLI test walks too), the live chart reads
// CloudWatch, a zombie switch is published to S3. The gateway counts every
// device once; a second press sends nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createServer } from "node:net";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Session, cli, root, startDrivers, until } from "./driver.mjs";

const moto = process.env.KICKOFF_MOTO_SERVER ?? join(root, ".tools/moto-venv/bin/moto_server");

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Reads the child's stdout until a line matches; returns that line. */
function lineOf(child, re) {
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d) => {
      buf += d;
      const line = buf.split("\n").find((l) => re.test(l));
      if (line) {
        child.stdout.off("data", onData);
        resolve(line);
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code) => reject(new Error(`exited ${code} before ${re}: ${buf}`)));
  });
}

test("AWS mode in the desktop app: the emulator's ASG, ECS, S3, SQS and CloudWatch, one send", { timeout: 900_000 }, async () => {
  assert.ok(existsSync(moto), `the AWS API emulator is not installed at ${moto}: run make deps-moto`);
  const work = mkdtempSync(join(tmpdir(), "kickoff-e2e-aws-"));
  const procs = [];
  let stopDrivers = () => {};
  let a;
  try {
    // The emulator.
    const port = await freePort();
    const motoUrl = `http://127.0.0.1:${port}`;
    procs.push(spawn(moto, ["-H", "127.0.0.1", "-p", String(port)], { stdio: "ignore" }));
    await until("moto server", () => fetch(`${motoUrl}/moto-api/`).then(() => true, () => false), 60_000);

    // The gateway process (h2c), and the workers' configuration.
    const gateway = spawn(cli, ["gateway", "--keys", join(work, "keys"), "--listen", "127.0.0.1:0", "--h2c"], { stdio: ["ignore", "pipe", "inherit"] });
    procs.push(gateway);
    gateway.stdout.setEncoding("utf8");
    await lineOf(gateway, /listening on/);
    writeFileSync(join(work, "credentials"), "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n");
    const config = join(work, "aws.toml");
    writeFileSync(
      config,
      `region = "us-east-1"
credentials_file = "credentials"
endpoint_url = "${motoUrl}"
bucket = "kickoff-e2e"
prefix = "env/e2e"
fire_queue = "kickoff-fire.fifo"
batch_queue = "kickoff-batches"
cluster = "kickoff"
service = "kickoff-notifier"
asg = "kickoff-workers"

[worker]
wait_time = "1s"
heartbeat = "300ms"
notifiers = 1
push_config = "${join(work, "keys", "kickoff.toml")}"
`,
    );
    execFileSync(cli, ["aws", "provision", "--config", config], { stdio: ["ignore", "ignore", "inherit"] });
    for (let i = 0; i < 2; i++) procs.push(spawn(cli, ["worker", "--config", config], { stdio: "ignore" }));

    // The app: AWS credentials from the standard chain (the environment),
    // the profile in its settings, the rehearsal in its runbooks.
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: "testing", AWS_SECRET_ACCESS_KEY: "testing", AWS_EC2_METADATA_DISABLED: "true" });
    const drivers = await startDrivers(1);
    stopDrivers = drivers.stop;
    mkdirSync(join(drivers.data, "runbooks"), { recursive: true });
    copyFileSync(join(root, "sender/tests/aws-rehearsal.toml"), join(drivers.data, "runbooks", "aws-rehearsal.toml"));
    const aws = {
      profile: "",
      region: "us-east-1",
      endpoint_url: motoUrl,
      cluster: "kickoff",
      service: "kickoff-notifier",
      asg: "kickoff-workers",
      fire_queue: "kickoff-fire.fifo",
      // A queue URL is accepted as well as a name.
      batch_queue: `${motoUrl}/123456789012/kickoff-batches`,
      bucket: "kickoff-e2e",
      prefix: "env/e2e",
      namespace: "",
      push_config: "",
    };
    writeFileSync(join(drivers.data, "settings.json"), JSON.stringify({ operator: "erin", roles: ["ops", "engineer", "marketer"], mode: "aws", aws }));

    a = await Session.start(drivers.bases[0]);
    await a.until("the mode shown", async () => /^aws/.test(await a.text("app-mode")), 30_000);
    await a.js("const s = document.querySelector('[data-testid=runbook-select]'); s.value = [...s.options].find(o => o.value.endsWith('aws-rehearsal.toml')).value;");
    await a.click("runbook-open");
    await a.until("the runbook panel", async () => (await a.state("scale-asg")) !== null, 60_000);
    assert.match(await a.text("zombie-panel"), /s3:\/\/kickoff-e2e\/env\/e2e\/flags\.json/, "clients read the flags from S3");

    // Zombie mode from the control room lands in S3, the document clients read.
    await a.js("document.querySelector('[data-testid=zombie-toggle-api]').click()");
    // (The panel re-renders on every change: read it by script, not by element.)
    await a.until("zombie on", async () => (await a.js("return document.querySelector('[data-testid=zombie-toggle-api]')?.textContent")) === "ON", 30_000);
    const published = JSON.parse(execFileSync(cli, ["aws", "status", "--config", config], { encoding: "utf8" })).flags;
    assert.ok(JSON.stringify(published).includes('"api"'), JSON.stringify(published));

    await a.walkToArmed();
    assert.match(await a.text("step-verify-warm"), /2 workers warm/, "verify-warm read both workers' status from S3");
    assert.match(await a.text("step-plan"), /every gate passes.*SQS: \d+ batch messages over/, "the plan read the queues and the groups from AWS");
    await a.hold("fire-button", 0, 0, 1300);
    await a.until("fired", () => a.fired(), 60_000);
    const firedText = await a.text("fire-status");
    // A second press (forced past the inert button) sends nothing more.
    await a.js("document.querySelector('[data-testid=fire-button]').disabled = false");
    await a.hold("fire-button", 0, 0, 1300);
    await a.runStep("watch");
    await a.until("the outcome", async () => /Delivered [\d,]+ of [\d,]+/.test(await a.text("event-outcome")), 300_000);
    const outcome = await a.text("event-outcome");
    const m = outcome.match(/Delivered ([\d,]+) of ([\d,]+) · 0 duplicates · 0 missing/);
    assert.ok(m && m[1] === m[2], outcome);
    const delivered = Number(m[1].replaceAll(",", ""));
    assert.ok(delivered > 10_000, outcome);
    assert.equal(await a.text("fire-status"), firedText, "still the first fire");
    await a.until("the live throughput chart", () => a.js("return document.querySelector('[data-testid=chart-throughput]') !== null"), 30_000);
    await a.close();

    // The S3 ledger: one completed fire, by erin.
    const status = JSON.parse(execFileSync(cli, ["aws", "status", "--config", config], { encoding: "utf8" }));
    assert.equal(status.fire.operator, "erin");
    assert.equal(status.fire.status, "completed");

    // The recorder's points, fed from CloudWatch, add up to the outcome.
    const events = join(drivers.data, "events");
    const files = readdirSync(events).filter((f) => f.endsWith(".kickoff.sqlite"));
    const summary = JSON.parse(execFileSync(cli, ["replay", join(events, files[0]), "--speed", "0", "--json"], { encoding: "utf8" }).trim().split("\n").pop()).summary;
    assert.equal(summary.delivered, delivered, JSON.stringify(summary));

    // The gateway, stopped, counts every token once.
    for (const p of procs.slice(2)) p.kill("SIGTERM");
    let rest = "";
    gateway.stdout.on("data", (d) => (rest += d));
    // "close", not "exit": the process can exit before its last output is read.
    const exited = new Promise((r) => gateway.once("close", r));
    gateway.kill("SIGINT");
    await exited;
    const stats = JSON.parse(rest.slice(rest.indexOf("{")));
    assert.equal(stats.unique_tokens, delivered, JSON.stringify(stats));
    assert.equal(stats.duplicates, 0, JSON.stringify(stats));
    console.log(`AWS mode: ${delivered} delivered, ${stats.unique_tokens} tokens at the gateway, ${stats.duplicates} duplicates; replay ${summary.delivered}, p95 ${summary.p95_s} s`);
  } finally {
    await a?.close();
    stopDrivers();
    for (const p of procs) p.kill("SIGKILL");
    if (process.env.KICKOFF_E2E_KEEP) console.log(`kept ${work}`);
  }
});
