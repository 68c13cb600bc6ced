//! SPDY/3 frames: parsing from and serialising to the byte stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::headers::{HeaderCompressor, HeaderDecompressor, Headers};
use crate::StreamingError;

/// The SPDY version this crate speaks.
pub const SPDY_VERSION: u16 = 3;
/// Control frame flag FIN (SYN_STREAM, SYN_REPLY, HEADERS) and data frame flag FIN.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag UNIDIRECTIONAL: the sender will not receive on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS id of the initial per-stream window size.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// RST_STREAM status PROTOCOL_ERROR.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status INVALID_STREAM.
pub const RST_INVALID_STREAM: u32 = 2;
/// RST_STREAM status REFUSED_STREAM.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status CANCEL.
pub const RST_CANCEL: u32 = 5;
/// The largest payload a frame may carry (24-bit length).
pub const MAX_FRAME_PAYLOAD: usize = (1 << 24) - 1;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// One SETTINGS entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Entry flags (PERSIST_VALUE, PERSISTED).
    pub flags: u8,
    /// The setting's 24-bit id.
    pub id: u32,
    /// Its value.
    pub value: u32,
}

/// A SPDY/3 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// The new stream's id (odd from clients, even from servers).
        stream_id: u32,
        /// The stream this one is associated with (0 for none).
        associated_to: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// FLAG_FIN and/or FLAG_UNIDIRECTIONAL.
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream the peer opened.
    SynReply {
        /// The accepted stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// The aborted stream.
        stream_id: u32,
        /// Why (RST_* codes).
        status: u32,
    },
    /// Connection settings.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        flags: u8,
        /// The entries.
        entries: Vec<Setting>,
    },
    /// Liveness check; the receiver echoes pings it did not send.
    Ping {
        /// Odd ids from clients, even from servers.
        id: u32,
    },
    /// The sender will open no more streams and accept none above `last_good_stream_id`.
    GoAway {
        /// Last stream id the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// The receiver may send `delta` more bytes on the stream (stream 0: the whole session).
    WindowUpdate {
        /// The stream, or 0 for the session window (SPDY/3.1).
        stream_id: u32,
        /// Bytes added to the window.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        flags: u8,
        /// Payload bytes.
        data: Bytes,
    },
    /// A control frame type this implementation does not know (ignored, as the spec says).
    Unknown {
        /// Its type.
        frame_type: u16,
    },
}

impl Frame {
    /// Parses one frame from the front of `buf`, or returns `Ok(None)` if more bytes are
    /// needed. Header blocks go through the connection's `decompressor`.
    pub fn parse(
        buf: &mut BytesMut,
        decompressor: &mut HeaderDecompressor,
    ) -> Result<Option<Frame>, StreamingError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + length {
            buf.reserve(8 + length - buf.len());
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        buf.advance(8);
        let mut payload = buf.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & STREAM_ID_MASK,
                flags,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let frame_type = (first & 0xffff) as u16;
        if version != SPDY_VERSION {
            return Err(StreamingError::Protocol(format!(
                "unsupported SPDY version {version}"
            )));
        }
        let need = |payload: &Bytes, n: usize| {
            if payload.len() < n {
                Err(StreamingError::Protocol(format!(
                    "control frame type {frame_type} too short ({} bytes)",
                    payload.len()
                )))
            } else {
                Ok(())
            }
        };
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                need(&payload, 10)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let associated_to = payload.get_u32() & STREAM_ID_MASK;
                let priority = payload.get_u8() >> 5;
                let _slot = payload.get_u8();
                let headers = decode_headers(&payload, decompressor)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&payload, 4)?;
                let stream_id = payload.get_u32() & STREAM_ID_MASK;
                let headers = decode_headers(&payload, decompressor)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&payload, 8)?;
                Frame::RstStream {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    status: payload.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&payload, 4)?;
                let count = payload.get_u32() as usize;
                need(&payload, count.saturating_mul(8))?;
                let entries = (0..count)
                    .map(|_| {
                        let head = payload.get_u32();
                        Setting {
                            flags: (head >> 24) as u8,
                            id: head & 0x00ff_ffff,
                            value: payload.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(&payload, 4)?;
                Frame::Ping {
                    id: payload.get_u32(),
                }
            }
            TYPE_GOAWAY => {
                need(&payload, 4)?;
                let last_good_stream_id = payload.get_u32() & STREAM_ID_MASK;
                // SPDY/3 adds a status code; tolerate its absence (SPDY/2 layout).
                let status = if payload.len() >= 4 {
                    payload.get_u32()
                } else {
                    0
                };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&payload, 8)?;
                Frame::WindowUpdate {
                    stream_id: payload.get_u32() & STREAM_ID_MASK,
                    delta: payload.get_u32() & STREAM_ID_MASK,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some(frame))
    }

    /// Serialises the frame onto `out`; header blocks go through the connection's
    /// `compressor` (so frames must be encoded in the order they are sent).
    pub fn encode(
        &self,
        out: &mut BytesMut,
        compressor: &mut HeaderCompressor,
    ) -> Result<(), StreamingError> {
        match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                check_length(data.len())?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(((*flags as u32) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = compressor.compress(&headers.encode_block())?;
                control_header(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(associated_to & STREAM_ID_MASK);
                out.put_u8((priority & 0x07) << 5);
                out.put_u8(0);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            }
            | Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let frame_type = if matches!(self, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let block = compressor.compress(&headers.encode_block())?;
                control_header(out, frame_type, *flags, 4 + block.len())?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_header(out, TYPE_RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control_header(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len())?;
                out.put_u32(entries.len() as u32);
                for entry in entries {
                    out.put_u32(((entry.flags as u32) << 24) | (entry.id & 0x00ff_ffff));
                    out.put_u32(entry.value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, TYPE_PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, TYPE_GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & STREAM_ID_MASK);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, TYPE_WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & STREAM_ID_MASK);
                out.put_u32(delta & STREAM_ID_MASK);
            }
            Frame::Unknown { frame_type } => {
                return Err(StreamingError::Protocol(format!(
                    "cannot send unknown frame type {frame_type}"
                )))
            }
        }
        Ok(())
    }
}

fn check_length(len: usize) -> Result<(), StreamingError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(StreamingError::Protocol(format!(
            "frame payload of {len} bytes exceeds the 24-bit length"
        )));
    }
    Ok(())
}

