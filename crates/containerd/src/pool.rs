//! A warm pool of pod sandboxes: a few sandboxes (pause container, network namespace on the
//! node's bridge, pod IP) created ahead of the pods that will use them, so that a pod start
//! does not wait for `RunPodSandbox` and CNI.
//!
//! A pool sandbox is created with a neutral identity (namespace `nodeless-pool`, label
//! [`LABEL_POOL`], cgroup parent `<root>/pod<pool uid>` for its pause process). When a pod
//! takes one, the runtime gives it the pod's identity: the assignment is written to disk
//! first ([`Assignments`], so that it survives an agent restart; CRI labels cannot change),
//! then the pod's cgroup with its limits, the hostname of the sandbox's UTS namespace
//! ([`set_hostname`]), and the pod's own `/etc/hosts`, `/etc/hostname` and
//! `/etc/resolv.conf`, which the containers mount (containerd skips its own mounts of those
//! paths when the container config has them). The containers' log directory and cgroup
//! parent come from the pod's sandbox config, which every `CreateContainer` carries.
//!
//! The bookkeeping ([`PoolState`]) is pure; the runtime drives the CRI calls.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest a pod's start puts the refill off: a refill (a `RunPodSandbox`, CNI) waits
/// until the pods being started have started their first container, so that it does not
/// compete for the CPU with them, but not longer than this after each pod's start began (a
/// pull can take minutes).
pub const REFILL_MAX_DEFERRAL: Duration = Duration::from_secs(1);

/// The label of every pool sandbox (its value: the pool uid).
pub const LABEL_POOL: &str = "nodeless.io/sandbox-pool";
/// The Kubernetes namespace pool sandboxes are created in (a name no API namespace takes:
/// CRI only shows it).
pub const POOL_NAMESPACE: &str = "nodeless-pool";
/// The host name of a pool sandbox until a pod takes it.
pub const POOL_HOSTNAME: &str = "nodeless-pool";

/// A pool sandbox nobody uses yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdleSandbox {
    /// The CRI id of the sandbox.
    pub id: String,
    /// Its IP (from CNI when it was created).
    pub ip: IpAddr,
    /// The pool uid it was created with (its pause's cgroup is `<root>/pod<pool uid>`).
    pub pool_uid: String,
    /// Its pause process, when known: a pod taking the sandbox needs it (for the hostname),
    /// and asking CRI for it (a verbose status) costs more than checking it is still there.
    pub pause: Option<PauseProcess>,
}

/// A process told apart from a later one with the same pid by its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseProcess {
    /// Its pid.
    pub pid: u32,
    /// When it started, in clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start_ticks: u64,
}

impl PauseProcess {
    /// The process `pid` as it is now, if it runs.
    pub fn current(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(Self {
            pid,
            start_ticks: start_ticks(&stat)?,
        })
    }

    /// Whether this process still runs (its pid was not taken by another since).
    pub fn is_alive(&self) -> bool {
        Self::current(self.pid).as_ref() == Some(self)
    }

    /// Its parent's pid: the sandbox's shim, which reaps it.
    pub fn parent(&self) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        parent_pid(&stat)
    }
}

/// Field 4 of a `/proc/<pid>/stat` line.
fn parent_pid(stat: &str) -> Option<u32> {
    stat_field(stat, 4)?.parse().ok()
}

/// Field 22 of a `/proc/<pid>/stat` line.
fn start_ticks(stat: &str) -> Option<u64> {
    stat_field(stat, 22)?.parse().ok()
}

/// Field `number` (counted from 1, as in proc(5); 3 or more) of a `/proc/<pid>/stat` line.
/// The command (field 2, in parentheses) may hold spaces and parentheses itself, so fields
/// are counted after its last `)`.
fn stat_field(stat: &str, number: usize) -> Option<&str> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(number.checked_sub(3)?)
}

/// How many pool sandboxes exist, are being made, and how many are wanted.
#[derive(Debug, Default)]
pub struct PoolState {
    depth: usize,
    idle: VecDeque<IdleSandbox>,
    creating: usize,
    closed: bool,
    /// The pods (by uid) whose start is under way, and when it began: from their sandbox
    /// (taken or made) until their first container started.
    starting: HashMap<String, Instant>,
}

impl PoolState {
    /// An empty pool that wants `depth` idle sandboxes.
    pub fn new(depth: usize) -> Self {
        Self {
            depth,
            ..Self::default()
        }
    }

    /// The idle sandbox made first, for a pod.
    pub fn take(&mut self) -> Option<IdleSandbox> {
        self.idle.pop_front()
    }

    /// The start of pod `uid` began at `now` (it takes a sandbox or makes its own).
    pub fn pod_starting(&mut self, uid: &str, now: Instant) {
        self.starting.insert(uid.to_string(), now);
    }

