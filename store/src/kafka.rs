//! The only Kafka code (rdkafka): the topic, the relay's producer, the
//! notifier's follower and the consumer groups of the durable workers.
//!
//! Records are keyed by namespace id (decimal), so one folder's events stay
//! in one partition, in order. The value is the JSON `JournalEvent`; the
//! seq is read back from it, never trusted from anywhere else.

use std::sync::Arc;
use std::time::Duration;

use driftless_protocol::{JournalEvent, NamespaceId};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::events::{BusError, Event};

/// Where the event stream lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `kafka-1:9092,kafka-2:9092`.
    pub brokers: String,
    /// The journal topic.
    pub topic: String,
    /// Partitions when this process creates the topic (an existing topic is
    /// left as it is).
    pub partitions: i32,
    /// Replication factor when this process creates the topic.
    pub replication: i32,
    /// librdkafka debug contexts (`debug`), e.g. `cgrp,topic`, logged at
    /// debug level; `None` in normal operation.
    pub debug: Option<String>,
}

/// How long a publish may wait for its delivery reports before the relay
/// gives up on the batch (and retries it later, unmarked).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// Metadata and commit calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(e.to_string())
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", "driftless")
            .set("socket.keepalive.enable", "true")
            // Notice a dead broker within seconds, not minutes.
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("reconnect.backoff.max.ms", "2000");
        if let Some(d) = &self.debug {
            c.set("debug", d);
        }
        c
    }

    /// Creates the topic if it does not exist.
    pub async fn ensure_topic(&self) -> Result<(), BusError> {
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().map_err(unavailable)?;
        let topic = NewTopic::new(
            &self.topic,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
        let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .map_err(unavailable)?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Unavailable(format!(
                        "creating topic {name}: {code}"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The relay's producer: idempotent, `acks=all`, one folder per key.
pub struct KafkaProducer {
    config: KafkaConfig,
    producer: FutureProducer,
}

impl KafkaProducer {
    /// A producer for `config`'s topic (connects lazily).
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        Ok(Self {
            producer: Self::build(config)?,
            config: config.clone(),
        })
    }

    fn build(config: &KafkaConfig) -> Result<FutureProducer, BusError> {
        config
            .client()
            // Exactly one copy per send and per-partition order across
            // retries; acks=all is what idempotence needs anyway, but say it.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // Murmur2 like the Java client: a key lands on the same partition
            // whichever client library wrote it.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "2")
            .set("request.timeout.ms", "10000")
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            .create()
            .map_err(unavailable)
    }

    /// Publishes `events` in order and returns once every one has a
    /// successful delivery report (`Err` if any has not: the caller keeps
    /// them unsent and retries; consumers deduplicate what arrives twice).
    pub async fn publish(&mut self, events: &[Event]) -> Result<(), BusError> {
        let mut pending = Vec::with_capacity(events.len());
        for e in events {
            let key = e.namespace.0.to_string();
            let mut record = FutureRecord::to(&self.config.topic)
                .key(&key)
                .payload(&e.payload);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The local queue is full: let deliveries drain.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(self.failed(e)),
                }
            }
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.failed(e)),
                Err(_) => return Err(BusError::Unavailable("producer closed".into())),
            }
        }
        Ok(())
    }

    /// Maps a send error; after a fatal error (the idempotent producer's
    /// state is broken) a fresh producer replaces this one.
    fn failed(&mut self, e: KafkaError) -> BusError {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(%code, reason, "kafka producer hit a fatal error; recreating it");
            match Self::build(&self.config) {
                Ok(p) => self.producer = p,
                Err(err) => tracing::warn!(error = %err, "could not recreate the kafka producer"),
            }
        }
        unavailable(e)
    }

    /// Waits for everything queued to be delivered (at shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer.flush(timeout).map_err(unavailable)
    }
}

