//! The in-process configd of `deskmail-testkit-configd`, and a macro for both stores.

pub use deskmail_testkit_configd::*;

/// Generates one test per store from `async fn NAME(db: Db)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::harness::Db::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::harness::Db::Postgres).await })*
        }
    };
}
