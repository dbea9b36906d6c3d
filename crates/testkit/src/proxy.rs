//! The chaos TCP proxy (being written).
