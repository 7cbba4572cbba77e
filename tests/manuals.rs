//! The admins' manuals API over real HTTP against a real server: a real PDF (made by
//! fpdf2) uploaded, its ingest followed as server-sent events, found by search and by a
//! typed voice turn on the right page, replaced by a new version with no mix and no gap,
//! deleted; bad uploads refused with their codes and nothing left; a server killed while
//! embedding leaves nothing behind; the OpenAPI document validates.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use fieldvox::auth::{Role, TokenKeys};
use fieldvox::store::{Holdings, MetadataStore};
use futures_util::StreamExt;
use serde_json::{Value, json};

const EQUIPMENT: &str = "BX-7";
const TITLE: &str = "BX-7 Service Manual";
const TORQUE_Q: &str = "What torque for the heat exchanger bolts on the BX-7?";

/// A service manual PDF written by fpdf2 (tests/clients/make_manual_pdf.py): the bolt
/// torque on page 4, two columns on page 2, no text layer on page 3.
fn manual_pdf(torque: u32, pages: u32) -> Vec<u8> {
    let out = std::env::temp_dir().join(format!("fieldvox-manual-{}.pdf", uuid::Uuid::new_v4()));
    let mut command = std::process::Command::new(client_tools().join("venv/bin/python"));
    command.arg(repo().join("tests/clients/make_manual_pdf.py")).arg(&out);
    command.args(["--torque", &torque.to_string(), "--pages", &pages.to_string()]);
    let status = command.status().expect("python with fpdf2 (scripts/setup.sh installs it)");
    assert!(status.success(), "{command:?}");
    let bytes = std::fs::read(&out).expect("pdf written");
    let _ = std::fs::remove_file(&out);
    bytes
}

struct Api {
    base: String,
    http: reqwest::Client,
    keys: TokenKeys,
}

impl Api {
    fn new(addr: std::net::SocketAddr, secret: &str) -> Self {
        Self { base: format!("http://{addr}"), http: reqwest::Client::new(), keys: TokenKeys::new(secret) }
    }

    fn token(&self, tenant: &str, role: Role) -> String {
        self.keys.mint("ann", tenant, role, 600)
    }

    async fn upload(&self, token: &str, bytes: Vec<u8>, filename: &str, title: &str) -> (u16, Value) {
        let form = reqwest::multipart::Form::new()
            .text("equipment", EQUIPMENT)
            .text("title", title.to_string())
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()));
        let resp = self.http.post(format!("{}/v1/manuals", self.base)).bearer_auth(token).multipart(form).send().await;
        let resp = resp.expect("upload answered");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("answered");
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    async fn search(&self, token: &str, question: &str) -> Value {
        let (status, body) =
            self.call(reqwest::Method::POST, "/v1/search", token, Some(json!({"question": question}))).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The job's server-sent events until the stream ends: (event name, job).
    async fn follow(&self, token: &str, job: &str) -> Vec<(String, Value)> {
        let resp = self.http.get(format!("{}/v1/jobs/{job}/events", self.base)).bearer_auth(token).send().await;
        let resp = resp.expect("events answered");
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut text = String::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("event bytes")));
            }
        };
        tokio::time::timeout(Duration::from_secs(300), read).await.expect("the job finishes");
        text.split("\n\n")
            .filter_map(|block| {
                let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((event.to_string(), serde_json::from_str(data).expect("json data")))
            })
            .collect()
    }
}