    /// Pod `uid` started its first container, or went; whether its start was under way.
    pub fn pod_started(&mut self, uid: &str) -> bool {
        self.starting.remove(uid).is_some()
    }

    /// How long the refill should still wait at `now` (zero: make one now): until no pod's
    /// start is under way, each start counting for at most [`REFILL_MAX_DEFERRAL`].
    pub fn refill_delay(&mut self, now: Instant) -> Duration {
        self.starting
            .retain(|_, began| now.saturating_duration_since(*began) < REFILL_MAX_DEFERRAL);
        self.starting
            .values()
            .map(|began| *began + REFILL_MAX_DEFERRAL - now)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// How many more sandboxes should be started now (none once closed).
    pub fn wanted(&self) -> usize {
        if self.closed {
            return 0;
        }
        self.depth.saturating_sub(self.idle.len() + self.creating)
    }

    /// A creation starts.
    pub fn begin_create(&mut self) {
        self.creating += 1;
    }

    /// A creation ended; the new sandbox joins the pool unless the pool was closed or is
    /// full meanwhile, in which case it is given back to be removed: it counts as being
    /// made until [`Self::removed_extra`], so that a drain waits for its removal.
    pub fn end_create(&mut self, created: Option<IdleSandbox>) -> Option<IdleSandbox> {
        let Some(sandbox) = created else {
            self.creating = self.creating.saturating_sub(1);
            return None;
        };
        if self.closed || self.idle.len() >= self.depth {
            return Some(sandbox);
        }
        self.creating = self.creating.saturating_sub(1);
        self.idle.push_back(sandbox);
        None
    }

    /// A sandbox given back by [`Self::end_create`] was removed.
    pub fn removed_extra(&mut self) {
        self.creating = self.creating.saturating_sub(1);
    }

    /// Adds a sandbox found from an earlier run; gives it back when the pool has no room.
    pub fn add_found(&mut self, sandbox: IdleSandbox) -> Option<IdleSandbox> {
        if self.closed || self.idle.len() + self.creating >= self.depth {
            return Some(sandbox);
        }
        self.idle.push_back(sandbox);
        None
    }

    /// Stops refilling and gives back every idle sandbox (to be removed).
    pub fn close(&mut self) -> Vec<IdleSandbox> {
        self.closed = true;
        self.idle.drain(..).collect()
    }

    /// Sandboxes being created right now.
    pub fn creating(&self) -> usize {
        self.creating
    }

    /// Idle sandboxes.
    pub fn idle(&self) -> usize {
        self.idle.len()
    }
}

/// Which pod a pool sandbox serves, as stored on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// The pod's uid.
    pub pod_uid: String,
    /// The pool uid the sandbox was created with.
    pub pool_uid: String,
}

/// The durable map pool sandbox -> pod: one file per assigned sandbox, named by its id,
/// written (through a rename) before the sandbox gets anything of the pod.
#[derive(Clone, Debug)]
pub struct Assignments {
    dir: PathBuf,
}

impl Assignments {
    /// The assignments kept in `dir` (created when the first is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn file(&self, sandbox_id: &str) -> Option<PathBuf> {
        // CRI ids are hex; anything else is not a file name of ours.
        let plain = !sandbox_id.is_empty() && sandbox_id.chars().all(|c| c.is_ascii_alphanumeric());
        plain.then(|| self.dir.join(sandbox_id))
    }

    /// Records that the sandbox serves the pod.
    pub fn assign(&self, sandbox_id: &str, assignment: &Assignment) -> std::io::Result<()> {
        let file = self.file(sandbox_id).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a sandbox id")
        })?;
        std::fs::create_dir_all(&self.dir)?;
        let text = serde_json::json!({
            "podUID": assignment.pod_uid,
            "poolUID": assignment.pool_uid,
        })
        .to_string();
        let partial = self.dir.join(format!(".{sandbox_id}.partial"));
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &file)
    }

    /// Forgets the sandbox's assignment (it was removed).
    pub fn release(&self, sandbox_id: &str) -> std::io::Result<()> {
        let Some(file) = self.file(sandbox_id) else {
            return Ok(());
        };
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The assignment of one sandbox.
    pub fn get(&self, sandbox_id: &str) -> Option<Assignment> {
        let text = std::fs::read_to_string(self.file(sandbox_id)?).ok()?;
        parse_assignment(&text)
    }

    /// Every assignment, by sandbox id.
    pub fn all(&self) -> HashMap<String, Assignment> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return HashMap::new();
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                if name.starts_with('.') {
                    return None;
                }
                let text = std::fs::read_to_string(entry.path()).ok()?;
                Some((name, parse_assignment(&text)?))
            })
            .collect()
    }

    /// The sandbox assigned to a pod, if any.
    pub fn sandbox_of(&self, pod_uid: &str) -> Option<String> {
        self.all()
            .into_iter()
            .find(|(_, a)| a.pod_uid == pod_uid)
            .map(|(id, _)| id)
    }
}

