//! The Kickoff desktop app: the window and its commands live in `kickoff_lib`.

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    kickoff_lib::run();
}
