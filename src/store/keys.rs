//! Every Redis key name, built from the configured prefix.
//!
//! This is the only place a key string is formatted (docs/design.md, "Redis
//! keys"). In cluster mode keys carry the hash tag of a partition (see
//! [`Partitions`]) so that each script's keys share one slot while the
//! deployment spreads over every primary.

/// The hash slot (0..16384) Redis Cluster gives `key`: CRC16 (XMODEM) of
/// its hash tag, or of the whole key when it has none.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % 16384
}

/// The partitions of a deployment in cluster mode: how many, and the hash
/// tag of each (docs/design.md, "Partitions").
///
/// Partition `p` of `n` has as its tag the smallest non-negative integer,
/// written in decimal, whose slot lies in `[p·16384/n, (p+1)·16384/n)`; so
/// the partitions' slots are spread evenly over the slot space, and over
/// the primaries of a cluster whose slots are spread evenly (as
/// `redis-cli --cluster create` spreads them). A query belongs to partition
/// `CRC16(query_id) mod n`; a grain to `CRC16(match key) mod n`. CRC16 is
/// the cluster's own hash (XMODEM), `binascii.crc_hqx(data, 0)` in Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    tags: Vec<String>,
}

impl Partitions {
    /// `n` partitions (at least one).
    pub fn new(n: usize) -> Self {
        let n = n.max(1);
        let tags = (0..n)
            .map(|p| {
                let lo = (p * 16384 / n) as u16;
                let hi = ((p + 1) * 16384 / n) as u16;
                (0u64..)
                    .map(|t| t.to_string())
                    .find(|t| (lo..hi).contains(&slot(t)))
                    .expect("every slot range holds some integer's slot")
            })
            .collect();
        Self { tags }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Never: there is at least one partition.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The hash tag of partition `p` (without braces).
    pub fn tag(&self, p: usize) -> &str {
        &self.tags[p]
    }

    /// The partition `name` (a query id or a match key) belongs to.
    pub fn of(&self, name: &str) -> usize {
        crc16(name.as_bytes()) as usize % self.tags.len()
    }
}

fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

/// Builds key names from one prefix. For one server every key is
/// `<prefix>:<rest>`, as the contract has always named them. In cluster
/// mode the keys of queries, jobs, the feed, metrics, counters and grains
/// are `<prefix>:{<tag>}:<rest>`, in the partition of the query (or grain)
/// they belong to, so each script's keys share one slot (the feedback list
/// is partition 0's); health records stay `<prefix>:<rest>`.
///
/// A `Keys` names one partition, its *current* one (partition 0 unless
/// chosen with [`Keys::partition`]): the query-scoped keys that take no id
/// (queue, processing lists, dead list, jobs, replies, feed, metrics,
/// counters) are those of the current partition. The keys of one query
/// (`state`, `done`) are always those of the query's own partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// Cluster mode: the partitions; `None` for one server.
    layout: Option<std::sync::Arc<Partitions>>,
    /// The current partition.
    current: usize,
    /// `<prefix>:{<tag of current>}`, or `<prefix>` for one server.
    base: String,
}

