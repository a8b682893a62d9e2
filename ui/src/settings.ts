// Settings: who is at the keyboard (name and roles), embedded or AWS mode,
// and the AWS profile. Never a secret: AWS credentials come from the
// standard AWS chain, provider keys stay in their files.
import * as api from "./api/control";
import { appInfo } from "./api/drill";
import { errorText, type Role, type Settings } from "./api/types";
import { el } from "./dom";

const AWS_FIELDS: [string, string][] = [
  ["profile", "AWS profile (~/.aws/config)"],
  ["region", "Region"],
  ["endpoint_url", "Endpoint URL (empty: AWS; or an emulator)"],
  ["cluster", "ECS cluster"],
  ["service", "ECS service"],
  ["asg", "Auto-scaling group"],
  ["fire_queue", "Fire queue, name or URL (FIFO)"],
  ["batch_queue", "Batch queue, name or URL"],
  ["bucket", "S3 bucket"],
  ["prefix", "S3 key prefix (empty: kickoff)"],
  ["namespace", "CloudWatch namespace (empty: Kickoff)"],
  ["push_config", "Provider credentials for test-sends: kickoff.toml path (empty: loopback gateway)"],
];

export function settingsPanel(root: HTMLElement, notify: (text: string, bad?: boolean) => void): void {
  const operator = el("input", { type: "text", "data-testid": "settings-operator", maxlength: "64" });
  const roles = (["ops", "engineer", "marketer"] as Role[]).map((r) => [r, el("input", { type: "checkbox", "data-testid": `settings-role-${r}` })] as const);
  const mode = el("select", { "data-testid": "settings-mode" }, el("option", { value: "embedded" }, "Embedded (no credentials, no network)"), el("option", { value: "aws" }, "AWS profile"));
  const aws = AWS_FIELDS.map(([k, label]) => [k, el("input", { type: "text", "data-testid": `settings-aws-${k}` }), label] as const);
  const save = el("button", { type: "button", "data-testid": "settings-save" }, "Save");
  const about = el("p", { "data-testid": "about" }, "Kickoff");
  root.append(
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Settings"),
      el("label", {}, "Your name (recorded in the audit log)", operator),
      el("div", { class: "row" }, ...roles.map(([r, box]) => el("label", { class: "inline" }, box, r))),
      el("label", {}, "Mode", mode),
      el("p", { class: "hint" }, "AWS credentials come from the standard AWS chain (environment, profile, instance role). Kickoff never asks for or stores a secret."),
      ...aws.map(([, input, label]) => el("label", {}, label, input)),
      save,
    ),
    el("section", { class: "card" }, el("h2", {}, "About"), about),
  );
  void appInfo().then((info) => {
    about.textContent = `Kickoff ${info.version} · ${info.mode} mode · ${info.cores} cores · data directory: ${info.data_dir}`;
  });
  const load = (s: Settings): void => {
    operator.value = s.operator;
    for (const [r, box] of roles) box.checked = s.roles.includes(r);
    mode.value = s.mode;
    for (const [k, input] of aws) input.value = s.aws[k] ?? "";
  };
  void api.getSettings().then(load);
  save.addEventListener("click", async () => {
    const s: Settings = {
      operator: operator.value.trim(),
      roles: roles.filter(([, b]) => b.checked).map(([r]) => r),
      mode: mode.value === "aws" ? "aws" : "embedded",
      aws: Object.fromEntries(aws.map(([k, input]) => [k, input.value.trim()])),
    };
    try {
      load(await api.saveSettings(s));
      notify("Settings saved.");
    } catch (e) {
      notify(errorText(e), true);
    }
  });
}
