//! The orchestrator daemon (`kitbash serve`).

pub mod prom;
pub mod status;
