//! RecordIO framing as the Mesos agent writes it on the SUBSCRIBE stream:
//! `<decimal length>\n<length bytes>`, repeated, with no delimiter after the
//! payload. Framing is independent of HTTP chunking: a record may be split across
//! reads and one read may carry several records, so the decoder buffers until a
//! whole record is present (`Ok(None)` means "need more bytes").

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default cap on one record. The largest legitimate event is a LAUNCH whose
/// TaskInfo carries `data`; Mesos itself caps framework messages far below this.
pub const DEFAULT_MAX_RECORD_LEN: usize = 64 * 1024 * 1024;

/// A `u64` has at most 20 decimal digits; a longer header cannot be valid.
const MAX_HEADER_DIGITS: usize = 20;

/// Why a byte stream is not valid RecordIO. Any of these leaves the stream
/// unusable: once framing is lost there is no way to resynchronise.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordIoError {
    /// The length header held something other than ASCII digits.
    #[error("invalid recordio length header: unexpected byte 0x{byte:02x} at offset {offset}")]
    BadHeaderByte {
        /// The offending byte.
        byte: u8,
        /// Its position within the header.
        offset: usize,
    },
    /// The header ran past 20 digits without a newline.
    #[error("invalid recordio length header: more than {MAX_HEADER_DIGITS} digits")]
    HeaderTooLong,
    /// The header was a bare newline.
    #[error("invalid recordio length header: empty")]
    EmptyHeader,
    /// The announced record is larger than the configured cap.
    #[error("recordio record of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length (saturated at `u64::MAX`).
        len: u64,
        /// The cap in force.
        max: usize,
    },
    /// The stream ended in the middle of a record.
    #[error("recordio stream ended inside a record ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left over at EOF.
        buffered: usize,
    },
    /// An I/O error from the underlying reader.
    #[error("reading the recordio stream: {0}")]
    Io(String),
}

impl From<std::io::Error> for RecordIoError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err.to_string())
    }
}

/// Streaming RecordIO decoder and encoder.
#[derive(Debug, Clone)]
pub struct RecordIoCodec {
    max_len: usize,
    /// Length of the record whose header has been consumed but whose payload is
    /// still incomplete; avoids re-parsing the header on every read.
    pending: Option<usize>,
}

impl RecordIoCodec {
    /// A codec that refuses records longer than `max_len` bytes.
    #[must_use]
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            pending: None,
        }
    }

    /// Parses the header at the start of `src`, if a whole one is buffered.
    fn parse_header(&self, src: &BytesMut) -> Result<Option<(usize, usize)>, RecordIoError> {
        let mut len: u64 = 0;
        let mut saturated = false;
        for (offset, &byte) in src.iter().enumerate() {
            match byte {
                b'\n' if offset == 0 => return Err(RecordIoError::EmptyHeader),
                b'\n' => {
                    let too_large =
                        saturated || usize::try_from(len).map_or(true, |l| l > self.max_len);
                    if too_large {
                        return Err(RecordIoError::TooLarge {
                            len,
                            max: self.max_len,
                        });
                    }
                    // Checked just above: len fits in usize.
                    return Ok(Some((
                        offset + 1,
                        usize::try_from(len).unwrap_or(usize::MAX),
                    )));
                }
                b'0'..=b'9' if offset < MAX_HEADER_DIGITS => {
                    match len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(u64::from(byte - b'0')))
                    {
                        Some(l) => len = l,
                        None => {
                            saturated = true;
                            len = u64::MAX;
                        }
                    }
                }
                b'0'..=b'9' => return Err(RecordIoError::HeaderTooLong),
                _ => return Err(RecordIoError::BadHeaderByte { byte, offset }),
            }
        }
        if src.len() > MAX_HEADER_DIGITS {
            return Err(RecordIoError::HeaderTooLong);
        }
        // Reject an oversized length as soon as its digits show it, without
        // waiting for the newline.
        if saturated || usize::try_from(len).map_or(true, |l| l > self.max_len) {
            return Err(RecordIoError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        Ok(None)
    }
}

impl Default for RecordIoCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORD_LEN)
    }
}

