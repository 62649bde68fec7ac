import NIOCore
import NIOPosix
import RaftCore
import RaftStorage

/// The runtime's side of InstallSnapshot: a leader streams its latest snapshot's file to a follower whose core asked
/// for it (`SnapshotSender`, one per follower), and a follower writes the chunks into its snapshot store
/// (`SnapshotReceiver`) and steps its core with `installSnapshot` once the file is whole and checked. File reads and
/// writes run on the thread pool; everything else on the node's loop.
extension RaftNode {
    /// The leader's core wants `peer` to get the snapshot `meta` (the message `installSnapshot`): start streaming it,
    /// unless a transfer of that snapshot to that peer is under way.
    func startSnapshotTransfer(_ meta: SnapshotMetadata, to peer: NodeID, _ rt: NodeRuntime<Machine>) {
        if let running = rt.senders[peer], !running.isFinished, running.index == meta.index,
            running.snapshotTerm == meta.term
        {
            return
        }
        rt.senders[peer]?.cancel()
        guard let store = snapshotStore, let info = rt.latestSnapshot, info.metadata.index == meta.index,
            info.metadata.term == meta.term
        else {
            logger.error("cannot send a snapshot this node does not hold", metadata: ["snapshot": "\(meta)"])
            rt.raft.reportSnapshot(to: peer, succeeded: false)
            return
        }
        let file: RawSnapshotFile
        do {
            file = try store.openRaw(info)
        } catch {
            logger.error("cannot open the snapshot to send it", metadata: ["error": "\(error)"])
            rt.raft.reportSnapshot(to: peer, succeeded: false)
            return
        }
        var senderOptions = SnapshotSender.Options()
        senderOptions.chunkSize = options.snapshotChunkBytes
        senderOptions.window = options.snapshotWindowBytes
        let loop = eventLoop
        let peerName = member(id: peer, rt)?.name ?? "\(peer)"
        let sender = SnapshotSender(
            peer: peer, index: meta.index, snapshotTerm: meta.term, totalSize: info.size, options: senderOptions,
            eventLoop: loop,
            read: { offset, count, completion in
                let done = NIOLoopBound(completion, eventLoop: loop)
                NIOThreadPool.singleton.runIfActive(eventLoop: loop) { try file.read(at: offset, count: count) }
                    .whenComplete { done.value($0) }
            },
            send: { [weak self] chunk in
                guard let self else { return }
                self.metrics.snapshotBytesSent.increment(by: chunk.data.count)
                self.sendTransferMessage(.snapshotChunk(chunk), to: peer)
            },
            onFinish: { [weak self] installed in
                file.close()
                self?.snapshotTransferFinished(to: peer, meta: meta, installed: installed)
            })
        rt.senders[peer] = sender
        metrics.snapshotsSent.increment()
        logger.info(
            "sending a snapshot", metadata: ["peer": "\(peerName)", "index": "\(meta.index)", "bytes": "\(info.size)"])
        sender.start()
    }

    private func snapshotTransferFinished(to peer: NodeID, meta: SnapshotMetadata, installed: Bool) {
        guard let rt = runtime.value else { return }
        if let sender = rt.senders[peer], sender.isFinished { rt.senders[peer] = nil }
        if !installed { metrics.snapshotSendsFailed.increment() }
        logger.info(
            installed ? "snapshot delivered" : "snapshot transfer failed",
            metadata: ["peer": "\(cluster.member(id: peer)?.name ?? "\(peer)")", "index": "\(meta.index)"])
        guard !rt.stopped else { return }
        rt.raft.reportSnapshot(to: peer, succeeded: installed)
        scheduleProcess()
    }

    /// Sends a chunk or an acknowledgement outside the processing pass (from a read's or a write's completion).
    func sendTransferMessage(_ kind: Message.Kind, to peer: NodeID) {
        guard let rt = runtime.value, !rt.stopped else { return }
        transport.send(Message(from: id, to: peer, term: rt.raft.term, kind: kind))
        transport.flush()
    }

