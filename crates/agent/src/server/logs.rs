//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log, read from the CRI
//! log files of its attempts as the kubelet reads them (`pkg/kubelet/kuberuntime/logs`).
//!
//! A CRI log line is `<RFC 3339 time> <stdout|stderr> <F|P> <text>`; `P` marks a partial line
//! whose text continues in the next one, `F` a full line (the newline is not in the file).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::{query_flag, query_get, Body, Context, HttpError};
use crate::runtime::ContainerState;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often an idle followed log asks whether its container still runs.
const RUNNING_CHECK: Duration = Duration::from_secs(1);

/// The options of a log request (`PodLogOptions` as the kubelet receives them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines until the container's attempt ends.
    pub follow: bool,
    /// The previous attempt's log (restartCount - 1).
    pub previous: bool,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only lines logged at or after this time (`sinceTime`, or now - `sinceSeconds`).
    pub since: Option<OffsetDateTime>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Reads the options from the query parameters; `now` anchors `sinceSeconds`.
    pub(crate) fn from_query(
        pairs: &[(String, String)],
        now: OffsetDateTime,
    ) -> Result<Self, HttpError> {
        let int = |key: &str| -> Result<Option<i64>, HttpError> {
            query_get(pairs, key)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<i64>().map_err(|_| {
                        HttpError::bad_request(format!(
                            "invalid value {v:?} for integer parameter {key}"
                        ))
                    })
                })
                .transpose()
        };
        let positive = |key: &str, v: Option<i64>, min: i64, what: &str| match v {
            Some(n) if n < min => Err(HttpError::bad_request(format!(
                "{key}: Invalid value: {n}: {what}"
            ))),
            other => Ok(other.map(|n| n as u64)),
        };
        let tail_lines = positive(
            "tailLines",
            int("tailLines")?,
            0,
            "must be greater than or equal to 0",
        )?;
        let limit_bytes = positive(
            "limitBytes",
            int("limitBytes")?,
            1,
            "must be greater than 0",
        )?;
        let since_seconds = positive(
            "sinceSeconds",
            int("sinceSeconds")?,
            1,
            "must be greater than 0",
        )?;
        let since_time = query_get(pairs, "sinceTime")
            .filter(|v| !v.is_empty())
            .map(|v| {
                OffsetDateTime::parse(v, &Rfc3339).map_err(|e| {
                    HttpError::bad_request(format!("invalid value {v:?} for sinceTime: {e}"))
                })
            })
            .transpose()?;
        let since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(HttpError::bad_request(
                    "at most one of `sinceTime` or `sinceSeconds` may be specified",
                ))
            }
            (Some(secs), None) => Some(now - Duration::from_secs(secs)),
            (None, t) => t,
        };
        Ok(Self {
            follow: query_flag(pairs, "follow")?,
            previous: query_flag(pairs, "previous")?,
            timestamps: query_flag(pairs, "timestamps")?,
            tail_lines,
            since,
            limit_bytes,
        })
    }
}

/// One parsed CRI log line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CriLine<'a> {
    pub time: OffsetDateTime,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one line (without its newline) of a CRI log file.
pub(crate) fn parse_cri_line(line: &[u8]) -> Option<CriLine<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let time = OffsetDateTime::parse(time, &Rfc3339).ok()?;
    let stream = std::str::from_utf8(fields.next()?).ok()?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(CriLine {
        time,
        stream,
        partial,
        text: fields.next().unwrap_or_default(),
    })
}

/// A time as Go's `time.RFC3339Nano` formats it: fraction without trailing zeros, `Z` for UTC.
pub fn format_rfc3339_nano(t: OffsetDateTime) -> String {
    let date = t.date();
    let clock = t.time();
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    );
    let nanos = clock.nanosecond();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    let offset = t.offset();
    if offset.is_utc() {
        out.push('Z');
    } else {
        let (h, m, _) = offset.as_hms();
        let sign = if offset.is_negative() { '-' } else { '+' };
        out.push_str(&format!("{sign}{:02}:{:02}", h.abs(), m.abs()));
    }
    out
}

/// The attempts of a container that have a log file, oldest first: `(attempt, path)`. When
/// several pods of that name existed (several uids), the most recently written one counts.
pub(crate) fn attempts(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Vec<(u32, PathBuf)> {
    let prefix = format!("{namespace}_{pod}_");
    let Ok(entries) = std::fs::read_dir(state_dir.join("logs")) else {
        return Vec::new();
    };
    let newest_pod_dir = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, e.path()))
        })
        .max_by_key(|(modified, _)| *modified);
    let Some((_, pod_dir)) = newest_pod_dir else {
        return Vec::new();
    };
    let Ok(files) = std::fs::read_dir(pod_dir.join(container)) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = files
        .flatten()
        .filter_map(|f| {
            let name = f.file_name().to_string_lossy().into_owned();
            let attempt = name.strip_suffix(".log")?.parse::<u32>().ok()?;
            Some((attempt, f.path()))
        })
        .collect();
    found.sort();
    found
}

/// Turns complete CRI lines into the bytes the client sees, honouring `since`,
/// `timestamps` and the remaining byte budget.
struct Renderer {
    since: Option<OffsetDateTime>,
    timestamps: bool,
    remaining: Option<u64>,
}

