//! Image fixtures for real pods: an OCI registry on loopback (Debian's `docker-registry`) and a
//! busybox image built once per test process from Debian's `busybox-static` with `umoci`, pushed
//! with `skopeo`.
//!
//! ```ignore
//! let registry = Registry::start();
//! let image = registry.push_busybox("busybox", "1.0"); // "127.0.0.1:PORT/busybox:1.0"
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The PATH every image gets unless its [`ImageConfig::env`] sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The tag of the plain busybox image (Cmd `["sh"]`) in [`oci_layout_dir`].
pub const BASE_TAG: &str = "latest";

/// The tag, in [`oci_layout_dir`], of the image with the busybox root filesystem and an empty
/// config; the configured images are made from it.
const ROOTFS_TAG: &str = "rootfs";

/// The image config of a pushed busybox image. Every field is the image's whole value: `None`
/// leaves it unset (no entrypoint, no cmd, ...). `env` gets [`DEFAULT_PATH`] in front unless it
/// sets `PATH` itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env` (`NAME=value`), beside the default PATH.
    pub env: Vec<String>,
    /// `User` (`uid`, `uid:gid` or a name from the image's /etc/passwd: root, nobody).
    pub user: Option<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// Dynamically linked programs of this machine copied into the image at their paths, with
    /// the shared libraries `ldd` names, glibc's NSS modules and an `/etc/nsswitch.conf` of
    /// `hosts: files dns`: e.g. [`RESOLVER_PROGRAMS`], so that names resolve through the pod's
    /// resolv.conf (search path, ndots) as in upstream images. Static busybox cannot do that:
    /// its `wget`/`nc` crash loading NSS, its `nslookup` ignores the search path.
    pub host_programs: Vec<String>,
}

/// glibc's `getent` and GNU `wget` (both before busybox in [`DEFAULT_PATH`]): the clients of an
/// image that resolves short names like an upstream pod (`getent hosts web`, `wget http://web`).
pub const RESOLVER_PROGRAMS: &[&str] = &["/usr/bin/getent", "/usr/bin/wget"];

impl ImageConfig {
    /// The config of [`Registry::push_busybox`]'s image: Cmd `["sh"]`, Env the default PATH.
    pub fn busybox() -> Self {
        Self::with_cmd(&["sh"])
    }

    /// A config with only a Cmd (and the default PATH), e.g. `&["httpd", "-f", "-p", "8080"]`.
    pub fn with_cmd(cmd: &[&str]) -> Self {
        ImageConfig {
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    /// This config with [`RESOLVER_PROGRAMS`] in the image.
    pub fn with_resolver(mut self) -> Self {
        self.host_programs = RESOLVER_PROGRAMS.iter().map(|p| p.to_string()).collect();
        self
    }

    /// The image's Env: the configured one, with the default PATH first unless it has a PATH.
    pub fn full_env(&self) -> Vec<String> {
        let mut env = Vec::new();
        if !self.env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_string());
        }
        env.extend(self.env.iter().cloned());
        env
    }
}

/// A `docker-registry serve` on `127.0.0.1:<free port>` with filesystem storage in a temp dir,
/// optionally with htpasswd (basic) auth or TLS. Killed by its pid on drop.
pub struct Registry {
    child: Child,
    port: u16,
    credentials: Option<(String, String)>,
    /// With TLS: the registry's self-signed certificate (for `127.0.0.1`), its own CA.
    ca_file: Option<PathBuf>,
    /// Holds the config, the storage (`storage/`), the log (`registry.log`), htpasswd.
    pub dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry without auth and waits until `/v2/` answers.
    pub fn start() -> Self {
        Self::launch(None, false)
    }

    /// Starts a registry that serves only HTTPS, with a self-signed certificate for
    /// `127.0.0.1` made by `openssl` ([`Registry::ca_file`]).
    pub fn start_tls() -> Self {
        Self::launch(None, true)
    }

