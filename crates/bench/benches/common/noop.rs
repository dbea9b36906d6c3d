//! No-op pool managers for rampart-pool, deadpool and bb8, shared by the pool benches: each
//! connects at once to nothing and checks nothing, so a bench measures the pool alone.

use std::convert::Infallible;

/// The connection every manager makes: nothing at all.
#[derive(Debug)]
pub(crate) struct NoopConn;

pub(crate) struct RampartNoop;

impl rampart_pool::Manager for RampartNoop {
    type Connection = NoopConn;
    type Error = std::io::Error;
    // A no-op backend keeps no session state, so returned connections need no reset (deadpool
    // and bb8 are likewise configured to do nothing per checkout; see the header).
    const RESETS: bool = false;
    async fn connect(&self) -> Result<NoopConn, std::io::Error> {
        Ok(NoopConn)
    }
    async fn is_valid(&self, _conn: &mut NoopConn) -> Result<(), std::io::Error> {
        Ok(())
    }
}

pub(crate) struct DeadpoolNoop;

impl deadpool::managed::Manager for DeadpoolNoop {
    type Type = NoopConn;
    type Error = Infallible;
    async fn create(&self) -> Result<NoopConn, Infallible> {
        Ok(NoopConn)
    }
    async fn recycle(
        &self,
        _obj: &mut NoopConn,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

pub(crate) struct Bb8Noop;

impl bb8::ManageConnection for Bb8Noop {
    type Connection = NoopConn;
    type Error = Infallible;
    async fn connect(&self) -> Result<NoopConn, Infallible> {
        Ok(NoopConn)
    }
    async fn is_valid(&self, _conn: &mut NoopConn) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _conn: &mut NoopConn) -> bool {
        false
    }
}
