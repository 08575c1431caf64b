//! A PostgreSQL database of its own per test, on the local server, dropped when the test ends.

use anyhow::Context;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The server the kit uses (`scripts/ensure-services.sh` sets it up: role `root`, trust auth
/// on loopback).
pub const ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/postgres";

/// A database created for one test. Dropped (`WITH (FORCE)`) when this value is dropped.
#[derive(Debug)]
pub struct Database {
    name: String,
    url: String,
}

impl Database {
    /// Creates an empty database with a unique name.
    pub async fn create(prefix: &str) -> anyhow::Result<Self> {
        Self::create_from(prefix, None).await
    }

    /// Creates a database as a copy of `template` (for example one that already holds the
    /// migrations). The template must have no open connections.
    pub async fn create_from(prefix: &str, template: Option<&str>) -> anyhow::Result<Self> {
        let name = crate::unique(prefix).replace('-', "_");
        let mut admin = admin_connection().await?;
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut admin)
            .await
            .with_context(|| format!("{sql} on {ADMIN_URL}"))?;
        let _ = admin.close().await;
        let url = format!("postgres://root@127.0.0.1:5432/{name}");
        Ok(Self { name, url })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://root@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread with its own runtime may block.
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut admin = admin_connection().await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| anyhow::anyhow!("drop thread panicked")) {
            eprintln!("testkit: could not drop database {}: {e:#}", self.name);
        }
    }
}

async fn admin_connection() -> anyhow::Result<PgConnection> {
    PgConnection::connect(ADMIN_URL).await.with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {ADMIN_URL}: run `make services` (scripts/ensure-services.sh)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_of_its_own_is_created_and_dropped() {
        let db = Database::create("pg-fixture").await.unwrap();
        let mut conn = PgConnection::connect(db.url()).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").execute(&mut conn).await.unwrap();
        let name = db.name().to_owned();
        drop(db); // with the connection still open: FORCE ends it
        let mut admin = admin_connection().await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
