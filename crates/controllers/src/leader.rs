//! Leader election over a `coordination.k8s.io/v1` Lease, as upstream's client-go
//! `leaderelection` package does it, so that of several servers on one store only one runs the
//! controllers and the scheduler at a time.
//!
//! A candidate reads the Lease every retry period. It takes the Lease when the Lease is missing
//! (create), released (empty `holderIdentity`), or expired; it keeps it by renewing `renewTime`.
//! Every write is an update guarded by the Lease's `resourceVersion`, so of two candidates racing
//! for an expired Lease exactly one wins (the other gets 409 Conflict).
//!
//! Expiry is judged as upstream judges it: not from the holder's `renewTime` (the holder's clock
//! may differ from ours) but from the moment this candidate last *saw the record change*, plus the
//! record's `leaseDurationSeconds`, on this process's monotonic clock. A leader that cannot
//! renew within the renew deadline (shorter than the lease duration) stops its work before any
//! other candidate may consider the Lease expired.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// The namespace of the controllers' Lease, as upstream's kube-controller-manager uses.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// The name of the Lease that elects the server running the controllers and the scheduler.
pub const CONTROLLERS_LEASE_NAME: &str = "nodeless-controllers";

/// One candidate's leader-election settings; the defaults are upstream's
/// (15 s lease, 10 s renew deadline, 2 s retry period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This candidate's identity, written to `holderIdentity`; unique per process.
    pub identity: String,
    /// How long other candidates wait, after they last saw the Lease change, before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up and stops its work.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and the leader renews.
    pub retry_period: Duration,
}

impl LeaderElection {
    /// Settings for the Lease `namespace/name` with upstream's timings and a fresh identity.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            lease_namespace: namespace.to_owned(),
            lease_name: name.to_owned(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Settings for the controllers' Lease, `kube-system/nodeless-controllers`.
    ///
    /// The lease is shorter than upstream's 15 s so that a standby takes over within 15 s of
    /// the leader's death (it counts the duration from when it last saw a renewal, which is
    /// up to one retry period after the renewal itself).
    pub fn for_controllers() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            ..Self::new(LEASE_NAMESPACE, CONTROLLERS_LEASE_NAME)
        }
    }

    /// The lease duration in whole seconds, as written to `leaseDurationSeconds` (at least 1).
    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// `hostname_randomid`, as upstream's components name themselves (hostname plus a UUID).
pub fn default_identity() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "nodeless".to_owned());
    format!("{hostname}_{}", random_id())
}