impl Decoder for RecordIoCodec {
    type Item = Bytes;
    type Error = RecordIoError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, RecordIoError> {
        let len = match self.pending {
            Some(len) => len,
            None => match self.parse_header(src)? {
                None => return Ok(None),
                Some((header_len, len)) => {
                    src.advance(header_len);
                    self.pending = Some(len);
                    len
                }
            },
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(src.split_to(len).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, RecordIoError> {
        match self.decode(src)? {
            Some(record) => Ok(Some(record)),
            None if src.is_empty() && self.pending.is_none() => Ok(None),
            None => Err(RecordIoError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for RecordIoCodec {
    type Error = RecordIoError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), RecordIoError> {
        let payload = item.as_ref();
        if payload.len() > self.max_len {
            return Err(RecordIoError::TooLarge {
                len: payload.len() as u64,
                max: self.max_len,
            });
        }
        let header = payload.len().to_string();
        dst.reserve(header.len() + 1 + payload.len());
        dst.put_slice(header.as_bytes());
        dst.put_u8(b'\n');
        dst.put_slice(payload);
        Ok(())
    }
}

/// Frames one record into a fresh buffer (for the emulator and tests).
#[must_use]
pub fn frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 21);
    out.put_slice(payload.len().to_string().as_bytes());
    out.put_u8(b'\n');
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        codec: &mut RecordIoCodec,
        chunks: &[&[u8]],
    ) -> Result<Vec<Bytes>, RecordIoError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(record) = codec.decode(&mut buf)? {
                out.push(record);
            }
        }
        if let Some(record) = codec.decode_eof(&mut buf)? {
            out.push(record);
        }
        Ok(out)
    }

    #[test]
    fn several_records_in_one_chunk() {
        let mut codec = RecordIoCodec::default();
        let got = decode_all(&mut codec, &[b"5\nhello3\nabc12\nhello world!"]).expect("decodes");
        assert_eq!(
            got,
            vec![
                Bytes::from("hello"),
                Bytes::from("abc"),
                Bytes::from("hello world!")
            ]
        );
    }

    #[test]
    fn record_split_byte_by_byte() {
        let input = b"11\nhello world2\nok";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let mut codec = RecordIoCodec::default();
        let got = decode_all(&mut codec, &chunks).expect("decodes");
        assert_eq!(got, vec![Bytes::from("hello world"), Bytes::from("ok")]);
    }

    #[test]
    fn zero_length_record_is_an_empty_item() {
        let mut codec = RecordIoCodec::default();
        let got = decode_all(&mut codec, &[b"0\n2\nhi"]).expect("decodes");
        assert_eq!(got, vec![Bytes::new(), Bytes::from("hi")]);
    }

    #[test]
    fn oversized_length_is_rejected_before_the_payload_arrives() {
        let mut codec = RecordIoCodec::new(10);
        let mut buf = BytesMut::from(&b"11\n"[..]);
        assert_eq!(
            codec.decode(&mut buf),
            Err(RecordIoError::TooLarge { len: 11, max: 10 })
        );
        let mut codec = RecordIoCodec::new(10);
        let mut buf = BytesMut::from(&b"123"[..]);
        assert_eq!(
            codec.decode(&mut buf),
            Err(RecordIoError::TooLarge { len: 123, max: 10 })
        );
    }

    #[test]
    fn garbage_headers_are_errors_not_panics() {
        for (input, want) in [
            (
                &b"x\n"[..],
                RecordIoError::BadHeaderByte {
                    byte: b'x',
                    offset: 0,
                },
            ),
            (
                &b"-1\n"[..],
                RecordIoError::BadHeaderByte {
                    byte: b'-',
                    offset: 0,
                },
            ),
            (
                &b"1 \n"[..],
                RecordIoError::BadHeaderByte {
                    byte: b' ',
                    offset: 1,
                },
            ),
            (
                &b"5\r\nhello"[..],
                RecordIoError::BadHeaderByte {
                    byte: b'\r',
                    offset: 1,
                },
            ),
            (&b"\n"[..], RecordIoError::EmptyHeader),
            (
                &b"000000000000000000001\n"[..],
                RecordIoError::HeaderTooLong,
            ),
        ] {
            let mut codec = RecordIoCodec::default();
            let mut buf = BytesMut::from(input);
            assert_eq!(codec.decode(&mut buf), Err(want), "input {input:?}");
        }
        let mut codec = RecordIoCodec::default();
        let mut buf = BytesMut::from(&b"99999999999999999999\n"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(RecordIoError::TooLarge { .. })
        ));
    }

    #[test]
    fn truncated_stream_is_reported_at_eof() {
        let mut codec = RecordIoCodec::default();
        assert_eq!(
            decode_all(&mut codec, &[b"5\nhel"]),
            Err(RecordIoError::Truncated { buffered: 3 })
        );
        let mut codec = RecordIoCodec::default();
        assert_eq!(
            decode_all(&mut codec, &[b"12"]),
            Err(RecordIoError::Truncated { buffered: 2 })
        );
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let mut codec = RecordIoCodec::default();
        let mut buf = BytesMut::new();
        for payload in [&b""[..], b"a", &[0u8; 300][..]] {
            codec.encode(payload, &mut buf).expect("encodes");
        }
        assert_eq!(&buf[..4], b"0\n1\n");
        let mut out = Vec::new();
        while let Some(r) = codec.decode(&mut buf).expect("decodes") {
            out.push(r);
        }
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].len(), 300);
        assert_eq!(frame(b"abc"), Bytes::from("3\nabc"));
    }
}
