//! WebSocket v5 exec/attach and port-forward translation against an in-process SPDY
//! "runtime" that behaves like the kubelet/containerd streaming server.

use std::collections::HashMap;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nodeless_streaming::spdy::{SpdySession, SpdyStream};
use nodeless_streaming::translate::{
    exec_websocket_to_spdy, portforward_websocket_to_spdy, ExecStreams,
};
use nodeless_streaming::websocket::{accept_upgraded, connect_upgraded, ChannelFrame};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const EXIT_3_STATUS: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
const SUCCESS_STATUS: &str = r#"{"metadata":{},"status":"Success"}"#;

/// Accepts `count` streams and indexes them by `streamType`, as the kubelet's server does.
async fn accept_streams(session: &SpdySession, count: usize) -> HashMap<String, SpdyStream> {
    let mut streams = HashMap::new();
    for _ in 0..count {
        let stream = session.accept().await.expect("stream from the agent");
        let kind = stream.headers().get("streamType").unwrap().to_string();
        assert!(
            streams.insert(kind, stream).is_none(),
            "one stream per type"
        );
    }
    streams
}

/// Wires a WebSocket client to the translator and the translator to `runtime`.
fn start(
    streams: ExecStreams,
) -> (
    WebSocketStream<DuplexStream>,
    DuplexStream,
    tokio::task::JoinHandle<Result<(), nodeless_streaming::StreamingError>>,
) {
    let (client_io, agent_ws_io) = tokio::io::duplex(64 * 1024);
    let (agent_upstream, runtime_io) = tokio::io::duplex(64 * 1024);
    let translator = tokio::spawn(async move {
        let ws = accept_upgraded(agent_ws_io).await;
        exec_websocket_to_spdy(ws, agent_upstream, streams).await
    });
    let client = futures::executor::block_on(connect_upgraded(client_io));
    (client, runtime_io, translator)
}

