//! Throwaway servers (being written).