    /// The PEM certificate that verifies a registry started with [`Registry::start_tls`].
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Starts a registry that requires basic auth as `user`/`password` (a bcrypt htpasswd file
    /// made with `htpasswd -Bbn`) for every request, pulls included.
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_string(), password.to_string())), false)
    }

    fn launch(credentials: Option<(String, String)>, tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("nodeless-registry-")
            .tempdir()
            .expect("registry temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("registry storage dir");
        let auth_section = match &credentials {
            Some((user, password)) => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .expect("run htpasswd (apt-get install apache2-utils)");
                assert!(
                    out.status.success(),
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, &out.stdout).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: nodeless-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let (tls_section, ca_file) = if tls {
            let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            run(
                Command::new("openssl")
                    .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                    .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
                    .args([
                        "-subj",
                        "/CN=127.0.0.1",
                        "-addext",
                        "subjectAltName=IP:127.0.0.1",
                    ])
                    .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
                "openssl req (apt-get install openssl)",
            );
            let section = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            (section, Some(cert))
        } else {
            (String::new(), None)
        };
        // A port taken between our probe and the registry's bind makes it exit: try another.
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: nodeless-test-registry\n\
                     {tls_section}{auth_section}",
                    storage = storage.display(),
                ),
            )
            .expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("registry log"))
                .stderr(log)
                .spawn()
                .expect("run docker-registry (apt-get install docker-registry)");
            let host = format!("127.0.0.1:{port}");
            if wait_ready(&mut child, &host, tls, Duration::from_secs(20)) {
                return Registry {
                    child,
                    port,
                    credentials,
                    ca_file,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("docker-registry did not start; log:\n{last_log}");
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user and password of a registry started with [`Registry::start_with_auth`].
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's pid (it is killed by this pid on drop).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The HTTP status of a GET of `path` (e.g. `/v2/`, `/v2/NAME/manifests/TAG`, accepting OCI
    /// and Docker v2 manifests), with basic auth when `credentials` is given; panics if the registry does not answer.
    pub fn get_status(&self, path: &str, credentials: Option<(&str, &str)>) -> u16 {
        http_status(&self.host(), path, credentials)
            .unwrap_or_else(|| panic!("registry gave no answer to GET {path}"))
    }

    /// Pushes the busybox image (Cmd `["sh"]`, Env PATH) as `repository:tag` and returns its full
    /// reference `127.0.0.1:PORT/repository:tag`.
    pub fn push_busybox(&self, repository: &str, tag: &str) -> String {
        self.push_busybox_with(repository, tag, ImageConfig::busybox())
    }

    /// Pushes the busybox root filesystem with the image config `config` as `repository:tag`
    /// and returns its full reference `127.0.0.1:PORT/repository:tag`.
    pub fn push_busybox_with(&self, repository: &str, tag: &str, config: ImageConfig) -> String {
        let reference = format!("{}/{repository}:{tag}", self.host());
        let layout = BusyboxLayout::get();
        layout.with_tag(&config, |layout_tag| {
            let mut cmd = Command::new("skopeo");
            cmd.args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
            ])
            // Never pick up credentials from the user's auth files.
            .env("REGISTRY_AUTH_FILE", self.dir.path().join("no-auth.json"));
            if let Some((user, password)) = self.credentials() {
                cmd.arg(format!("--dest-creds={user}:{password}"));
            }
            cmd.arg(format!("oci:{}:{layout_tag}", layout.dir.display()))
                .arg(format!("docker://{reference}"));
            run(&mut cmd, "skopeo copy");
        });
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The busybox OCI image layout, built once per test process: tag [`BASE_TAG`] is the plain
/// busybox image (Cmd `["sh"]`, Env PATH). For benchmarks that compare with a bare runtime;
/// `ctr images import` wants an archive: see [`busybox_archive`].
pub fn oci_layout_dir() -> &'static Path {
    &BusyboxLayout::get().dir
}

/// The plain busybox image as a docker-archive tarball named `docker.io/library/busybox:latest`,
/// made once per test process, for `ctr -n NS images import FILE`.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let layout = BusyboxLayout::get();
        let path = layout.dir.with_extension("docker.tar");
        let _ = std::fs::remove_file(&path);
        run(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--quiet"])
                .arg(format!("oci:{}:{BASE_TAG}", layout.dir.display()))
                .arg(format!(
                    "docker-archive:{}:docker.io/library/busybox:latest",
                    path.display()
                )),
            "skopeo copy to docker-archive",
        );
        path
    })
}

/// The cached layout and the tags made in it for each config pushed so far.
struct BusyboxLayout {
    dir: PathBuf,
    /// Config → tag in `dir`. Writers (`umoci config`) take the write lock; pushes (skopeo
    /// reading the layout) hold the read lock, so no push reads a half-written index.json.
    tags: RwLock<HashMap<ImageConfig, String>>,
    /// Host programs → the tag of the root filesystem with them added (made under the write
    /// lock of `tags`).
    rootfs_tags: std::sync::Mutex<HashMap<Vec<String>, String>>,
}

