//! Least-privilege Redis ACL users for the three roles that meet in Redis:
//! the daemon, a worker and a client (`kitbash acl` prints them).
//!
//! The rules are data: a [`Role`] lists the key patterns it may read or
//! write and the commands it may send, and [`AclUser::setuser_line`] renders
//! one `ACL SETUSER` line (or [`AclUser::acl_file_line`] a `user` line of an
//! ACL file). Every pattern comes from [`Keys`]: a pattern such as
//! `<p>:jobs:*` is `keys.jobs("*")`, built over the glob-escaped prefix, so
//! no key string is formatted here (an ACL pattern is not a key, but it still
//! follows the key module's templates).
//!
//! Redis checks the keys a Lua script declares (KEYS) against the user's
//! patterns and every `redis.call` inside it against the user's commands, so
//! a role that runs a script is granted the commands the script calls.
//!
//! `kitbash grains load|rm` and `kitbash bench` (which deletes every key
//! under the prefix) are administration, for a user of their own.
//!
//! SCAN takes no key, so ACL cannot limit which names it returns: a role
//! granted SCAN sees every key *name* (never a value) in the database.

use crate::store::keys::Keys;

/// Which role a user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `kitbash serve`: the orchestrator.
    Daemon,
    /// `kitbash worker <kind>`: answers jobs of one layer.
    Worker,
    /// `kitbash query` / `kitbash repl` / `kitbash timeline` / `kitbash stats`.
    Client,
}

impl Role {
    /// Every role, in the order they are printed.
    pub const ALL: [Role; 3] = [Role::Daemon, Role::Worker, Role::Client];

    /// The default ACL user name of this role.
    pub fn user_name(self) -> &'static str {
        match self {
            Role::Daemon => "kitbash-daemon",
            Role::Worker => "kitbash-worker",
            Role::Client => "kitbash-client",
        }
    }

    /// Short lowercase name (`daemon`, `worker`, `client`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Daemon => "daemon",
            Role::Worker => "worker",
            Role::Client => "client",
        }
    }
}

/// What a user may do with the keys matching one pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Commands that only read (`%R~`).
    Read,
    /// Commands that only write (`%W~`): LPUSH, PEXPIRE, XADD.
    Write,
    /// Both (`~`).
    ReadWrite,
}

/// One key pattern and the access to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    /// A Redis glob pattern (the prefix is glob-escaped).
    pub pattern: String,
    /// What may be done with matching keys.
    pub access: Access,
}

impl KeyRule {
    fn new(pattern: String, access: Access) -> Self {
        Self { pattern, access }
    }

    /// The ACL selector, e.g. `%R~kitbash:diagnostic:feed`.
    pub fn selector(&self) -> String {
        let sigil = match self.access {
            Access::Read => "%R~",
            Access::Write => "%W~",
            Access::ReadWrite => "~",
        };
        format!("{sigil}{}", self.pattern)
    }
}

/// How each user's password appears in the printed rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// `><placeholder>`: the operator replaces it before applying the rule.
    Placeholder(String),
    /// `>password`, a real password the operator chose (never one from the
    /// configuration).
    Plain(String),
}

impl Password {
    /// The placeholder printed for `role`: `>CHANGE-ME-daemon` etc.
    pub fn placeholder(role: Role) -> Self {
        Self::Placeholder(format!("CHANGE-ME-{}", role.as_str()))
    }

    fn rule(&self) -> String {
        match self {
            Password::Placeholder(p) | Password::Plain(p) => format!(">{p}"),
        }
    }
}

/// Commands every role needs to connect and to run atomic pipelines. SELECT
/// is there for `redis.db` other than 0 (patterns apply in every database).
const CONNECTION: &[&str] = &["ping", "select", "multi", "exec", "discard"];

/// In cluster mode, every role also reads the topology: the client learns
/// the slots (`CLUSTER SLOTS`) and Kitbash lists the primaries to SCAN and
/// INFO each (`CLUSTER NODES`).
const CLUSTER: &[&str] = &["cluster|slots", "cluster|shards", "cluster|nodes"];

/// Commands to run the Lua scripts: EVALSHA first, SCRIPT LOAD (then
/// EVALSHA) or EVAL when the server does not know the script yet.
const SCRIPTS: &[&str] = &["evalsha", "eval", "script|load", "script|exists"];

