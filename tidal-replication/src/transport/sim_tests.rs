use super::*;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn lossy() -> Faults {
    Faults { drop: 0.1, duplicate: 0.1, delay_min_ms: 1, delay_max_ms: 50, link_queue_max: 10_000 }
}

/// Sends 200 numbered messages A -> B and returns what arrived, in order, with times.
fn run(seed: u64, faults: Faults) -> (Vec<(u64, u32)>, NetStats) {
    let mut net = SimNetwork::new(seed, [A, B, C], faults);
    for n in 0..200u32 {
        net.endpoint(A).send(B, n.to_le_bytes().to_vec()).unwrap();
        net.advance(net.now_ms() + 1);
    }
    let mut got = Vec::new();
    while let Some(e) = net.next_delivery() {
        got.push((e.deliver_ms, u32::from_le_bytes(e.message[..4].try_into().unwrap())));
    }
    (got, net.stats())
}

#[test]
fn one_seed_replays_one_run_exactly() {
    assert_eq!(run(42, lossy()), run(42, lossy()));
    assert_ne!(run(42, lossy()).0, run(43, lossy()).0);
}

#[test]
fn faults_drop_duplicate_and_reorder() {
    let (got, stats) = run(7, lossy());
    assert_eq!(stats.sent, 200);
    assert!(stats.dropped > 0 && stats.duplicated > 0, "{stats:?}");
    assert_eq!(stats.delivered as usize, got.len());
    assert_eq!(stats.delivered + stats.dropped, stats.sent + stats.duplicated);
    let order: Vec<u32> = got.iter().map(|(_, n)| *n).collect();
    assert!(order.windows(2).any(|w| w[0] > w[1]), "wide delays reorder");
    assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "the clock only moves forward");
    let (perfect, stats) = run(7, Faults::none());
    assert_eq!(perfect.iter().map(|(_, n)| *n).collect::<Vec<_>>(), (0..200).collect::<Vec<_>>());
    assert_eq!((stats.dropped, stats.duplicated), (0, 0));
}

#[test]
fn partitions_are_directed_and_cut_messages_in_flight() {
    let mut net = SimNetwork::new(1, [A, B, C], Faults::none());
    net.block(A, B);
    net.send(A, B, vec![1]).unwrap();
    net.send(B, A, vec![2]).unwrap();
    assert_eq!(net.next_delivery().map(|e| e.message), Some(vec![2]), "one way only");
    assert!(net.next_delivery().is_none());
    net.heal();
    net.send(A, B, vec![3]).unwrap();
    net.partition(&[A], &[B, C]);
    assert!(net.next_delivery().is_none(), "cut while in flight: lost on the way");
    net.heal();
    net.send(C, B, vec![4]).unwrap();
    assert_eq!(net.next_delivery().map(|e| (e.from, e.message)), Some((C, vec![4])));
}

#[test]
fn a_crashed_node_loses_its_traffic_and_cannot_send() {
    let mut net = SimNetwork::new(1, [A, B], Faults::none());
    net.send(A, B, vec![1]).unwrap();
    net.send(B, A, vec![2]).unwrap();
    net.crash(B);
    assert!(net.next_delivery().is_none(), "in flight both ways: lost");
    assert_eq!(net.send(B, A, vec![3]), Err(SendError::Down(B)));
    net.send(A, B, vec![4]).unwrap();
    assert!(net.next_delivery().is_none(), "a down node receives nothing");
    net.restart(B);
    net.send(A, B, vec![5]).unwrap();
    assert_eq!(net.next_delivery().map(|e| e.message), Some(vec![5]));
}

#[test]
fn queues_are_bounded_and_sends_are_checked() {
    let faults = Faults { link_queue_max: 3, ..Faults::none() };
    let mut net = SimNetwork::new(1, [A, B], faults);
    for _ in 0..3 {
        net.send(A, B, vec![0]).unwrap();
    }
    assert_eq!(net.send(A, B, vec![0]), Err(SendError::Full(B)), "backpressure, not memory");
    assert!(net.next_delivery().is_some());
    net.send(A, B, vec![0]).unwrap();
    assert_eq!(net.send(A, C, vec![0]), Err(SendError::UnknownPeer(C)));
    let big = vec![0; FRAME_BYTES_MAX + 1];
    assert!(matches!(net.send(A, B, big), Err(SendError::TooLarge { .. })));
    assert_eq!(net.stats().refused, 3);
}