fn control_header(
    out: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    length: usize,
) -> Result<(), StreamingError> {
    check_length(length)?;
    out.put_u16(0x8000 | SPDY_VERSION);
    out.put_u16(frame_type);
    out.put_u32(((flags as u32) << 24) | length as u32);
    Ok(())
}

fn decode_headers(
    compressed: &[u8],
    decompressor: &mut HeaderDecompressor,
) -> Result<Headers, StreamingError> {
    if compressed.is_empty() {
        return Ok(Headers::new());
    }
    Headers::decode_block(&decompressor.decompress(compressed)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) -> (Vec<u8>, Frame) {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        let mut out = BytesMut::new();
        frame.encode(&mut out, &mut compressor).unwrap();
        let wire = out.to_vec();
        let parsed = Frame::parse(&mut out, &mut decompressor).unwrap().unwrap();
        assert!(out.is_empty(), "the whole frame was consumed");
        (wire, parsed)
    }

    #[test]
    fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: Headers::new().with("streamtype", "stdin"),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 1,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
            Frame::Headers {
                stream_id: 5,
                flags: FLAG_FIN,
                headers: Headers::new().with("x", "y"),
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
        ];
        for frame in frames {
            let (_, parsed) = round_trip(frame.clone());
            assert_eq!(parsed, frame);
        }
    }

    /// Byte layouts from the SPDY/3 draft (§2.2, §2.6.5, §2.6.8).
    #[test]
    fn wire_layouts_match_the_spec() {
        let (wire, _) = round_trip(Frame::Ping { id: 1 });
        assert_eq!(wire, [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
        let (wire, _) = round_trip(Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        });
        assert_eq!(wire, [0, 0, 0, 3, 0x01, 0, 0, 2, b'a', b'b']);
        let (wire, _) = round_trip(Frame::WindowUpdate {
            stream_id: 1,
            delta: 0x10000,
        });
        assert_eq!(
            wire,
            [0x80, 0x03, 0x00, 0x09, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]
        );
        let (wire, _) = round_trip(Frame::RstStream {
            stream_id: 1,
            status: RST_CANCEL,
        });
        assert_eq!(
            wire,
            [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 5]
        );
        let (wire, _) = round_trip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::new(),
        });
        assert_eq!(&wire[..4], &[0x80, 0x03, 0x00, 0x01]);
        assert_eq!(&wire[8..18], &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&wire[18..20], &[0x78, 0xf9]);
    }

    #[test]
    fn partial_input_waits_for_more() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        let mut out = BytesMut::new();
        Frame::Ping { id: 9 }
            .encode(&mut out, &mut compressor)
            .unwrap();
        let mut partial = BytesMut::from(&out[..10]);
        assert_eq!(Frame::parse(&mut partial, &mut decompressor).unwrap(), None);
        partial.extend_from_slice(&out[10..]);
        assert_eq!(
            Frame::parse(&mut partial, &mut decompressor).unwrap(),
            Some(Frame::Ping { id: 9 })
        );
    }

    #[test]
    fn other_versions_and_unknown_types() {
        let mut decompressor = HeaderDecompressor::new();
        let mut v2 = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(Frame::parse(&mut v2, &mut decompressor).is_err());
        let mut unknown = BytesMut::from(&[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 1, 0xaa][..]);
        assert_eq!(
            Frame::parse(&mut unknown, &mut decompressor).unwrap(),
            Some(Frame::Unknown { frame_type: 10 })
        );
        let mut short = BytesMut::from(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(Frame::parse(&mut short, &mut decompressor).is_err());
    }
}
