//! The hickory request handler: cluster names from the view, everything else forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, Metadata, OpCode, Query, ResponseCode,
};
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::answer::{ClusterZone, Outcome};
use crate::cache::AnswerCache;
use crate::client::{exchange, Transport};
use crate::view::SharedView;
use crate::DnsError;

/// At most this many forwarded questions wait for upstreams at once (CoreDNS's
/// `max_concurrent` default); past it, questions fail at once instead of piling up sockets.
pub const MAX_CONCURRENT_FORWARDS: usize = 1000;

/// Forwards questions to the host's resolvers, in order, until one answers.
#[derive(Clone, Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
    cache: Arc<AnswerCache>,
}

impl Forwarder {
    /// A forwarder to these resolvers, waiting at most `timeout` for each.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self::with_limit(upstreams, timeout, MAX_CONCURRENT_FORWARDS)
    }

    /// A forwarder with at most `limit` questions in flight.
    pub fn with_limit(upstreams: Vec<SocketAddr>, timeout: Duration, limit: usize) -> Self {
        Forwarder {
            upstreams,
            timeout,
            in_flight: Arc::new(Semaphore::new(limit)),
            cache: Arc::new(AnswerCache::new()),
        }
    }

    /// The first answer of an upstream resolver (any response code but SERVFAIL counts),
    /// from the cache while it lasts.
    pub async fn forward(&self, query: Query) -> Result<Message, DnsError> {
        if let Some(cached) = self.cache.get(&query, Instant::now()) {
            return Ok(cached);
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(DnsError::Overloaded);
        };
        let mut last = DnsError::NoUpstream;
        for upstream in &self.upstreams {
            match exchange(*upstream, query.clone(), Transport::Udp, self.timeout).await {
                Ok(answer) if answer.metadata.response_code != ResponseCode::ServFail => {
                    self.cache.insert(&query, &answer, Instant::now());
                    return Ok(answer);
                }
                Ok(_) => last = DnsError::UpstreamFailure(*upstream),
                Err(error) => {
                    debug!(%upstream, %error, "upstream resolver failed");
                    last = error;
                }
            }
        }
        Err(last)
    }
}

/// Answers DNS requests: the cluster zone from memory, the rest through the forwarder.
pub struct ClusterDnsHandler {
    view: SharedView,
    zone: Arc<ClusterZone>,
    forwarder: Forwarder,
}

impl ClusterDnsHandler {
    /// A handler over a view.
    pub fn new(view: SharedView, zone: ClusterZone, forwarder: Forwarder) -> Self {
        ClusterDnsHandler {
            view,
            zone: Arc::new(zone),
            forwarder,
        }
    }

    /// The cluster zone's answer; `None` when the view's lock is poisoned.
    fn resolve(&self, name: &Name, rtype: RecordType) -> Option<Outcome> {
        let view = self.view.read().ok()?;
        Some(self.zone.resolve(&view, name, rtype))
    }
}

/// The records and header fields of a response.
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Self {
        Reply {
            code,
            authoritative: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn relayed(message: Message) -> Self {
        Reply {
            code: message.metadata.response_code,
            authoritative: false,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message.additionals,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|edns| {
            let mut reply = Edns::new();
            reply.set_max_payload(edns.max_payload().max(512));
            reply
        });
        let reply = self.reply(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = true;
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, "could not send a DNS response");
                let mut metadata = metadata;
                metadata.response_code = ResponseCode::ServFail;
                Header {
                    metadata,
                    counts: HeaderCounts::default(),
                }
                .into()
            }
        }
    }
}

impl ClusterDnsHandler {
    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let [query] = request.queries.queries() else {
            return Reply::code(ResponseCode::FormErr);
        };
        let name: Name = query.name().into();
        let rtype = query.query_type();
        match self.resolve(&name, rtype) {
            None => Reply::code(ResponseCode::ServFail),
            Some(Outcome::Answer {
                answers,
                additionals,
            }) => Reply {
                code: ResponseCode::NoError,
                authoritative: true,
                answers,
                authorities: Vec::new(),
                additionals,
            },
            Some(Outcome::NoData) => self.negative(ResponseCode::NoError),
            Some(Outcome::NxDomain) => self.negative(ResponseCode::NXDomain),
            Some(Outcome::Alias { cname, target }) => {
                let mut answers = vec![*cname];
                // Chase the alias so that stub resolvers get addresses in one round trip.
                if self.zone.contains(&target) {
                    // An alias of another cluster name: one level, from the view.
                    if let Some(Outcome::Answer {
                        answers: chased, ..
                    }) = self.resolve(&target.to_lowercase(), rtype)
                    {
                        answers.extend(chased);
                    }
                } else if matches!(rtype, RecordType::A | RecordType::AAAA) {
                    if let Ok(chased) = self.forwarder.forward(Query::query(target, rtype)).await {
                        if chased.metadata.response_code == ResponseCode::NoError {
                            answers.extend(chased.answers);
                        }
                    }
                }
                Reply {
                    code: ResponseCode::NoError,
                    authoritative: true,
                    answers,
                    authorities: Vec::new(),
                    additionals: Vec::new(),
                }
            }
            Some(Outcome::NotOurs) => {
                match self.forwarder.forward(query.original().clone()).await {
                    Ok(answer) => Reply::relayed(answer),
                    Err(error) => {
                        debug!(%name, %error, "forwarding failed");
                        Reply::code(ResponseCode::ServFail)
                    }
                }
            }
        }
    }

    fn negative(&self, code: ResponseCode) -> Reply {
        Reply {
            code,
            authoritative: true,
            answers: Vec::new(),
            authorities: vec![self.zone.soa().clone()],
            additionals: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn forwards_past_the_limit_fail_at_once() {
        // An upstream that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::with_limit(
            vec![silent.local_addr().unwrap()],
            Duration::from_millis(300),
            1,
        );
        let query = || Query::query(Name::from_ascii("example.test.").unwrap(), RecordType::A);
        let waiting = tokio::spawn({
            let forwarder = forwarder.clone();
            let query = query();
            async move { forwarder.forward(query).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert!(matches!(
            forwarder.forward(query()).await,
            Err(DnsError::Overloaded)
        ));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(waiting.await.unwrap(), Err(DnsError::Timeout(_))));
        // The permit is back.
        assert!(matches!(
            forwarder.forward(query()).await,
            Err(DnsError::Timeout(_))
        ));
    }
}
