//! Smoke runs of every scenario (tens of sessions, seconds long) against a real fieldvox
//! server whose providers are the load-test reference server: every session connects,
//! none drops, every turn completes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Parser;
use fieldvox::app::App;
use fieldvox::config::Config;
use fieldvox::rag::ingest::NewManual;
use fieldvox_load::reference::{ReferenceArgs, serve};
use fieldvox_load::{Args, run};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fieldvox-smoke-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Reference providers and a fieldvox server using them, once per test binary.
/// One scenario at a time: they share the server and two cores, and each measures what
/// its own sessions see (the ask-and-leave probe timed out when five others ran beside it).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let reference = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let reference_addr = reference.local_addr().expect("addr");
                let args = ReferenceArgs::parse_from([
                    "reference",
                    "--stt-ms",
                    "20",
                    "--llm-first-token-ms",
                    "20",
                    "--tts-ms",
                    "20",
                ]);
                tokio::spawn(serve(args, reference));

                let pipelines = temp_dir("pipelines");
                let profile =
                    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines/load-reference.toml"))
                        .expect("profile")
                        .replace("127.0.0.1:9100", &reference_addr.to_string());
                std::fs::write(pipelines.join("load-reference.toml"), profile).expect("write profile");
                let mut config = Config::default();
                config.data.dir = temp_dir("data");
                config.pipelines.dir = pipelines;
                config.pipelines.default = "load-reference".into();
                // fieldvox-load mints with the development secret by default.
                config.auth.allow_dev_secret = true;
                let app = tokio::task::spawn_blocking(move || App::build(config)).await.expect("join").expect("app");
                let manual =
                    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/rtu40-service-manual.txt"))
                        .expect("fixture");
                // globex: the other company of the abandon scenario's probe; initech: the
                // abandon scenario's own company, whose question embedding no other
                // scenario has cached (its leavers must reach the inference pool).
                for tenant in ["acme", "globex", "initech"] {
                    let req = NewManual {
                        tenant: tenant.into(),
                        equipment: "RTU-40".into(),
                        title: Some("RTU-40 Service Manual".into()),
                        filename: "rtu40.txt".into(),
                        uploaded_by: "test".into(),
                    };
                    app.kb.ingest(req, manual.clone(), &Default::default(), None).await.expect("ingest");
                }
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                fieldvox::http::serve(app, listener, std::future::pending()).await.expect("serve");
            });
        });
        rx.recv().expect("server started")
    })
}

fn args(extra: &[&str]) -> Args {
    let url = format!("ws://{}/v1/realtime", server());
    let mut argv = vec!["fieldvox-load", "--url", &url, "--ramp", "200", "--max-secs", "120"];
    argv.extend_from_slice(extra);
    Args::parse_from(argv)
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_all_stay_connected() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = run(args(&["--scenario", "idle", "--sessions", "40", "--hold-secs", "2"])).await.unwrap();
    assert_eq!((report.connected, report.connect_failures, report.dropped), (40, 0, 0), "{}", report.table());
}

#[tokio::test(flavor = "multi_thread")]
async fn talking_sessions_complete_every_turn() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = run(args(&["--scenario", "talk", "--sessions", "10", "--interval-secs", "4", "--hold-secs", "12"]))
        .await
        .unwrap();
    assert_eq!(report.connected, 10, "{}", report.table());
    assert_eq!(report.turns_failed, 0, "{}", report.table());
    assert!(report.turns_completed >= 10, "every session asked at least once: {}", report.table());
    assert!(report.voice_to_voice_ms.p50 > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_answered_in_full() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = run(args(&["--scenario", "burst", "--sessions", "20"])).await.unwrap();
    assert_eq!(report.connected, 20, "{}", report.table());
    assert_eq!((report.turns_completed, report.turns_failed), (20, 0), "{}", report.table());
}

#[tokio::test(flavor = "multi_thread")]
async fn ask_and_leave_runs_to_its_report() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Every client asks, is answered, hangs up; the probe is answered before and after.
    let report = fieldvox_load::abandon::run(args(&[
        "--scenario",
        "abandon",
        "--sessions",
        "5",
        "--rounds",
        "2",
        "--tenant",
        "initech",
    ]))
    .await
    .unwrap();
    assert_eq!((report.alone.len(), report.after.len()), (2, 2), "{}", report.table());
    assert!(report.alone.iter().chain(&report.after).all(|t| t.client_v2v_ms > 0.0), "{}", report.table());
    assert!(report.jobs_ran > 0, "{}", report.table());
}

#[tokio::test(flavor = "multi_thread")]
async fn live_microphones_run_to_their_report() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Noise and echo throughout; every session asks at least once.
    let report = run(args(&[
        "--scenario",
        "mic",
        "--sessions",
        "5",
        "--interval-secs",
        "8",
        "--hold-secs",
        "18",
        "--noise-dbfs",
        "-45",
        "--echo-gain-db",
        "-6",
    ]))
    .await
    .unwrap();
    assert_eq!((report.connected, report.dropped), (5, 0), "{}", report.table());
    // Not `mic.valid`: with the other smoke runs sharing the machine, a few frames may
    // go out late; the table says so.
    let mic = report.mic.as_ref().expect("a mic summary");
    assert!(mic.questions_asked >= 5 && mic.questions_answered > 0, "{}", report.table());
    // 50 frames a second for the whole hold.
    assert!(mic.frames_sent >= 5 * 17 * 50, "{}", report.table());
}

#[tokio::test(flavor = "multi_thread")]
async fn live_microphones_barge_in_and_time_the_clear() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // One question per session; half a second into each answer (the reference's answers
    // play for seconds) the user says "Stop. What about the oil filter?" over it.
    let report = run(args(&[
        "--scenario",
        "mic",
        "--sessions",
        "3",
        "--interval-secs",
        "12",
        "--hold-secs",
        "18",
        "--barge-in-after-ms",
        "500",
    ]))
    .await
    .unwrap();
    assert_eq!((report.connected, report.dropped), (3, 0), "{}", report.table());
    let mic = report.mic.as_ref().expect("a mic summary");
    assert!(mic.questions_answered > 0 && mic.barge_ins_attempted > 0, "{}", report.table());
    // The sessions stream on until every barge-in is decided: cleared, or played out.
    assert_eq!(mic.barge_ins_attempted, mic.barge_ins_confirmed + mic.barge_ins_missed, "{}", report.table());
    assert_eq!(mic.barge_in_onset_to_clear_ms.count, mic.barge_ins_confirmed, "{}", report.table());
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["mic"]["barge_in_after_ms"], 500, "{json}");
}