impl Keys {
    /// Keys under `prefix` (default `kitbash`) on one server.
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            base: prefix.clone(),
            prefix,
            layout: None,
            current: 0,
        }
    }

    /// Glob patterns matching the keys of every partition (`<prefix>:{*}`
    /// as the base), for ACL rules; not for naming keys.
    pub(crate) fn any_partition(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            base: format!("{prefix}:{{*}}"),
            prefix,
            layout: None,
            current: 0,
        }
    }

    /// Keys under `prefix` for a cluster, spread over `partitions`.
    pub fn partitioned(prefix: impl Into<String>, partitions: usize) -> Self {
        let layout = std::sync::Arc::new(Partitions::new(partitions));
        let prefix = prefix.into();
        Self {
            base: format!("{prefix}:{{{}}}", layout.tag(0)),
            prefix,
            layout: Some(layout),
            current: 0,
        }
    }

    /// The same keys with partition `p` as the current one (`p` is taken
    /// modulo the partition count; one server has one partition).
    pub fn partition(&self, p: usize) -> Self {
        match &self.layout {
            None => self.clone(),
            Some(layout) => {
                let p = p % layout.len();
                Self {
                    base: format!("{}:{{{}}}", self.prefix, layout.tag(p)),
                    prefix: self.prefix.clone(),
                    layout: Some(layout.clone()),
                    current: p,
                }
            }
        }
    }

    /// How many partitions (1 for one server).
    pub fn partitions(&self) -> usize {
        self.layout.as_ref().map_or(1, |l| l.len())
    }

    /// The current partition.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The keys of every partition, in order.
    pub fn all_partitions(&self) -> Vec<Keys> {
        (0..self.partitions()).map(|p| self.partition(p)).collect()
    }

    /// Whether the keys are spread over a cluster's partitions.
    pub fn is_partitioned(&self) -> bool {
        self.layout.is_some()
    }

    /// The partition of query `query_id` (0 for one server).
    pub fn partition_of(&self, query_id: &str) -> usize {
        self.layout.as_ref().map_or(0, |l| l.of(query_id))
    }

    /// A new query id (a v4 UUID) that belongs to the current partition.
    pub fn new_query_id(&self) -> String {
        loop {
            let id = uuid::Uuid::new_v4().to_string();
            if self.partition_of(&id) == self.current {
                return id;
            }
        }
    }

    /// The keys whose current partition is that of query `query_id`.
    pub fn for_query(&self, query_id: &str) -> Self {
        self.partition(self.partition_of(query_id))
    }

    /// The keys whose current partition is that of the grains with match
    /// key `match_key`.
    pub fn for_match_key(&self, match_key: &str) -> Self {
        self.partition(self.partition_of(match_key))
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>` or, in cluster mode, `<p>:{<tag>}` of the current partition:
    /// what every partitioned key starts with.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `<p>:queries:queue` — pending query ids (LPUSH, taken FIFO).
    pub fn queue(&self) -> String {
        format!("{}:queries:queue", self.base)
    }

    /// The list of one priority lane: `normal` is [`Self::queue`] (what
    /// clients that know no lanes push to), the others
    /// `<p>:queries:queue:<lane>`.
    pub fn lane(&self, lane: crate::store::lanes::Lane) -> String {
        match lane {
            crate::store::lanes::Lane::Normal => self.queue(),
            other => format!("{}:queries:queue:{other}", self.base),
        }
    }

    /// `<p>:queries:bell` — rung (one token, LTRIM'd) by a client that
    /// pushes to a lane other than `normal`, so an idle daemon, blocked on
    /// the normal lane, wakes.
    pub fn bell(&self) -> String {
        format!("{}:queries:bell", self.base)
    }

    /// `<p>:queries:state:<id>` — one query's JSON record (in the query's
    /// own partition).
    pub fn state(&self, query_id: &str) -> String {
        format!("{}:queries:state:{query_id}", self.base_of(query_id))
    }

    /// The base of the partition of `name` (a query id or match key),
    /// without building a `Keys` when it is the current one.
    fn base_of(&self, name: &str) -> std::borrow::Cow<'_, str> {
        self.base_at(self.partition_of(name))
    }

    /// The base of partition `p`, without building a `Keys` when it is the
    /// current one (or on one server).
    fn base_at(&self, p: usize) -> std::borrow::Cow<'_, str> {
        match &self.layout {
            Some(layout) => {
                let p = p % layout.len();
                if p == self.current {
                    std::borrow::Cow::Borrowed(self.base.as_str())
                } else {
                    std::borrow::Cow::Owned(format!("{}:{{{}}}", self.prefix, layout.tag(p)))
                }
            }
            None => std::borrow::Cow::Borrowed(self.base.as_str()),
        }
    }

    /// Pattern matching every query state of the current partition (for SCAN).
    pub fn state_pattern(&self) -> String {
        format!("{}:queries:state:*", self.base)
    }

    /// `<p>:queries:processing:<instance>` — queries a daemon holds.
    pub fn processing(&self, instance: &str) -> String {
        format!("{}:queries:processing:{instance}", self.base)
    }

    /// Pattern matching every daemon's processing list (for SCAN).
    pub fn processing_pattern(&self) -> String {
        format!("{}:queries:processing:*", self.base)
    }

    /// `<p>:queries:done:<id>` — completion signal a client BLPOPs (in the
    /// query's own partition).
    pub fn done(&self, query_id: &str) -> String {
        format!("{}:queries:done:{query_id}", self.base_of(query_id))
    }

    /// `<p>:queries:dead` — entries that could not be processed.
    pub fn dead(&self) -> String {
        format!("{}:queries:dead", self.base)
    }

    /// The question index of the partition of `match_key`.
    pub fn question_index_of(&self, match_key: &str) -> String {
        format!("{}:grains:index:questions", self.base_of(match_key))
    }

    /// Grain `fact_id` as kept in partition `p`.
    pub fn grain_in(&self, p: usize, fact_id: &str) -> String {
        format!("{}:grains:{fact_id}", self.base_at(p))
    }

    /// `<p>:grains:<fact_id>` — one grain (hash).
    pub fn grain(&self, fact_id: &str) -> String {
        format!("{}:grains:{fact_id}", self.base)
    }

    /// `<p>:grains:index:<name>` — a lookup index over grains.
    pub fn grain_index(&self, name: &str) -> String {
        format!("{}:grains:index:{name}", self.base)
    }

    /// `<p>:grains:index:all` — the set of every grain's fact id.
    pub fn grain_ids(&self) -> String {
        self.grain_index("all")
    }

    /// `<p>:grains:index:questions` — layer0's question index (match key →
    /// the answering grain's entry).
    pub fn question_index(&self) -> String {
        self.grain_index("questions")
    }

    /// `<p>:grains:index:crystallized` — the match keys of crystallised
    /// grains, scored by expiry (Unix ms).
    pub fn crystallized(&self) -> String {
        self.grain_index("crystallized")
    }

    /// `<p>:grains:` — the part of a grain's key before its id.
    pub fn grain_prefix(&self) -> String {
        format!("{}:grains:", self.base)
    }

    /// `<p>:crystal:seen:<match key>` — how often, and how, a question was
    /// answered lately (crystallisation's `min_answers`; TTL `window_s`).
    pub fn crystal_seen(&self, match_key: &str) -> String {
        format!("{}:crystal:seen:{match_key}", self.base)
    }

    /// `<p>:crystal:blocked:<match key>` — a question marked wrong, kept
    /// from crystallising (TTL `block_s`).
    pub fn crystal_blocked(&self, match_key: &str) -> String {
        format!("{}:crystal:blocked:{match_key}", self.base)
    }

    /// `<p>:feedback` — answers marked wrong, newest first (capped).
    pub fn feedback(&self) -> String {
        format!("{}:feedback", self.base)
    }

    /// `<p>:jobs:<layer>` — work for one layer's workers.
    pub fn jobs(&self, layer: &str) -> String {
        format!("{}:jobs:{layer}", self.base)
    }

    /// One priority lane of a layer's jobs: `normal` is [`Self::jobs`] (what
    /// workers that know no lanes take from), the others
    /// `<p>:jobs:<layer>:<lane>`.
    pub fn jobs_lane(&self, layer: &str, lane: crate::store::lanes::Lane) -> String {
        match lane {
            crate::store::lanes::Lane::Normal => self.jobs(layer),
            other => format!("{}:jobs:{layer}:{other}", self.base),
        }
    }

    /// `<p>:jobs:<layer>:bell` — rung (one token, LTRIM'd) with every job a
    /// daemon pushes, so an idle worker of the layer wakes and takes from
    /// the highest lane.
    pub fn jobs_bell(&self, layer: &str) -> String {
        format!("{}:jobs:{layer}:bell", self.base)
    }

    /// `<p>:jobs:<layer>:processing:<worker>` — the job a worker holds.
    pub fn jobs_processing(&self, layer: &str, worker: &str) -> String {
        format!("{}:jobs:{layer}:processing:{worker}", self.base)
    }

    /// Pattern matching every worker processing list of one layer.
    pub fn jobs_processing_pattern(&self, layer: &str) -> String {
        format!("{}:jobs:{layer}:processing:*", self.base)
    }

    /// `<p>:replies:<instance>` — replies for one daemon instance.
    pub fn replies(&self, instance: &str) -> String {
        format!("{}:replies:{instance}", self.base)
    }

    /// `<p>:health:<name>` — liveness of a worker or daemon (TTL).
    pub fn health(&self, name: &str) -> String {
        format!("{}:health:{name}", self.prefix)
    }

    /// Pattern matching every health key (for SCAN).
    pub fn health_pattern(&self) -> String {
        format!("{}:health:*", self.prefix)
    }

    /// `<p>:diagnostic:feed` — the stream of every decision.
    pub fn feed(&self) -> String {
        format!("{}:diagnostic:feed", self.base)
    }

    /// `<p>:metrics:<name>` — timestamped samples (sorted set).
    pub fn metric(&self, name: &str) -> String {
        format!("{}:metrics:{name}", self.base)
    }

    /// Pattern matching every metric (for SCAN).
    pub fn metric_pattern(&self) -> String {
        format!("{}:metrics:*", self.base)
    }

    /// `<p>:stats:<layer>` — O(1) counters of one layer.
    pub fn stats(&self, layer: &str) -> String {
        format!("{}:stats:{layer}", self.base)
    }

    /// Pattern matching every key under the prefix (cleanup in tests/bench).
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The part of `key` after `<base>:<section>:` (a partitioned key of
    /// the current partition) or `<prefix>:<section>:` (a global one), e.g.
    /// the name in a health key.
    pub fn suffix<'a>(&self, key: &'a str, section: &str) -> Option<&'a str> {
        let after = |head: &str| {
            key.strip_prefix(head)?
                .strip_prefix(':')?
                .strip_prefix(section)?
                .strip_prefix(':')
        };
        after(self.base.as_str()).or_else(|| after(self.prefix.as_str()))
    }
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("kitbash")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::lanes::Lane;

    #[test]
    fn keys_match_the_design_contract() {
        let k = Keys::default();
        assert_eq!(k.queue(), "kitbash:queries:queue");
        assert_eq!(k.state("q1"), "kitbash:queries:state:q1");
        assert_eq!(k.processing("d1"), "kitbash:queries:processing:d1");
        assert_eq!(k.done("q1"), "kitbash:queries:done:q1");
        assert_eq!(k.dead(), "kitbash:queries:dead");
        assert_eq!(k.grain("f1"), "kitbash:grains:f1");
        assert_eq!(k.grain_index("words"), "kitbash:grains:index:words");
        assert_eq!(k.jobs("layer2"), "kitbash:jobs:layer2");
        assert_eq!(k.jobs_lane("layer2", Lane::Normal), "kitbash:jobs:layer2");
        assert_eq!(
            k.jobs_lane("layer2", Lane::High),
            "kitbash:jobs:layer2:high"
        );
        assert_eq!(k.jobs_bell("layer2"), "kitbash:jobs:layer2:bell");
        assert_eq!(
            k.jobs_processing("layer2", "cartridge-1"),
            "kitbash:jobs:layer2:processing:cartridge-1"
        );
        assert_eq!(k.replies("d1"), "kitbash:replies:d1");
        assert_eq!(k.health("d1"), "kitbash:health:d1");
        assert_eq!(k.feed(), "kitbash:diagnostic:feed");
        assert_eq!(k.metric("latency:layer0"), "kitbash:metrics:latency:layer0");
        assert_eq!(k.stats("layer0"), "kitbash:stats:layer0");
    }

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Values from the cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{kitbash}:queries:queue"), slot("kitbash"));
        assert_ne!(slot("{}kitbash"), slot("kitbash"));
    }

    #[test]
    fn partition_tags_follow_the_documented_rule() {
        // Computed by the rule in docs/design.md with Python's
        // binascii.crc_hqx, independently of this code.
        let p = Partitions::new(12);
        let tags: Vec<&str> = (0..12).map(|i| p.tag(i)).collect();
        assert_eq!(
            tags,
            [
                "10", "3", "43", "11", "2", "42", "12", "1", "41", "13", "0", "40"
            ]
        );
        let p3 = Partitions::new(3);
        assert_eq!(
            (0..3).map(|i| p3.tag(i)).collect::<Vec<_>>(),
            ["3", "1", "0"]
        );
        assert_eq!(p.of("q1"), 10);
        assert_eq!(p.of("what is the answer"), 11);
        // Spread: partition i's slot lies in its twelfth of the slot space.
        for i in 0..12 {
            assert_eq!(slot(p.tag(i)) as usize * 12 / 16384, i);
        }
    }

    #[test]
    fn partitioned_keys_share_their_partition_slot() {
        let k = Keys::partitioned("kitbash", 12);
        assert_eq!(k.partitions(), 12);
        assert_eq!(k.queue(), "kitbash:{10}:queries:queue");
        let q = k.for_query("q1");
        assert_eq!(q.current(), 10);
        assert_eq!(k.state("q1"), "kitbash:{0}:queries:state:q1");
        assert_eq!(slot(&k.state("q1")), slot(&q.queue()));
        assert_eq!(slot(&k.done("q1")), slot(&q.processing("d1")));
        assert_eq!(slot(&q.feed()), slot(&q.jobs("layer2")));
        // Global keys carry no tag.
        assert_eq!(k.health("d1"), "kitbash:health:d1");
        let p3 = k.partition(3);
        assert_eq!(p3.processing("d1"), "kitbash:{11}:queries:processing:d1");
        assert_eq!(
            p3.suffix(&p3.processing("d1"), "queries:processing"),
            Some("d1")
        );
        assert_eq!(p3.suffix("kitbash:health:w1", "health"), Some("w1"));
        assert_eq!(k.all_partitions().len(), 12);
        // One server: one partition, the contract's names.
        let one = Keys::new("kitbash");
        assert_eq!(one.partitions(), 1);
        assert_eq!(one.for_query("q1").queue(), "kitbash:queries:queue");
    }
}