fn parse_assignment(text: &str) -> Option<Assignment> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(Assignment {
        pod_uid: value.get("podUID")?.as_str()?.to_string(),
        pool_uid: value.get("poolUID")?.as_str()?.to_string(),
    })
}

/// A uid for a new pool sandbox (unique on this host: time, process and a counter).
pub fn new_pool_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "pool-{:x}-{:x}-{}",
        nanos,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The pid of a sandbox's pause process, from the `info` of a verbose `PodSandboxStatus`.
pub fn pause_pid(info: &HashMap<String, String>) -> Option<u32> {
    let value: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let pid = value.get("pid")?.as_u64()?;
    u32::try_from(pid).ok().filter(|pid| *pid > 0)
}

/// Sets the host name of the UTS namespace of a sandbox's pause: a thread of its own joins
/// the namespace (setns affects only the calling thread) and ends after `sethostname`, so no
/// other thread ever runs in it. The namespace is opened before the pause is checked to
/// still run, so a pid taken by another process meanwhile is never joined.
pub async fn set_hostname(pause: PauseProcess, hostname: &str) -> std::io::Result<()> {
    let name = hostname.to_string();
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("nodeless-uts".to_string())
        .spawn(move || {
            let _ = done.send(set_hostname_in(pause, &name));
        })?;
    result
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the hostname thread ended early")))
}