fn passages_text(results: &Value) -> String {
    results["passages"].as_array().unwrap().iter().map(|p| p["text"].as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_manual_uploaded_over_http_is_found_replaced_and_deleted() {
    let server = own_server(test_config(&temp_dir("manuals"))).await;
    let api = Api::new(server.addr, server.app.config.auth.signing_secret());
    let admin = api.token("acme", Role::Admin);
    let tech = api.token("acme", Role::Technician);

    let v1 = manual_pdf(40, 6);
    let (status, accepted) = api.upload(&admin, v1.clone(), "bx7.pdf", TITLE).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["version"], 1);
    let manual = accepted["manual_id"].as_str().unwrap().to_string();
    let events = api.follow(&admin, accepted["job_id"].as_str().unwrap()).await;
    let (last, job) = events.last().expect("events");
    assert_eq!((last.as_str(), job["state"].as_str()), ("done", Some("done")), "{events:?}");
    assert_eq!(job["chunks_done"], job["chunks_total"]);
    assert_eq!(job["pages"], 6);

    let (status, shown) = api.get(&format!("/v1/manuals/{manual}"), &tech).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!((shown["title"].as_str(), shown["version"].as_u64()), (Some(TITLE), Some(1)));
    assert_eq!(shown["blank_pages"], json!([3]), "the page with no text layer is reported");
    assert_eq!(shown["sha256"], fieldvox::rag::ingest::sha256_hex(&v1));
    assert_eq!((shown["size"].as_u64(), shown["uploaded_by"].as_str()), (Some(v1.len() as u64), Some("ann")));
    let (_, page2) = api.get(&format!("/v1/manuals/{manual}/pages/2"), &tech).await;
    let text = page2["text"].as_str().unwrap();
    assert!(text.contains("The burner nozzle size is 0.75 gallons per hour."), "{text}");
    assert!(text.contains("The flue gas temperature must stay below 260 degrees Celsius."), "columns unmixed: {text}");
    let (_, page3) = api.get(&format!("/v1/manuals/{manual}/pages/3"), &tech).await;
    assert_eq!((page3["text"].as_str(), page3["blank"].as_bool()), (Some(""), Some(true)));
    assert_eq!(api.get(&format!("/v1/manuals/{manual}/pages/7"), &tech).await.0, 404);

    let found = api.search(&tech, TORQUE_Q).await;
    assert_eq!(found["passages"][0]["page"], 4, "{found}");
    assert_eq!(found["passages"][0]["manual_id"], manual.as_str());
    assert!(found["passages"][0]["text"].as_str().unwrap().contains("40 newton meters"));
    let (answer, citations) = typed_turn(server.addr, &tech, TORQUE_Q).await;
    assert!(answer.contains("40"), "{answer}");
    assert_eq!((citations[0]["page"].as_u64(), citations[0]["title"].as_str()), (Some(4), Some(TITLE)));

    // A new version with a changed fact: searched all the while, never a mix, never a gap.
    let rev2 = manual_pdf(45, 6);
    let (status, accepted) = api.upload(&admin, rev2.clone(), "bx7-rev2.pdf", TITLE).await;
    assert_eq!((status, accepted["version"].as_u64()), (202, Some(2)), "{accepted}");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = tokio::spawn({
        let (api, tech, done) =
            (Api::new(server.addr, server.app.config.auth.signing_secret()), tech.clone(), done.clone());
        async move {
            let mut seen = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let text = passages_text(&api.search(&tech, TORQUE_Q).await);
                let (old, new) = (text.contains("40 newton meters"), text.contains("45 newton meters"));
                assert!(old ^ new, "one version, never both nor neither: {text}");
                seen.push(new);
            }
            seen
        }
    });
    let events = api.follow(&admin, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(events.last().unwrap().0, "done");
    let v2 = accepted["manual_id"].as_str().unwrap().to_string();
    let text = passages_text(&api.search(&tech, TORQUE_Q).await);
    assert!(text.contains("45 newton meters") && !text.contains("40 newton"), "the new fact at once: {text}");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.await.unwrap();
    assert!(!seen.is_empty());
    let (answer, citations) = typed_turn(server.addr, &tech, TORQUE_Q).await;
    assert!(answer.contains("45") && !answer.contains("40"), "{answer}");
    assert_eq!(citations[0]["manual_id"], v2.as_str());
    assert_eq!(api.get(&format!("/v1/manuals/{manual}"), &tech).await.0, 404, "version 1 is gone");

    // The same bytes again: the live manual, nothing re-ingested.
    let (status, same) = api.upload(&admin, rev2, "again.pdf", TITLE).await;
    assert_eq!((status, same["id"].as_str()), (200, Some(v2.as_str())), "{same}");

    let (_, listed) = api.get(&format!("/v1/manuals?equipment={EQUIPMENT}"), &tech).await;
    assert_eq!(listed["manuals"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["next_cursor"], Value::Null);
    let (_, equipment) = api.get("/v1/equipment", &tech).await;
    assert_eq!(equipment["equipment"], json!([{"id": EQUIPMENT, "manuals": 1}]));

    // Delete: the turn no longer finds it, and nothing of it is left.
    assert_eq!(api.call(reqwest::Method::DELETE, &format!("/v1/manuals/{v2}"), &tech, None).await.0, 403);
    assert_eq!(api.call(reqwest::Method::DELETE, &format!("/v1/manuals/{v2}"), &admin, None).await.0, 204);
    assert!(api.search(&tech, TORQUE_Q).await["passages"].as_array().unwrap().is_empty());
    let (answer, citations) = typed_turn(server.addr, &tech, TORQUE_Q).await;
    assert!(citations.is_empty() && !answer.contains("45"), "{answer} {citations:?}");
    assert_eq!(server.app.kb.store.holdings("acme").await.unwrap(), Holdings::default());
    assert_eq!(api.call(reqwest::Method::DELETE, &format!("/v1/manuals/{v2}"), &admin, None).await.0, 404);
}

/// The error code of a refusal, asserting its status.
fn refused(got: (u16, Value), status: u16, code: &str) {
    assert_eq!((got.0, got.1["error"].as_str()), (status, Some(code)), "{}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn bad_uploads_are_refused_with_their_code_and_leave_nothing() {
    let mut config = test_config(&temp_dir("manuals-bad"));
    config.ingest.max_bytes = 64 * 1024;
    config.ingest.max_pages = 8;
    let data = config.data.dir.clone();
    let server = own_server(config).await;
    let api = Api::new(server.addr, server.app.config.auth.signing_secret());
    let admin = api.token("acme", Role::Admin);

    refused(api.upload(&admin, Vec::new(), "empty.pdf", "Empty").await, 422, "empty_document");
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde".to_vec();
    refused(api.upload(&admin, png, "photo.pdf", "Photo").await, 415, "unsupported_media_type");
    let mut truncated = manual_pdf(40, 6);
    truncated.truncate(truncated.len() / 3);
    refused(api.upload(&admin, truncated, "cut.pdf", "Cut").await, 422, "invalid_document");
    // Four times the limit: the server stops reading at the limit and says why.
    let huge = vec![b'a'; 256 * 1024];
    refused(api.upload(&admin, huge, "huge.txt", "Huge").await, 413, "payload_too_large");
    refused(api.upload(&admin, manual_pdf(40, 10), "long.pdf", "Long").await, 413, "too_many_pages");
    refused(api.upload(&api.token("acme", Role::Technician), manual_pdf(40, 6), "m.pdf", "M").await, 403, "forbidden");
    refused(api.upload("not-a-token", manual_pdf(40, 6), "m.pdf", "M").await, 401, "malformed_token");
    assert_eq!(server.app.kb.store.holdings("acme").await.unwrap(), Holdings::default(), "nothing written");
    let leftovers = std::fs::read_dir(data.join("uploads")).map_or(0, |d| d.count());
    assert_eq!(leftovers, 0, "no temp file left");

    // Another tenant's manual and job: not found, exactly like ids that never existed.
    let (status, accepted) = api.upload(&admin, manual_pdf(40, 6), "bx7.pdf", TITLE).await;
    assert_eq!(status, 202, "{accepted}");
    let (manual, job) = (accepted["manual_id"].as_str().unwrap(), accepted["job_id"].as_str().unwrap());
    api.follow(&admin, job).await;
    let (status, seen) = api.get(&format!("/v1/jobs/{job}"), &api.token("acme", Role::Technician)).await;
    assert_eq!((status, seen["state"].as_str()), (200, Some("done")), "a read: technicians may follow it too");
    let other = api.token("globex", Role::Admin);
    for path in [
        format!("/v1/manuals/{manual}"),
        format!("/v1/manuals/{manual}/pages/1"),
        format!("/v1/jobs/{job}"),
        format!("/v1/jobs/{job}/events"),
        format!("/v1/manuals/{}", uuid::Uuid::new_v4()),
        "/v1/manuals/not-an-id".to_string(),
    ] {
        refused(api.get(&path, &other).await, 404, "not_found");
    }
    refused(api.call(reqwest::Method::DELETE, &format!("/v1/manuals/{manual}"), &other, None).await, 404, "not_found");
    assert_eq!(api.get("/v1/manuals", &other).await.1["manuals"], json!([]));
    assert!(api.search(&other, TORQUE_Q).await["passages"].as_array().unwrap().is_empty());
    assert_eq!(api.get(&format!("/v1/manuals/{manual}"), &admin).await.0, 200, "still there for its tenant");
    refused(api.get("/v1/manuals?cursor=bogus", &admin).await, 400, "invalid_request");
}

/// The `fieldvox serve` binary on `data`, and the address it listens on.
fn start_binary(data: &Path, secret: &str) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fieldvox"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .env("FIELDVOX__DATA__DIR", data)
        .env("FIELDVOX__PIPELINES__DIR", repo().join("pipelines"))
        .env("FIELDVOX__AUTH__JWT_SECRET", secret)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fieldvox runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
            if !sent && log["fields"]["message"] == "listening" {
                let addr = log["fields"]["addr"].as_str().unwrap_or_default().parse().ok();
                sent = tx.send(addr).is_ok();
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(120)).ok().flatten().expect("the server says where it listens");
    (child, addr)
}

#[tokio::test]
async fn a_server_killed_while_embedding_leaves_no_chunk_or_vector() {
    let data = temp_dir("manuals-kill");
    let secret = format!("kill-secret-{}", uuid::Uuid::new_v4().simple());
    let (mut server, addr) = start_binary(&data, &secret);
    let api = Api::new(addr, &secret);
    let admin = api.token("acme", Role::Admin);
    // Long enough to embed for seconds on any machine: the kill lands mid-embedding.
    let (status, accepted) = api.upload(&admin, manual_pdf(40, 400), "long.pdf", TITLE).await;
    assert_eq!(status, 202, "{accepted}");
    let job = accepted["job_id"].as_str().unwrap().to_string();
    let manual = accepted["manual_id"].as_str().unwrap().to_string();
    loop {
        let (_, state) = api.get(&format!("/v1/jobs/{job}"), &admin).await;
        assert_ne!(state["state"], "done", "the job finished before the kill: make the manual longer");
        if state["state"] == "embedding" && state["chunks_done"].as_u64() > Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().unwrap();

    let (mut server, addr) = start_binary(&data, &secret);
    let api = Api::new(addr, &secret);
    let (status, state) = api.get(&format!("/v1/jobs/{job}"), &admin).await;
    assert_eq!((status, state["state"].as_str(), state["error"].as_str()), (200, Some("failed"), Some("interrupted")));
    assert_eq!(api.get(&format!("/v1/manuals/{manual}"), &admin).await.0, 404);
    // Stopped cleanly, the data dir is opened here to look for leftovers directly.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    server.wait().unwrap();
    let store = fieldvox::store::sqlite::SqliteStore::open(&data.join("fieldvox.sqlite")).unwrap();
    assert_eq!(store.holdings("acme").await.unwrap(), Holdings::default(), "no chunk or manual row");
    let index = fieldvox::vector::edge::EdgeIndex::open(&data.join("vectors")).unwrap();
    let query = fieldvox::vector::VectorQuery {
        tenant: "acme".into(),
        equipment: None,
        vector: vec![1.0 / (fieldvox::vector::DIMENSIONS as f32).sqrt(); fieldvox::vector::DIMENSIONS],
        limit: 10,
    };
    use fieldvox::vector::VectorIndex;
    assert!(index.search(query).await.unwrap().is_empty(), "no vector of the killed job");
}

#[tokio::test]
async fn the_openapi_document_validates_and_lists_every_route() {
    let h = harness();
    let doc: Value = reqwest::get(format!("http://{}/openapi.json", h.addr)).await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/manuals", "post"),
        ("/v1/manuals", "get"),
        ("/v1/manuals/{id}", "get"),
        ("/v1/manuals/{id}", "delete"),
        ("/v1/manuals/{id}/pages/{page}", "get"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}/events", "get"),
        ("/v1/equipment", "get"),
        ("/v1/search", "post"),
        ("/v1/turns", "get"),
        ("/v1/usage", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    let file = std::env::temp_dir().join(format!("fieldvox-openapi-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, doc.to_string()).unwrap();
    let check = "import sys, json; from openapi_spec_validator import validate, OpenAPIV31SpecValidator; \
                 validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator); print('{\"valid\": true}')";
    let mut command = std::process::Command::new(client_tools().join("venv/bin/python"));
    command.args(["-c", check]).arg(&file);
    assert_eq!(run_client(command)["valid"], true);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn the_manuals_command_uploads_lists_shows_and_deletes_over_http() {
    let server = own_server(test_config(&temp_dir("manuals-cli"))).await;
    let secret = server.app.config.auth.signing_secret().to_string();
    let file = std::env::temp_dir().join(format!("fieldvox-cli-{}.pdf", uuid::Uuid::new_v4()));
    std::fs::write(&file, manual_pdf(40, 6)).unwrap();
    let url = format!("http://{}", server.addr);
    let run = move |args: Vec<String>| {
        let (url, secret) = (url.clone(), secret.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_fieldvox"))
                .arg("manuals")
                .args(&args)
                .args(["--url", &url, "--tenant", "acme", "--user", "ann"])
                .env("FIELDVOX__AUTH__JWT_SECRET", &secret)
                .env("RUST_LOG", "error")
                .output()
                .expect("fieldvox runs")
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let path = file.to_string_lossy().into_owned();
    let out = run(args(&["upload", &path, "--equipment", EQUIPMENT, "--title", TITLE])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manual: Value = serde_json::from_slice(&out.stdout).expect("the manual as JSON");
    assert_eq!((manual["title"].as_str(), manual["pages"].as_u64()), (Some(TITLE), Some(6)));
    let id = manual["id"].as_str().unwrap().to_string();

    let out = run(args(&["list"])).await.unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&id) && listing.contains(TITLE), "{listing}");
    let out = run(args(&["show", &id])).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"], id.as_str());
    let out = run(args(&["delete", &id])).await.unwrap();
    assert!(out.status.success());
    let out = run(args(&["show", &id])).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&file);
}