impl BusyboxLayout {
    fn get() -> &'static BusyboxLayout {
        static LAYOUT: OnceLock<BusyboxLayout> = OnceLock::new();
        LAYOUT.get_or_init(BusyboxLayout::build)
    }

    /// Builds the layout in `CARGO_TARGET_TMPDIR/nodeless-images/busybox-oci-<pid>` (removing
    /// those of processes that have ended: a static is never dropped).
    fn build() -> BusyboxLayout {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nodeless-images");
        std::fs::create_dir_all(&parent).expect("image cache dir");
        remove_stale_layouts(&parent);
        let dir = parent.join(format!("busybox-oci-{}", std::process::id()));
        let bundle = parent.join(format!("busybox-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&bundle);
        let started = Instant::now();

        let image = |tag: &str| format!("{}:{tag}", dir.display());
        run(
            Command::new("umoci").args(["init", "--layout"]).arg(&dir),
            "umoci init",
        );
        run(
            Command::new("umoci")
                .args(["new", "--image"])
                .arg(image(ROOTFS_TAG)),
            "umoci new",
        );
        // --rootless works as root too, and records every file as 0:0.
        run(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(image(ROOTFS_TAG))
                .arg(&bundle),
            "umoci unpack",
        );
        fill_rootfs(&bundle.join("rootfs"));
        run(
            Command::new("umoci")
                .args(["repack", "--image"])
                .arg(image(ROOTFS_TAG))
                .arg(&bundle),
            "umoci repack",
        );
        let _ = std::fs::remove_dir_all(&bundle);

        let layout = BusyboxLayout {
            dir,
            tags: RwLock::new(HashMap::new()),
            rootfs_tags: std::sync::Mutex::new(HashMap::new()),
        };
        // The config goes on after the repack (a repack rewrites the config it started from).
        let base = ImageConfig::busybox();
        layout.configure(&base, BASE_TAG);
        layout
            .tags
            .write()
            .expect("layout lock")
            .insert(base, BASE_TAG.to_string());
        eprintln!(
            "registry fixture: busybox OCI layout built in {:?} at {}",
            started.elapsed(),
            layout.dir.display()
        );
        layout
    }

    /// Runs `f` with the layout's tag for `config` (made on first use), under the read lock.
    fn with_tag<R>(&self, config: &ImageConfig, f: impl FnOnce(&str) -> R) -> R {
        loop {
            {
                let tags = self.tags.read().expect("layout lock");
                if let Some(tag) = tags.get(config) {
                    return f(tag);
                }
            }
            let mut tags = self.tags.write().expect("layout lock");
            if !tags.contains_key(config) {
                let tag = format!("config-{}", tags.len());
                self.configure(config, &tag);
                tags.insert(config.clone(), tag);
            }
        }
    }

    /// The tag of the root filesystem with `programs` added (a second layer over
    /// [`ROOTFS_TAG`], made on first use); [`ROOTFS_TAG`] itself for none. Called under the
    /// write lock of `tags`.
    fn rootfs_tag(&self, programs: &[String]) -> String {
        if programs.is_empty() {
            return ROOTFS_TAG.to_string();
        }
        let mut rootfs_tags = self.rootfs_tags.lock().expect("rootfs lock");
        if let Some(tag) = rootfs_tags.get(programs) {
            return tag.clone();
        }
        let tag = format!("rootfs-{}", rootfs_tags.len() + 1);
        let bundle = self.dir.with_extension(format!("bundle-{tag}"));
        let _ = std::fs::remove_dir_all(&bundle);
        run(
            Command::new("umoci")
                .args(["unpack", "--rootless", "--image"])
                .arg(format!("{}:{ROOTFS_TAG}", self.dir.display()))
                .arg(&bundle),
            "umoci unpack",
        );
        add_host_programs(&bundle.join("rootfs"), programs);
        run(
            Command::new("umoci")
                .args(["repack", "--image"])
                .arg(format!("{}:{tag}", self.dir.display()))
                .arg(&bundle),
            "umoci repack",
        );
        let _ = std::fs::remove_dir_all(&bundle);
        rootfs_tags.insert(programs.to_vec(), tag.clone());
        tag
    }

    /// Tags `tag` as the rootfs image (with its host programs) with `config` (`umoci config`).
    fn configure(&self, config: &ImageConfig, tag: &str) {
        let rootfs = self.rootfs_tag(&config.host_programs);
        let mut cmd = Command::new("umoci");
        cmd.arg("config")
            .arg("--image")
            .arg(format!("{}:{rootfs}", self.dir.display()))
            .args(["--tag", tag, "--os", "linux", "--architecture", "amd64"]);
        for arg in config.entrypoint.iter().flatten() {
            cmd.arg(format!("--config.entrypoint={arg}"));
        }
        for arg in config.cmd.iter().flatten() {
            cmd.arg(format!("--config.cmd={arg}"));
        }
        for env in config.full_env() {
            cmd.arg(format!("--config.env={env}"));
        }
        if let Some(user) = &config.user {
            cmd.arg(format!("--config.user={user}"));
        }
        if let Some(dir) = &config.working_dir {
            cmd.arg(format!("--config.workingdir={dir}"));
        }
        run(&mut cmd, "umoci config");
    }
}

/// Lays out the busybox root filesystem: /bin/busybox (static) with a symlink per applet in
/// /bin, /etc/passwd and /etc/group with root and nobody (65534), /tmp mode 1777, /root.
fn fill_rootfs(rootfs: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let busybox = Path::new("/bin/busybox");
    let bin = rootfs.join("bin");
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    std::fs::copy(busybox, bin.join("busybox")).expect("copy /bin/busybox (busybox-static)");
    std::fs::set_permissions(bin.join("busybox"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    assert!(list.status.success(), "busybox --list failed");
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        symlink("busybox", bin.join(applet)).expect("applet symlink");
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write /etc/passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")
        .expect("write /etc/group");
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod /tmp");
    std::fs::set_permissions(rootfs.join("root"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod /root");
}

/// Copies each of `programs` (absolute host paths) into `rootfs` at its path, with the shared
/// libraries `ldd` lists for it, glibc's NSS modules for files and DNS, and an
/// `/etc/nsswitch.conf` of `hosts: files dns`.
fn add_host_programs(rootfs: &Path, programs: &[String]) {
    use std::collections::BTreeSet;
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for program in programs {
        files.insert(PathBuf::from(program));
        let out = Command::new("ldd")
            .arg(program)
            .output()
            .unwrap_or_else(|e| panic!("ldd {program}: {e}"));
        assert!(out.status.success(), "ldd {program} failed");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = line
                .split("=>")
                .last()
                .and_then(|rest| rest.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(path) = path {
                files.insert(PathBuf::from(path));
            }
        }
    }
    for module in ["libnss_dns.so.2", "libnss_files.so.2", "libresolv.so.2"] {
        let path = Path::new("/lib/x86_64-linux-gnu").join(module);
        if path.exists() {
            files.insert(path);
        }
    }
    for file in &files {
        let target = rootfs.join(file.strip_prefix("/").expect("absolute path"));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("rootfs dir");
        // Follows symlinks (/lib64/ld-linux-x86-64.so.2): the image gets the file itself.
        std::fs::copy(file, &target)
            .unwrap_or_else(|e| panic!("copy {} into the image: {e}", file.display()));
    }
    std::fs::write(
        rootfs.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )
    .expect("write /etc/nsswitch.conf");
}

/// Removes `busybox-*-<pid>` entries of `parent` whose process is gone.
fn remove_stale_layouts(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("busybox-")
            .and_then(|rest| rest.split(['-', '.']).nth(1))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// Waits until `/v2/` on `host` answers (200, or 401 with auth; with `tls`, the 400 that an
/// HTTPS server gives a plain HTTP request); false if `child` exited or `limit` passed.
fn wait_ready(child: &mut Child, host: &str, tls: bool, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        match http_status(host, "/v2/", None) {
            Some(200 | 401) => return true,
            Some(400) if tls => return true,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A port that was free on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Runs `cmd`, panicking with its output if it fails.
fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The status code of `GET path` on `host` over plain HTTP/1.0, or `None` if nothing answers.
fn http_status(host: &str, path: &str, credentials: Option<(&str, &str)>) -> Option<u16> {
    let addr: SocketAddr = host.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = credentials
        .map(|(u, p)| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            format!("Authorization: Basic {token}\r\n")
        })
        .unwrap_or_default();
    // Without an Accept of the OCI type the registry answers 404 for an OCI manifest (it would
    // have to convert it to the old schema 1).
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.oci.image.index.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json\r\n";
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\n{accept}{auth}\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace().nth(1)?.parse().ok()
}
