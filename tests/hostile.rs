//! Hostile connections: sockets that send half a request, nothing at all, or idle after
//! a response are closed by the server's deadlines, and one address cannot hold more
//! than its share of unauthenticated connections — while a real session is answered.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOSTILE: usize = 200;
const CAP: usize = 250;

/// Waits until the server closes `socket`; a hang detector, far above every deadline.
async fn closed_by_server(mut socket: TcpStream) {
    let mut buf = [0u8; 4096];
    let wait = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // a response on the way to idle
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait).await.expect("the server closes the socket");
}

fn reaped(text: &str, reason: &str) -> u64 {
    let prefix = format!(r#"fieldvox_connections_reaped_total{{reason="{reason}"}} "#);
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn slow_silent_and_idle_sockets_are_reaped_while_a_session_is_answered() {
    let mut config = test_config(&temp_dir("hostile"));
    config.server.handshake_timeout_ms = 1_500;
    config.server.header_read_timeout_ms = 1_500;
    config.server.keep_alive_timeout_ms = 1_000;
    config.server.max_unauthenticated_per_ip = CAP;
    let server = own_server(config).await;
    ingest_rtu40(&server.app, "acme").await;

    // A third silent, a third dribbling a request head, a third idle after one request.
    let mut sockets = Vec::new();
    for i in 0..HOSTILE {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        match i % 3 {
            0 => {}
            1 => s.write_all(b"GET /healthz HTTP/1.1\r\nHost: f").await.expect("write"),
            _ => s.write_all(b"GET /healthz HTTP/1.1\r\nHost: fieldvox\r\n\r\n").await.expect("write"),
        }
        sockets.push(s);
    }

    // Meanwhile a technician connects and is answered.
    let mut c = server.connect("acme").await;
    c.send_json(json!({"type": "conversation.item.create",
        "item": {"text": "What torque for the compressor head bolts on the RTU-40?"}}))
        .await;
    let done = c.events_until("response.done").await.pop().expect("done");
    assert!(done["text"].as_str().unwrap_or_default().contains("38"), "{done}");

    futures_util::future::join_all(sockets.into_iter().map(closed_by_server)).await;
    let text = server.app.metrics.render();
    // Hyper's header timer and the handshake deadline race for a first request's head.
    let silent_or_slow = reaped(&text, "handshake_timeout") + reaped(&text, "header_read_timeout");
    let idle = reaped(&text, "keep_alive_timeout");
    assert!(silent_or_slow >= (HOSTILE * 2 / 3) as u64, "{text}");
    assert!(idle >= (HOSTILE / 3) as u64, "{text}");
    assert_eq!(reaped(&text, "per_ip_cap"), 0, "{text}");

    // One address may not hold more than CAP unauthenticated connections.
    let mut flood = Vec::new();
    for _ in 0..CAP + 20 {
        flood.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    futures_util::future::join_all(flood.into_iter().map(closed_by_server)).await;
    let text = server.app.metrics.render();
    assert!(reaped(&text, "per_ip_cap") >= 20, "{text}");
    still_answering(&mut c).await;
}

async fn still_answering(c: &mut Client) {
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_event().await["type"], "pong");
}
