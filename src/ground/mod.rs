//! The ground floor: what any part of leitner may use, and which uses nothing
//! of leitner above it. Time, files that survive power cuts, the hop to the
//! blocking pool, memory and its budget, password hashes, the logger.

pub mod budget;
pub mod clock;
pub mod durable;
pub mod hex;
pub mod logging;
pub mod memory;
pub mod password;
pub mod pool;
pub mod random;
