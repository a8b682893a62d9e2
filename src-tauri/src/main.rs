//! The Kickoff desktop app: the window and its commands live in `kickoff_lib`.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

#[allow(clippy::print_stdout)] // `--version` answers on stdout.
fn main() {
    // `kickoff --version` answers without opening a window (packages and
    // support ask for it).
    if std::env::args().skip(1).any(|a| a == "--version" || a == "-V") {
        println!("kickoff {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    kickoff_lib::run();
}
