//! An outbox on disk, in a [redb](https://docs.rs/redb) database: pure
//! Rust (nothing to build or install beside this crate), one file, and
//! ACID: a message appended is committed and synced to disk before the
//! append returns, and a crash at any point leaves the file with every
//! committed message and nothing half-written.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Outbox, OutboxStore};
use crate::budget::Budget;
use crate::messaging::Message;
use crate::BoxError;

/// Message number → the message, encoded.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("seawall.outbox.messages");

/// An [`OutboxStore`] in a redb database file (feature `durable-outbox`):
/// messages survive the process. One process at a time opens a file.
///
/// Each append is a transaction committed with an `fsync` (about a
/// millisecond on a local SSD, more on network disks), made on the
/// caller's thread: a notifier pays it only when it diverts a message,
/// that is while the broker is failing.
pub struct RedbStore {
    database: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens the database at `path`, making it if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, BoxError> {
        let database = Database::create(path)?;
        let write = database.begin_write()?;
        write.open_table(MESSAGES)?;
        write.commit()?;
        Ok(RedbStore { database })
    }
}

impl Outbox<RedbStore> {
    /// An outbox on disk at `path` (made if missing; what a previous
    /// process kept there is kept still), holding at most `capacity`
    /// messages. Feature `durable-outbox`.
    ///
    /// ```
    /// use seawall::messaging::{Message, Outbox};
    ///
    /// let dir = std::env::temp_dir().join(format!("seawall-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("outbox.redb");
    /// {
    ///     let outbox = Outbox::open(&path, 10_000).unwrap();
    ///     outbox.push(Message::new("orders.created", "42")).unwrap();
    /// } // the process could die here
    /// let outbox = Outbox::open(&path, 10_000).unwrap();
    /// assert_eq!(outbox.len(), 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(path: impl AsRef<Path>, capacity: usize) -> Result<Outbox<RedbStore>, BoxError> {
        Ok(Outbox::with_store(RedbStore::open(path)?, capacity)?)
    }
}

impl OutboxStore for RedbStore {
    fn append(&self, message: &Message, capacity: usize) -> Result<bool, BoxError> {
        let write = self.database.begin_write()?;
        {
            let mut table = write.open_table(MESSAGES)?;
            if usize::try_from(table.len()?).unwrap_or(usize::MAX) >= capacity {
                return Ok(false);
            }
            let number = match table.last()? {
                Some((last, _)) => last.value() + 1,
                None => 0,
            };
            table.insert(number, encode(message)?.as_slice())?;
        }
        write.commit()?;
        Ok(true)
    }

    fn first(&self) -> Result<Option<(u64, Message)>, BoxError> {
        let read = self.database.begin_read()?;
        let table = read.open_table(MESSAGES)?;
        let first = match table.first()? {
            Some((number, bytes)) => Some((number.value(), decode(bytes.value())?)),
            None => None,
        };
        Ok(first)
    }

    fn remove(&self, number: u64) -> Result<(), BoxError> {
        let write = self.database.begin_write()?;
        write.open_table(MESSAGES)?.remove(number)?;
        write.commit()?;
        Ok(())
    }

    fn len(&self) -> Result<usize, BoxError> {
        let read = self.database.begin_read()?;
        let len = read.open_table(MESSAGES)?.len()?;
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    fn drain(&self) -> Result<Vec<Message>, BoxError> {
        let write = self.database.begin_write()?;
        let mut drained = Vec::new();
        {
            let mut table = write.open_table(MESSAGES)?;
            while let Some((_, bytes)) = table.pop_first()? {
                drained.push(decode(bytes.value())?);
            }
        }
        write.commit()?;
        Ok(drained)
    }
}

/// The format's version, first byte of every record.
const VERSION: u8 = 1;

/// A message as bytes: the version, then each field length-prefixed
/// (optional ones after a presence byte). The deadline is kept as Unix
/// milliseconds, as it travels across brokers: it must mean the same
/// instant to the process that flushes it.
fn encode(message: &Message) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::with_capacity(64 + message.subject.len() + message.payload.len());
    out.push(VERSION);
    put(&mut out, message.subject.as_bytes())?;
    put(&mut out, &message.payload)?;
    for text in [&message.reply_to, &message.correlation_id, &message.id] {
        put_optional(&mut out, text.as_deref().map(str::as_bytes))?;
    }
    let deadline = message
        .deadline
        .map(|budget| budget.to_unix_millis().to_le_bytes());
    put_optional(&mut out, deadline.as_ref().map(|millis| &millis[..]))?;
    Ok(out)
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), BoxError> {
    let len = u32::try_from(bytes.len()).map_err(|_| "a message field of 4 GiB or more")?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Result<(), BoxError> {
    match bytes {
        Some(bytes) => {
            out.push(1);
            put(out, bytes)
        }
        None => {
            out.push(0);
            Ok(())
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Message, BoxError> {
    let mut reader = Reader(bytes);
    if reader.byte()? != VERSION {
        return Err("an outbox record of an unknown format".into());
    }
    let subject = reader.text()?;
    let mut message = Message::new(subject, bytes::Bytes::copy_from_slice(reader.field()?));
    message.reply_to = reader.optional()?.map(text).transpose()?;
    message.correlation_id = reader.optional()?.map(text).transpose()?;
    message.id = reader.optional()?.map(text).transpose()?;
    message.deadline = match reader.optional()? {
        Some(millis) => {
            let millis: [u8; 8] = millis
                .try_into()
                .map_err(|_| "an outbox record's deadline is not 8 bytes")?;
            Some(Budget::from_unix_millis(u64::from_le_bytes(millis)))
        }
        None => None,
    };
    Ok(message)
}

fn text(bytes: &[u8]) -> Result<String, BoxError> {
    Ok(std::str::from_utf8(bytes)?.to_owned())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoxError> {
        if self.0.len() < n {
            return Err("an outbox record ends early".into());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, BoxError> {
        Ok(self.take(1)?[0])
    }

    fn field(&mut self) -> Result<&'a [u8], BoxError> {
        let len: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
        self.take(u32::from_le_bytes(len) as usize)
    }

    fn text(&mut self) -> Result<String, BoxError> {
        text(self.field()?)
    }

    fn optional(&mut self) -> Result<Option<&'a [u8]>, BoxError> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(self.field()?)),
            _ => Err("an outbox record is corrupt".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_it_was_written() {
        let mut message = Message::new("orders.created", vec![0u8, 159, 146, 150])
            .with_id("id-1")
            .with_deadline(Budget::from_unix_millis(1_900_000_000_123));
        message.reply_to = Some("inbox.7".into());
        let mut back = decode(&encode(&message).unwrap()).unwrap();
        // A deadline travels as wall-clock milliseconds, rounded down at
        // each conversion: never later, a few milliseconds earlier at most.
        let millis = back.deadline.unwrap().to_unix_millis();
        assert!(
            (1_900_000_000_118..=1_900_000_000_123).contains(&millis),
            "{millis}"
        );
        back.deadline = message.deadline;
        assert_eq!(back, message);
        let bare = Message::new("x", "");
        assert_eq!(decode(&encode(&bare).unwrap()).unwrap(), bare);
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let bytes = encode(&Message::new("orders", "42").with_id("a")).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode(&bad).is_err());
    }
}