/// Reads the client's messages until the close frame: (data per channel, close code).
async fn collect(client: &mut WebSocketStream<DuplexStream>) -> (HashMap<u8, Vec<u8>>, CloseCode) {
    let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
    loop {
        let message = client
            .next()
            .await
            .expect("message")
            .expect("valid message");
        match message {
            Message::Binary(data) => {
                let Some(ChannelFrame::Data { channel, payload }) =
                    ChannelFrame::decode(&data, nodeless_streaming::websocket::ChannelProtocol::V5)
                        .unwrap()
                else {
                    panic!("server sent a non-data frame");
                };
                channels
                    .entry(channel)
                    .or_default()
                    .extend_from_slice(&payload);
            }
            Message::Close(frame) => return (channels, frame.expect("close frame").code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn v5_exec_echoes_stdin_propagates_close_and_reports_the_exit_status() {
    let streams = ExecStreams {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let (mut client, runtime_io, translator) = start(streams);
    let runtime = tokio::spawn(async move {
        let session = SpdySession::server(runtime_io).unwrap();
        let mut streams = accept_streams(&session, 4).await;
        let mut stdin = streams.remove("stdin").unwrap();
        let mut stdout = streams.remove("stdout").unwrap();
        let mut stderr = streams.remove("stderr").unwrap();
        let mut error = streams.remove("error").unwrap();
        // `cat`: echo stdin to stdout until EOF (which only the v5 close can produce).
        let mut buf = [0u8; 1024];
        let mut echoed = 0;
        loop {
            let n = stdin.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            echoed += n;
            stdout.write_all(&buf[..n]).await.unwrap();
        }
        stderr.write_all(b"stdin closed\n").await.unwrap();
        stdout.shutdown().await.unwrap();
        stderr.shutdown().await.unwrap();
        error.write_all(EXIT_3_STATUS.as_bytes()).await.unwrap();
        error.shutdown().await.unwrap();
        // Like the kubelet: the connection closes once the status is written.
        echoed
    });

    client
        .send(Message::Binary(
            ChannelFrame::data(0, &b"hello\n"[..]).encode(),
        ))
        .await
        .unwrap();
    client
        .send(Message::Binary(
            ChannelFrame::data(0, &b"world\n"[..]).encode(),
        ))
        .await
        .unwrap();
    client
        .send(Message::Binary(ChannelFrame::Close { channel: 0 }.encode()))
        .await
        .unwrap();
    let (channels, code) = tokio::time::timeout(Duration::from_secs(10), collect(&mut client))
        .await
        .expect("exec finished");
    assert_eq!(code, CloseCode::Normal);
    assert_eq!(channels[&1], b"hello\nworld\n");
    assert_eq!(channels[&2], b"stdin closed\n");
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert_eq!(runtime.await.unwrap(), 12);
    translator.await.unwrap().unwrap();
}

#[tokio::test]
async fn tty_exec_forwards_resize_events_and_opens_no_stderr() {
    let streams = ExecStreams {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let (mut client, runtime_io, translator) = start(streams);
    let runtime = tokio::spawn(async move {
        let session = SpdySession::server(runtime_io).unwrap();
        let mut streams = accept_streams(&session, 3).await;
        assert!(!streams.contains_key("stderr"), "a terminal has no stderr");
        let resize = streams.remove("resize").unwrap();
        let mut stdout = streams.remove("stdout").unwrap();
        let mut error = streams.remove("error").unwrap();
        let mut line = String::new();
        BufReader::new(resize).read_line(&mut line).await.unwrap();
        stdout
            .write_all(format!("size {line}").as_bytes())
            .await
            .unwrap();
        stdout.shutdown().await.unwrap();
        error.write_all(SUCCESS_STATUS.as_bytes()).await.unwrap();
        error.shutdown().await.unwrap();
    });
    client
        .send(Message::Binary(
            ChannelFrame::data(4, &b"{\"Width\":80,\"Height\":24}\n"[..]).encode(),
        ))
        .await
        .unwrap();
    let (channels, code) = tokio::time::timeout(Duration::from_secs(10), collect(&mut client))
        .await
        .expect("exec finished");
    assert_eq!(code, CloseCode::Normal);
    assert_eq!(channels[&1], b"size {\"Width\":80,\"Height\":24}\n");
    assert_eq!(channels[&3], SUCCESS_STATUS.as_bytes());
    runtime.await.unwrap();
    translator.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_runtime_that_refuses_the_streams_yields_a_failure_status() {
    let streams = ExecStreams {
        stdin: false,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let (mut client, runtime_io, translator) = start(streams);
    // The runtime hangs up at once.
    drop(runtime_io);
    let (channels, code) = tokio::time::timeout(Duration::from_secs(10), collect(&mut client))
        .await
        .expect("translator answered");
    assert_eq!(code, CloseCode::Normal);
    let status: serde_json::Value = serde_json::from_slice(&channels[&3]).unwrap();
    assert_eq!(status["status"], "Failure");
    assert!(translator.await.unwrap().is_err());
}

#[tokio::test]
async fn portforward_tunnel_moves_bytes_both_ways() {
    let (client_io, agent_ws_io) = tokio::io::duplex(64 * 1024);
    let (agent_upstream, mut runtime_io) = tokio::io::duplex(64 * 1024);
    let translator = tokio::spawn(async move {
        let ws = accept_upgraded(agent_ws_io).await;
        portforward_websocket_to_spdy(ws, agent_upstream).await
    });
    let mut client = connect_upgraded(client_io).await;
    client
        .send(Message::Binary(bytes::Bytes::from_static(
            b"\x80\x03\x00\x06spdy",
        )))
        .await
        .unwrap();
    let mut got = [0u8; 8];
    runtime_io.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"\x80\x03\x00\x06spdy");
    runtime_io.write_all(b"reply bytes").await.unwrap();
    let Message::Binary(data) = client.next().await.unwrap().unwrap() else {
        panic!("binary message expected");
    };
    assert_eq!(&data[..], b"reply bytes");
    // The runtime hangs up: the client gets a normal close.
    drop(runtime_io);
    let Message::Close(Some(frame)) = client.next().await.unwrap().unwrap() else {
        panic!("close expected");
    };
    assert_eq!(frame.code, CloseCode::Normal);
    translator.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_goes_away_ends_the_translation_and_the_upstream() {
    let streams = ExecStreams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let (mut client, runtime_io, translator) = start(streams);
    let runtime = tokio::spawn(async move {
        let session = SpdySession::server(runtime_io).unwrap();
        let mut streams = accept_streams(&session, 3).await;
        let mut stdout = streams.remove("stdout").unwrap();
        stdout.write_all(b"started\n").await.unwrap();
        // A long-running process: never ends on its own; the connection must close.
        tokio::time::timeout(Duration::from_secs(10), session.closed())
            .await
            .expect("agent closed the runtime connection");
        drop(streams);
    });
    let Message::Binary(data) = client.next().await.unwrap().unwrap() else {
        panic!("stdout expected");
    };
    assert_eq!(&data[..], b"\x01started\n");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), translator)
        .await
        .expect("translator ended")
        .unwrap()
        .unwrap();
    runtime.await.unwrap();
}
