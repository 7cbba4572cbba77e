//! Real backend servers for tests, each on a free loopback port in a temp dir of its
//! own, stopped (and its files removed) when dropped: `redis-server` from Debian and
//! `nx-27017`, a MongoDB wire-protocol server from PyPI (scripts/setup.sh installs both).
//! Production needs real MongoDB; nx-27017 speaks its protocol over SQLite.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{client_tools, temp_dir};

/// How long a server may take to accept connections after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Service {
    name: &'static str,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// A Redis server with nothing persisted.
    pub fn redis() -> Self {
        Self::start("redis")
    }

    /// A MongoDB wire-protocol server keeping its data in its temp dir (kept across a
    /// stop and start, like a real one).
    pub fn mongodb() -> Self {
        Self::start("mongodb")
    }

    fn start(name: &'static str) -> Self {
        let dir = temp_dir(&format!("service-{name}"));
        // A port free a moment ago can be taken before the server binds it: try another.
        for _ in 0..5 {
            let port = free_port();
            let mut service = Self { name, port, dir: dir.clone(), child: None };
            if service.launch() {
                return service;
            }
        }
        panic!("{name} did not start; see the logs in {}", dir.display());
    }

    fn command(&self) -> Command {
        let port = self.port.to_string();
        match self.name {
            "redis" => {
                let mut c = Command::new("redis-server");
                c.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&self.dir)
                    .arg("--logfile")
                    .arg(self.dir.join("redis.log"));
                c
            }
            _ => {
                let mut c = Command::new(client_tools().join("venv/bin/nx-27017"));
                // One file per logical database, as MongoDB keeps databases apart.
                c.arg("--data-dir")
                    .arg(self.dir.join("nx"))
                    .args(["--host", "127.0.0.1", "-p", &port])
                    .arg("--log-file")
                    .arg(self.dir.join("nx.log"))
                    .arg("--pid-file")
                    .arg(self.dir.join("nx.pid"));
                c
            }
        }
    }

    /// Its log, and the line it writes there once it listens on its port.
    fn log_and_ready_line(&self) -> (PathBuf, String) {
        match self.name {
            "redis" => (self.dir.join("redis.log"), "Ready to accept connections".into()),
            _ => (self.dir.join("nx.log"), format!("Listening on 127.0.0.1:{}", self.port)),
        }
    }

    /// Starts the server on its port; true once it says, in its own log, that it listens.
    /// A server of another test that took the port meanwhile would accept connections
    /// too: the log tells ours from it.
    fn launch(&mut self) -> bool {
        let (log, ready) = self.log_and_ready_line();
        let logged_before = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} cannot be run (scripts/setup.sh installs it): {e}", self.name));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.as_mut().and_then(|c| c.try_wait().ok()).flatten().is_some() {
                self.child = None;
                return false; // exited: the port was taken
            }
            let said = std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(b.get(logged_before..).unwrap_or_default()).into_owned());
            if said.is_ok_and(|text| text.contains(&ready))
                && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop();
        false
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        match self.name {
            "redis" => format!("redis://127.0.0.1:{}", self.port),
            _ => format!("mongodb://127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (as a crash would) and waits until its port refuses.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port, with the data it kept.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.launch() {
            assert!(Instant::now() < deadline, "{} did not restart on port {}", self.name, self.port);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
