//! Graceful shutdown: live sessions are told `session.going_away`, then closed with 1001,
//! and the server stops accepting new ones; a client that never finishes its request
//! cannot hold the server past its grace period.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn drain_tells_sessions_to_go_away() {
    let server = own_server(test_config(&temp_dir("shutdown"))).await;
    let mut c = server.connect("acme").await;
    assert_eq!(server.app.sessions.count(), 1);

    server.stop.send(()).expect("stop");
    let away = c.next_event().await;
    assert_eq!(away["type"], "session.going_away", "{away}");
    assert_eq!(c.close_code().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), server.task).await.expect("server stops").unwrap().unwrap();
    assert_eq!(server.app.sessions.count(), 0);
}

#[tokio::test]
async fn a_half_open_request_and_an_idle_session_cannot_hold_shutdown() {
    let mut config = test_config(&temp_dir("shutdown-half-open"));
    // Only shutdown may close these: every other deadline is far away.
    config.server.handshake_timeout_ms = 600_000;
    config.server.header_read_timeout_ms = 600_000;
    config.server.shutdown_grace_ms = 1_000;
    let server = own_server(config).await;
    let mut half_open = tokio::net::TcpStream::connect(server.addr).await.expect("connect");
    half_open.write_all(b"GET /healthz HTTP/1.1\r\nHost: fieldvox\r\nX-Slow: ").await.expect("write");
    let mut idle = server.connect("acme").await;

    server.stop.send(()).expect("stop");
    // Before: the server waited for the half-open socket forever (its own deadlines here
    // are ten minutes away). The grace period is one second; ten is a generous bound.
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("the server stops although a client never finished its request")
        .unwrap()
        .unwrap();
    assert_eq!(idle.next_event().await["type"], "session.going_away");
    let text = server.app.metrics.render();
    assert!(text.lines().any(|l| l == r#"fieldvox_connections_reaped_total{reason="shutdown"} 1"#), "{text}");
}
