//! Graceful shutdown: live sessions are told `session.going_away`, then closed with 1001,
//! and the server stops accepting new ones.

mod common;

use common::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn drain_tells_sessions_to_go_away() {
    let config = test_config(&temp_dir("shutdown"));
    let app = tokio::task::spawn_blocking(move || fieldvox::app::App::build(config)).await.unwrap().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fieldvox::http::serve(app.clone(), listener, async move {
        let _ = stop_rx.await;
    }));

    let token = app.keys.mint("tech", "acme", fieldvox::auth::Role::Technician, 600);
    let mut req = format!("ws://{addr}/v1/realtime").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client { ws, audio: Vec::new() };
    assert_eq!(c.next_event().await["type"], "session.created");
    assert_eq!(app.sessions.count(), 1);

    stop_tx.send(()).unwrap();
    let away = c.next_event().await;
    assert_eq!(away["type"], "session.going_away", "{away}");
    assert_eq!(c.close_code().await, Some(1001));
    tokio::time::timeout(std::time::Duration::from_secs(10), server).await.expect("server stops").unwrap().unwrap();
    assert_eq!(app.sessions.count(), 0);
}
