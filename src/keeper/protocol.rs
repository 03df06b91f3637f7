//! Messages between the daemon and the keeper: `[VERSION, op, fields...]`, each field a
//! little-endian u32 length and its bytes; descriptors travel with the message.
use std::io;

pub const VERSION: u8 = 1;
/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Store an entry (replacing one of the same key): flags, volume, key, data; its descriptors.
pub const PUT: u8 = b'P';
/// Drop an entry, or with an empty key the whole volume: volume, key.
pub const DROP: u8 = b'D';
/// Every entry of a volume, one `ITEM` each, then `OK`: volume.
pub const GET: u8 = b'G';
/// Every volume held, one `ITEM` each (key = its name, no data), then `OK`.
pub const LIST: u8 = b'L';
/// One entry: key, data; its descriptors.
pub const ITEM: u8 = b'I';
pub const OK: u8 = b'K';
/// A refusal: message.
pub const ERROR: u8 = b'E';

/// PUT flag: the entry's first descriptor is the volume's FUSE connection; when the kernel
/// ends it, the whole volume is dropped.
pub const WATCH: u8 = 1;

pub struct Writer(Vec<u8>);

impl Writer {
    pub fn new(op: u8) -> Writer {
        Writer(vec![VERSION, op])
    }

    pub fn byte(mut self, b: u8) -> Writer {
        self.0.push(b);
        self
    }

    pub fn field(mut self, bytes: &[u8]) -> Writer {
        self.0
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn finish(self) -> io::Result<Vec<u8>> {
        if self.0.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a keeper message of {} bytes (at most {MAX_MESSAGE})",
                    self.0.len()
                ),
            ));
        }
        Ok(self.0)
    }
}

pub struct Reader<'a> {
    rest: &'a [u8],
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl<'a> Reader<'a> {
    /// The operation of `message`, and a reader of its fields.
    pub fn new(message: &'a [u8]) -> io::Result<(u8, Reader<'a>)> {
        match message {
            [VERSION, op, rest @ ..] => Ok((*op, Reader { rest })),
            [v, ..] => Err(bad(&format!(
                "keeper protocol version {v} (this side speaks {VERSION})"
            ))),
            [] => Err(bad("an empty keeper message")),
        }
    }

    pub fn byte(&mut self) -> io::Result<u8> {
        let (&b, rest) = self
            .rest
            .split_first()
            .ok_or_else(|| bad("message too short"))?;
        self.rest = rest;
        Ok(b)
    }

    pub fn field(&mut self) -> io::Result<&'a [u8]> {
        if self.rest.len() < 4 {
            return Err(bad("message too short"));
        }
        let (len, rest) = self.rest.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            return Err(bad("a field runs past the message"));
        }
        let (field, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }

    pub fn text(&mut self) -> io::Result<&'a str> {
        std::str::from_utf8(self.field()?).map_err(|_| bad("a name that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_bad_messages_are_refused() {
        let msg = Writer::new(PUT)
            .byte(WATCH)
            .field(b"vol")
            .field(b"")
            .field(&[1, 2, 3])
            .finish()
            .unwrap();
        let (op, mut r) = Reader::new(&msg).unwrap();
        assert_eq!(op, PUT);
        assert_eq!(r.byte().unwrap(), WATCH);
        assert_eq!(r.text().unwrap(), "vol");
        assert_eq!(r.field().unwrap(), b"");
        assert_eq!(r.field().unwrap(), &[1, 2, 3]);
        assert!(r.field().is_err());
        assert!(Reader::new(&[9, PUT]).is_err());
        assert!(Reader::new(&[]).is_err());
        let (_, mut r) = Reader::new(&[VERSION, PUT, 200, 0, 0, 0, 1]).unwrap();
        assert!(r.field().is_err());
    }
}
