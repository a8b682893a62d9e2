//! Kickoff's desktop shell: a Tauri 2 window over the `kickoff-sender`
//! library. This crate holds no business logic: each command translates its
//! arguments into one library call and its errors into [`CommandError`].
//!
//! # Layout
//!
//! - [`commands`]: the Tauri commands, a few lines each.
//! - [`error`]: the serializable `{code, message}` every command fails with.
//! - [`control`]: the control room: events, steps, fire, zombie mode, replay.
//! - [`settings`]: operator, mode, AWS profile (never secrets).
//! - [`state`]: what the app keeps between commands.
//!
//! [`builder`] is generic over the Tauri runtime so tests drive the real
//! command handlers with `tauri::test::mock_builder()`.

use tauri::Runtime;

pub mod commands;
pub mod control;
pub mod error;
pub mod settings;
pub mod state;

pub use error::CommandError;
pub use state::AppState;

/// The app's commands and state, on any runtime.
pub fn builder<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder_with(builder, AppState::new())
}

/// The app's commands over `state` (tests use a data directory of their own).
pub fn builder_with<R: Runtime>(builder: tauri::Builder<R>, state: AppState) -> tauri::Builder<R> {
    builder
        .manage(state)
        .invoke_handler(tauri::generate_handler![
            commands::run_drill,
            commands::app_info,
            control::list_runbooks,
            control::open_event,
            control::event_view,
            control::watch_event,
            control::run_step,
            control::skip_step,
            control::fire,
            control::resume,
            control::disarm,
            control::approve,
            control::abort,
            control::switch_zombie,
            control::campaign_preview,
            control::list_recordings,
            control::open_recording,
            control::export_report,
            control::get_settings,
            control::save_settings,
            control::confirm_close,
        ])
        .on_window_event(control::on_window_event)
}

/// Starts the desktop app in embedded mode.
pub fn run() {
    kickoff_sender::logging::init(tracing::Level::INFO);
    builder(tauri::Builder::default()).run(tauri::generate_context!()).expect("Kickoff could not start its window");
}

