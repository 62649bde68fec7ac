// `import RaftLite` is all an application needs: the core's types (NodeID, LogIndex, Term, Raft.Role) and the
// storage types (WriteAheadLog, InMemoryNodeStorage) come with it.
@_exported import RaftCore
@_exported import RaftStorage
