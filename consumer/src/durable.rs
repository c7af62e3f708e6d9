//! Durable consumers of the event stream: effects applied once per journal
//! entry, whatever the stream delivers twice, late or not at all.
//!
//! One step: read a batch (a Kafka consumer group, or the in-process bus),
//! drop what this consumer's marks say it applied already, let the
//! [`Handler`] prepare the effect (reads, object storage, no transaction),
//! then write the effect and advance the marks in one database transaction,
//! and only then commit the stream offsets. A crash between the two
//! replays the batch, and the marks skip it.
//!
//! Entries are applied per folder in seq order with no hole: a batch whose
//! first entry of a folder is not `mark + 1` (the stream lost or reordered
//! something, or this group is new) sends that folder to catch up from the
//! outbox table, which holds every journal entry until compaction. The
//! in-process bus keeps nothing, so there the consumer catches up from the
//! outbox at start and after it lagged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use driftless_protocol::{JournalEvent, NamespaceId, Seq};
use driftless_store::meta::journal::{self, OutboxRow};
use driftless_store::meta::marks;
use driftless_store::{Db, Delivered, InProcessSubscription, KafkaGroup, Received};
use sqlx::{Any, Transaction};

use crate::worker::{Step, Worker};

/// Events per batch.
const BATCH: usize = 500;
/// How long a batch waits for more records after the first.
const LINGER: Duration = Duration::from_millis(20);

