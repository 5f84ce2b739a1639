//! The blocking take that daemons (from a queue) and workers (from a job
//! list) share: one `BLMOVE` from a list's tail to the head of the taker's
//! processing list, waiting at most a given time, that shutdown never
//! abandons half-way.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::connection::RedisConn;

/// What one blocking take gave.
#[derive(Debug)]
pub enum Taken {
    /// An entry, now at the head of the processing list; `waited` says
    /// whether the list was empty when the take began (more than 200 µs),
    /// so the caller's next take may block at once.
    Entry {
        /// The entry.
        entry: Vec<u8>,
        /// Whether the take waited for it.
        waited: bool,
    },
    /// Nothing came within the time.
    Nothing,
    /// Redis failed.
    Failed(redis::RedisError),
    /// Shutdown was requested; the command was waited out first.
    Shutdown,
}

/// `BLMOVE from to RIGHT LEFT block` on `conn` (a connection of its own:
/// the command holds it while it waits).
///
/// On shutdown the command is not abandoned: Redis may still move an entry
/// while it waits, after shutdown has returned the processing list. It
/// ends within `block`; whatever it moved is then in the list that
/// shutdown returns.
pub async fn blocking_move(
    conn: &mut RedisConn,
    from: &str,
    to: &str,
    block: Duration,
    shutdown: &CancellationToken,
) -> Taken {
    let mut cmd = redis::cmd("BLMOVE");
    cmd.arg(from)
        .arg(to)
        .arg("RIGHT")
        .arg("LEFT")
        .arg(block.as_secs_f64());
    let blocked = cmd.query_async::<Option<Vec<u8>>>(conn);
    tokio::pin!(blocked);
    let from_time = tokio::time::Instant::now();
    let got = tokio::select! {
        r = &mut blocked => r,
        _ = shutdown.cancelled() => {
            let _ = blocked.await;
            return Taken::Shutdown;
        }
    };
    match got {
        Ok(Some(entry)) => Taken::Entry {
            entry,
            waited: from_time.elapsed() > Duration::from_micros(200),
        },
        Ok(None) => Taken::Nothing,
        Err(e) => Taken::Failed(e),
    }
}
