// The packages `deploy/package.sh` built into dist/ (`make test` bundles the
// debug build; `make package` the release one): the .deb unpacked with
// dpkg-deb into a temporary directory, its CLI run (--version, a campaign
// check of the packaged demo), its app started under Xvfb to its first
// screen; the CLI tarball unpacked and run. Run by `make test-package`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Session, root, startDrivers } from "./driver.mjs";

const version = readFileSync(join(root, "Cargo.toml"), "utf8").match(/^version = "(.+)"/m)[1];
// The debug packages `make test-package` built (KICKOFF_DIST=dist tests a release).
const dist = process.env.KICKOFF_DIST ? join(root, process.env.KICKOFF_DIST) : join(root, "target/package/debug/dist");
const debArch = execFileSync("dpkg", ["--print-architecture"], { encoding: "utf8" }).trim();
const arch = execFileSync("uname", ["-m"], { encoding: "utf8" }).trim();
const run = (file, args) => execFileSync(file, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

test("the .deb installs the app, the CLI, its completions, man pages and the demo", { timeout: 300_000 }, async (t) => {
  const deb = join(dist, `kickoff_${version}_${debArch}.deb`);
  assert.ok(existsSync(deb), `${deb}: run deploy/package.sh first`);
  const fields = run("dpkg-deb", ["-f", deb, "Package", "Version", "Depends"]);
  assert.match(fields, new RegExp(`^Package: kickoff\\nVersion: ${version.replaceAll(".", "\\.")}\\nDepends: .*libwebkit2gtk-4\\.1-0`, "m"), fields);
  const into = mkdtempSync(join(tmpdir(), "kickoff-deb-"));
  t.after(() => rmSync(into, { recursive: true, force: true }));
  run("dpkg-deb", ["-x", deb, into]);

  // What a desktop and a shell find.
  const desktop = readFileSync(join(into, "usr/share/applications/Kickoff.desktop"), "utf8");
  assert.match(desktop, /^Exec=kickoff$/m, desktop);
  assert.match(desktop, /^Icon=kickoff$/m, desktop);
  for (const f of [
    "usr/share/icons/hicolor/128x128/apps/kickoff.png",
    "usr/share/bash-completion/completions/kickoff-sender",
    "usr/share/zsh/vendor-completions/_kickoff-sender",
    "usr/share/fish/vendor_completions.d/kickoff-sender.fish",
    "usr/share/man/man1/kickoff-sender.1.gz",
    "usr/share/man/man1/kickoff-sender-runbook-walk.1.gz",
  ]) {
    assert.ok(existsSync(join(into, f)), `${f} in the package`);
  }
  const bash = readFileSync(join(into, "usr/share/bash-completion/completions/kickoff-sender"), "utf8");
  assert.ok(/^\s*complete -F _kickoff__sender .*kickoff-sender$/m.test(bash), "bash completion registered for kickoff-sender");

  // The packaged CLI runs, and checks the packaged demo campaign.
  const cli = join(into, "usr/bin/kickoff-sender");
  assert.equal(run(cli, ["--version"]).trim(), `kickoff-sender ${version}`);
  const check = run(cli, ["campaign", "check", join(into, "usr/share/kickoff/runbooks/campaigns/demo.toml")]);
  assert.match(check, /^campaign demo-kickoff \(Alert\), hash [0-9a-f]{16}$/m, check);
  assert.equal(run(join(into, "usr/bin/kickoff"), ["--version"]).trim(), `kickoff ${version}`);

  // The packaged app, under Xvfb, to its first screen: the shipped runbooks
  // listed, and About naming the version.
  const { bases, stop } = await startDrivers(1);
  try {
    const a = await Session.start(bases[0], join(into, "usr/bin/kickoff"));
    await a.click("tab-settings");
    await a.until("about", async () => (await a.text("about")).startsWith(`Kickoff ${version} · embedded mode`), 30_000);
    await a.close();
  } finally {
    stop();
  }
});

test("the CLI tarball holds a working kickoff-sender", (t) => {
  const tarball = `kickoff-sender-${version}-linux-${arch}.tar.gz`;
  assert.ok(readdirSync(dist).includes(tarball), `${tarball} in ${dist}`);
  const into = mkdtempSync(join(tmpdir(), "kickoff-tar-"));
  t.after(() => rmSync(into, { recursive: true, force: true }));
  run("tar", ["-xzf", join(dist, tarball), "-C", into]);
  const top = join(into, `kickoff-sender-${version}`);
  assert.equal(run(join(top, "kickoff-sender"), ["--version"]).trim(), `kickoff-sender ${version}`);
  for (const f of ["completions/kickoff-sender", "man/kickoff-sender.1.gz", "runbooks/launch-day.toml", "README.md"]) {
    assert.ok(existsSync(join(top, f)), `${f} in the tarball`);
  }
  run(join(top, "kickoff-sender"), ["campaign", "check", join(top, "runbooks/campaigns/demo.toml")]);
});