/// The daemon's data commands, including those its scripts call (finish,
/// take_lanes, return_one, cas_state and the grain scripts).
#[rustfmt::skip]
const DAEMON: &[&str] = &[
    // strings: states, health keys, done-signal TTLs
    "get", "set", "setex", "psetex", "mget", "del", "expire", "pexpire", "ttl",
    // lists: queue lanes, processing, done, dead, jobs, replies; BLPOP
    // waits on the bell
    "lpush", "rpush", "lrem", "lrange", "llen", "ltrim", "lmove", "blmove", "blmpop", "blpop",
    // fencing: is the entry still in this daemon's processing list
    "lpos",
    // dropping expired jobs from the old end of a job list
    "lindex", "rpop",
    // hashes: grain lookups and hit counts, per-layer stats
    "hget", "hgetall", "hincrby",
    // the grain id index (counts on the HTTP status page)
    "scard",
    // sorted sets: latency metrics
    "zadd", "zrangebyscore", "zremrangebyscore", "zremrangebyrank",
    // crystallisation (crystallize.lua, sweep_crystals.lua) and the
    // expiry of a crystallised grain's hash on a hit
    "type", "pttl", "hset", "hdel", "sadd", "srem", "zrem", "zscore", "zcard", "zrange",
    "pexpireat",
    // the diagnostic feed
    "xadd", "xtrim", "xrange", "xrevrange", "xlen",
    // finding processing lists and health keys
    "scan",
    // the dashboard: Redis memory (INFO memory), finding a dead-list record
    "info",
];

/// The worker's data commands, including those of its scripts (take
/// lanes, return jobs).
#[rustfmt::skip]
const WORKER: &[&str] = &[
    // jobs: take from the lanes (LLEN, LMOVE), wait on the layer's bell
    // (BLPOP), finish, return to the lanes (RPOP or LREM, RPUSH); the
    // orphan sweep reads its own list; BLMOVE for workers that take as
    // the protocol's step 1 says
    "llen", "lmove", "blpop", "blmove", "lrem", "rpop", "rpush", "lrange",
    // replies
    "lpush", "pexpire",
    // heartbeat, goodbye, and the liveness of other workers
    "psetex", "get", "del",
    // diagnostic events
    "xadd",
    // finding dead workers' processing lists
    "scan",
];

/// The client's data commands: enqueue, wait, and the read commands of
/// `timeline`, `stats`, the REPL's health and grains views.
#[rustfmt::skip]
const CLIENT: &[&str] = &[
    // enqueue and wait; WAIT for a replica, ROLE to see whether there is one;
    // LTRIM keeps the bell at one token
    "get", "set", "setex", "lpush", "ltrim", "llen", "blpop", "wait", "role",
    // timeline and recent events
    "xrange", "xrevrange", "xlen",
    // stats: counters and latency windows
    "hgetall", "zrangebyscore",
    // health: SCAN + MGET of the health keys
    "scan", "mget",
    // grains: count, list, get
    "scard", "sscan",
];

/// One ACL user: name, key rules and commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclUser {
    /// The role.
    pub role: Role,
    /// The ACL user name.
    pub name: String,
    /// Key patterns, in the order printed.
    pub keys: Vec<KeyRule>,
    /// Allowed commands (`name` or `name|subcommand`), lowercase.
    pub commands: Vec<&'static str>,
}

impl AclUser {
    /// The rules after the user name: `reset on >pw resetchannels ~… -@all +…`.
    pub fn rules(&self, password: &Password) -> Vec<String> {
        let mut out = vec![
            "reset".to_string(),
            "on".to_string(),
            password.rule(),
            "resetchannels".to_string(),
        ];
        out.extend(self.keys.iter().map(KeyRule::selector));
        out.push("-@all".to_string());
        out.extend(self.commands.iter().map(|c| format!("+{c}")));
        out
    }

    /// `ACL SETUSER <name> <rules…>`, for `redis-cli`.
    pub fn setuser_line(&self, password: &Password) -> String {
        format!(
            "ACL SETUSER {} {}",
            self.name,
            self.rules(password).join(" ")
        )
    }

    /// `user <name> <rules…>`, a line of an ACL file (`aclfile`).
    pub fn acl_file_line(&self, password: &Password) -> String {
        // An ACL file line starts from a fresh user, so `reset` is implied.
        let rules = self.rules(password);
        format!("user {} {}", self.name, rules[1..].join(" "))
    }
}

