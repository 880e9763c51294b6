//! Request coalescing: at most one origin fetch per key at a time. The first request for a key
//! leads the flight; the others follow it and are told how it went: a storable response streams
//! to all of them from the file being written, and the others are told to fetch for themselves
//! (not storable), to look again (stored or revalidated), or that the origin failed.

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::unix::fs::FileExt as _,
    sync::{Arc, Mutex},
};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use http::StatusCode;
use tokio::sync::watch;
use tracing::warn;

use super::{
    key::CacheKey,
    store::{Meta, Object, Sealed, Writer},
};

/// How far a body is read from the growing file at once.
const READ_CHUNK: u64 = 64 * 1024;
/// A body of at most this many bytes (by its Content-Length) is gathered in memory and written
/// with its metadata at once: for a small object, each trip to a blocking thread costs more
/// than the write. Its readers get it from the stored object.
const WHOLE_BODY: u64 = 64 * 1024;

/// The state of one fetch as its followers see it.
#[derive(Debug, Clone)]
pub enum Flight {
    /// Waiting for the origin's response head.
    Pending,
    /// A storable response is being written; its body can be read as it grows.
    Streaming(Arc<Partial>),
    /// The object, new or revalidated, is in the index.
    Stored,
    /// Not storable: each request fetches for itself.
    Pass,
    /// The origin failed: answer with this status, or stale.
    Failed(StatusCode),
}

type Map = Arc<Mutex<HashMap<CacheKey, watch::Receiver<Flight>>>>;

/// The fetches in flight, by key.
#[derive(Debug, Default)]
pub struct Flights(Map);

/// A request's part in a flight.
pub enum Join {
    Lead(Lead),
    Follow(watch::Receiver<Flight>),
}

impl Flights {
    pub fn join(&self, key: &CacheKey) -> Join {
        let mut map = self.0.lock().expect("flights lock");
        if let Some(flight) = map.get(key) {
            return Join::Follow(flight.clone());
        }
        let (sender, receiver) = watch::channel(Flight::Pending);
        map.insert(key.clone(), receiver);
        Join::Lead(Lead {
            key: key.clone(),
            sender,
            map: self.0.clone(),
        })
    }
}

/// Waits until the leader knows how its fetch went.
pub async fn settled(mut flight: watch::Receiver<Flight>) -> Flight {
    match flight
        .wait_for(|flight| !matches!(flight, Flight::Pending))
        .await
    {
        Ok(flight) => flight.clone(),
        Err(_) => Flight::Failed(StatusCode::BAD_GATEWAY),
    }
}

/// The one request that fetches. Dropped while still pending (the request went away, or
/// panicked), its followers are told the fetch failed; dropped at all, the key is free again.
#[derive(Debug)]
pub struct Lead {
    key: CacheKey,
    sender: watch::Sender<Flight>,
    map: Map,
}

impl Lead {
    /// Tells the followers, and keeps the flight joinable for later requests.
    fn publish(&self, flight: Flight) {
        self.sender.send_replace(flight);
    }

    /// Tells the followers and frees the key.
    pub fn land(self, flight: Flight) {
        self.publish(flight);
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if matches!(*self.sender.borrow(), Flight::Pending) {
            self.sender
                .send_replace(Flight::Failed(StatusCode::BAD_GATEWAY));
        }
        let mut map = self.map.lock().expect("flights lock");
        if map
            .get(&self.key)
            .is_some_and(|flight| flight.same_channel(&self.sender.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

/// How much of a storable response is on disk.
#[derive(Debug, Clone)]
pub enum Progress {
    Writing(u64),
    Complete(Arc<Object>),
    /// Complete (this many bytes), but too large to store: readers finish from the open file,
    /// which is already removed.
    Passed(u64),
    Failed,
}

/// A storable response while its body is being written: the head to answer with and the
/// growing file to read the body from.
#[derive(Debug)]
pub struct Partial {
    pub meta: Meta,
    /// The origin's Content-Length.
    pub content_length: Option<u64>,
    file: Arc<File>,
    progress: watch::Receiver<Progress>,
}

impl Partial {
    /// The body, read from the file as the fill writes it; an error if the fill fails.
    pub fn body(self: Arc<Self>) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        let progress = self.progress.clone();
        futures_util::stream::unfold(Some((self, progress, 0u64)), |state| async move {
            let (partial, mut progress, offset) = state?;
            loop {
                let now = progress.borrow_and_update().clone();
                let available = match &now {
                    Progress::Writing(written) | Progress::Passed(written) => *written,
                    // The rest from the stored object's mapping, at once.
                    Progress::Complete(object) if offset < object.body_len => {
                        let rest = object.body().map(|body| body.slice(offset as usize..));
                        return Some((rest, None));
                    }
                    Progress::Complete(_) => return None,
                    Progress::Failed => break,
                };
                // Hold the last byte back until the object is stored: a client that has the
                // whole body can then count on its next request being a hit. (Without a
                // Content-Length the end of the stream comes after the store anyway.)
                let available = match (&now, partial.content_length) {
                    (Progress::Writing(_), Some(length)) => available.min(length.saturating_sub(1)),
                    _ => available,
                };
                if available > offset {
                    let len = (available - offset).min(READ_CHUNK);
                    let file = partial.file.clone();
                    let chunk = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0; len as usize];
                        file.read_exact_at(&mut buf, offset)
                            .map(|()| Bytes::from(buf))
                    })
                    .await
                    .map_err(io::Error::other)
                    .and_then(|read| read);
                    return Some((chunk, Some((partial, progress, offset + len))));
                }
                if matches!(now, Progress::Passed(_)) {
                    return None;
                }
                if progress.changed().await.is_err() {
                    break;
                }
            }
            Some((Err(io::Error::other("origin fetch failed")), None))
        })
    }

