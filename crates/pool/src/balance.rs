//! Balancing over several endpoints (being written).
