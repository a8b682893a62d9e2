//! Audience files: every rejection reason, good rows kept intact, inputs
//! untouched, nothing half-written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kickoff_sender::audience::generate::{self, GenerateSpec};
use kickoff_sender::audience::input::RejectReason;
use kickoff_sender::audience::{self, Audience, AudienceError, CompileOptions, Platform};

type Row = (String, String, String, String, String);

fn apns(n: u32) -> String {
    format!("{n:08x}").repeat(8)
}

fn fcm(n: u32) -> String {
    format!("inst{n:018}:APA91b{}", "Zz9-_".repeat(27))
}

/// Every device of an audience as (user_id, platform, token, locale, market).
fn rows_of(dir: &Path) -> BTreeSet<Row> {
    let a = Audience::load(dir).unwrap();
    let mut out = BTreeSet::new();
    let mut buf = Vec::new();
    for shard in a.shards() {
        let users = shard.user_ids().unwrap();
        for run in shard.runs() {
            for i in run.start..run.end {
                let i = i as usize;
                out.insert((
                    users.get(run.platform, i).to_owned(),
                    run.platform.as_str().to_owned(),
                    shard.token_text(run.platform, i, &mut buf).to_owned(),
                    shard.locales()[usize::from(shard.locale(run.platform, i))].clone(),
                    shard.markets()[usize::from(run.market)].clone(),
                ));
            }
        }
    }
    out
}

fn compile(input: &Path, out: &Path, opts: &CompileOptions) -> Result<audience::CompileReport, AudienceError> {
    audience::compile(&[input.to_owned()], out, opts, &mut |_| {})
}

#[test]
fn a_malformed_file_reports_each_bad_line_and_keeps_the_good_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("audience.csv");
    let mut lines: Vec<Vec<u8>> = vec![b"user_id,platform,token,locale,market".to_vec()];
    let mut good: BTreeSet<Row> = BTreeSet::new();
    let mut expect: BTreeMap<u64, RejectReason> = BTreeMap::new();
    let mut push_good = |lines: &mut Vec<Vec<u8>>, r: Row| {
        lines.push(format!("{},{},{},{},{}", r.0, r.1, r.2, r.3, r.4).into_bytes());
        good.insert(r);
    };
    for n in 0..5u32 {
        push_good(&mut lines, (format!("u{n}"), "ios".into(), apns(n), "en-US".into(), "US".into()));
        push_good(&mut lines, (format!("a{n}"), "android".into(), fcm(n), "pt-BR".into(), "BR".into()));
    }
    let mut bad = |lines: &mut Vec<Vec<u8>>, line: Vec<u8>, reason: RejectReason| {
        lines.push(line);
        expect.insert(lines.len() as u64, reason);
    };
    bad(&mut lines, b"x1,ios,\xff\xfe,en-US,US".to_vec(), RejectReason::InvalidUtf8);
    bad(&mut lines, format!("x2,android,{},en-US,US", "a".repeat(9000)).into_bytes(), RejectReason::LineTooLong);
    bad(&mut lines, format!("x3,ios,\"{},en-US,US", apns(90)).into_bytes(), RejectReason::Malformed);
    bad(&mut lines, format!("x4,ios,{},en-US", apns(91)).into_bytes(), RejectReason::MissingField);
    bad(&mut lines, format!("x5,blackberry,{},en-US,US", apns(92)).into_bytes(), RejectReason::UnknownPlatform);
    bad(&mut lines, b"x6,ios,0123abc,en-US,US".to_vec(), RejectReason::ApnsToken);
    bad(&mut lines, b"x7,android,,en-US,US".to_vec(), RejectReason::FcmTokenEmpty);
    bad(&mut lines, format!("x8,android,{},en-US,US", "b".repeat(4097)).into_bytes(), RejectReason::FcmTokenTooLong);
    bad(&mut lines, b"x9,android,abc/def==,en-US,US".to_vec(), RejectReason::FcmTokenAlphabet);
    bad(&mut lines, format!("x10,ios,{},en US,US", apns(93)).into_bytes(), RejectReason::InvalidField);
    bad(&mut lines, format!("x11,ios,{},en-US,US", apns(2).to_uppercase()).into_bytes(), RejectReason::DuplicateToken);
    bad(&mut lines, format!("x12,android,{},de-DE,DE", fcm(3)).into_bytes(), RejectReason::DuplicateToken);
    push_good(&mut lines, ("last".into(), "ios".into(), apns(77), "ja-JP".into(), "JP".into()));
    let bytes = lines.join(&b"\n"[..]);
    std::fs::write(&input, &bytes).unwrap();

    let out = dir.path().join("compiled");
    let report = compile(&input, &out, &CompileOptions { shards: 3, max_listed: 100, ..CompileOptions::default() }).unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), bytes, "the input file was modified");
    assert_eq!(report.accepted, good.len() as u64);
    let listed: BTreeMap<u64, RejectReason> = report.first_rejections.iter().map(|r| (r.line, r.reason)).collect();
    assert_eq!(listed, expect);
    for r in &report.first_rejections {
        let text = r.to_string();
        assert!(text.starts_with(&format!("{}:{}: ", input.display(), r.line)), "{text}");
    }
    assert_eq!(report.rejected[&RejectReason::DuplicateToken], 2);
    assert!(report.first_rejections.iter().any(|r| r.reason == RejectReason::DuplicateToken && r.detail.contains("first seen on line")));
    assert_eq!(rows_of(&out), good, "the good rows must come out exactly as they went in");
    let m = audience::Manifest::read(&out).unwrap();
    assert_eq!(m.rejected["duplicate_token"], 2);
    assert_eq!(m.sources[0].rejected, expect.len() as u64);
}