    /// The stored object once the whole body is written; `None` if it was not stored.
    pub async fn complete(&self) -> Option<Arc<Object>> {
        let mut progress = self.progress.clone();
        let done = progress
            .wait_for(|progress| !matches!(progress, Progress::Writing(_)))
            .await
            .ok()?;
        match &*done {
            Progress::Complete(object) => Some(object.clone()),
            _ => None,
        }
    }
}

/// Where [`fill`] stores a complete body: the cache's index. A trait so that coalescing does not
/// depend on the index that holds it.
pub trait Publish: Send + Sync + 'static {
    /// Bodies larger than this reach their readers and are then discarded.
    fn max_object_size(&self) -> u64;
    /// Makes a complete body findable.
    fn publish(&self, sealed: Sealed) -> io::Result<Arc<Object>>;
}

/// Writes `body` to `writer` in a task of its own (so that the requests reading it may go away
/// without stopping it), publishes it as the flight's stream, and stores it when complete. A
/// body that errs or ends short of `content_length` fails its readers and is discarded; one that
/// grows past the cache's object limit (it had no Content-Length) still reaches its readers and
/// is discarded at the end.
pub fn fill<S>(
    cache: Arc<impl Publish>,
    lead: Lead,
    mut writer: Writer,
    meta: Meta,
    content_length: Option<u64>,
    body: S,
) -> Arc<Partial>
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let (progress, receiver) = watch::channel(Progress::Writing(0));
    let partial = Arc::new(Partial {
        meta: meta.clone(),
        content_length,
        file: writer.file(),
        progress: receiver,
    });
    lead.publish(Flight::Streaming(partial.clone()));
    let key = meta.key.clone();
    tokio::spawn(async move {
        let written = async {
            let mut body = std::pin::pin!(body);
            if let Some(length) = content_length.filter(|length| *length <= WHOLE_BODY) {
                let mut whole = BytesMut::with_capacity(length as usize);
                while let Some(chunk) = body.next().await {
                    whole.extend_from_slice(&chunk?);
                    if whole.len() as u64 > length {
                        break;
                    }
                }
                if whole.len() as u64 != length {
                    return Err(io::Error::other(
                        "body longer or shorter than its Content-Length",
                    ));
                }
                let sealed = writer.finish_whole(whole.freeze(), meta).await?;
                return Ok(Ok(cache.publish(sealed)?));
            }
            while let Some(chunk) = body.next().await {
                writer.append(chunk?).await?;
                progress.send_replace(Progress::Writing(writer.written()));
            }
            if content_length.is_some_and(|length| length != writer.written()) {
                return Err(io::Error::other("body shorter than its Content-Length"));
            }
            if writer.written() > cache.max_object_size() {
                return Ok(Err(writer.written()));
            }
            Ok(Ok(cache.publish(writer.finish(meta).await?)?))
        };
        match written.await {
            Ok(Ok(object)) => {
                progress.send_replace(Progress::Complete(object));
                lead.land(Flight::Stored);
            }
            Ok(Err(written)) => {
                progress.send_replace(Progress::Passed(written));
                lead.land(Flight::Pass);
            }
            Err(error) => {
                warn!(%key, %error, "origin body not stored");
                progress.send_replace(Progress::Failed);
                lead.land(Flight::Failed(StatusCode::BAD_GATEWAY));
            }
        }
    });
    partial
}