/// Escapes the glob characters of a prefix, so a pattern built on it
/// matches the prefix literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn commands(lists: &[&[&'static str]]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for c in lists.iter().flat_map(|l| l.iter()) {
        if !out.contains(c) {
            out.push(c);
        }
    }
    out
}

/// The user of `role` for the keys of `keys`.
pub fn user(keys: &Keys, role: Role) -> AclUser {
    use Access::*;
    // Patterns are built by the key module over the escaped prefix; "*" as
    // the variable part makes a pattern of a template (`jobs("*")` is
    // `<p>:jobs:*`, which also covers `<p>:jobs:<layer>:processing:*`).
    // In cluster mode `{*}` stands for every partition's hash tag.
    let k = if keys.is_partitioned() {
        Keys::any_partition(glob_escape(keys.prefix()))
    } else {
        Keys::new(glob_escape(keys.prefix()))
    };
    let (key_rules, mut cmds) = match role {
        Role::Daemon => (
            vec![
                KeyRule::new(k.queue(), ReadWrite),
                // the other priority lanes, and the bell it waits on
                KeyRule::new(format!("{}:*", k.queue()), ReadWrite),
                KeyRule::new(k.bell(), ReadWrite),
                KeyRule::new(k.state_pattern(), ReadWrite),
                KeyRule::new(k.processing_pattern(), ReadWrite),
                KeyRule::new(k.done("*"), ReadWrite),
                KeyRule::new(k.dead(), ReadWrite),
                // grain lookups and hit counts (`<p>:grains:index:*` too),
                // and crystallised grains; loading and forgetting grains
                // (`kitbash grains load|forget`, `kitbash feedback`) is an
                // admin's job
                KeyRule::new(k.grain("*"), ReadWrite),
                KeyRule::new(k.crystal_seen("*"), ReadWrite),
                KeyRule::new(k.crystal_blocked("*"), ReadWrite),
                KeyRule::new(k.jobs("*"), ReadWrite),
                KeyRule::new(k.replies("*"), ReadWrite),
                KeyRule::new(k.health_pattern(), ReadWrite),
                KeyRule::new(k.feed(), ReadWrite),
                KeyRule::new(k.metric_pattern(), ReadWrite),
                KeyRule::new(k.stats("*"), ReadWrite),
            ],
            commands(&[CONNECTION, SCRIPTS, DAEMON]),
        ),
        Role::Worker => (
            vec![
                // job lists and the workers' processing lists
                KeyRule::new(k.jobs("*"), ReadWrite),
                // replies: LPUSH + PEXPIRE only, never read
                KeyRule::new(k.replies("*"), Write),
                // its own heartbeat, and the others' (dead-worker recovery)
                KeyRule::new(k.health_pattern(), ReadWrite),
                // diagnostic events (XADD only)
                KeyRule::new(k.feed(), Write),
            ],
            commands(&[CONNECTION, SCRIPTS, WORKER]),
        ),
        Role::Client => (
            vec![
                // enqueue: LPUSH, and LLEN for the max_queue_len check,
                // in every priority lane; the bell: LPUSH + LTRIM
                KeyRule::new(k.queue(), ReadWrite),
                KeyRule::new(format!("{}:*", k.queue()), ReadWrite),
                KeyRule::new(k.bell(), Write),
                KeyRule::new(k.state_pattern(), ReadWrite),
                // BLPOP reads and removes the completion signal
                KeyRule::new(k.done("*"), ReadWrite),
                KeyRule::new(k.feed(), Read),
                KeyRule::new(k.metric_pattern(), Read),
                KeyRule::new(k.stats("*"), Read),
                KeyRule::new(k.health_pattern(), Read),
                KeyRule::new(k.grain("*"), Read),
            ],
            commands(&[CONNECTION, CLIENT]),
        ),
    };
    if keys.is_partitioned() {
        cmds.extend_from_slice(CLUSTER);
    }
    AclUser {
        role,
        name: role.user_name().to_string(),
        keys: key_rules,
        commands: cmds,
    }
}

