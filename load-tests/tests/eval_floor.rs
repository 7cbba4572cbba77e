//! The answer-quality floor: a quick subset of the benchmark (every third question,
//! typed, and spoken by a voice that is not the server's; every third follow-up dialogue,
//! typed) on the default profile, against a real server with the real models. A change
//! that makes answers worse fails here; the full benchmark (`fieldvox-eval`, numbers in the
//! README) runs outside CI.

use clap::Parser;
use fieldvox_load::eval::{EvalArgs, run};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Floors just below the quick subset's measured scores (18 questions: typed 16 right,
/// flite-spoken 12 right, 14 of 15 pages; README, "Answer quality"): one more miss is
/// tolerated, a real regression is not.
const TYPED_RIGHT_PCT: f64 = 83.0;
const SPOKEN_RIGHT_PCT: f64 = 61.0;
const PAGE_RIGHT_PCT: f64 = 86.0;
/// Follow-ups (5 dialogues of dialogues.toml, typed: "and what's its part number?" after a
/// question naming the equipment, in one session): at least 4 of 5 right. Provisional: set
/// before the subset was first measured; bring it just below the measured score, as above.
const FOLLOW_UP_RIGHT_PCT: f64 = 75.0;

#[tokio::test(flavor = "multi_thread")]
async fn default_profile_answers_stay_above_the_floor() {
    let args = EvalArgs::parse_from([
        "fieldvox-eval",
        "--corpus",
        &format!("{ROOT}/load-tests/eval"),
        "--pipelines",
        &format!("{ROOT}/pipelines"),
        "--profiles",
        "field-assistant",
        "--voices",
        "flite:slt",
        "--every",
        "3",
        "--dialogues",
        "typed",
    ]);
    let report = run(args).await.expect("benchmark runs");
    let table = report.table();
    let typed = &report.summaries[&("field-assistant".to_string(), "typed".to_string())];
    let spoken = &report.summaries[&("field-assistant".to_string(), "spoken".to_string())];
    assert!(typed.asked >= 15 && spoken.asked >= 15, "{table}");
    assert!(typed.right_pct() >= TYPED_RIGHT_PCT, "typed answers below the floor:\n{table}");
    assert!(spoken.right_pct() >= SPOKEN_RIGHT_PCT, "spoken answers below the floor:\n{table}");
    assert!(typed.page_pct() >= PAGE_RIGHT_PCT, "cited pages below the floor:\n{table}");
    for (key, s) in &report.summaries {
        assert_eq!(s.foreign, 0, "{key:?} answered with another tenant's facts:\n{table}");
        assert_eq!(s.invented, 0, "{key:?} answered with invented numbers or codes:\n{table}");
    }
    let follow_ups = &report.dialogue_summaries[&("field-assistant".to_string(), "typed".to_string())];
    assert!(follow_ups.dialogues >= 4, "{table}");
    assert!(follow_ups.follow_up_right_pct() >= FOLLOW_UP_RIGHT_PCT, "follow-up answers below the floor:\n{table}");
    assert_eq!(report.dialogue_summaries.len(), 1, "dialogues typed only:\n{table}");
    for (key, s) in &report.dialogue_summaries {
        assert_eq!(s.foreign, 0, "{key:?} dialogues answered with another tenant's facts:\n{table}");
        assert_eq!(s.invented, 0, "{key:?} dialogues answered with invented numbers or codes:\n{table}");
    }
}