fn set_hostname_in(pause: PauseProcess, hostname: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/proc/{}/ns/uts", pause.pid))?;
    if !pause.is_alive() {
        return Err(std::io::Error::other("the sandbox's pause process is gone"));
    }
    // SAFETY: a valid open namespace file descriptor; only this thread changes namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWUTS) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes = hostname.as_bytes();
    // SAFETY: a pointer and length of a live byte slice.
    if unsafe { libc::sethostname(bytes.as_ptr().cast(), bytes.len()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The resolver configuration a container reads, in the format containerd writes it
/// (`search`, `nameserver` lines, `options`); `None` when there is nothing to write (the
/// host's file is used then, as containerd does).
pub fn resolv_conf(searches: &[String], servers: &[String], options: &[String]) -> Option<String> {
    if searches.is_empty() && servers.is_empty() && options.is_empty() {
        return None;
    }
    let mut text = String::new();
    if !searches.is_empty() {
        text.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for server in servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !options.is_empty() {
        text.push_str(&format!("options {}\n", options.join(" ")));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(id: &str) -> IdleSandbox {
        IdleSandbox {
            id: id.to_string(),
            ip: "10.0.0.2".parse().unwrap(),
            pool_uid: format!("pool-{id}"),
            pause: None,
        }
    }

    #[test]
    fn a_process_is_known_by_its_pid_and_start_time() {
        let line = "4242 (pa use) (x)) S 1 4242 4242 0 -1 4194560 90 0 0 0 0 0 0 0 20 0 1 0 987654 1204224 1 18446744073709551615";
        assert_eq!(start_ticks(line), Some(987654));
        assert_eq!(parent_pid(line), Some(1));
        assert_eq!(start_ticks("4242 (pause) S 1"), None);
        let me = PauseProcess::current(std::process::id()).expect("this process");
        assert!(me.is_alive());
        let earlier = PauseProcess {
            start_ticks: me.start_ticks.wrapping_sub(1),
            ..me
        };
        assert!(!earlier.is_alive(), "another process that had the same pid");
    }

    #[test]
    fn the_pool_refills_to_its_depth_and_hands_out_the_oldest() {
        let mut pool = PoolState::new(2);
        assert_eq!(pool.wanted(), 2);
        pool.begin_create();
        assert_eq!(pool.wanted(), 1);
        pool.begin_create();
        assert_eq!(pool.wanted(), 0);
        assert_eq!(pool.end_create(Some(idle("a"))), None);
        assert_eq!(pool.end_create(Some(idle("b"))), None);
        assert_eq!((pool.idle(), pool.creating(), pool.wanted()), (2, 0, 0));
        assert_eq!(pool.take().map(|s| s.id), Some("a".to_string()));
        assert_eq!(pool.wanted(), 1);
        assert_eq!(pool.take().map(|s| s.id), Some("b".to_string()));
        assert_eq!(pool.take(), None);
        assert_eq!(pool.wanted(), 2);
    }

    #[test]
    fn the_refill_waits_for_the_pods_being_started_but_not_forever() {
        let mut pool = PoolState::new(2);
        let t0 = Instant::now();
        assert_eq!(pool.refill_delay(t0), Duration::ZERO, "no pod is starting");
        pool.pod_starting("a", t0);
        assert_eq!(pool.refill_delay(t0), REFILL_MAX_DEFERRAL);
        let later = t0 + Duration::from_millis(300);
        pool.pod_starting("b", later);
        assert_eq!(
            pool.refill_delay(later),
            REFILL_MAX_DEFERRAL,
            "the latest start counts"
        );
        // Once both started their first container, the refill goes ahead at once.
        assert!(pool.pod_started("a"));
        assert!(!pool.pod_started("a"), "counted once");
        assert!(pool.refill_delay(later) > Duration::ZERO);
        assert!(pool.pod_started("b"));
        assert_eq!(pool.refill_delay(later), Duration::ZERO);
        // A start that never reports back (its pod went before) holds the refill up for at
        // most REFILL_MAX_DEFERRAL.
        pool.pod_starting("c", later);
        assert_eq!(
            pool.refill_delay(later + REFILL_MAX_DEFERRAL),
            Duration::ZERO
        );
        assert!(!pool.pod_started("c"), "forgotten once it stopped counting");
    }

    #[test]
    fn a_failed_creation_is_wanted_again() {
        let mut pool = PoolState::new(1);
        pool.begin_create();
        assert_eq!(pool.end_create(None), None);
        assert_eq!((pool.idle(), pool.creating(), pool.wanted()), (0, 0, 1));
    }

    #[test]
    fn a_closed_pool_wants_nothing_and_gives_everything_back() {
        let mut pool = PoolState::new(3);
        pool.add_found(idle("a"));
        pool.begin_create();
        let given_back = pool.close();
        assert_eq!(given_back, vec![idle("a")]);
        assert_eq!(pool.wanted(), 0);
        // What was still being made when the pool closed goes too, and counts until removed.
        assert_eq!(pool.end_create(Some(idle("b"))), Some(idle("b")));
        assert_eq!(pool.creating(), 1);
        pool.removed_extra();
        assert_eq!(pool.creating(), 0);
        assert_eq!(pool.take(), None);
        assert_eq!(pool.add_found(idle("c")), Some(idle("c")));
    }

    #[test]
    fn sandboxes_found_beyond_the_depth_are_given_back() {
        let mut pool = PoolState::new(1);
        assert_eq!(pool.add_found(idle("a")), None);
        assert_eq!(pool.add_found(idle("b")), Some(idle("b")));
        let mut empty = PoolState::new(0);
        assert_eq!(empty.wanted(), 0);
        assert_eq!(empty.add_found(idle("c")), Some(idle("c")));
    }

    #[test]
    fn assignments_survive_on_disk_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let store = Assignments::new(dir.path().join("pool"));
        assert!(store.all().is_empty());
        let a = Assignment {
            pod_uid: "uid-1".into(),
            pool_uid: "pool-1".into(),
        };
        store.assign("abc123", &a).unwrap();
        store
            .assign(
                "def456",
                &Assignment {
                    pod_uid: "uid-2".into(),
                    pool_uid: "pool-2".into(),
                },
            )
            .unwrap();
        // Another process (a restarted agent) reads the same.
        let again = Assignments::new(dir.path().join("pool"));
        assert_eq!(again.get("abc123"), Some(a));
        assert_eq!(again.sandbox_of("uid-2").as_deref(), Some("def456"));
        assert_eq!(again.all().len(), 2);
        again.release("abc123").unwrap();
        again.release("abc123").unwrap();
        assert_eq!(store.get("abc123"), None);
        assert_eq!(store.sandbox_of("uid-1"), None);
        assert!(store
            .assign(
                "../escape",
                &Assignment {
                    pod_uid: "x".into(),
                    pool_uid: "y".into()
                }
            )
            .is_err());
    }

    #[test]
    fn the_pause_pid_is_read_from_the_verbose_status() {
        let info = HashMap::from([(
            "info".to_string(),
            r#"{"pid": 4242, "processStatus": "running"}"#.to_string(),
        )]);
        assert_eq!(pause_pid(&info), Some(4242));
        assert_eq!(pause_pid(&HashMap::new()), None);
        let zero = HashMap::from([("info".to_string(), r#"{"pid": 0}"#.to_string())]);
        assert_eq!(pause_pid(&zero), None);
    }

    #[test]
    fn resolv_conf_is_written_as_containerd_writes_it() {
        let text = resolv_conf(
            &["shop.svc.cluster.local".into(), "svc.cluster.local".into()],
            &["10.96.0.10".into()],
            &["ndots:5".into()],
        )
        .unwrap();
        assert_eq!(
            text,
            "search shop.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&[], &[], &[]), None);
    }

    #[test]
    fn pool_uids_differ() {
        assert_ne!(new_pool_uid(), new_pool_uid());
    }
}
