//! Every Redis key name, built from the configured prefix.
//!
//! This is the only place a key string is formatted (docs/design.md, "Redis
//! keys"). In cluster mode the prefix is wrapped in braces (`{kitbash}`, see
//! `RedisSettings::keys`) so that every key hashes to one slot and
//! multi-key steps stay legal.

/// Whether `key` holds a Redis Cluster hash tag: a `{` followed later by a
/// `}` with at least one character between them. Only the tag is hashed.
pub fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

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

/// Builds key names from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (default `kitbash`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>:queries:queue` — pending query ids (LPUSH, taken FIFO).
    pub fn queue(&self) -> String {
        format!("{}:queries:queue", self.prefix)
    }

    /// `<p>:queries:state:<id>` — one query's JSON record.
    pub fn state(&self, query_id: &str) -> String {
        format!("{}:queries:state:{query_id}", self.prefix)
    }

    /// Pattern matching every query state (for SCAN).
    pub fn state_pattern(&self) -> String {
        format!("{}:queries:state:*", self.prefix)
    }

    /// `<p>:queries:processing:<instance>` — queries a daemon holds.
    pub fn processing(&self, instance: &str) -> String {
        format!("{}:queries:processing:{instance}", self.prefix)
    }

    /// Pattern matching every daemon's processing list (for SCAN).
    pub fn processing_pattern(&self) -> String {
        format!("{}:queries:processing:*", self.prefix)
    }

    /// `<p>:queries:done:<id>` — completion signal a client BLPOPs.
    pub fn done(&self, query_id: &str) -> String {
        format!("{}:queries:done:{query_id}", self.prefix)
    }

    /// `<p>:queries:dead` — entries that could not be processed.
    pub fn dead(&self) -> String {
        format!("{}:queries:dead", self.prefix)
    }

    /// `<p>:grains:<fact_id>` — one grain (hash).
    pub fn grain(&self, fact_id: &str) -> String {
        format!("{}:grains:{fact_id}", self.prefix)
    }

    /// `<p>:grains:index:<name>` — a lookup index over grains.
    pub fn grain_index(&self, name: &str) -> String {
        format!("{}:grains:index:{name}", self.prefix)
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
        format!("{}:grains:", self.prefix)
    }

    /// `<p>:crystal:seen:<match key>` — how often, and how, a question was
    /// answered lately (crystallisation's `min_answers`; TTL `window_s`).
    pub fn crystal_seen(&self, match_key: &str) -> String {
        format!("{}:crystal:seen:{match_key}", self.prefix)
    }

    /// `<p>:crystal:blocked:<match key>` — a question marked wrong, kept
    /// from crystallising (TTL `block_s`).
    pub fn crystal_blocked(&self, match_key: &str) -> String {
        format!("{}:crystal:blocked:{match_key}", self.prefix)
    }

    /// `<p>:feedback` — answers marked wrong, newest first (capped).
    pub fn feedback(&self) -> String {
        format!("{}:feedback", self.prefix)
    }

    /// `<p>:jobs:<layer>` — work for one layer's workers.
    pub fn jobs(&self, layer: &str) -> String {
        format!("{}:jobs:{layer}", self.prefix)
    }

    /// `<p>:jobs:<layer>:processing:<worker>` — the job a worker holds.
    pub fn jobs_processing(&self, layer: &str, worker: &str) -> String {
        format!("{}:jobs:{layer}:processing:{worker}", self.prefix)
    }

    /// Pattern matching every worker processing list of one layer.
    pub fn jobs_processing_pattern(&self, layer: &str) -> String {
        format!("{}:jobs:{layer}:processing:*", self.prefix)
    }

    /// `<p>:replies:<instance>` — replies for one daemon instance.
    pub fn replies(&self, instance: &str) -> String {
        format!("{}:replies:{instance}", self.prefix)
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
        format!("{}:diagnostic:feed", self.prefix)
    }

    /// `<p>:metrics:<name>` — timestamped samples (sorted set).
    pub fn metric(&self, name: &str) -> String {
        format!("{}:metrics:{name}", self.prefix)
    }

    /// Pattern matching every metric (for SCAN).
    pub fn metric_pattern(&self) -> String {
        format!("{}:metrics:*", self.prefix)
    }

    /// `<p>:stats:<layer>` — O(1) counters of one layer.
    pub fn stats(&self, layer: &str) -> String {
        format!("{}:stats:{layer}", self.prefix)
    }

    /// Pattern matching every key under the prefix (cleanup in tests/bench).
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }

    /// The part of `key` after `<prefix>:<section>:`, e.g. the id of a state key.
    pub fn suffix<'a>(&self, key: &'a str, section: &str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?
            .strip_prefix(section)?
            .strip_prefix(':')
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
    fn hash_tags_and_slots_follow_the_cluster_spec() {
        assert!(has_hash_tag("{kitbash}"));
        assert!(has_hash_tag("a{b}c"));
        assert!(!has_hash_tag("{}kitbash"));
        assert!(!has_hash_tag("kitbash"));
        assert!(!has_hash_tag("kit{bash"));
        // Values from the cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{kitbash}:queries:queue"), slot("kitbash"));
        assert_eq!(slot("{}kitbash"), slot("{}kitbash"));
        assert_ne!(slot("{}kitbash"), slot("kitbash"));
    }

    #[test]
    fn cluster_prefix_keeps_hash_tag() {
        let k = Keys::new("{kitbash}");
        assert_eq!(k.queue(), "{kitbash}:queries:queue");
        assert_eq!(k.suffix("{kitbash}:health:w1", "health"), Some("w1"));
        assert_eq!(k.suffix("other:health:w1", "health"), None);
    }
}
