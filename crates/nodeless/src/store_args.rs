//! The store flags shared by `up`, `server`, `export` and `import`, the code that opens the
//! store they select, and the pid file that tells `export`/`import` a server is using a data dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::ValueEnum;
use nodeless_store::{SqliteStore, Store};

/// The SQLite database's file name under the data dir.
pub const SQLITE_FILE: &str = "state.db";

/// The file a running server keeps its process id in, under the data dir.
pub const PID_FILE: &str = "nodeless.pid";

/// Which backend keeps the cluster state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite under the data dir.
    Sqlite,
    /// An external etcd v3 cluster.
    Etcd,
}

/// The flags that select and reach the store (flattened into each command's arguments).
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// Which store keeps the cluster state.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    pub store: StoreKind,
    /// etcd endpoints (comma separated), with `--store etcd`.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Prepended to every etcd key (the keys themselves start with `/registry/`, as upstream's).
    #[arg(long, default_value = "")]
    pub etcd_prefix: String,
    /// CA certificate that signed etcd's serving certificate (TLS to etcd).
    #[arg(long, requires_all = ["etcd_certfile", "etcd_keyfile"])]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
}

impl StoreArgs {
    /// A short description of the store for messages: `sqlite (PATH)` or `etcd (URLS)`.
    pub fn describe(&self, data_dir: &Path) -> String {
        match self.store {
            StoreKind::Sqlite => format!("sqlite ({})", data_dir.join(SQLITE_FILE).display()),
            StoreKind::Etcd => format!("etcd ({})", self.etcd_endpoints.join(",")),
        }
    }
}

/// Opens the store the flags select: `DATA_DIR/state.db` (created with the data dir if
/// missing) or a connection to etcd.
pub async fn open_store(data_dir: &Path, args: &StoreArgs) -> anyhow::Result<Arc<dyn Store>> {
    match args.store {
        StoreKind::Sqlite => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
            let path = data_dir.join(SQLITE_FILE);
            let store =
                SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreKind::Etcd => {
            if args.etcd_endpoints.is_empty() {
                bail!("--store etcd needs --etcd-endpoints URL[,URL...]");
            }
            let tls = match (&args.etcd_cafile, &args.etcd_certfile, &args.etcd_keyfile) {
                (Some(ca), Some(cert), Some(key)) => Some(nodeless_store::TlsFiles {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            };
            let options = nodeless_store::EtcdOptions {
                prefix: args.etcd_prefix.clone(),
                tls,
                ..nodeless_store::EtcdOptions::new(args.etcd_endpoints.clone())
            };
            let store = nodeless_store::EtcdStore::connect(options)
                .await
                .with_context(|| {
                    format!("connecting to etcd at {}", args.etcd_endpoints.join(","))
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// `DATA_DIR/nodeless.pid` while a server runs on the data dir; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id to `DATA_DIR/nodeless.pid` (creating the data dir).
    pub fn create(data_dir: &Path) -> std::io::Result<PidFile> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(PID_FILE);
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(PidFile { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the pid file");
        }
    }
}

/// The id of a live `nodeless` process that holds the data dir's pid file, if any.
///
/// A pid file left behind by a killed server is ignored: its process is gone, is a zombie, or
/// is some other program that reused the id.
pub fn running_server(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join(PID_FILE)).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    if pid == std::process::id() {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`; comm may contain spaces and parentheses, so split at the last ')'.
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map(|(_, comm)| comm)?;
    let state = tail.trim_start().chars().next()?;
    (comm.contains("nodeless") && state != 'Z' && state != 'X').then_some(pid)
}

/// Fails if a server is running on the data dir (for commands that must not share it).
pub fn ensure_no_server(data_dir: &Path, command: &str) -> anyhow::Result<()> {
    if let Some(pid) = running_server(data_dir) {
        bail!(
            "a nodeless server (pid {pid}) is running on {}; stop it before `nodeless {command}` \
             (if no server runs there, remove the stale {})",
            data_dir.display(),
            data_dir.join(PID_FILE).display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_of_this_process_or_a_dead_one_is_not_a_running_server() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running_server(dir.path()), None, "no pid file");
        {
            let _pid = PidFile::create(dir.path()).unwrap();
            assert!(dir.path().join(PID_FILE).exists());
            // Our own id is ignored (and this test binary is not called nodeless anyway).
            assert_eq!(running_server(dir.path()), None);
        }
        assert!(!dir.path().join(PID_FILE).exists(), "removed on drop");
        // A process that has exited (and been reaped).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(PID_FILE), format!("{pid}\n")).unwrap();
        assert_eq!(running_server(dir.path()), None);
        // A live process that is not nodeless (pid reuse).
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join(PID_FILE), format!("{}\n", sleeper.id())).unwrap();
        assert_eq!(running_server(dir.path()), None);
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(ensure_no_server(dir.path(), "export").is_ok());
    }
}