/// What a durable consumer does with journal entries.
pub trait Handler: Send + 'static {
    /// The effect of a batch, computed before the transaction.
    type Effect: Send;
    /// The consumer's name: its marks, and its Kafka group
    /// (`driftless-<name>`).
    fn name(&self) -> &'static str;
    /// Computes the effect of `events` (new to this consumer, in seq order
    /// per folder) without writing anything.
    fn prepare(
        &mut self,
        events: &[JournalEvent],
    ) -> impl Future<Output = Result<Self::Effect, String>> + Send;
    /// Writes the effect inside the transaction that advances the marks.
    fn write(
        &mut self,
        tx: &mut Transaction<'static, Any>,
        effect: Self::Effect,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// Where a durable consumer reads.
pub enum Source {
    /// A Kafka consumer group.
    Kafka(KafkaGroup),
    /// The in-process bus.
    InProcess(InProcessSubscription),
}

/// Called once a batch's effect is durable and before its offsets are
/// committed, with the number of entries applied (a failpoint for tests).
pub type AfterEffect = Box<dyn FnMut(u64) + Send>;

/// A handler driven by a source; a [`Worker`].
pub struct Durable<H: Handler> {
    db: Db,
    handler: H,
    source: Source,
    /// A batch read but not yet applied (retried before reading more).
    pending: Option<Vec<Delivered>>,
    /// Folders to read back from the outbox before the stream.
    behind: BTreeSet<NamespaceId>,
    /// Read every folder's unapplied entries from the outbox (in process).
    catch_up_all: bool,
    after_effect: Option<AfterEffect>,
}

impl<H: Handler> Durable<H> {
    /// A durable consumer of `source`.
    pub fn new(db: Db, handler: H, source: Source) -> Self {
        let catch_up_all = matches!(source, Source::InProcess(_));
        Self {
            db,
            handler,
            source,
            pending: None,
            behind: BTreeSet::new(),
            catch_up_all,
            after_effect: None,
        }
    }

    /// Installs a hook run between the effect's commit and the offset commit.
    pub fn after_effect(mut self, f: AfterEffect) -> Self {
        self.after_effect = Some(f);
        self
    }

    /// The Kafka group name of a handler.
    pub fn group_of(handler: &H) -> String {
        format!("driftless-{}", handler.name())
    }

    /// Applies the entries of `events` this consumer has not applied yet;
    /// returns how many it applied. Folders whose entries do not follow
    /// their mark are left to catch up from the outbox.
    pub async fn apply(
        &mut self,
        events: Vec<JournalEvent>,
        contiguous: bool,
    ) -> Result<u64, String> {
        let name = self.handler.name();
        let mut by_ns: BTreeMap<NamespaceId, BTreeMap<Seq, JournalEvent>> = BTreeMap::new();
        for e in events {
            by_ns.entry(e.namespace_id).or_default().insert(e.seq, e);
        }
        if by_ns.is_empty() {
            return Ok(0);
        }
        let namespaces: Vec<NamespaceId> = by_ns.keys().copied().collect();
        loop {
            let seen = marks::read(&self.db, name, &namespaces)
                .await
                .map_err(|e| e.to_string())?;
            let fresh = self.fresh(&by_ns, &seen, contiguous);
            if fresh.is_empty() {
                return Ok(0);
            }
            let effect = self.handler.prepare(&fresh).await?;
            let mut tx = self.db.begin().await.map_err(|e| e.to_string())?;
            let locked = marks::lock(&mut tx, name, &namespaces)
                .await
                .map_err(|e| e.to_string())?;
            if locked != seen {
                // Another member of the group applied some of these meanwhile
                // (a rebalance): start over from the marks as they are now.
                continue;
            }
            self.handler
                .write(&mut tx, effect)
                .await
                .map_err(|e| e.to_string())?;
            let mut upto: HashMap<NamespaceId, (Seq, u64)> = HashMap::new();
            for e in &fresh {
                let u = upto.entry(e.namespace_id).or_insert((e.seq, 0));
                u.0 = u.0.max(e.seq);
                u.1 += 1;
            }
            for (ns, (seq, n)) in upto {
                marks::advance(&mut tx, name, ns, seq, n)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            let applied = fresh.len() as u64;
            if let Some(f) = self.after_effect.as_mut() {
                f(applied);
            }
            return Ok(applied);
        }
    }

    /// The entries after each folder's mark, in order. With `contiguous`
    /// (the stream), a folder whose first new entry is not `mark + 1` is
    /// set aside to catch up from the outbox.
    fn fresh(
        &mut self,
        by_ns: &BTreeMap<NamespaceId, BTreeMap<Seq, JournalEvent>>,
        seen: &HashMap<NamespaceId, Seq>,
        contiguous: bool,
    ) -> Vec<JournalEvent> {
        let mut out = Vec::new();
        for (ns, entries) in by_ns {
            let mark = seen.get(ns).copied().unwrap_or(Seq(0));
            let new: Vec<&JournalEvent> =
                entries.range(Seq(mark.0 + 1)..).map(|(_, e)| e).collect();
            let Some(first) = new.first() else { continue };
            let holes = new.windows(2).any(|w| w[1].seq.0 != w[0].seq.0 + 1);
            if contiguous && (first.seq.0 != mark.0 + 1 || holes) {
                tracing::info!(consumer = self.handler.name(), namespace = %ns, mark = mark.0,
                    next = first.seq.0, "entries missing from the stream; reading them from the outbox");
                self.behind.insert(*ns);
                continue;
            }
            out.extend(new.into_iter().cloned());
        }
        out
    }

    /// One folder (or, in process, every folder) read back from the outbox.
    async fn catch_up(&mut self) -> Result<Step, String> {
        let name = self.handler.name();
        let rows = if let Some(&ns) = self.behind.iter().next() {
            let mark = marks::read(&self.db, name, &[ns])
                .await
                .map_err(|e| e.to_string())?
                .get(&ns)
                .copied()
                .unwrap_or(Seq(0));
            let rows = journal::outbox_after(&self.db, ns, mark, BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if rows.len() < BATCH {
                self.behind.remove(&ns);
            }
            rows
        } else {
            let rows = marks::unapplied(&self.db, name, BATCH)
                .await
                .map_err(|e| e.to_string())?;
            if rows.is_empty() {
                self.catch_up_all = false;
            }
            rows
        };
        // What the outbox holds is the journal: a hole here was compacted
        // away and is accepted.
        self.apply(decode_rows(&rows), false).await?;
        Ok(Step::Busy)
    }

    async fn read_stream(&mut self) -> Result<Step, String> {
        match &mut self.source {
            Source::Kafka(group) => {
                let batch = match self.pending.take() {
                    Some(b) => b,
                    None => group
                        .next_batch(BATCH, LINGER)
                        .await
                        .map_err(|e| e.to_string())?,
                };
                let events: Vec<JournalEvent> =
                    batch.iter().filter_map(|d| d.event.clone()).collect();
                if let Err(e) = self.apply(events, true).await {
                    self.pending = Some(batch);
                    return Err(e);
                }
                if let Source::Kafka(group) = &self.source {
                    group.commit(&batch).await.map_err(|e| e.to_string())?;
                }
                Ok(Step::Busy)
            }
            Source::InProcess(sub) => {
                let mut events = Vec::new();
                let first = sub.recv().await;
                let mut next = first;
                loop {
                    match next {
                        Some(Received::Event(e)) => {
                            if let Ok(ev) = serde_json::from_str::<JournalEvent>(&e.payload) {
                                events.push(ev);
                            }
                        }
                        Some(Received::Gap) => self.catch_up_all = true,
                        None if events.is_empty() => return Err("the event bus is gone".into()),
                        None => break,
                    }
                    if events.len() >= BATCH {
                        break;
                    }
                    next = sub.try_recv();
                    if next.is_none() {
                        break;
                    }
                }
                self.apply(events, true).await?;
                Ok(Step::Busy)
            }
        }
    }
}

fn decode_rows(rows: &[OutboxRow]) -> Vec<JournalEvent> {
    rows.iter()
        .filter_map(|r| match serde_json::from_str::<JournalEvent>(&r.payload) {
            Ok(e) if e.namespace_id == r.namespace && e.seq == r.seq => Some(e),
            _ => {
                tracing::warn!(namespace = %r.namespace, seq = r.seq.0, "outbox row is not its journal event");
                None
            }
        })
        .collect()
}

impl<H: Handler> Worker for Durable<H> {
    fn name(&self) -> &'static str {
        self.handler.name()
    }

    async fn work(&mut self) -> Result<Step, String> {
        if self.catch_up_all || !self.behind.is_empty() {
            return self.catch_up().await;
        }
        self.read_stream().await
    }
}
