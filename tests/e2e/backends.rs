//! The test backends themselves (`gateway_tests::backends`): a shared database is created,
//! usable and gone after drop; a shared Redis prefix is cleaned; private servers keep what
//! they should across stop and start, and refuse connections while stopped. Every cluster
//! test stands on these, so they must hold on their own.

use std::time::Duration;

use gateway_tests::backends::{self, PrivatePostgres, PrivateRedis};
use redis::AsyncCommands as _;

/// Whether a database named `name` exists on the shared server.
async fn shared_database_exists(name: &str) -> bool {
    let server = backends::shared_postgres_url();
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connect to the shared PostgreSQL");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("query pg_database");
    row.get::<_, i64>(0) == 1
}

#[tokio::test]
async fn a_shared_database_is_its_own_usable_and_gone_after_drop() {
    let first = backends::shared_postgres_database().await;
    let second = backends::shared_postgres_database().await;
    assert_ne!(first.name(), second.name());
    assert!(first.url().ends_with(&format!("/{}", first.name())));

    let client = first.connect().await;
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(database, first.name());
    client
        .batch_execute("CREATE TABLE t (n bigint); INSERT INTO t VALUES (42)")
        .await
        .expect("write");
    let n: i64 = client
        .query_one("SELECT n FROM t", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(n, 42);
    // The other database is another one: the table is not there.
    let other = second.connect().await;
    assert!(other.query("SELECT n FROM t", &[]).await.is_err());

    // Dropped with a connection still open: WITH (FORCE) ends it.
    let name = first.name().to_owned();
    assert!(shared_database_exists(&name).await);
    drop(first);
    assert!(!shared_database_exists(&name).await, "{name} still exists");
    assert!(shared_database_exists(second.name()).await);
}

#[tokio::test]
async fn a_shared_redis_prefix_is_cleaned_on_drop_and_others_are_kept() {
    let mine = backends::shared_redis_prefix().await;
    let other = backends::shared_redis_prefix().await;
    assert_ne!(mine.prefix(), other.prefix());
    let mut connection = mine.connect().await;
    for n in 0..1500 {
        let () = connection
            .set(mine.key(&format!("k{n}")), n)
            .await
            .expect("SET");
    }
    let () = connection
        .set(other.key("kept"), 1)
        .await
        .expect("SET other");
    assert_eq!(mine.keys().expect("scan").len(), 1500);

    drop(mine);
    let other_keys = other.keys().expect("scan other");
    assert_eq!(other_keys, vec![other.key("kept")]);
    let left: Option<i64> = connection
        .get(format!("{}k7", other.prefix()))
        .await
        .expect("GET");
    assert_eq!(left, None);
    drop(other);
}

#[tokio::test]
async fn a_private_postgres_keeps_its_data_across_stop_and_start_and_refuses_while_stopped() {
    let mut postgres = PrivatePostgres::start().await;
    assert_ne!(postgres.port(), 5432);
    let client = postgres.connect().await;
    client
        .batch_execute("CREATE TABLE t (n bigint); INSERT INTO t VALUES (7)")
        .await
        .expect("write");

    postgres.stop().await;
    // A connection open across the stop is ended, and new ones are refused.
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls),
    )
    .await
    .expect("a stopped server refuses at once");
    assert!(refused.is_err(), "a stopped server accepted a connection");

    postgres.start_again().await;
    let client = postgres.connect().await;
    let n: i64 = client
        .query_one("SELECT n FROM t", &[])
        .await
        .expect("read after restart")
        .get(0);
    assert_eq!(n, 7);

    // A kill is a crash: every server process dies, and the next start recovers what was
    // committed.
    client
        .batch_execute("INSERT INTO t VALUES (8)")
        .await
        .expect("write");
    postgres.kill().await;
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    postgres.start_again().await;
    let sum: i64 = postgres
        .connect()
        .await
        .query_one("SELECT sum(n)::bigint FROM t", &[])
        .await
        .expect("read after crash")
        .get(0);
    assert_eq!(sum, 15);
}

#[tokio::test]
async fn a_private_redis_refuses_while_stopped_answers_when_started_and_flushes() {
    let mut redis = PrivateRedis::start().await;
    assert_ne!(redis.port(), 6379);
    let mut connection = redis.connect().await;
    let () = connection.set("a", 1).await.expect("SET");
    redis.flushall().await;
    let a: Option<i64> = connection.get("a").await.expect("GET");
    assert_eq!(a, None);
    let () = connection.set("b", 2).await.expect("SET");

    redis.stop().await;
    let client = redis::Client::open(redis.url()).expect("url");
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("a stopped server refuses at once");
    assert!(refused.is_err(), "a stopped Redis accepted a connection");

    redis.start_again().await;
    let mut connection = redis.connect().await;
    let pong: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
    // Nothing on disk: a restart starts empty.
    let b: Option<i64> = connection.get("b").await.expect("GET");
    assert_eq!(b, None);

    redis.kill().await;
    redis.start_again().await;
    let mut connection = redis.connect().await;
    let () = connection.set("c", 3).await.expect("SET after kill");
}