/// The three users, daemon first.
pub fn users(keys: &Keys) -> Vec<AclUser> {
    Role::ALL.iter().map(|&r| user(keys, r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands a Lua script calls: `redis.call('X', …)` and the first
    /// element of an argument table `{'XADD', …}` passed to
    /// `redis.call(unpack(…))`, which the scripts write in capitals (a table
    /// of other words, `{'hash', …}`, is data).
    fn script_commands(source: &str) -> Vec<String> {
        let mut out = Vec::new();
        for opener in ["redis.call('", "{'"] {
            for (i, _) in source.match_indices(opener) {
                let rest = &source[i + opener.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                let capitals =
                    opener == "redis.call('" || name.chars().all(|c| c.is_ascii_uppercase());
                if !name.is_empty() && capitals && rest[name.len()..].starts_with('\'') {
                    out.push(name.to_ascii_lowercase());
                }
            }
        }
        out
    }

    #[test]
    fn every_command_a_script_calls_is_granted_to_its_role() {
        let daemon_scripts = [
            include_str!("scripts/terminal.lua"),
            include_str!("scripts/finish.lua"),
            include_str!("scripts/push_job.lua"),
            include_str!("scripts/adopt.lua"),
            include_str!("scripts/dead_entry.lua"),
            include_str!("scripts/take_lanes.lua"),
            include_str!("scripts/requeue_dead.lua"),
            include_str!("scripts/return_one.lua"),
            include_str!("scripts/cas_state.lua"),
            include_str!("scripts/drop_expired_jobs.lua"),
            include_str!("scripts/grain_helpers.lua"),
            include_str!("scripts/crystallize.lua"),
            include_str!("scripts/sweep_crystals.lua"),
        ];
        let worker_scripts = [
            include_str!("scripts/take_lanes.lua"),
            include_str!("scripts/return_jobs.lua"),
        ];
        for (role, granted, scripts) in [
            ("daemon", DAEMON, &daemon_scripts[..]),
            ("worker", WORKER, &worker_scripts[..]),
        ] {
            let called: Vec<String> = scripts.iter().flat_map(|s| script_commands(s)).collect();
            assert!(called.iter().any(|c| c == "lrem"), "{called:?}");
            for c in called {
                assert!(
                    granted.contains(&c.as_str()),
                    "the {role} user may not run {c}"
                );
            }
        }
    }

    #[test]
    fn worker_cannot_touch_states_or_the_queue() {
        let w = user(&Keys::default(), Role::Worker);
        let line = w.setuser_line(&Password::placeholder(Role::Worker));
        assert!(line.starts_with("ACL SETUSER kitbash-worker reset on >CHANGE-ME-worker "));
        assert!(line.contains(" ~kitbash:jobs:* "));
        assert!(line.contains(" %W~kitbash:replies:* "));
        assert!(!line.contains("queries"));
        assert!(line.contains(" -@all "));
    }

    #[test]
    fn client_reads_the_feed_only() {
        let c = user(&Keys::default(), Role::Client);
        let sel: Vec<String> = c.keys.iter().map(KeyRule::selector).collect();
        assert!(sel.contains(&"%R~kitbash:diagnostic:feed".to_string()));
        assert!(
            !sel.iter()
                .any(|s| s.contains("replies") || s.contains("jobs"))
        );
        assert!(!c.commands.contains(&"xadd"));
    }

    #[test]
    fn prefix_glob_characters_are_escaped() {
        let d = user(&Keys::new("a*b"), Role::Daemon);
        assert_eq!(d.keys[0].pattern, "a\\*b:queries:queue");
    }

    #[test]
    fn cluster_mode_patterns_cover_every_partition() {
        let keys = Keys::partitioned("kitbash", 12);
        let d = user(&keys, Role::Daemon);
        let patterns: Vec<&str> = d.keys.iter().map(|r| r.pattern.as_str()).collect();
        assert!(
            patterns.contains(&"kitbash:{*}:queries:queue"),
            "{patterns:?}"
        );
        assert!(
            patterns.contains(&"kitbash:{*}:queries:state:*"),
            "{patterns:?}"
        );
        // Health records carry no partition tag.
        assert!(patterns.contains(&"kitbash:health:*"), "{patterns:?}");
        assert!(d.commands.contains(&"cluster|slots"));
        let one = user(&Keys::default(), Role::Daemon);
        assert!(!one.commands.contains(&"cluster|slots"));
    }

    #[test]
    fn acl_file_line_has_no_reset() {
        let d = user(&Keys::default(), Role::Daemon);
        let line = d.acl_file_line(&Password::Plain("pw".into()));
        assert!(line.starts_with("user kitbash-daemon on >pw resetchannels "));
    }
}