impl Renderer {
    /// Renders the lines; the flag is set once the byte limit is reached (stop streaming).
    fn render<'a>(&mut self, lines: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for raw in lines {
            let Some(line) = parse_cri_line(raw) else {
                tracing::debug!("skipping a malformed CRI log line");
                continue;
            };
            if self.since.is_some_and(|since| line.time < since) {
                continue;
            }
            let mut piece = Vec::with_capacity(line.text.len() + 40);
            if self.timestamps {
                piece.extend_from_slice(format_rfc3339_nano(line.time).as_bytes());
                piece.push(b' ');
            }
            piece.extend_from_slice(line.text);
            if !line.partial {
                piece.push(b'\n');
            }
            if let Some(remaining) = self.remaining.as_mut() {
                if (piece.len() as u64) >= *remaining {
                    piece.truncate(*remaining as usize);
                    *remaining = 0;
                    out.extend_from_slice(&piece);
                    return (out, true);
                }
                *remaining -= piece.len() as u64;
            }
            out.extend_from_slice(&piece);
        }
        (out, false)
    }
}

/// Splits off the complete lines of `buf` (without their newlines); what follows the last
/// newline stays in `buf`.
fn take_complete_lines(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    let rest = buf.split_off(last + 1);
    let complete = std::mem::replace(buf, rest);
    complete
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Answers a log request.
pub(crate) async fn container_logs(
    context: &Arc<Context>,
    namespace: &str,
    pod: &str,
    container: &str,
    pairs: &[(String, String)],
) -> Result<Response<Body>, HttpError> {
    let options = LogOptions::from_query(pairs, OffsetDateTime::now_utc())?;
    let found = attempts(&context.state_dir, namespace, pod, container);
    let (path, current) = if options.previous {
        if found.len() < 2 {
            return Err(HttpError::bad_request(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            )));
        }
        (found[found.len() - 2].1.clone(), false)
    } else {
        match found.last() {
            Some((_, path)) => (path.clone(), true),
            None => {
                return Err(HttpError::bad_request(format!(
                    "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
                )))
            }
        }
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let follow = options.follow && current;
    let follower = Follower {
        context: context.clone(),
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        path: path.clone(),
    };
    tokio::spawn(async move {
        if let Err(error) = pump(&follower, options, follow, tx).await {
            tracing::debug!(%error, path = %follower.path.display(), "reading a container log");
        }
    });
    let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let stream = futures::StreamExt::map(chunks, |b| {
        Ok::<_, std::convert::Infallible>(Frame::data(b))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

/// What a followed log needs to know when its container ends.
struct Follower {
    context: Arc<Context>,
    namespace: String,
    pod: String,
    container: String,
    path: PathBuf,
}

impl Follower {
    /// Whether the attempt whose log is followed still runs: it is the newest attempt and the
    /// runtime says its container runs.
    async fn still_running(&self) -> bool {
        let newest = attempts(
            &self.context.state_dir,
            &self.namespace,
            &self.pod,
            &self.container,
        );
        if newest.last().map(|(_, p)| p) != Some(&self.path) {
            return false;
        }
        let Some(id) = self
            .context
            .targets
            .container_id(&self.namespace, &self.pod, &self.container)
            .await
        else {
            return false;
        };
        matches!(
            self.context.runtime.container_state(&id).await,
            Ok(ContainerState::Running)
        )
    }
}

/// Reads the log file (the tail of it if asked), then follows it when asked, sending the
/// rendered bytes until done or the client goes.
async fn pump(
    follower: &Follower,
    options: LogOptions,
    follow: bool,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    let mut file = tokio::fs::File::open(&follower.path).await?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).await?;
    let mut renderer = Renderer {
        since: options.since,
        timestamps: options.timestamps,
        remaining: options.limit_bytes,
    };
    let mut lines = take_complete_lines(&mut buf);
    if let Some(tail) = options.tail_lines {
        let skip = lines.len().saturating_sub(tail as usize);
        lines.drain(..skip);
    }
    let (out, done) = renderer.render(lines.iter().map(Vec::as_slice));
    if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
        return Ok(());
    }
    if done || !follow {
        return Ok(());
    }
    let mut offset = file.stream_position().await?;
    let mut ended_once = false;
    let mut last_check: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
        }
        let mut file = tokio::fs::File::open(&follower.path).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let read = file.read_to_end(&mut buf).await?;
        offset += read as u64;
        let lines = take_complete_lines(&mut buf);
        if !lines.is_empty() {
            ended_once = false;
            let (out, done) = renderer.render(lines.iter().map(Vec::as_slice));
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return Ok(());
            }
            if done {
                return Ok(());
            }
            continue;
        }
        if read > 0 {
            continue;
        }
        // Nothing new: once the attempt has ended and one more poll found nothing written
        // after it, the log is complete.
        let now = tokio::time::Instant::now();
        if !ended_once && last_check.is_some_and(|at| now - at < RUNNING_CHECK) {
            continue;
        }
        last_check = Some(now);
        if follower.still_running().await {
            ended_once = false;
        } else if ended_once {
            return Ok(());
        } else {
            ended_once = true;
        }
    }
}
