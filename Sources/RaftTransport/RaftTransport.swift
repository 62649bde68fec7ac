import NIOCore
import RaftCore

/// How Raft messages travel between nodes. A node owns one transport and calls it only on the transport's event
/// loop, which is also where received messages are delivered: the node's state needs no locks.
///
/// A transport is best-effort, as Raft expects: it may drop, delay or duplicate messages (the algorithm repairs all
/// of that), but it must never block the node, deliver a message to the wrong node, or deliver bytes that are not a
/// message some peer sent.
public protocol RaftTransport: AnyObject, Sendable {
    /// The loop on which `send` and `flush` are called and `deliver` is called back.
    var eventLoop: any EventLoop { get }

    /// Starts receiving (and, for a network transport, listening and connecting).
    /// - Parameter deliver: called on `eventLoop` with each message received for this node.
    func start(deliver: @escaping @Sendable (Message) -> Void) async throws

    /// Starts as `start(deliver:)` does, and also reports, on `eventLoop`, each time messages queued for a peer may
    /// have been lost (its connection was reset, or its queue overflowed), so that the node can resend what it must
    /// not leave to chance (its forwarded proposals). The default implementation never reports.
    func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void
    ) async throws

    /// Starts as `start(deliver:linkReset:)` does, and also reports, on `eventLoop`, each time an established
    /// connection with a peer closes or resets (the peer's process died, the network cut it): the signal for fast
    /// failover. It is not reported for a connection attempt that fails, for a peer that `setPeers` removed, nor
    /// while the transport shuts down; it may be reported more than once for one loss (a peer's connection to this
    /// node and this node's to it). The default implementation never reports.
    func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void,
        connectionLost: @escaping @Sendable (NodeID) -> Void
    ) async throws

    /// Replaces the set of peers (the cluster's membership changed). Call on `eventLoop`; may be called before
    /// `start` and after `shutdown`. A new peer is connected to; a peer no longer listed is disconnected and gets
    /// nothing more (messages to it are dropped as to an unknown node); a peer whose address changed is reconnected
    /// there; an unchanged peer is left alone (its connection and what is queued for it are kept). The local node,
    /// if listed, is ignored. The default implementation does nothing.
    func setPeers(_ peers: [TCPTransport.Peer])

    /// Queues a message for its target. Call on `eventLoop`; never blocks. A message to an unknown node, or to a
    /// peer whose queue is full, is dropped.
    func send(_ message: Message)

    /// Hands everything queued since the last flush to the network: one write per peer.
    func flush()

    /// Stops: closes every connection and stops listening. Nothing is delivered after it returns.
    func shutdown() async

    /// Counters per peer.
    func statistics() async -> [NodeID: PeerStatistics]
}

extension RaftTransport {
    public func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void
    ) async throws {
        try await start(deliver: deliver)
    }

    public func start(
        deliver: @escaping @Sendable (Message) -> Void, linkReset: @escaping @Sendable (NodeID) -> Void,
        connectionLost: @escaping @Sendable (NodeID) -> Void
    ) async throws {
        try await start(deliver: deliver, linkReset: linkReset)
    }

    public func setPeers(_ peers: [TCPTransport.Peer]) {}
}

/// Counters a transport keeps about one peer.
public struct PeerStatistics: Sendable, Hashable {
    public var messagesSent = 0
    public var messagesDropped = 0
    public var messagesReceived = 0
    public var connects = 0
    /// Bytes queued for the peer and not yet handed to the operating system.
    public var queuedBytes = 0
    /// When a frame of any kind was last received from the peer, on any connection (nil: never).
    public var lastContact: NIODeadline? = nil
    /// The latest round trip measured to the peer (a ping on this node's connection to it and its pong).
    public var roundTrip: TimeAmount? = nil

    public init() {}
}
