//! The key-value store with etcd's model that holds the cluster's state.
