//! The cluster script (`load-tests/cluster.sh`), run for real: three fieldvox instances in
//! network namespaces behind nginx, sharing Redis and nx-27017, a talk load through
//! nginx, one instance drained with SIGTERM mid-run. No turn fails except on the drained
//! instance, and every session it had moves to another instance and is answered there.

use std::path::Path;
use std::process::Command;

#[test]
fn a_drained_instance_s_sessions_move_and_nothing_else_fails() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let report = std::env::temp_dir().join(format!("fieldvox-cluster-{}.json", std::process::id()));
    // An ephemeral port for nginx, released for it to take.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut command = Command::new(repo.join("load-tests/cluster.sh"));
    command.args(["--no-build", "--sessions", "12", "--hold-secs", "45", "--drain-after-secs", "15"]);
    command.args(["--interval-secs", "8", "--port", &port.to_string(), "--report"]).arg(&report);
    let output = command.output().expect("cluster.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cluster.sh failed ({}):\n{stdout}\n{stderr}", output.status);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let _ = std::fs::remove_file(&report);
    let count = |key: &str| json[key].as_u64().unwrap_or_else(|| panic!("{key} in {json}"));
    assert_eq!(count("connected"), 12, "{stdout}");
    assert_eq!(count("dropped"), 0, "{stdout}");
    assert_eq!(
        count("turns_failed"),
        count("failed_while_going_away"),
        "only the drained instance fails turns: {stdout}"
    );
    assert!(count("moved") >= 2, "the drained instance had sessions, and they moved: {stdout}");
    assert_eq!(count("moved_answered"), count("moved"), "each moved session was answered elsewhere: {stdout}");
    assert!(count("turns_completed") >= 24, "{stdout}");
}