    /// Routes the transfers' own messages (never the core's business). Returns false for every other message.
    func receiveTransferMessage(_ message: Message, _ rt: NodeRuntime<Machine>) -> Bool {
        switch message.kind {
        case .snapshotChunkAck(let ack):
            rt.senders[message.from]?.receive(ack)
            return true
        case .snapshotChunk(let chunk):
            // Chunks from a leader of an older term are stale; the core would ignore its installSnapshot anyway.
            guard message.term >= rt.raft.term, let receiver = snapshotReceiver(rt) else { return true }
            metrics.snapshotBytesReceived.increment(by: chunk.data.count)
            let leader = message.from
            receiver.receive(chunk, from: leader, term: message.term) { [weak self] ack in
                self?.sendTransferMessage(.snapshotChunkAck(ack), to: leader)
            }
            return true
        case .installSnapshot:
            // Only this node's receiver may step the core with it, once it holds the whole snapshot, checked: one
            // from the network names bytes this node does not have.
            logger.warning(
                "dropped an installSnapshot message from the network", metadata: ["from": "\(message.from)"])
            return true
        default:
            return false
        }
    }

    /// The node's receiver, made on first use (nil without a snapshot store: such a node refuses snapshots).
    private func snapshotReceiver(_ rt: NodeRuntime<Machine>) -> SnapshotReceiver? {
        if let receiver = rt.receiver { return receiver }
        guard let store = snapshotStore, Machine.supportsSnapshots else { return nil }
        let incoming = IncomingSnapshotFiles(store: store, eventLoop: eventLoop)
        var receiverOptions = SnapshotReceiver.Options()
        receiverOptions.maxChunkSize = max(receiverOptions.maxChunkSize, options.snapshotChunkBytes)
        let receiver = SnapshotReceiver(storage: incoming, options: receiverOptions, eventLoop: eventLoop) {
            [weak self] meta, leader, term in
            self?.snapshotReceived(meta, from: leader, term: term, incoming)
        }
        rt.receiver = receiver
        return receiver
    }

    /// A snapshot arrived whole and checked, and is in the store: the core decides whether to install it.
    private func snapshotReceived(
        _ meta: SnapshotMetadata, from leader: NodeID, term: Term, _ incoming: IncomingSnapshotFiles
    ) {
        guard let rt = runtime.value, !rt.stopped, let info = incoming.completed, info.metadata == meta else { return }
        logger.info("snapshot received", metadata: ["index": "\(meta.index)", "bytes": "\(info.size)"])
        rt.receivedSnapshots[meta.index] = info
        rt.raft.step(Message(from: leader, to: id, term: term, kind: .installSnapshot(meta)))
        scheduleProcess()
    }

    /// Ends every transfer this node is sending (it is no longer the leader, or it stops).
    func cancelSnapshotTransfers(_ rt: NodeRuntime<Machine>) {
        let senders = rt.senders.values
        rt.senders = [:]
        for sender in senders { sender.cancel() }
    }
}

/// A follower's partial snapshot files, in its snapshot store: the receiver's storage. File operations other than
/// opening run on the thread pool and complete on the node's loop.
final class IncomingSnapshotFiles: SnapshotReceiverStorage {
    private let store: SnapshotStore
    private let eventLoop: any EventLoop
    private var incoming: IncomingSnapshot?
    /// The last snapshot completed: in the store under its final name.
    private(set) var completed: SnapshotInfo?

    init(store: SnapshotStore, eventLoop: any EventLoop) {
        self.store = store
        self.eventLoop = eventLoop
    }

    func begin(index: LogIndex, term: Term, totalSize: UInt64) throws -> UInt64 {
        let file = try store.incoming(index: index, term: term, totalSize: totalSize)
        incoming = file
        return file.received
    }

    func write(_ bytes: [UInt8], at offset: UInt64, completion: @escaping (Result<Void, any Error>) -> Void) {
        guard let file = incoming else {
            return completion(.failure(StorageFailure(.closed, "no snapshot is being received")))
        }
        let done = NIOLoopBound(completion, eventLoop: eventLoop)
        NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { try file.write(bytes, at: offset) }
            .whenComplete { done.value($0) }
    }

    func complete(completion: @escaping (Result<SnapshotMetadata, any Error>) -> Void) {
        guard let file = incoming else {
            return completion(.failure(StorageFailure(.closed, "no snapshot is being received")))
        }
        let done = NIOLoopBound(completion, eventLoop: eventLoop)
        let me = NIOLoopBound(self, eventLoop: eventLoop)
        NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { try file.complete() }
            .whenComplete { result in
                me.value.incoming = nil
                switch result {
                case .success(let info):
                    me.value.completed = info
                    done.value(.success(info.metadata))
                case .failure(let error):
                    done.value(.failure(error))
                }
            }
    }

    func discard() {
        incoming?.discard()
        incoming = nil
    }
}
