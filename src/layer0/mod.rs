//! Layer0: crystallised facts (grains) in Redis, the question normal form
//! they are looked up by, and the grains files `kitbash grains load` reads.

pub mod crystal;
pub mod grains;
pub mod grains_file;
pub mod matching;
pub mod memory;