/// One record read back from the topic.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The journal entry; `None` for a record that is not one (logged,
    /// skipped, but its offset is still committed).
    pub event: Option<JournalEvent>,
    /// Where it was read from (for the offset commit).
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// Decodes a record; `None` for a record that is not a journal event (it
/// is logged and skipped: one bad record must not stall a partition).
fn decode(m: &impl Message) -> Option<JournalEvent> {
    let payload = m.payload()?;
    let event: JournalEvent = match serde_json::from_slice(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e,
                "skipping a record that is not a journal event");
            return None;
        }
    };
    let key_ok = m
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<u64>().ok())
        .is_some_and(|k| NamespaceId(k) == event.namespace_id);
    if !key_ok {
        tracing::warn!(
            partition = m.partition(),
            offset = m.offset(),
            "skipping a journal event whose key is not its namespace"
        );
        return None;
    }
    Some(event)
}

/// The notifier's reader: every partition from its end, no group, no
/// offsets (each API process must see every event, and a process that
/// starts re-reads the journal for whatever it waits on anyway).
#[derive(Clone)]
pub struct KafkaFollower {
    consumer: Arc<StreamConsumer>,
    topic: String,
}

impl KafkaFollower {
    /// Assigns every partition of the topic at its end.
    pub async fn start(config: &KafkaConfig) -> Result<Self, BusError> {
        let consumer: StreamConsumer = config
            .client()
            // librdkafka wants a group id even for an assign-only consumer;
            // nothing is ever committed under it.
            .set("group.id", "driftless-notifier")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.error.backoff.ms", "100")
            .create()
            .map_err(unavailable)?;
        let consumer = Arc::new(consumer);
        let follower = Self {
            consumer,
            topic: config.topic.clone(),
        };
        let partitions = follower.partitions().await?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&config.topic, p, Offset::End)
                .map_err(unavailable)?;
        }
        follower.consumer.assign(&tpl).map_err(unavailable)?;
        Ok(follower)
    }

    async fn partitions(&self) -> Result<i32, BusError> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let md = consumer
                .fetch_metadata(Some(&topic), CALL_TIMEOUT)
                .map_err(unavailable)?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| unavailable(format!("topic {topic} not found")))?;
            if let Some(e) = t.error() {
                return Err(unavailable(format!("topic {topic}: {e:?}")));
            }
            i32::try_from(t.partitions().len()).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    /// Whether the broker answers a metadata request now.
    pub async fn probe(&self) -> bool {
        self.partitions().await.is_ok()
    }

    /// The next event (`Err` on a consumer error; the follower goes on).
    pub async fn recv(&self) -> Result<Option<JournalEvent>, BusError> {
        let m = self.consumer.recv().await.map_err(unavailable)?;
        Ok(decode(&m))
    }
}

/// A member of a consumer group that commits offsets by hand, after the
/// effect of what it read is durable.
pub struct KafkaGroup {
    consumer: Arc<StreamConsumer>,
    topic: String,
}

impl KafkaGroup {
    /// Joins `group` on the topic; a new group starts at the earliest record.
    pub fn join(config: &KafkaConfig, group: &str) -> Result<Self, BusError> {
        let consumer: StreamConsumer = config
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A member that died (kill -9) holds its partitions until its
            // session times out: keep that short. 6 s is the brokers'
            // default minimum.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "100")
            .create()
            .map_err(unavailable)?;
        consumer.subscribe(&[&config.topic]).map_err(unavailable)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: config.topic.clone(),
        })
    }

    /// Up to `max` records: waits for the first, then takes whatever
    /// arrives within `linger`.
    pub async fn next_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<Delivered>, BusError> {
        let mut out = Vec::new();
        let first = self.consumer.recv().await.map_err(unavailable)?;
        out.push(delivered(&first));
        drop(first);
        let deadline = tokio::time::Instant::now() + linger;
        while out.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => out.push(delivered(&m)),
                Ok(Err(e)) => {
                    if out.is_empty() {
                        return Err(unavailable(e));
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Commits, synchronously, the position after each record of `batch`.
    pub async fn commit(&self, batch: &[Delivered]) -> Result<(), BusError> {
        let mut next: std::collections::BTreeMap<i32, i64> = Default::default();
        for d in batch {
            let e = next.entry(d.partition).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .map_err(unavailable)?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}

fn delivered(m: &impl Message) -> Delivered {
    Delivered {
        event: decode(m),
        partition: m.partition(),
        offset: m.offset(),
    }
}
