//! A fresh PostgreSQL database per test, on the server `GATEWAY_TEST_POSTGRES_URL` names
//! (default: the local one, as superuser), dropped when the test ends, passed or failed.
//!
//! Tests never skip: with no server there, they fail saying so (CI must run them).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::connect;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub(crate) struct TestDatabase {
    /// The URL of this test's database.
    pub url: String,
    name: String,
    server_url: String,
}

impl TestDatabase {
    /// Creates `gw_test_<pid>_<n>_<tag>`.
    pub async fn create(tag: &str) -> TestDatabase {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let server_url =
            std::env::var("GATEWAY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let mut name = format!(
            "gw_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            tag.to_ascii_lowercase()
        );
        name.retain(|c| c.is_ascii_alphanumeric() || c == '_');
        name.truncate(63);
        let server = connect_to(&server_url).await;
        server
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e:#}"));
        TestDatabase {
            url: with_database(&server_url, &name),
            name,
            server_url,
        }
    }

    /// A plain connection to this test's database (for looking behind the store's back).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect_to(&self.url).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime (or while it unwinds): a thread of its own
        // with a runtime of its own, joined, so the database is gone when the test ends.
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let server = connect_to(&server_url).await;
                server
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test database {}: {err}", self.name);
        }
    }
}

async fn connect_to(url: &str) -> tokio_postgres::Client {
    let target = connect::parse(url).expect("GATEWAY_TEST_POSTGRES_URL parses");
    let (client, connection) = target
        .config
        .connect(target.tls.clone())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL for the tests is not reachable at {} ({e:#}): start one, or set \
                 GATEWAY_TEST_POSTGRES_URL to a server where tests may CREATE DATABASE",
                target.described
            )
        });
    tokio::spawn(connection);
    client
}

/// `url` with its database replaced by `name`.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return format!("{url} dbname={name}");
    };
    let (head, tail) = url.split_at(scheme_end);
    let query_at = tail.find('?').unwrap_or(tail.len());
    let (before_query, query) = tail.split_at(query_at);
    let authority = before_query.split('/').next().unwrap_or_default();
    format!("{head}{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_is_replaced_in_either_form() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u:p@h:5432/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(
            with_database("host=h user=u", "t1"),
            "host=h user=u dbname=t1"
        );
    }
}
