//! What Redis says about itself (`INFO memory`), for the dashboard's
//! overview: on one server its own figures, in cluster mode summed over
//! the primaries.

use serde::Serialize;

use super::blackboard::{Blackboard, Result};

/// Memory of the Redis Kitbash uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct RedisMemory {
    /// `used_memory`: bytes the server's allocator holds.
    pub used_bytes: u64,
    /// `used_memory_peak`.
    pub peak_bytes: u64,
    /// `maxmemory` (0: no limit).
    pub maxmemory_bytes: u64,
    /// Servers counted (primaries in cluster mode).
    pub servers: usize,
}

/// The figures of one `INFO memory` reply.
fn parse_memory(info: &str) -> RedisMemory {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    RedisMemory {
        used_bytes: field("used_memory"),
        peak_bytes: field("used_memory_peak"),
        maxmemory_bytes: field("maxmemory"),
        servers: 1,
    }
}

impl Blackboard {
    /// `INFO memory` of the server, or summed over a cluster's primaries.
    /// Needs the `info` command (the daemon's ACL user has it).
    pub async fn redis_memory(&self) -> Result<RedisMemory> {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("INFO");
        cmd.arg("memory");
        let primaries = conn.primaries().await?;
        if primaries.is_empty() {
            let info: String = conn.on_node(None, &cmd).await?;
            return Ok(parse_memory(&info));
        }
        let mut total = RedisMemory::default();
        for node in &primaries {
            let info: String = conn.on_node(Some(node), &cmd).await?;
            let m = parse_memory(&info);
            total.used_bytes += m.used_bytes;
            total.peak_bytes += m.peak_bytes;
            total.maxmemory_bytes += m.maxmemory_bytes;
            total.servers += 1;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_memory_fields_and_not_their_longer_namesakes() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\
                    used_memory_rss:9000000\r\nused_memory_peak:2097152\r\n\
                    used_memory_peak_human:2.00M\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\n";
        assert_eq!(
            parse_memory(info),
            RedisMemory {
                used_bytes: 1_048_576,
                peak_bytes: 2_097_152,
                maxmemory_bytes: 0,
                servers: 1
            }
        );
    }
}
