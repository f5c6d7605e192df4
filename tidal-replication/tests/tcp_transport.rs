//! The TCP transport between real sockets on 127.0.0.1: exchanges between two and three
//! nodes, the frame limit, backpressure while a peer is unreachable, reconnects after a
//! restart, and shutdown.

mod tcp_support;

use std::time::{Duration, Instant};

use tcp_support::*;
use tidal_replication::transport::tcp::{FRAME_BYTES_MAX, TcpConfig, TcpError, TcpTransport};
use tidal_replication::transport::{NodeId, SendError, Transport};

fn message(from: u32, to: u32, i: u32) -> Vec<u8> {
    format!("{from}->{to} #{i}").into_bytes()
}

/// Sends `message`, waiting while the queue is full.
fn send_patiently(transport: &mut impl Transport, to: NodeId, message: Vec<u8>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match transport.send(to, message.clone()) {
            Ok(()) => return,
            Err(SendError::Full(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

#[test]
fn two_nodes_exchange_messages_both_ways_in_order() {
    let (mut nodes, _) = cluster(2);
    for i in 0..200 {
        nodes[0].transport.send(NodeId(2), message(1, 2, i)).unwrap();
        nodes[1].transport.send(NodeId(1), message(2, 1, i)).unwrap();
    }
    for i in 0..200 {
        assert_eq!(recv(&nodes[1].inbox), (NodeId(1), message(1, 2, i)));
        assert_eq!(recv(&nodes[0].inbox), (NodeId(2), message(2, 1, i)));
    }
    // The sender counts a frame after its write returns, which may be after it arrived.
    wait_for("the sender's count", || nodes[0].transport.stats().peer(NodeId(2)).frames_sent == 200);
    let stats = nodes[0].transport.stats();
    let towards = stats.peer(NodeId(2));
    assert_eq!(towards.frames_received, 200);
    assert_eq!(towards.bytes_sent, (0..200).map(|i| message(1, 2, i).len() as u64).sum::<u64>());
    assert_eq!((towards.connects_out, towards.connects_in), (1, 1));
    assert_eq!(stats.refused.values().sum::<u64>(), 0, "{stats:?}");
}

#[test]
fn three_nodes_each_reach_both_others() {
    let (mut nodes, _) = cluster(3);
    for from in 1..=3u32 {
        for to in (1..=3u32).filter(|to| *to != from) {
            for i in 0..20 {
                nodes[from as usize - 1].transport.send(NodeId(to), message(from, to, i)).unwrap();
            }
        }
    }
    for to in 1..=3u32 {
        let got: Vec<(NodeId, Vec<u8>)> = (0..40).map(|_| recv(&nodes[to as usize - 1].inbox)).collect();
        for from in (1..=3u32).filter(|from| *from != to) {
            let from_one: Vec<Vec<u8>> =
                got.iter().filter(|(f, _)| *f == NodeId(from)).map(|(_, m)| m.clone()).collect();
            assert_eq!(from_one, (0..20).map(|i| message(from, to, i)).collect::<Vec<_>>(), "{from}->{to}");
        }
        assert!(nodes[to as usize - 1].inbox.try_recv().is_err(), "nothing more for {to}");
    }
}

#[test]
fn a_message_at_the_frame_limit_arrives_and_one_byte_more_is_too_large() {
    let (mut nodes, _) = cluster(2);
    let mut big = vec![0u8; FRAME_BYTES_MAX];
    for (i, block) in big.chunks_mut(4096).enumerate() {
        block.fill(i as u8 ^ (i >> 8) as u8);
    }
    let crc = crc32c::crc32c(&big);
    nodes[0].transport.send(NodeId(2), big).unwrap();
    let over = vec![0u8; FRAME_BYTES_MAX + 1];
    assert_eq!(
        nodes[0].transport.send(NodeId(2), over),
        Err(SendError::TooLarge { len: FRAME_BYTES_MAX + 1, max: FRAME_BYTES_MAX })
    );
    nodes[0].transport.send(NodeId(2), b"after".to_vec()).unwrap();
    let (from, got) = recv(&nodes[1].inbox);
    assert_eq!((from, got.len(), crc32c::crc32c(&got)), (NodeId(1), FRAME_BYTES_MAX, crc));
    assert_eq!(recv(&nodes[1].inbox), (NodeId(1), b"after".to_vec()));
    assert_eq!(nodes[1].transport.stats().frames_corrupt(), 0);
}

#[test]
fn a_full_queue_refuses_while_the_peer_is_unreachable_then_drains_when_it_starts() {
    let addrs = [reserve_addr(), reserve_addr()];
    let mut one = config(1, &addrs);
    one.queue_max = 8;
    let mut one = start(one);
    for i in 0..8 {
        one.transport.send(NodeId(2), message(1, 2, i)).unwrap();
    }
    assert_eq!(one.transport.send(NodeId(2), message(1, 2, 8)), Err(SendError::Full(NodeId(2))));
    wait_for("failed dials", || one.transport.stats().peer(NodeId(2)).connect_failures >= 2);
    assert_eq!(one.transport.send(NodeId(2), message(1, 2, 8)), Err(SendError::Full(NodeId(2))));
    assert_eq!(one.transport.stats().peer(NodeId(2)).sends_full, 2);
    assert_eq!(one.transport.send(NodeId(9), vec![]), Err(SendError::UnknownPeer(NodeId(9))));

    let two = start(config(2, &addrs));
    for i in 0..8 {
        assert_eq!(recv(&two.inbox), (NodeId(1), message(1, 2, i)), "queued while unreachable");
    }
    wait_for("the queue to drain", || one.transport.send(NodeId(2), message(1, 2, 8)).is_ok());
    assert_eq!(recv(&two.inbox), (NodeId(1), message(1, 2, 8)));
}

#[test]
fn a_restarted_peer_on_the_same_port_is_reconnected() {
    let (mut nodes, addrs) = cluster(2);
    nodes[0].transport.send(NodeId(2), b"before".to_vec()).unwrap();
    nodes[1].transport.send(NodeId(1), b"before".to_vec()).unwrap();
    assert_eq!(recv(&nodes[1].inbox), (NodeId(1), b"before".to_vec()));
    assert_eq!(recv(&nodes[0].inbox), (NodeId(2), b"before".to_vec()));
    drop(nodes.pop());
    let mut two = start(config(2, &addrs));
    // A message sent into the old connection as it dies may be lost (the transport does not
    // promise delivery): probe until one arrives, then everything after it must arrive.
    let mut probes = 0u32;
    loop {
        nodes[0].transport.send(NodeId(2), format!("probe {probes}").into_bytes()).unwrap();
        probes += 1;
        if let Ok(delivery) = two.inbox.recv_timeout(Duration::from_millis(50)) {
            // In practice none is lost: the sender checks that its connection is alive (the
            // old peer's shutdown sent a FIN) before it takes messages from the queue.
            assert_eq!(delivery, (NodeId(1), b"probe 0".to_vec()), "the first probe was lost");
            break;
        }
        assert!(probes < 400, "no message reached the restarted peer");
    }
    for i in 0..100 {
        send_patiently(&mut nodes[0].transport, NodeId(2), message(1, 2, i));
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        let (from, m) = recv(&two.inbox);
        assert_eq!(from, NodeId(1));
        if !m.starts_with(b"probe") {
            got.push(m);
        }
    }
    assert_eq!(got, (0..100).map(|i| message(1, 2, i)).collect::<Vec<_>>());
    two.transport.send(NodeId(1), b"back".to_vec()).unwrap();
    assert_eq!(recv(&nodes[0].inbox), (NodeId(2), b"back".to_vec()));
    let stats = nodes[0].transport.stats().peer(NodeId(2));
    assert_eq!((stats.connects_out, stats.disconnects_out, stats.messages_lost), (2, 1, 0), "{stats:?}");
    assert_eq!(stats.connects_in, 2, "{stats:?}");
    wait_for("the old inbound connection to end", || {
        nodes[0].transport.stats().peer(NodeId(2)).disconnects_in == 1
    });
}

#[test]
fn port_zero_reports_the_bound_address() {
    let config = TcpConfig::new(
        NodeId(1),
        "127.0.0.1:0".parse().unwrap(),
        [(NodeId(2), reserve_addr())].into(),
        CLUSTER,
        SECRET,
    );
    let node = start(config);
    let addr = node.transport.local_addr();
    assert_ne!(addr.port(), 0);
    let mut raw = RawPeer::connect(addr);
    raw.write_frame(&hello(2, CLUSTER, [0; 32]).encode());
    assert!(raw.read_frame().is_some(), "the transport answers on its reported address");
}

#[test]
fn shutdown_is_prompt_and_later_sends_are_refused() {
    let addrs = [reserve_addr(), reserve_addr(), reserve_addr()];
    let mut one = start(config(1, &addrs));
    let two = start(config(2, &addrs));
    one.transport.send(NodeId(2), b"hi".to_vec()).unwrap();
    assert_eq!(recv(&two.inbox).1, b"hi");
    // Peer 3 never starts: its thread is dialing or backing off when shutdown comes.
    one.transport.send(NodeId(3), b"never".to_vec()).unwrap();
    let started = Instant::now();
    one.transport.shutdown();
    assert!(started.elapsed() < Duration::from_secs(3), "shutdown took {:?}", started.elapsed());
    assert_eq!(one.transport.send(NodeId(2), vec![]), Err(SendError::Down(NodeId(1))));
    one.transport.shutdown();
    assert!(one.inbox.recv_timeout(Duration::from_secs(1)).is_err(), "the delivery channel closed");
    wait_for("the peer to see the disconnect", || two.transport.stats().peer(NodeId(1)).disconnects_in == 1);
}

#[test]
fn a_node_sends_to_itself_without_a_socket() {
    let (mut nodes, _) = cluster(2);
    nodes[0].transport.send(NodeId(1), b"to myself".to_vec()).unwrap();
    assert_eq!(recv(&nodes[0].inbox), (NodeId(1), b"to myself".to_vec()));
    assert_eq!(nodes[0].transport.stats().peer(NodeId(1)), Default::default(), "no peer counters for self");
    nodes[0].transport.shutdown();
    assert_eq!(nodes[0].transport.send(NodeId(1), vec![]), Err(SendError::Down(NodeId(1))));
}

#[test]
fn the_secret_stays_out_of_debug_output() {
    let (nodes, addrs) = cluster(1);
    for shown in [format!("{:?}", nodes[0].transport), format!("{:?}", config(1, &addrs))] {
        assert!(shown.contains("cluster_id"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", SECRET.to_vec())[1..20]), "{shown}");
        assert!(!shown.contains(std::str::from_utf8(SECRET).unwrap()), "{shown}");
    }
}

#[test]
fn invalid_configs_are_refused() {
    let addrs = [reserve_addr(), reserve_addr()];
    let mut short_secret = config(1, &addrs);
    short_secret.secret = b"short".to_vec();
    let mut lists_itself = config(1, &addrs);
    lists_itself.peers.insert(NodeId(1), addrs[0]);
    let mut no_cluster = config(1, &addrs);
    no_cluster.cluster_id.clear();
    let mut no_queue = config(1, &addrs);
    no_queue.receive_queue_max = 0;
    let cases = [
        (short_secret, "secret"),
        (lists_itself, "peers"),
        (no_cluster, "cluster_id"),
        (no_queue, "receive_queue_max"),
    ];
    for (bad, expected) in cases {
        match bad.validate() {
            Err(TcpError::Config { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: {other:?}"),
        }
        assert!(matches!(TcpTransport::start(bad), Err(TcpError::Config { .. })));
    }
    assert!(config(1, &addrs).validate().is_ok());
}

/// Sends `count` messages of `len` bytes from node 1 to node 2 and returns the seconds it
/// took until the last arrived, checking every one arrives in order.
fn stream_messages(count: u32, len: usize) -> f64 {
    let (mut nodes, _) = cluster(2);
    let started = Instant::now();
    let receiver = std::thread::spawn({
        let inbox = std::mem::replace(&mut nodes[1].inbox, std::sync::mpsc::sync_channel(1).1);
        move || {
            for i in 0..count {
                let (_, m) = recv(&inbox);
                assert_eq!((m.len(), &m[..4]), (len, &i.to_le_bytes()[..]));
            }
        }
    });
    for i in 0..count {
        let mut m = vec![0u8; len];
        m[..4].copy_from_slice(&i.to_le_bytes());
        send_patiently(&mut nodes[0].transport, NodeId(2), m);
    }
    receiver.join().unwrap();
    started.elapsed().as_secs_f64()
}

/// Loopback throughput figures (printed; run with `cargo test --release -p tidal-replication
/// --test tcp_transport throughput -- --nocapture` for numbers worth quoting). Asserts only
/// that every message arrives, in order.
#[test]
fn loopback_throughput() {
    let (count, len) = (50_000u32, 128);
    let secs = stream_messages(count, len);
    eprintln!(
        "loopback: {count} messages of {len} B in {secs:.3} s = {:.0} messages/s",
        f64::from(count) / secs
    );
    let (count, len) = (2_000u32, 64 << 10);
    let secs = stream_messages(count, len);
    let mib = f64::from(count) * len as f64 / f64::from(1 << 20);
    eprintln!("loopback: {count} messages of {len} B in {secs:.3} s = {:.0} MiB/s", mib / secs);
}

/// Round trips of one small message at a time (node 2 echoes what node 1 sends): p50 and p99
/// printed, for the same `--release -- --nocapture` run as the throughput figures.
#[test]
fn loopback_round_trip_latency() {
    let (mut nodes, _) = cluster(2);
    let Node { transport: mut echo, inbox: echo_inbox } = nodes.pop().unwrap();
    let echoer = std::thread::spawn(move || {
        while let Ok((from, m)) = echo_inbox.recv() {
            if m == b"stop" {
                return;
            }
            send_patiently(&mut echo, from, m);
        }
    });
    let one = &mut nodes[0];
    let mut rtts = Vec::new();
    for i in 0..2_000u32 {
        let started = Instant::now();
        one.transport.send(NodeId(2), i.to_le_bytes().to_vec()).unwrap();
        assert_eq!(recv(&one.inbox), (NodeId(2), i.to_le_bytes().to_vec()));
        rtts.push(started.elapsed());
    }
    one.transport.send(NodeId(2), b"stop".to_vec()).unwrap();
    echoer.join().unwrap();
    rtts.sort();
    let (p50, p99) = (rtts[rtts.len() / 2], rtts[rtts.len() * 99 / 100]);
    eprintln!("loopback round trip: p50 {p50:?}, p99 {p99:?} over {} messages", rtts.len());
}
