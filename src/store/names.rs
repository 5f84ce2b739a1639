//! Names of processes: the instance id of a daemon and the default name of
//! a worker, both `<host>-<8 hex>` based, and shared by the daemon and the
//! worker runtimes (which do not depend on each other).

/// A generated instance id: `<host>-<8 hex>`.
pub fn generate_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kitbash".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
