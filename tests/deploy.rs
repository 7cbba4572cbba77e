//! `deploy/`, checked as far as a machine without a container runtime can: the Dockerfile
//! passes hadolint, the Kubernetes manifests validate against the API's schemas, the
//! compose file parses into the services it promises, the drain times agree, and every
//! metric the Grafana dashboard and the alert rules name is one a live server exports.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use fieldvox::auth::Role;
use serde_json::{Value, json};

/// A tool the setup step installs into the test clients' virtualenv.
fn venv_tool(name: &str) -> PathBuf {
    client_tools().join("venv/bin").join(name)
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

/// A YAML file as JSON (parsed by PyYAML, which kubernetes-validate brings).
fn yaml(path: &PathBuf) -> Value {
    let out = Command::new(venv_tool("python"))
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(path)
        .output()
        .expect("python runs (scripts/setup.sh makes the venv)");
    assert!(out.status.success(), "{} does not parse: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let out = Command::new(venv_tool("hadolint"))
        .arg("--config")
        .arg(deploy(".hadolint.yaml"))
        .arg(deploy("Dockerfile"))
        .output()
        .expect("hadolint runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).expect("Dockerfile");
    for needed in ["models/fetch.py", "USER 10001", "HEALTHCHECK", "/healthz"] {
        assert!(dockerfile.contains(needed), "the Dockerfile lacks {needed}");
    }
}

#[test]
fn the_kubernetes_manifests_validate_and_drain_in_time() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy("k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let out = Command::new(venv_tool("kubernetes-validate"))
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .expect("kubernetes-validate runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let docs: Vec<Value> = files.iter().flat_map(|f| yaml(f).as_array().cloned().unwrap_or_default()).collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "PodDisruptionBudget", "Secret", "Service"]
    {
        assert!(kinds.contains(kind), "no {kind} in deploy/k8s: {kinds:?}");
    }
    // The pod is given time for its preStop pause and the server's whole drain.
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("termination grace");
    let pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().expect("preStop sleep");
    let config = docs.iter().find(|d| d["kind"] == "ConfigMap").expect("ConfigMap");
    let text = config["data"]["fieldvox.toml"].as_str().expect("fieldvox.toml");
    let config: fieldvox::config::Config = toml::from_str(text).expect("the ConfigMap is a valid fieldvox config");
    let drain_ms = config.server.shutdown_grace_ms;
    assert!(grace * 1000 > pause * 1000 + drain_ms, "grace {grace} s < preStop {pause} s + drain {drain_ms} ms");
}

#[test]
fn compose_runs_two_instances_behind_nginx_with_their_backends_and_watchers() {
    let compose = &yaml(&deploy("compose.yaml"))[0];
    let services: BTreeSet<&str> =
        compose["services"].as_object().expect("services").keys().map(String::as_str).collect();
    let wanted = ["fieldvox-1", "fieldvox-2", "grafana", "mongodb", "nginx", "prometheus", "qdrant", "redis"];
    assert_eq!(services, wanted.into_iter().collect(), "{compose}");
    for instance in ["fieldvox-1", "fieldvox-2"] {
        let s = &compose["services"][instance];
        assert_eq!(s["build"]["dockerfile"], "deploy/Dockerfile", "{s}");
        assert_eq!(s["stop_grace_period"], "25s", "{s}");
    }
    let nginx = std::fs::read_to_string(deploy("nginx.conf")).expect("nginx.conf");
    for needed in ["server fieldvox-1:8080", "server fieldvox-2:8080", "proxy_set_header Upgrade"] {
        assert!(nginx.contains(needed), "nginx.conf lacks {needed}");
    }
    // The instances' config is a valid fieldvox config on the shared backends.
    let text = std::fs::read_to_string(deploy("fieldvox.toml")).expect("fieldvox.toml");
    let config: fieldvox::config::Config = toml::from_str(&text).expect("a valid fieldvox config");
    assert_eq!(config.server.shutdown_grace_ms, 20_000, "stop_grace_period 25 s covers it");
    let b = &config.backends;
    assert_eq!(
        format!("{:?}", (b.metadata, b.vectors, b.cache, b.sessions, b.limits)),
        "(Mongodb, Qdrant, Redis, Redis, Redis)"
    );
}

/// Every `fieldvox_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("fieldvox_") {
        let name: String =
            text[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        names.insert(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let mut config = test_config(&temp_dir("deploy-metrics"));
    // Limits on, so that their decisions are counted too.
    config.limits = Default::default();
    let server = own_server(config).await;
    ingest_rtu40(&server.app, "acme").await;
    // A turn, an error and a readiness check: every series the panels draw exists.
    let token = server.mint("tech-1", "acme", Role::Technician);
    let mut c = open_session(server.addr, &token).await;
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": "What torque for the compressor head bolts on the RTU-40?"}}))
        .await;
    assert_eq!(c.answer().await["status"], "completed");
    c.send_raw(tokio_tungstenite::tungstenite::Message::text("{not json")).await;
    assert_eq!(c.next_event().await["error"]["code"], "invalid_json");
    let http = reqwest::Client::new();
    let ready = http.get(format!("http://{}/readyz", server.addr)).send().await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);

    let ops = server.mint("prometheus", "ops", Role::Ops);
    let scrape = http
        .get(format!("http://{}/metrics", server.addr))
        .bearer_auth(&ops)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text");
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let dashboard = std::fs::read_to_string(deploy("grafana/dashboards/fieldvox.json")).expect("dashboard");
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts");
    serde_json::from_str::<Value>(&dashboard).expect("the dashboard is JSON");
    let named = metric_names(&dashboard).into_iter().chain(metric_names(&alerts)).collect::<BTreeSet<_>>();
    assert!(named.len() >= 10, "{named:?}");
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}\nexported: {exported:?}");
    assert!(scrape.contains("fieldvox_sessions_max 60000"), "the session cap is exported");
}