#[test]
fn strict_mode_refuses_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.csv");
    std::fs::write(&input, format!("user_id,platform,token,locale,market\n1,ios,{},en-US,US\n2,ios,nope,en-US,US\n", apns(1))).unwrap();
    let out = dir.path().join("out");
    let err = compile(&input, &out, &CompileOptions { strict: true, ..CompileOptions::default() }).unwrap_err();
    assert!(matches!(err, AudienceError::Strict { .. }), "{err}");
    assert!(err.to_string().contains("a.csv:3: apns_token"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary directory left behind");
}

#[test]
fn a_missing_header_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("noheader.csv");
    std::fs::write(&input, format!("\n1,ios,{},en-US,US\n", apns(1))).unwrap();
    let err = compile(&input, &dir.path().join("out"), &CompileOptions::default()).unwrap_err().to_string();
    assert!(err.contains("noheader.csv:2:") && err.contains("missing: user_id, platform"), "{err}");
}

#[test]
fn an_existing_audience_is_replaced_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.csv");
    std::fs::write(&input, format!("user_id,platform,token,locale,market\n1,ios,{},en-US,US\n", apns(1))).unwrap();
    let out = dir.path().join("out");
    compile(&input, &out, &CompileOptions::default()).unwrap();
    let err = compile(&input, &out, &CompileOptions::default()).unwrap_err();
    assert!(matches!(err, AudienceError::OutputExists { .. }), "{err}");
    std::fs::write(&input, format!("user_id,platform,token,locale,market\n1,ios,{},en-US,US\n2,ios,{},en-US,US\n", apns(1), apns(2)))
        .unwrap();
    compile(&input, &out, &CompileOptions { force: true, ..CompileOptions::default() }).unwrap();
    assert_eq!(Audience::load(&out).unwrap().devices(), 2);
}

#[test]
fn csv_and_json_lines_of_the_same_audience_compile_to_the_same_devices() {
    let dir = tempfile::tempdir().unwrap();
    let spec = GenerateSpec { devices: 3_000, ios_share: 0.5, markets: 12, seed: 9 };
    let csv = dir.path().join("a.csv");
    let jsonl = dir.path().join("a.jsonl");
    generate::write_file(&spec, &csv).unwrap();
    generate::write_file(&spec, &jsonl).unwrap();
    let (a, b) = (dir.path().join("from-csv"), dir.path().join("from-jsonl"));
    let ra = compile(&csv, &a, &CompileOptions { strict: true, ..CompileOptions::default() }).unwrap();
    compile(&jsonl, &b, &CompileOptions { strict: true, shards: 5, ..CompileOptions::default() }).unwrap();
    assert_eq!(ra.accepted, 3_000);
    let rows = rows_of(&a);
    assert_eq!(rows.len(), 3_000);
    assert_eq!(rows, rows_of(&b));
    // The generator's direct path holds the same devices too.
    let c = dir.path().join("direct");
    generate::compile_generated(&spec, &c, 2, false, &|_| {}).unwrap();
    assert_eq!(rows, rows_of(&c));
}

#[test]
fn a_damaged_shard_is_refused_with_its_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("aud");
    generate::compile_generated(&GenerateSpec { devices: 500, ..GenerateSpec::default() }, &out, 2, false, &|_| {}).unwrap();
    let shard = out.join("shard-0001.kshard");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, bytes).unwrap();
    let err = Audience::load(&out).unwrap_err().to_string();
    assert!(err.contains("shard-0001.kshard") && err.contains("checksum"), "{err}");
}

#[test]
fn tokens_survive_the_compact_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("odd.jsonl");
    let tokens = ["a", "ab:cd:ef", ":x", "x:", &"q".repeat(4096), "APA91bNoColonLegacyToken-_"];
    let body: String = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!("{{\"user_id\":\"{i}\",\"platform\":\"android\",\"token\":\"{t}\",\"locale\":\"en-US\",\"market\":\"US\"}}\n")
        })
        .collect();
    std::fs::write(&input, body).unwrap();
    let out = dir.path().join("out");
    compile(&input, &out, &CompileOptions { strict: true, ..CompileOptions::default() }).unwrap();
    let got: BTreeSet<String> = rows_of(&out).into_iter().map(|r| r.2).collect();
    let want: BTreeSet<String> = tokens.iter().map(|t| t.to_string()).collect();
    assert_eq!(got, want);
    let a = Audience::load(&out).unwrap();
    assert_eq!(a.shards().iter().map(|s| s.len(Platform::Android)).sum::<usize>(), tokens.len());
}
