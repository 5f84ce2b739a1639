//! Priority lanes: each partition's queue is four lists, one per priority,
//! taken from the highest first, with a minimum share for each lower lane
//! so none is starved (see docs/design.md, "Priority lanes").

use std::fmt;

/// A query's priority: the lane its entry waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Lane {
    /// Taken before everything else.
    Critical,
    /// Before `normal` and `low`.
    High,
    /// What an entry without a priority is: `<p>:queries:queue`, as ever.
    #[default]
    Normal,
    /// After the others, at its minimum share while they are busy.
    Low,
}

impl Lane {
    /// Every lane, highest priority first.
    pub const ALL: [Lane; 4] = [Lane::Critical, Lane::High, Lane::Normal, Lane::Low];

    /// The name, as clients write it (`priority` field, `--priority`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Critical => "critical",
            Lane::High => "high",
            Lane::Normal => "normal",
            Lane::Low => "low",
        }
    }

    /// The lane named `s` (any case); `None` for another name.
    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The lane a `priority` value asks for: one of the four names; any
    /// other value (a number, as the Python original wrote, or none) is
    /// `normal`, so such clients keep working unchanged.
    pub fn of_value(v: Option<&serde_json::Value>) -> Lane {
        v.and_then(|v| v.as_str())
            .and_then(Lane::parse)
            .unwrap_or_default()
    }

    /// Its position in [`Lane::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Per-lane values (in [`Lane::ALL`]'s order) as a JSON object by
    /// lane name, as the HTTP endpoints show queue lengths.
    pub fn by_name(values: [u64; 4]) -> serde_json::Value {
        Lane::ALL
            .iter()
            .map(|l| (l.as_str().to_string(), values[l.index()].into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Lane {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Lane::parse(s)
            .ok_or_else(|| format!("{s:?} is not a priority: use critical, high, normal or low"))
    }
}

/// Adds to `pipe` the push of the entry `id` to `lane`'s list in the
/// partition `home` and, for a lane other than `normal`, a ring of the
/// bell (`LPUSH` + `LTRIM 0 0`: one token at most), so an idle daemon,
/// blocked on the normal lane, wakes. What every Kitbash client does to
/// enqueue, inside its MULTI.
pub(crate) fn push_entry(
    pipe: &mut redis::Pipeline,
    home: &crate::store::keys::Keys,
    lane: Lane,
    id: &str,
) {
    pipe.lpush(home.lane(lane), id).ignore();
    if lane != Lane::Normal {
        let bell = home.bell();
        pipe.lpush(&bell, 1).ignore().ltrim(&bell, 0, 0).ignore();
    }
}

/// Takes up to `n` entries from four lane lists (`lanes`, highest first),
/// at most `lower_max` of them from `normal` and `low`, into `processing`
/// in one step (`take_lanes.lua`): the highest lane with
/// entries first, each lane at its minimum share (`shares`) while the
/// lanes above it are busy. `credits` (each lane's credit toward its
/// share) are the taking loop's own, carried from one batch to the next.
/// Returns each entry with the lane it came from. Daemons take queries
/// with it, workers jobs.
pub(crate) async fn take(
    conn: &mut crate::store::connection::RedisConn,
    processing: &str,
    lanes: &[String; 4],
    n: usize,
    lower_max: usize,
    credits: &mut [f64; 4],
    shares: [f64; 4],
) -> redis::RedisResult<Vec<(Vec<u8>, Lane)>> {
    use redis::{Value, from_redis_value};
    let mut script = crate::store::scripts::TAKE_LANES.prepare_invoke();
    script.key(processing);
    for lane in lanes {
        script.key(lane);
    }
    script.arg(n);
    for c in *credits {
        script.arg(c);
    }
    for share in shares {
        script.arg(share);
    }
    script.arg(lower_max);
    let reply: Vec<Value> = script.invoke_async(conn).await?;
    let taken = reply
        .first()
        .and_then(|v| from_redis_value::<usize>(v.clone()).ok())
        .unwrap_or(0);
    let mut out = Vec::with_capacity(taken);
    let lanes_of = reply.iter().skip(1 + taken).take(taken);
    for (v, l) in reply.iter().skip(1).take(taken).zip(lanes_of) {
        let lane = from_redis_value::<usize>(l.clone())
            .ok()
            .and_then(|l| Lane::ALL.get(l.wrapping_sub(1)).copied())
            .unwrap_or_default();
        out.push((from_redis_value::<Vec<u8>>(v.clone())?, lane));
    }
    for (slot, v) in credits.iter_mut().zip(reply.iter().skip(1 + 2 * taken)) {
        if let Ok(c) = from_redis_value::<String>(v.clone())
            && let Ok(c) = c.parse::<f64>()
        {
            *slot = c;
        }
    }
    Ok(out)
}

impl crate::store::blackboard::Blackboard {
    /// The lane each queue entry belongs in: a JSON entry's own `priority`,
    /// an id's state's (read in one MGET); `normal` when neither says, or
    /// the state is gone.
    pub async fn lanes_of(
        &self,
        entries: &[Vec<u8>],
    ) -> crate::store::blackboard::Result<Vec<Lane>> {
        use crate::daemon::intake::{EntryKind, classify};
        let mut out = vec![Lane::Normal; entries.len()];
        let mut ids = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if entry.trim_ascii_start().starts_with(b"{") {
                let v: Option<serde_json::Value> = serde_json::from_slice(entry).ok();
                out[i] = Lane::of_value(v.as_ref().and_then(|v| v.get("priority")));
            } else if let EntryKind::Id(id) = classify(entry, usize::MAX) {
                ids.push((i, id));
            }
        }
        for chunk in ids.chunks(200) {
            let names: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            for ((i, _), state) in chunk.iter().zip(self.get_states_lenient(&names).await?) {
                if let Some(state) = state {
                    out[*i] = state.lane();
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_parse_and_anything_else_is_normal() {
        assert_eq!(Lane::parse("HIGH"), Some(Lane::High));
        assert_eq!(Lane::of_value(Some(&json!("low"))), Lane::Low);
        assert_eq!(Lane::of_value(Some(&json!(5))), Lane::Normal);
        assert_eq!(Lane::of_value(Some(&json!("urgent"))), Lane::Normal);
        assert_eq!(Lane::of_value(None), Lane::Normal);
        assert!(Lane::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Lane::Low.index(), 3);
    }
}
