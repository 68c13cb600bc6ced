//! SPDY sessions against each other in-process, and against a raw peer that behaves like
//! moby/spdystream (no flow control).

use std::time::Duration;

use bytes::BytesMut;
use nodeless_streaming::spdy::frame::{Frame, FLAG_FIN, RST_CANCEL};
use nodeless_streaming::spdy::headers::{HeaderCompressor, HeaderDecompressor};
use nodeless_streaming::spdy::{spdy_upgrade, spdy_upgrade_url, Headers, SpdySession};
use nodeless_streaming::StreamingError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

fn pair() -> (SpdySession, SpdySession) {
    let (a, b) = tokio::io::duplex(16 * 1024);
    (
        SpdySession::client(a).unwrap(),
        SpdySession::server(b).unwrap(),
    )
}

#[tokio::test]
async fn streams_carry_headers_data_and_half_close() {
    let (client, server) = pair();
    let server_side = tokio::spawn(async move {
        let mut stream = server.accept().await.expect("a stream");
        assert_eq!(stream.headers().get("streamtype"), Some("stdin"));
        assert_eq!(stream.headers().get("requestID"), Some("7"));
        assert_eq!(stream.id() % 2, 1, "client streams are odd");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
        // The client's FIN closed only its direction: we can still answer.
        stream.write_all(b"echo: ").await.unwrap();
        stream.write_all(&got).await.unwrap();
        stream.shutdown().await.unwrap();
        server
    });
    let mut stream = client
        .open_stream(
            Headers::new()
                .with("streamType", "stdin")
                .with("requestID", "7"),
        )
        .await
        .unwrap();
    stream.write_all(b"hello ").await.unwrap();
    stream.write_all(b"world").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "echo: hello world");
    let _server = server_side.await.unwrap();
    assert!(
        stream.write_all(b"late").await.is_err(),
        "no writes after FIN"
    );
}

#[tokio::test]
async fn pings_are_answered_both_ways() {
    let (client, server) = pair();
    tokio::time::timeout(Duration::from_secs(5), client.ping())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.ping())
        .await
        .unwrap()
        .unwrap();
}

async fn transfer(session: &SpdySession, accept: &SpdySession, size: usize) {
    let payload: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let expected = payload.clone();
    let (opened, accepted) = tokio::join!(session.open_stream(Headers::new()), accept.accept());
    let mut sender = opened.unwrap();
    let mut receiver = accepted.unwrap();
    let write = async move {
        sender.write_all(&payload).await.unwrap();
        sender.shutdown().await.unwrap();
        sender
    };
    let read = async move {
        let mut got = Vec::with_capacity(size);
        receiver.read_to_end(&mut got).await.unwrap();
        got
    };
    let (_sender, got) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(write, read) })
            .await
            .expect("transfer finished");
    assert!(got == expected, "10 MiB arrived intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mebibytes_pass_through_flow_control_both_ways() {
    let (client, server) = pair();
    transfer(&client, &server, 10 * 1024 * 1024).await;
    // Server-initiated stream, the other direction.
    transfer(&server, &client, 10 * 1024 * 1024).await;
}

#[tokio::test]
async fn writes_stop_at_the_window_when_the_peer_does_flow_control() {
    let (client, server) = pair();
    let (opened, accepted) = tokio::join!(client.open_stream(Headers::new()), server.accept());
    let mut sender = opened.unwrap();
    let mut receiver = accepted.unwrap();
    let blob = vec![1u8; 1024 * 1024];
    // The receiver does not read: the writer must block once the 64 KiB window is spent.
    let mut written = 0;
    let blocked = tokio::time::timeout(Duration::from_millis(300), async {
        while written < blob.len() {
            written += sender.write(&blob[written..]).await.unwrap();
        }
    })
    .await;
    assert!(blocked.is_err(), "writer blocked");
    assert_eq!(written, 64 * 1024, "exactly one window was sent");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        receiver.read_to_end(&mut got).await.unwrap();
        got.len()
    });
    sender.write_all(&blob[written..]).await.unwrap();
    sender.shutdown().await.unwrap();
    assert_eq!(reader.await.unwrap(), blob.len());
}

#[tokio::test]
async fn reset_ends_reads_and_fails_writes() {
    let (client, server) = pair();
    let (opened, accepted) = tokio::join!(client.open_stream(Headers::new()), server.accept());
    let mut stream = opened.unwrap();
    let accepted = accepted.unwrap();
    accepted.reset();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stream.peer_reset(), Some(RST_CANCEL));
    assert!(stream.write_all(b"x").await.is_err());
}

#[tokio::test]
async fn dropping_a_session_closes_the_connection() {
    let (client, server) = pair();
    let stream = client.open_stream(Headers::new());
    let (opened, _accepted) = tokio::join!(stream, server.accept());
    drop(opened.unwrap());
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), server.closed())
        .await
        .expect("server saw the end of the connection");
    assert!(server.is_closed());
    assert!(matches!(
        server.open_stream(Headers::new()).await,
        Err(StreamingError::SessionClosed)
    ));
}

