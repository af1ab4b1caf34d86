//! What the Postgres tests share: the server from `EVENTOR_PG_URL` and a fresh schema per test.
//!
//! Without `EVENTOR_PG_URL` the Postgres tests are skipped, unless `EVENTOR_REQUIRE_PG=1`
//! says the run must cover Postgres: then they fail.

#![allow(dead_code)] // each test binary uses its own part of this

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, Ordering};

use eventor_store::StoreLocation;

/// The server's URL, or `None` (test skipped) when it is not set and not required.
pub fn pg_url() -> Option<String> {
    let url = std::env::var("EVENTOR_PG_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let required = std::env::var("EVENTOR_REQUIRE_PG").is_ok_and(|v| v == "1");
    match url {
        Some(url) => Some(url),
        None if required => panic!("EVENTOR_REQUIRE_PG=1 but EVENTOR_PG_URL is not set"),
        None => {
            eprintln!("skipped: EVENTOR_PG_URL is not set");
            None
        }
    }
}

/// A schema of its own for one test, dropped by [`PgSchema::drop_now`].
pub struct PgSchema {
    url: String,
    pub name: String,
    pub location: StoreLocation,
}

impl PgSchema {
    /// A fresh, not yet existing schema name on the server of `url` (the store creates it).
    pub fn fresh(url: &str) -> PgSchema {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let random = RandomState::new().hash_one((std::process::id(), serial));
        let name = format!("t_{random:016x}");
        let separator = if url.contains('?') { '&' } else { '?' };
        let location = StoreLocation::parse(&format!("{url}{separator}schema={name}"))
            .expect("EVENTOR_PG_URL parses");
        PgSchema {
            url: url.to_owned(),
            name,
            location,
        }
    }

    /// Drops the schema and everything in it.
    pub async fn drop_now(self) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect to drop the test schema");
        let driver = tokio::spawn(connection);
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        client
            .batch_execute(&sql)
            .await
            .expect("drop the test schema");
        drop(client);
        let _ = driver.await;
    }
}
