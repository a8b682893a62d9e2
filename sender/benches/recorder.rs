//! `make bench`: the flight recorder's cost to the caller and its write rate.
//!
//! The recorder must keep up with 1 Hz for hundreds of series and never
//! block sending. Measured here: the time a caller spends in `point()` (the
//! channel send; the disk is the writer thread's business), and how many
//! points per second the writer commits to SQLite (WAL, batched).

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::time::Instant;

use kickoff_sender::recorder::{EventLog, Point, Recorder};

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.kickoff.sqlite");
    let rec = Recorder::create(&path).expect("recorder");
    // 500 series x 600 seconds: a ten-minute event at 1 Hz, 300,000 points.
    let (series, seconds) = (500u64, 600u64);
    let names: Vec<String> = (0..series).map(|i| format!("series_{i}")).collect();
    let started = Instant::now();
    let mut worst = std::time::Duration::ZERO;
    for s in 0..seconds {
        let t = Instant::now();
        for (i, name) in names.iter().enumerate() {
            rec.point(Point::new(1_000_000 + s * 1000, name, &[("worker", "w1")], i as f64));
        }
        worst = worst.max(t.elapsed());
    }
    let enqueue = started.elapsed();
    rec.flush().expect("flush");
    let total = started.elapsed();
    let n = series * seconds;
    let log = EventLog::open(&path).expect("read back");
    assert_eq!(log.points.len() as u64, n);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("sqlite-wal")).map(|m| m.len()).unwrap_or(0);
    println!("| recorder figure | value |");
    println!("|---|---|");
    println!("| points | {n} ({series} series x {seconds} s at 1 Hz) |");
    println!("| caller time per point | {:.2} µs |", enqueue.as_secs_f64() * 1e6 / n as f64);
    println!("| worst second of {series} points, caller side | {:.2} ms |", worst.as_secs_f64() * 1e3);
    println!("| committed to SQLite | {:.0} points/s ({:.2} s for all) |", n as f64 / total.as_secs_f64(), total.as_secs_f64());
    println!("| file size | {:.1} MB |", size as f64 / 1e6);
    println!("| machine | {} |", kickoff_sender::sys::machine_description());
}