/// A peer that speaks SPDY frames by hand the way moby/spdystream does: it replies to
/// SYN_STREAM, never sends SETTINGS or WINDOW_UPDATE, and ignores windows.
struct RawPeer {
    io: DuplexStream,
    buf: BytesMut,
    compressor: HeaderCompressor,
    decompressor: HeaderDecompressor,
}

impl RawPeer {
    async fn next_frame(&mut self) -> Frame {
        loop {
            if let Some(frame) = Frame::parse(&mut self.buf, &mut self.decompressor).unwrap() {
                return frame;
            }
            assert!(
                self.io.read_buf(&mut self.buf).await.unwrap() > 0,
                "peer EOF"
            );
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        frame.encode(&mut out, &mut self.compressor).unwrap();
        self.io.write_all(&out).await.unwrap();
    }
}

#[tokio::test]
async fn peers_without_flow_control_get_data_without_window_limits() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let client = SpdySession::client(a).unwrap();
    let mut peer = RawPeer {
        io: b,
        buf: BytesMut::new(),
        compressor: HeaderCompressor::new().unwrap(),
        decompressor: HeaderDecompressor::new(),
    };
    let peer_task = tokio::spawn(async move {
        let mut received = 0usize;
        let mut reply_sent = false;
        loop {
            match peer.next_frame().await {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    assert_eq!(headers.get("streamtype"), Some("stdin"));
                    peer.send(Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Headers::new(),
                    })
                    .await;
                    // Server-to-client data, answered to a PING of ours afterwards.
                    peer.send(Frame::Data {
                        stream_id,
                        flags: FLAG_FIN,
                        data: bytes::Bytes::from_static(b"from runtime"),
                    })
                    .await;
                    peer.send(Frame::Ping { id: 2 }).await;
                    reply_sent = true;
                }
                Frame::Data { data, flags, .. } => {
                    received += data.len();
                    if flags & FLAG_FIN != 0 {
                        return received;
                    }
                }
                Frame::Ping { id } => assert_eq!(id, 2, "our even ping echoed back"),
                Frame::Settings { .. } | Frame::WindowUpdate { .. } => {}
                other => panic!("unexpected frame {other:?} (reply sent: {reply_sent})"),
            }
        }
    });
    let mut stream = client
        .open_stream(Headers::new().with("streamType", "stdin"))
        .await
        .unwrap();
    let mut from_runtime = String::new();
    stream.read_to_string(&mut from_runtime).await.unwrap();
    assert_eq!(from_runtime, "from runtime");
    let blob = vec![9u8; 1024 * 1024];
    tokio::time::timeout(Duration::from_secs(20), stream.write_all(&blob))
        .await
        .expect("no stall without WINDOW_UPDATEs")
        .unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(peer_task.await.unwrap(), blob.len());
}

async fn fake_streaming_server<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    response: &'static [u8],
) -> String {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        io.read_exact(&mut byte).await.unwrap();
        request.push(byte[0]);
    }
    io.write_all(response).await.unwrap();
    String::from_utf8(request).unwrap()
}

#[tokio::test]
async fn upgrade_offers_protocols_and_keeps_early_bytes() {
    let (a, b) = tokio::io::duplex(4096);
    let server = tokio::spawn(fake_streaming_server(
        b,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\nEARLY",
    ));
    let (mut io, protocol) = spdy_upgrade(
        a,
        "127.0.0.1:10010",
        "/exec/abc?x=1",
        &["v4.channel.k8s.io", "v3.channel.k8s.io"],
    )
    .await
    .unwrap();
    assert_eq!(protocol, "v4.channel.k8s.io");
    let mut early = [0u8; 5];
    io.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"EARLY");
    let request = server.await.unwrap();
    assert!(request.starts_with("POST /exec/abc?x=1 HTTP/1.1\r\n"));
    assert!(request.contains("Host: 127.0.0.1:10010\r\n"));
    assert!(request.contains("Upgrade: SPDY/3.1\r\n"));
    assert!(request.contains("Connection: Upgrade\r\n"));
    let offered: Vec<_> = request
        .lines()
        .filter_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
        .collect();
    assert_eq!(offered, ["v4.channel.k8s.io", "v3.channel.k8s.io"]);
}

#[tokio::test]
async fn refused_upgrade_reports_status_and_body() {
    let (a, b) = tokio::io::duplex(4096);
    tokio::spawn(fake_streaming_server(
        b,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 15\r\n\r\ntoken not found",
    ));
    let err = spdy_upgrade(a, "h", "/exec/gone", &["v4.channel.k8s.io"])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("404") && text.contains("token not found"),
        "{text}"
    );
}

#[tokio::test]
async fn upgrade_by_url_connects_and_sends_the_path() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        fake_streaming_server(
            socket,
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
              X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n",
        )
        .await
    });
    let url = format!("http://127.0.0.1:{port}/portforward/TOKEN");
    let (_io, protocol) = spdy_upgrade_url(&url, &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(protocol, "portforward.k8s.io");
    let request = server.await.unwrap();
    assert!(
        request.starts_with("POST /portforward/TOKEN HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains(&format!("Host: 127.0.0.1:{port}\r\n")));
    assert!(spdy_upgrade_url("https://127.0.0.1:1/x", &[])
        .await
        .is_err());
}