#[cfg(test)]
mod tests {
    use tauri::ipc::{CallbackFn, InvokeBody};
    use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets};
    use tauri::webview::InvokeRequest;
    use tauri::{App, WebviewWindow, WebviewWindowBuilder};

    fn app() -> (App<MockRuntime>, WebviewWindow<MockRuntime>) {
        let app = super::builder(mock_builder()).build(mock_context(noop_assets())).expect("mock app");
        let window = WebviewWindowBuilder::new(&app, "main", Default::default()).build().expect("mock window");
        (app, window)
    }

    fn app_in(dir: &std::path::Path) -> (App<MockRuntime>, WebviewWindow<MockRuntime>) {
        let state = super::AppState::in_dir(dir.to_owned());
        let app = super::builder_with(mock_builder(), state).build(mock_context(noop_assets())).expect("mock app");
        let window = WebviewWindowBuilder::new(&app, "main", Default::default()).build().expect("mock window");
        (app, window)
    }

    /// Every command the handler registers is declared in build.rs's app
    /// manifest and granted in capabilities/default.json: a command missing
    /// from either answers "not allowed" in the real app (the mock runtime
    /// does not check the grants).
    #[test]
    fn every_command_is_declared_and_granted() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
        let lib = read("src/lib.rs");
        let handler = &lib[lib.find("generate_handler![").unwrap()..];
        let handler = &handler[..handler.find(']').unwrap()];
        let commands: Vec<&str> =
            handler.split(',').filter_map(|c| c.trim().rsplit("::").next()).filter(|c| !c.is_empty() && !c.contains('[')).collect();
        assert!(commands.len() > 10 && commands.contains(&"approve"), "{commands:?}");
        let (build, capabilities) = (read("build.rs"), read("capabilities/default.json"));
        for c in commands {
            assert!(build.contains(&format!("\"{c}\"")), "{c} is not in build.rs's app manifest");
            assert!(
                capabilities.contains(&format!("\"allow-{}\"", c.replace('_', "-"))),
                "{c} is not granted in capabilities/default.json"
            );
        }
    }

    #[test]
    fn the_control_room_walks_a_runbook_to_one_fire_and_replays_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_app, w) = app_in(dir.path());
        let runbooks = invoke(&w, "list_runbooks", serde_json::json!({})).unwrap();
        let file =
            runbooks.as_array().unwrap().iter().find(|r| r["file"].as_str().unwrap().ends_with("rehearsal.toml")).unwrap()["file"].clone();
        assert!(runbooks.as_array().unwrap().iter().all(|r| r["name"]["Ok"].is_string()), "{runbooks}");
        // Nothing outside the data directory's runbooks opens.
        let err = invoke(&w, "open_event", serde_json::json!({ "runbook": "/etc/passwd" })).unwrap_err();
        assert_eq!(err["code"], "invalid");
        let view = invoke(&w, "open_event", serde_json::json!({ "runbook": file })).unwrap();
        assert_eq!(view["state"]["runbook"], "Rehearsal (silent)");
        assert_eq!(view["joined"], false);
        // The fire button's command refuses until armed.
        let err = invoke(&w, "fire", serde_json::json!({})).unwrap_err();
        assert_eq!(err["code"], "gated", "{err}");
        for step in ["scale-asg", "scale-ecs", "verify-warm", "test-send", "confirm", "arm"] {
            let s = invoke(&w, "run_step", serde_json::json!({ "step": step })).unwrap_or_else(|e| panic!("{step}: {e}"));
            assert_eq!(s["state"], "done", "{step}: {s}");
        }
        let previews = invoke(&w, "campaign_preview", serde_json::json!({})).unwrap();
        assert!(
            previews
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["locale"] == "en-US" && p["apns"].as_str().unwrap().contains("content-available"))
        );
        invoke(&w, "fire", serde_json::json!({})).unwrap();
        // Nothing to resume: the fire is not interrupted.
        let err = invoke(&w, "resume", serde_json::json!({})).unwrap_err();
        assert_eq!(err["code"], "invalid", "{err}");
        assert!(err["message"].as_str().unwrap().contains("not interrupted"), "{err}");
        let again = invoke(&w, "fire", serde_json::json!({})).unwrap_err();
        assert!(again["message"].as_str().unwrap().contains("already fired") || again["code"] == "busy", "{again}");
        let watched = invoke(&w, "run_step", serde_json::json!({ "step": "watch" })).unwrap();
        assert_eq!(watched["state"], "done", "{watched}");
        let view = invoke(&w, "event_view", serde_json::json!({})).unwrap();
        let summary = &view["state"]["summary"];
        assert_eq!(
            (summary["delivered"].as_u64(), summary["duplicates"].as_u64(), summary["missing"].as_u64()),
            (Some(20_000), Some(0), Some(0))
        );
        let flag = invoke(&w, "switch_zombie", serde_json::json!({ "backend": "api", "on": true, "minutes": 2, "why": "test" })).unwrap();
        assert_eq!(flag["enabled"], true);
        // Another app on the same data directory joins the open event: its
        // fire is the same fire.
        let (_other, w2) = app_in(dir.path());
        let joined = invoke(&w2, "open_event", serde_json::json!({ "runbook": file })).unwrap();
        assert_eq!(joined["joined"], true, "the event is still open in the registry");
        assert_eq!(joined["state"]["event_id"], view["state"]["event_id"]);
        // The window that opened it leaves it when it opens the runbook
        // again; the event stays open while the other app holds it, so the
        // window joins it again (issue 12: joinable while anyone has it open).
        let again = invoke(&w, "open_event", serde_json::json!({ "runbook": file })).unwrap();
        assert_eq!(again["joined"], true, "the other app still holds it");
        assert_eq!(again["state"]["event_id"], view["state"]["event_id"]);

        let recordings = invoke(&w, "list_recordings", serde_json::json!({})).unwrap();
        // Every session records what it sees: the one that fired has the
        // send (the joined ones, newer, may not).
        let rec = view["record"].clone();
        assert!(
            recordings.as_array().unwrap().iter().any(|r| r["file"] == rec && r["runbook"] == "Rehearsal (silent)"),
            "{recordings} lists {rec}"
        );
        let replay = invoke(&w, "open_recording", serde_json::json!({ "file": rec })).unwrap();
        assert_eq!(replay["summary"]["delivered"], 20_000);
        let names: Vec<&str> = replay["charts"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"throughput") && names.contains(&"delivered"), "{names:?}");
        assert!(replay["charts"][0]["svg"].as_str().unwrap().starts_with("<svg"));
        let html = invoke(&w, "export_report", serde_json::json!({ "file": rec })).unwrap();
        assert!(std::path::Path::new(html.as_str().unwrap()).is_file());
        let err = invoke(&w, "open_recording", serde_json::json!({ "file": "/etc/hostname" })).unwrap_err();
        assert_eq!(err["code"], "invalid");
    }

    #[test]
    fn settings_are_checked_and_kept_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let (_app, w) = app_in(dir.path());
        let mut s = invoke(&w, "get_settings", serde_json::json!({})).unwrap();
        assert_eq!(s["mode"], "embedded");
        s["operator"] = "".into();
        assert_eq!(invoke(&w, "save_settings", serde_json::json!({ "settings": s })).unwrap_err()["code"], "invalid");
        s["operator"] = "ana".into();
        s["mode"] = "aws".into();
        let err = invoke(&w, "save_settings", serde_json::json!({ "settings": s })).unwrap_err();
        assert!(err["message"].as_str().unwrap().contains("AWS mode needs the region"), "{err}");
        s["mode"] = "embedded".into();
        s["roles"] = serde_json::json!(["marketer"]);
        invoke(&w, "save_settings", serde_json::json!({ "settings": s })).unwrap();
        let saved = std::fs::read_to_string(dir.path().join("settings.json")).unwrap();
        assert!(saved.contains("\"ana\"") && !saved.to_lowercase().contains("secret"));
        // A fresh app reads them back, and the marketer alone cannot scale.
        let (_app2, w2) = app_in(dir.path());
        assert_eq!(invoke(&w2, "get_settings", serde_json::json!({})).unwrap()["operator"], "ana");
        let runbooks = invoke(&w2, "list_runbooks", serde_json::json!({})).unwrap();
        let file =
            runbooks.as_array().unwrap().iter().find(|r| r["file"].as_str().unwrap().ends_with("cloud-scale-test.toml")).unwrap()["file"]
                .clone();
        invoke(&w2, "open_event", serde_json::json!({ "runbook": file })).unwrap();
        let err = invoke(&w2, "run_step", serde_json::json!({ "step": "scale-asg" })).unwrap_err();
        assert_eq!(err["code"], "role", "{err}");
    }

    fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, body: serde_json::Value) -> Result<serde_json::Value, serde_json::Value> {
        get_ipc_response(
            window,
            InvokeRequest {
                cmd: cmd.into(),
                callback: CallbackFn(0),
                error: CallbackFn(1),
                url: "tauri://localhost".parse().expect("url"),
                body: InvokeBody::Json(body),
                headers: Default::default(),
                invoke_key: INVOKE_KEY.to_owned(),
            },
        )
        .map(|r| r.deserialize::<serde_json::Value>().expect("JSON response"))
    }

    #[test]
    fn app_info_reports_embedded_mode() {
        let (_app, window) = app();
        let info = invoke(&window, "app_info", serde_json::json!({})).unwrap();
        assert_eq!(info["mode"], "embedded");
        assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
        assert!(info["cores"].as_u64().unwrap() >= 1);
    }

    #[test]
    fn a_drill_from_the_app_delivers_every_device_once() {
        let (_app, window) = app();
        for provider in ["gateway", "null"] {
            let body =
                serde_json::json!({ "request": { "devices": 3000, "provider": provider, "silent": false }, "onEvent": "__CHANNEL__:7" });
            let summary = invoke(&window, "run_drill", body).unwrap();
            assert_eq!(summary["provider"], provider);
            assert_eq!(summary["devices"], 3000);
            assert_eq!(summary["delivered"], 3000);
            assert_eq!(summary["duplicates"], 0);
            assert_eq!(summary["missing"], 0);
            assert_eq!(summary["measured_at"], "receiver");
        }
    }

    #[test]
    fn bad_requests_fail_with_a_code_and_a_message() {
        let (_app, window) = app();
        let err = invoke(
            &window,
            "run_drill",
            serde_json::json!({ "request": { "devices": 0, "provider": "null" }, "onEvent": "__CHANNEL__:7" }),
        )
        .unwrap_err();
        assert_eq!(err["code"], "invalid");
        assert!(err["message"].as_str().unwrap().contains("between 1 and"), "{err}");
        let err = invoke(
            &window,
            "run_drill",
            serde_json::json!({ "request": { "devices": 10, "provider": "carrier-pigeon" }, "onEvent": "__CHANNEL__:7" }),
        )
        .unwrap_err();
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    }
}