/// 128 random bits as hex, from the standard library's randomly keyed hasher (no extra crate).
fn random_id() -> String {
    let mut parts = [0u64; 2];
    for (i, part) in parts.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_usize(i);
        if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        {
            hasher.write_u128(since_epoch.as_nanos());
        }
        *part = hasher.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

/// The record as this candidate last saw it, and when (on the monotonic clock).
#[derive(Debug, Default)]
struct Observation {
    record: Option<LeaseSpec>,
    at: Option<Instant>,
}

impl Observation {
    /// Notes `record` as seen at `now`; the time moves only when the record changed.
    fn observe(&mut self, record: &LeaseSpec, now: Instant) {
        if self.record.as_ref() != Some(record) || self.at.is_none() {
            self.record = Some(record.clone());
            self.at = Some(now);
        }
    }

    /// Whether the observed holder's claim still stands at `now`: its lease duration has not
    /// passed since the record last changed.
    fn still_valid(&self, now: Instant) -> bool {
        let (Some(record), Some(at)) = (&self.record, self.at) else {
            return false;
        };
        let seconds = record.lease_duration_seconds.unwrap_or(0).max(0);
        now < at + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    /// The holder of the observed record, if any (an empty identity means released).
    fn holder(&self) -> Option<&str> {
        self.record
            .as_ref()
            .and_then(|r| r.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }
}

/// What one round of acquire-or-renew found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease (created, renewed or taken over).
    Leader,
    /// Another candidate holds a Lease that has not expired.
    HeldBy(String),
    /// Another candidate wrote the Lease between our read and our write (409).
    LostRace,
}

/// The spec to write when `identity` acquires or renews a Lease whose current spec is
/// `current` (`None`: the Lease does not exist). Renewal keeps `acquireTime` and
/// `leaseTransitions`; a change of holder sets `acquireTime` and counts a transition.
fn claimed_spec(
    current: Option<&LeaseSpec>,
    election: &LeaderElection,
    now: jiff::Timestamp,
) -> LeaseSpec {
    let renewing = current
        .and_then(|c| c.holder_identity.as_deref())
        .is_some_and(|h| h == election.identity);
    let (acquire_time, transitions) = match current {
        None => (MicroTime(now), 0),
        Some(c) if renewing => (
            c.acquire_time.clone().unwrap_or(MicroTime(now)),
            c.lease_transitions.unwrap_or(0),
        ),
        Some(c) => (
            MicroTime(now),
            c.lease_transitions.unwrap_or(0).saturating_add(1),
        ),
    };
    LeaseSpec {
        holder_identity: Some(election.identity.clone()),
        lease_duration_seconds: Some(election.lease_duration_seconds()),
        acquire_time: Some(acquire_time),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..current.cloned().unwrap_or_default()
    }
}

/// The spec that releases a Lease, as upstream's `ReleaseOnCancel`: no holder, a one-second
/// duration, the transition count kept.
fn released_spec(current: &LeaseSpec, now: jiff::Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: current.lease_transitions,
        ..current.clone()
    }
}

/// One candidate's view of the Lease between rounds.
struct Elector {
    api: Api<Lease>,
    election: LeaderElection,
    observed: Observation,
}

impl Elector {
    /// One round of upstream's `tryAcquireOrRenew`: read the Lease, and write our claim if it
    /// is missing, ours, released or expired.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let name = self.election.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let spec = claimed_spec(None, &self.election, jiff::Timestamp::now());
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.election.lease_namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed.observe(&spec, Instant::now());
                    Ok(Attempt::Leader)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::LostRace),
                Err(e) => Err(e),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        self.observed.observe(&current, Instant::now());
        if let Some(holder) = self.observed.holder() {
            if holder != self.election.identity && self.observed.still_valid(Instant::now()) {
                return Ok(Attempt::HeldBy(holder.to_owned()));
            }
        }
        let spec = claimed_spec(Some(&current), &self.election, jiff::Timestamp::now());
        lease.spec = Some(spec.clone());
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail with 409.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed.observe(&spec, Instant::now());
                Ok(Attempt::Leader)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::LostRace),
            Err(e) => Err(e),
        }
    }

    /// Keeps renewing every retry period; returns when leadership is lost: another holder took
    /// the Lease, or no renewal succeeded within the renew deadline of the last one.
    async fn renew_until_lost(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            let deadline = last_renewal + self.election.renew_deadline;
            let until_deadline = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(self.election.retry_period.min(until_deadline)).await;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                tracing::error!(
                    lease = %self.election.lease_name,
                    deadline = ?self.election.renew_deadline,
                    "could not renew the lease within the renew deadline"
                );
                return;
            }
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leader)) => last_renewal = Instant::now(),
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    tracing::warn!(lease = %self.election.lease_name, %holder, "the lease was taken over");
                    return;
                }
                Ok(Ok(Attempt::LostRace)) => {
                    tracing::debug!(lease = %self.election.lease_name, "lease renewal conflicted; retrying");
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %self.election.lease_name, %error, "lease renewal failed; retrying");
                }
                Err(_) => {
                    tracing::warn!(lease = %self.election.lease_name, "lease renewal timed out");
                }
            }
        }
    }

    /// Releases the Lease if we still hold it, so that another candidate takes it at once.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let name = self.election.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            return Ok(());
        };
        let current = lease.spec.clone().unwrap_or_default();
        if current.holder_identity.as_deref() != Some(self.election.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released_spec(&current, jiff::Timestamp::now()));
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

