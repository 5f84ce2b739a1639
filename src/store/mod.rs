//! Redis access: the key schema, connections, the typed handle on Redis, the
//! Lua scripts, and the rules every process shares about peers (liveness,
//! orphaned entries, outages, instance names, ACL users).

pub mod acl;
pub mod blackboard;
pub mod connection;
pub mod dead;
pub mod info;
pub mod keys;
pub mod lanes;
pub mod liveness;
pub mod names;
pub mod orphans;
pub mod outage;
pub(crate) mod scripts;
pub mod take;
