//! Kickoff's desktop shell: a Tauri 2 window over the `kickoff-sender`
//! library. This crate holds no business logic: each command translates its
//! arguments into one library call and its errors into [`CommandError`].
//!
//! # Layout
//!
//! - [`commands`]: the Tauri commands, a few lines each.
//! - [`error`]: the serializable `{code, message}` every command fails with.
//! - [`state`]: what the app keeps between commands.
//!
//! [`builder`] is generic over the Tauri runtime so tests drive the real
//! command handlers with `tauri::test::mock_builder()`.

use tauri::Runtime;

pub mod commands;
pub mod error;
pub mod state;

pub use error::CommandError;
pub use state::AppState;

/// The app's commands and state, on any runtime.
pub fn builder<R: Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder.manage(AppState::new()).invoke_handler(tauri::generate_handler![commands::run_drill, commands::app_info])
}

/// Starts the desktop app in embedded mode.
pub fn run() {
    let level = if std::env::var("KICKOFF_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug")) {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).with_target(false).try_init();
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