/// Runs `work` only while this candidate holds the Lease of `election`, until `shutdown`.
///
/// Acquires the Lease (retrying every retry period), then runs a fresh `work()` while renewing.
/// When leadership is lost the work future is dropped at once and the candidate goes back to
/// acquiring. When `shutdown` completes the work is dropped and the Lease released, so another
/// candidate takes over without waiting for it to expire. Returns when `shutdown` completes or
/// when the work itself returns (the Lease is then released too).
pub async fn run_when_leader<W, F>(
    client: kube::Client,
    election: LeaderElection,
    mut work: W,
    shutdown: impl Future<Output = ()>,
) where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &election.lease_namespace);
    let mut elector = Elector {
        api,
        election,
        observed: Observation::default(),
    };
    tokio::pin!(shutdown);
    loop {
        let acquire = async {
            let mut last_holder: Option<String> = None;
            loop {
                match elector.try_acquire_or_renew().await {
                    Ok(Attempt::Leader) => return,
                    Ok(Attempt::HeldBy(holder)) => {
                        if last_holder.as_deref() != Some(holder.as_str()) {
                            tracing::info!(lease = %elector.election.lease_name, %holder, "the lease is held by another server; waiting");
                            last_holder = Some(holder);
                        }
                    }
                    Ok(Attempt::LostRace) => {}
                    Err(error) => {
                        tracing::warn!(lease = %elector.election.lease_name, %error, "acquiring the lease failed; retrying");
                    }
                }
                tokio::time::sleep(elector.election.retry_period).await;
            }
        };
        tokio::select! {
            _ = acquire => {}
            _ = &mut shutdown => return,
        }
        tracing::info!(
            lease = %elector.election.lease_name,
            identity = %elector.election.identity,
            "acquired the lease; starting"
        );
        // Boxed so that dropping it (below) really drops the work, watches and all.
        let mut work_future = Box::pin(work());
        // Biased: after a pause longer than the renew deadline (a stopped process, a starved
        // runtime) the renewer notices first, and the work is not polled once more.
        let stop = tokio::select! {
            biased;
            _ = &mut shutdown => true,
            _ = elector.renew_until_lost() => false,
            _ = &mut work_future => true,
        };
        // The work stops here, before the Lease is given up or lost to another candidate.
        drop(work_future);
        if stop {
            let timeout = elector.election.renew_deadline;
            match tokio::time::timeout(timeout, elector.release()).await {
                Ok(Ok(())) => {
                    tracing::info!(lease = %elector.election.lease_name, "released the lease")
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %elector.election.lease_name, %error, "releasing the lease failed")
                }
                Err(_) => {
                    tracing::warn!(lease = %elector.election.lease_name, "releasing the lease timed out")
                }
            }
            return;
        }
        tracing::error!(lease = %elector.election.lease_name, "lost the lease; stopped until it is acquired again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(identity: &str) -> LeaderElection {
        LeaderElection {
            identity: identity.to_owned(),
            ..LeaderElection::new(LEASE_NAMESPACE, CONTROLLERS_LEASE_NAME)
        }
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn controller_defaults_take_over_within_15_seconds() {
        let upstream = LeaderElection::new("ns", "name");
        assert_eq!(upstream.lease_duration, Duration::from_secs(15));
        assert_eq!(upstream.renew_deadline, Duration::from_secs(10));
        let e = LeaderElection::for_controllers();
        assert_eq!(e.lease_namespace, "kube-system");
        assert_eq!(e.lease_name, "nodeless-controllers");
        assert!(e.lease_duration + e.retry_period + e.retry_period <= Duration::from_secs(15));
        assert_eq!(e.renew_deadline, Duration::from_secs(7));
        assert_eq!(e.retry_period, Duration::from_secs(2));
        assert!(e.renew_deadline < e.lease_duration);
    }

    #[test]
    fn identities_are_hostname_and_unique() {
        let (a, b) = (default_identity(), default_identity());
        assert_ne!(a, b);
        let (host, id) = a.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn creating_claims_with_no_transitions() {
        let spec = claimed_spec(None, &election("a"), at(0));
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let first = claimed_spec(None, &election("a"), at(0));
        let renewed = claimed_spec(Some(&first), &election("a"), at(2));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(2))));
        assert_eq!(renewed.lease_transitions, Some(0));
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let first = claimed_spec(None, &election("a"), at(0));
        let taken = claimed_spec(Some(&first), &election("b"), at(20));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(taken.lease_transitions, Some(1));
        let released = released_spec(&taken, at(21));
        let again = claimed_spec(Some(&released), &election("a"), at(22));
        assert_eq!(again.lease_transitions, Some(2));
    }

    #[test]
    fn releasing_clears_the_holder_and_shortens_the_duration() {
        let held = claimed_spec(None, &election("a"), at(0));
        let released = released_spec(&held, at(5));
        assert_eq!(released.holder_identity.as_deref(), Some(""));
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(0));
        let mut seen = Observation::default();
        seen.observe(&released, Instant::now());
        assert_eq!(seen.holder(), None, "a released lease has no holder");
    }

    #[test]
    fn expiry_counts_from_the_last_change_seen_not_from_renew_time() {
        let start = Instant::now();
        // The holder's renewTime is far in the past (its clock may be behind ours): what
        // counts is when we saw the record.
        let held = claimed_spec(None, &election("a"), at(-3600));
        let mut seen = Observation::default();
        seen.observe(&held, start);
        assert_eq!(seen.holder(), Some("a"));
        assert!(seen.still_valid(start + Duration::from_secs(14)));
        // The same record seen again does not move the observation time.
        seen.observe(&held, start + Duration::from_secs(10));
        assert!(!seen.still_valid(start + Duration::from_secs(15)));
        // A renewal seen later starts the duration again.
        let renewed = claimed_spec(Some(&held), &election("a"), at(-3598));
        seen.observe(&renewed, start + Duration::from_secs(12));
        assert!(seen.still_valid(start + Duration::from_secs(26)));
        assert!(!seen.still_valid(start + Duration::from_secs(27)));
    }

    #[test]
    fn nothing_observed_is_not_valid() {
        assert!(!Observation::default().still_valid(Instant::now()));
    }
}
