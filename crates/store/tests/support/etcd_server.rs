//! A throwaway etcd server on loopback ports, for tests and the benchmark.
//!
//! Included with `#[path = "support/etcd_server.rs"] mod etcd_server;`.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("ETCD_BIN") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let default = PathBuf::from("/usr/bin/etcd");
        default.is_file().then_some(default)
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One etcd member with its own data directory; killed when dropped.
pub struct EtcdServer {
    binary: PathBuf,
    /// Where etcd's data and log live.
    pub dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// Server certificate, key and client CA (PEM paths) for `https` client URLs.
    tls: Option<[PathBuf; 3]>,
    child: Mutex<Option<Child>>,
}

impl EtcdServer {
    /// Starts etcd (panics if there is no etcd binary) and waits until its client port accepts.
    pub fn start() -> EtcdServer {
        Self::start_in(None)
    }

    /// Like [`EtcdServer::start`], with the data directory under `base` if given.
    pub fn start_in(base: Option<&std::path::Path>) -> EtcdServer {
        Self::start_with(base, None)
    }

    /// Starts etcd serving clients over TLS with `[cert, key, client_ca]` (client certificates
    /// required), or plain HTTP without.
    pub fn start_with(base: Option<&std::path::Path>, tls: Option<[PathBuf; 3]>) -> EtcdServer {
        let binary =
            etcd_binary().expect("no etcd binary (install Debian's etcd-server, or set ETCD_BIN)");
        let dir = match base {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let server = EtcdServer {
            binary,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            child: Mutex::new(None),
        };
        server.launch();
        server
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn launch(&self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let mut command = Command::new(&self.binary);
        if let Some([cert, key, ca]) = &self.tls {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=default")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        // A watchdog that kills etcd once this process is gone, even if `Drop` never runs
        // (a server kept in a `static`, a test binary killed by a timeout). It exits by itself
        // when etcd does, so it is not waited for.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {parent} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill -9 {pid} 2>/dev/null",
                parent = std::process::id()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.client_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not listen within 20 s; log: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        let guard = self.child.lock().unwrap();
        let child = guard.as_ref().expect("etcd is not running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Freezes etcd (SIGSTOP): connections stay open but nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
        // The signal reaches every thread of etcd asynchronously.
        let pid = self.child.lock().unwrap().as_ref().map(Child::id);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(pid) = pid {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            if state.starts_with('T') || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Lets a paused etcd run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills etcd (SIGKILL) and waits for it to exit.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory.
    pub fn restart(&self) {
        self.kill();
        self.launch();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
