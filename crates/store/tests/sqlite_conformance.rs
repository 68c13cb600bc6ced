//! The store conformance suite against the SQLite backend.

use nodeless_store::SqliteStore;

nodeless_store::store_conformance_suite!(|| async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    (store, dir)
});
