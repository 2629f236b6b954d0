//! A connection a batch writer keeps from one batch to the next while there is more to write.
//!
//! sqlx tests every connection given back to its pool with a round trip (a Sync and its
//! ReadyForQuery; sqlx 0.8.6 does it on every return, with no option to skip it), so a writer
//! that takes a connection for each batch pays a second round trip and wakes the database's
//! backend a second time for every statement it sends. A writer that keeps its connection while
//! batches follow one another pays that once, when it goes idle and gives the connection back.

use sqlx::{PgConnection, PgPool, Postgres, pool::PoolConnection};

use super::{Store, StoreResult};

/// Pools smaller than this lend writers a connection per statement, as before: the intake's two
/// writers and the completer keep up to three while busy, which would leave a pool of a few
/// connections little or nothing for the requests themselves.
const SMALLEST_POOL_TO_HOLD_IN: u32 = 8;

/// Holds one pooled connection between a writer's statements. The writer gives it back with
/// [`HeldConnection::release`] whenever it would wait for work, so it never sits idle holding a
/// connection (nor keeps a stopping server's pool from closing); dropping it gives it back too.
#[derive(Debug)]
pub struct HeldConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    /// A statement began on `conn` and did not report back: its future was dropped midway, and
    /// the connection may be in the middle of an exchange. It goes back to the pool, which
    /// tests it (and closes it if it is broken), instead of being used again.
    in_use: bool,
    /// Whether the pool is big enough to keep a connection here (`SMALLEST_POOL_TO_HOLD_IN`).
    keep: bool,
}

impl HeldConnection {
    /// Whether a connection is held (a statement on it needs no round trip to the pool).
    pub fn holds(&self) -> bool {
        self.conn.is_some()
    }

    /// Gives the connection back to the pool, if one is held.
    pub fn release(&mut self) {
        self.conn = None;
        self.in_use = false;
    }

    /// The held connection, taking one from the pool if none is held.
    async fn begin_use(&mut self) -> StoreResult<&mut PgConnection> {
        if self.in_use {
            self.release();
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => empty.insert(self.pool.acquire().await?),
        };
        self.in_use = true;
        Ok(&mut **conn)
    }

    /// After a statement: a connection whose statement failed goes back to the pool, which tests
    /// it before anyone uses it again (a failure may be the connection's own).
    fn end_use<T>(&mut self, result: StoreResult<T>) -> StoreResult<T> {
        self.in_use = false;
        if result.is_err() || !self.keep {
            self.release();
        }
        result
    }

    /// Runs one statement (or a sequence that leaves no transaction open) on the held
    /// connection.
    pub(super) async fn run<T>(
        &mut self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let result = match self.begin_use().await {
            Ok(conn) => statement(conn).await,
            Err(e) => Err(e),
        };
        self.end_use(result)
    }
}

impl Store {
    /// A holder for a batch writer's connection; it holds none until its first statement.
    pub fn held_connection(&self) -> HeldConnection {
        HeldConnection {
            pool: self.pool.clone(),
            conn: None,
            in_use: false,
            keep: self.pool.options().get_max_connections() >= SMALLEST_POOL_TO_HOLD_IN,
        }
    }
}
