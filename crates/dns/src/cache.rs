//! A small cache of upstream answers (CoreDNS's default Corefile has `cache 30`): pods with
//! `ndots:5` ask for the same external names again and again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{RData, Record};

/// The longest time an answer is kept, whatever its TTL says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(30);

/// How many answers are kept at most.
pub const CACHE_CAPACITY: usize = 10_000;

/// Upstream answers by question, until the smallest TTL among their records runs out.
#[derive(Debug, Default)]
pub struct AnswerCache {
    entries: Mutex<HashMap<Query, (Instant, Instant, Message)>>,
}

impl AnswerCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached answer to `query` with TTLs lowered by the time it spent in the cache.
    pub fn get(&self, query: &Query, now: Instant) -> Option<Message> {
        let mut entries = self.entries.lock().ok()?;
        let key = normalized(query);
        let (stored, expires, message) = entries.get(&key)?;
        if now >= *expires {
            entries.remove(&key);
            return None;
        }
        let age = u32::try_from(now.duration_since(*stored).as_secs()).unwrap_or(u32::MAX);
        let mut message = message.clone();
        for record in message
            .answers
            .iter_mut()
            .chain(message.authorities.iter_mut())
            .chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(age);
        }
        Some(message)
    }

    /// Keeps a NOERROR or NXDOMAIN answer that is not truncated, for the smallest TTL of its
    /// records (negative answers: the SOA's minimum), at most [`MAX_CACHE_TTL`].
    pub fn insert(&self, query: &Query, message: &Message, now: Instant) {
        if message.metadata.truncation
            || !matches!(
                message.metadata.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            )
        {
            return;
        }
        let Some(ttl) = cache_ttl(message) else {
            return;
        };
        if ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (_, expires, _)| *expires > now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(normalized(query), (now, now + ttl, message.clone()));
    }
}

fn normalized(query: &Query) -> Query {
    let mut key = query.clone();
    key.set_name(query.name().to_lowercase());
    key
}

/// The time an answer may be kept; `None` when it has nothing to say how long.
fn cache_ttl(message: &Message) -> Option<Duration> {
    let records: Vec<&Record> = if message.answers.is_empty() {
        message.authorities.iter().collect()
    } else {
        message.answers.iter().collect()
    };
    let seconds = records
        .iter()
        .map(|record| match &record.data {
            RData::SOA(soa) if message.answers.is_empty() => record.ttl.min(soa.minimum),
            _ => record.ttl,
        })
        .min()?;
    Some(Duration::from_secs(u64::from(seconds)).min(MAX_CACHE_TTL))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_server::proto::rr::rdata::{A, SOA};
    use hickory_server::proto::rr::{Name, RecordType};

    use super::*;

    fn query(name: &str) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    fn answer(ttl: u32) -> Message {
        let mut message = Message::response(1, hickory_server::proto::op::OpCode::Query);
        message.add_answer(Record::from_rdata(
            Name::from_ascii("example.test.").unwrap(),
            ttl,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        message
    }

    #[test]
    fn answers_are_kept_for_their_ttl_at_most_30_s_and_age() {
        let cache = AnswerCache::new();
        let now = Instant::now();
        cache.insert(&query("example.test."), &answer(10), now);
        // Case-insensitive; TTL lowered by the age.
        let hit = cache
            .get(&query("EXAMPLE.test."), now + Duration::from_secs(4))
            .unwrap();
        assert_eq!(hit.answers[0].ttl, 6);
        assert!(cache
            .get(&query("example.test."), now + Duration::from_secs(10))
            .is_none());

        cache.insert(&query("long.test."), &answer(3600), now);
        assert!(cache
            .get(&query("long.test."), now + Duration::from_secs(29))
            .is_some());
        assert!(cache
            .get(&query("long.test."), now + Duration::from_secs(30))
            .is_none());
    }

    #[test]
    fn failures_truncated_and_zero_ttl_answers_are_not_kept() {
        let cache = AnswerCache::new();
        let now = Instant::now();
        let mut failed = answer(60);
        failed.metadata.response_code = ResponseCode::ServFail;
        cache.insert(&query("a.test."), &failed, now);
        let mut truncated = answer(60);
        truncated.metadata.truncation = true;
        cache.insert(&query("b.test."), &truncated, now);
        cache.insert(&query("c.test."), &answer(0), now);
        for name in ["a.test.", "b.test.", "c.test."] {
            assert!(cache.get(&query(name), now).is_none(), "{name}");
        }
    }

    #[test]
    fn negative_answers_are_kept_for_the_soa_minimum() {
        let cache = AnswerCache::new();
        let now = Instant::now();
        let mut nxdomain = Message::response(1, hickory_server::proto::op::OpCode::Query);
        nxdomain.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(
            Name::from_ascii("ns.test.").unwrap(),
            Name::from_ascii("admin.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            5,
        );
        nxdomain.add_authority(Record::from_rdata(
            Name::from_ascii("test.").unwrap(),
            300,
            RData::SOA(soa),
        ));
        cache.insert(&query("missing.test."), &nxdomain, now);
        let hit = cache
            .get(&query("missing.test."), now + Duration::from_secs(4))
            .unwrap();
        assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
        assert!(cache
            .get(&query("missing.test."), now + Duration::from_secs(5))
            .is_none());
    }
}
