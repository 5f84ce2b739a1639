//! Every Lua script Kitbash runs, in one place. Each `.lua` file beside
//! this module opens with a `KEYS`/`ARGV` header; the scripts that write
//! query states share the prelude `terminal.lua`, the grain scripts
//! `grain_helpers.lua` (prepended here, so each stays one `EVALSHA`). [`load_all`] loads them once at start, so the hot
//! path's `EVALSHA` rarely meets `NOSCRIPT`; redis-rs reloads any that
//! Redis has lost.

use std::sync::LazyLock;

use crate::observe::feed::Event;

/// A script that writes query states: the shared prelude in front of its body.
fn with_prelude(body: &str) -> redis::Script {
    redis::Script::new(&[include_str!("terminal.lua"), body].concat())
}

/// Finishes one query exactly once, only while the daemon holds it.
pub(crate) static FINISH: LazyLock<redis::Script> =
    LazyLock::new(|| with_prelude(include_str!("finish.lua")));

/// Hands a query to a worker layer, only while the daemon holds it.
pub(crate) static PUSH_JOB: LazyLock<redis::Script> =
    LazyLock::new(|| with_prelude(include_str!("push_job.lua")));

/// Turns a JSON queue entry into a state and an id entry, repeatably.
pub(crate) static ADOPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("adopt.lua")));

/// Moves an entry that cannot become a query to the dead list, if held.
pub(crate) static DEAD_ENTRY: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("dead_entry.lua")));

/// Takes a batch from a partition's priority lanes (queries or a layer's
/// jobs), highest first, each lower lane at its minimum share.
pub(crate) static TAKE_LANES: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("take_lanes.lua")));

/// Returns a worker's jobs to their lanes' job lists (all, or the ones
/// named if still held).
pub(crate) static RETURN_JOBS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("return_jobs.lua")));

/// Returns one entry to its source list if still held (orphans, requeue).
pub(crate) static RETURN_ONE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("return_one.lua")));

/// Takes one record out of the dead list and pushes its entry back on
/// the queue, resetting a failed state to pending (the dashboard's requeue).
pub(crate) static REQUEUE_DEAD: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("requeue_dead.lua")));

/// Drops the expired jobs at the old end of a layer's job list.
pub(crate) static DROP_EXPIRED_JOBS: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("drop_expired_jobs.lua")));

/// Compare-and-set of one query state.
pub(crate) static CAS_STATE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("cas_state.lua")));

/// The grain scripts: their shared prelude in front of each body.
fn with_grain_helpers(body: &str) -> redis::Script {
    redis::Script::new(&[include_str!("grain_helpers.lua"), body].concat())
}

/// Stores one grain and keeps the question index consistent.
pub(crate) static STORE_GRAIN: LazyLock<redis::Script> =
    LazyLock::new(|| with_grain_helpers(include_str!("store_grain.lua")));

/// Deletes one grain and its index entry.
pub(crate) static DELETE_GRAIN: LazyLock<redis::Script> =
    LazyLock::new(|| with_grain_helpers(include_str!("delete_grain.lua")));

/// Crystallises one worker layer's answer into a grain.
pub(crate) static CRYSTALLIZE: LazyLock<redis::Script> =
    LazyLock::new(|| with_grain_helpers(include_str!("crystallize.lua")));

/// Removes crystallised grains whose expiry has passed.
pub(crate) static SWEEP_CRYSTALS: LazyLock<redis::Script> =
    LazyLock::new(|| with_grain_helpers(include_str!("sweep_crystals.lua")));

/// Loads every script into Redis's script cache; a failure is logged (the
/// first use loads it again).
pub(crate) async fn load_all(conn: &mut crate::store::connection::RedisConn) {
    for script in [
        &*FINISH,
        &*PUSH_JOB,
        &*ADOPT,
        &*DEAD_ENTRY,
        &*TAKE_LANES,
        &*RETURN_ONE,
        &*RETURN_JOBS,
        &*CAS_STATE,
        &*DROP_EXPIRED_JOBS,
    ] {
        if let Err(e) = script.load_async(conn).await {
            tracing::warn!("cannot load a script: {e}");
        }
    }
}

/// `events` as script arguments: their count, then for each its field
/// count and field/value pairs (the layout `xadd_events` reads).
pub(crate) fn event_args(events: &[Event]) -> impl Iterator<Item = Vec<u8>> + '_ {
    std::iter::once(events.len().to_string().into_bytes()).chain(events.iter().flat_map(|e| {
        let fields = e.fields();
        std::iter::once(fields.len().to_string().into_bytes()).chain(
            fields
                .into_iter()
                .flat_map(|(k, v)| [k.as_bytes().to_vec(), v.into_bytes()]),
        )
    }))
}

/// Appends `events` to script arguments ([`event_args`]).
pub(crate) fn push_events(args: &mut Vec<Vec<u8>>, events: &[Event]) {
    args.extend(event_args(events));
}
