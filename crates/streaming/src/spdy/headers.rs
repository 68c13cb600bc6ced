//! SPDY/3 header blocks: the name/value block format and its zlib compression with the
//! SPDY/3 dictionary (one compression context per direction for the whole connection).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::StreamingError;

/// The length-prefixed words at the start of the SPDY/3 header dictionary.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The unprefixed tail of the SPDY/3 header dictionary.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The largest decompressed header block accepted from a peer.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// The SPDY/3 zlib dictionary (SPDY/3 draft §2.6.10.1), 1423 bytes.
pub fn header_dictionary() -> &'static [u8] {
    static DICTIONARY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICTIONARY.get_or_init(|| {
        let mut out = Vec::with_capacity(1423);
        for word in DICTIONARY_WORDS {
            out.extend_from_slice(&(word.len() as u32).to_be_bytes());
            out.extend_from_slice(word.as_bytes());
        }
        out.extend_from_slice(DICTIONARY_TAIL.as_bytes());
        out
    })
}

/// The headers of a SPDY stream: ordered name/value pairs, names lower-cased on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header (the name is lower-cased, as SPDY requires).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Builder form of [`Headers::insert`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// The first value of a header, looked up case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The uncompressed name/value block: a 32-bit pair count, then each name and value with
    /// a 32-bit length. Values of a repeated name are joined with NUL, as SPDY/3 requires.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut merged: Vec<(&str, String)> = Vec::new();
        for (name, value) in &self.0 {
            match merged.iter_mut().find(|(n, _)| n == name) {
                Some((_, joined)) => {
                    joined.push('\0');
                    joined.push_str(value);
                }
                None => merged.push((name, value.clone())),
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(merged.len() as u32).to_be_bytes());
        for (name, value) in merged {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed name/value block; NUL-joined values become repeated pairs.
    pub fn decode_block(block: &[u8]) -> Result<Self, StreamingError> {
        let mut cursor = block;
        let count = take_u32(&mut cursor)? as usize;
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = take_string(&mut cursor)?;
            let value = take_string(&mut cursor)?;
            for part in value.split('\0') {
                headers
                    .0
                    .push((name.to_ascii_lowercase(), part.to_string()));
            }
        }
        Ok(headers)
    }
}

fn take_u32(cursor: &mut &[u8]) -> Result<u32, StreamingError> {
    if cursor.len() < 4 {
        return Err(StreamingError::Protocol("truncated header block".into()));
    }
    let (head, rest) = cursor.split_at(4);
    *cursor = rest;
    Ok(u32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

fn take_string(cursor: &mut &[u8]) -> Result<String, StreamingError> {
    let len = take_u32(cursor)? as usize;
    if cursor.len() < len {
        return Err(StreamingError::Protocol("truncated header block".into()));
    }
    let (head, rest) = cursor.split_at(len);
    *cursor = rest;
    String::from_utf8(head.to_vec())
        .map_err(|_| StreamingError::Protocol("header is not UTF-8".into()))
}

/// The compressing side of a connection's header context (one per direction).
pub struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    /// A fresh context primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Self, StreamingError> {
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(header_dictionary())
            .map_err(|e| StreamingError::Compression(e.to_string()))?;
        Ok(Self { zlib })
    }

    /// Compresses one header block, ending with a sync flush so the peer can decode it alone.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, StreamingError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| StreamingError::Compression(e.to_string()))?;
            consumed += (self.zlib.total_in() - before) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// The decompressing side of a connection's header context (one per direction).
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when the stream asks for it.
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses one header block (a sync-flushed piece of the connection's zlib stream).
    pub fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>, StreamingError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        let mut consumed = 0;
        loop {
            let before_in = self.zlib.total_in();
            let before_out = out.len();
            let before_consumed = consumed;
            let result =
                self.zlib
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.zlib.total_in() - before_in) as usize;
            match result {
                Ok(Status::StreamEnd) if consumed < input.len() => {
                    return Err(StreamingError::Compression(
                        "header zlib stream ended early".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(header_dictionary())
                        .map_err(|e| StreamingError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(StreamingError::Compression(e.to_string())),
            }
            if consumed == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(StreamingError::Compression("header block too large".into()));
            }
            if out.len() == before_out && consumed == before_consumed {
                return Err(StreamingError::Compression(
                    "header zlib stream stalled".into(),
                ));
            }
            out.reserve(out.capacity().max(256));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    /// The dictionary must be byte-identical to upstream's (golang.org/x/net/spdy, as vendored
    /// by moby/spdystream): 1423 bytes whose Adler-32 is the dictionary id 0xe3c6a7c2 that
    /// every SPDY/3 header stream announces (`78 xx e3 c6 a7 c2`).
    #[test]
    fn dictionary_matches_upstream() {
        let dictionary = header_dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert_eq!(adler32(dictionary), 0xe3c6_a7c2);
        assert_eq!(&dictionary[..11], b"\x00\x00\x00\x07options");
        assert!(dictionary.ends_with(b",*,enq=0."));
    }

    /// Header blocks compressed by C zlib (level 9, the SPDY/3 dictionary, sync flush) — two
    /// blocks of one connection's stream, the second depending on the first's context.
    #[test]
    fn decodes_blocks_compressed_by_reference_zlib() {
        let first: &[u8] = &[
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
            0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00,
            0xff, 0xff,
        ];
        let second: &[u8] = &[
            0x02, 0x65, 0x1c, 0x4c, 0xa9, 0xe2, 0x12, 0x60, 0x76, 0x81, 0x94, 0xd8, 0x45, 0xe0,
            0xcc, 0x61, 0x61, 0x60, 0x61, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut decompressor = HeaderDecompressor::new();
        let headers = Headers::decode_block(&decompressor.decompress(first).unwrap()).unwrap();
        assert_eq!(headers, Headers::new().with("streamtype", "error"));
        let headers = Headers::decode_block(&decompressor.decompress(second).unwrap()).unwrap();
        assert_eq!(headers.get("streamType"), Some("stdin"));
        assert_eq!(headers.get("port"), Some("8080"));
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn compressed_stream_announces_the_dictionary_and_round_trips() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        let blocks = [
            Headers::new().with("streamType", "error"),
            Headers::new()
                .with("streamType", "data")
                .with("port", "80")
                .with("requestID", "0"),
            Headers::new(),
        ];
        for (i, headers) in blocks.iter().enumerate() {
            let compressed = compressor.compress(&headers.encode_block()).unwrap();
            if i == 0 {
                assert_eq!(compressed[0], 0x78);
                assert_eq!(compressed[1] & 0x20, 0x20, "FDICT flag");
                assert_eq!(&compressed[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
            }
            assert!(
                compressed.ends_with(&[0x00, 0x00, 0xff, 0xff]),
                "sync flush"
            );
            let decoded =
                Headers::decode_block(&decompressor.decompress(&compressed).unwrap()).unwrap();
            assert_eq!(&decoded, headers);
        }
    }

    #[test]
    fn repeated_names_are_nul_joined_on_the_wire() {
        let headers = Headers::new().with("a", "1").with("A", "2");
        let block = headers.encode_block();
        assert_eq!(
            block,
            b"\x00\x00\x00\x01\x00\x00\x00\x01a\x00\x00\x00\x031\x002".to_vec()
        );
        assert_eq!(Headers::decode_block(&block).unwrap(), headers);
    }

    #[test]
    fn truncated_block_is_an_error() {
        assert!(Headers::decode_block(b"\x00\x00\x00\x01\x00\x00\x00\x05ab").is_err());
        assert!(HeaderDecompressor::new().decompress(b"not zlib").is_err());
    }
}
