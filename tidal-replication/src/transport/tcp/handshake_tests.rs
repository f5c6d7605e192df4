use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

use super::*;

fn hello(node: u32, nonce: u8) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        node: NodeId(node),
        nonce: [nonce; NONCE_BYTES],
        cluster_id: "c1".into(),
    }
}

#[test]
fn hello_round_trips_and_pins_its_layout() {
    let h = hello(7, 9);
    let bytes = h.encode();
    assert_eq!(&bytes[0..4], b"TDLH");
    assert_eq!(&bytes[4..6], &PROTOCOL_VERSION.to_le_bytes());
    assert_eq!(&bytes[6..10], &7u32.to_le_bytes());
    assert_eq!(&bytes[10..42], &[9; 32]);
    assert_eq!(bytes[42], 2);
    assert_eq!(&bytes[43..], b"c1");
    assert_eq!(Hello::decode(&bytes), Ok(h));
}

#[test]
fn malformed_hellos_are_refused_as_malformed() {
    let good = hello(1, 1).encode();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut long_len = good.clone();
    long_len[42] = 3;
    let mut zero_len = good[..43].to_vec();
    zero_len[42] = 0;
    let mut not_utf8 = good.clone();
    not_utf8[43] = 0xff;
    for body in [&good[..10], &bad_magic, &long_len, &zero_len, &not_utf8, &[][..]] {
        assert_eq!(Hello::decode(body).map_err(|r| r.reason), Err(RefuseReason::Malformed), "{body:?}");
    }
    let longest = Hello { cluster_id: "x".repeat(CLUSTER_ID_BYTES_MAX), ..hello(1, 1) };
    assert!(longest.encode().len() <= HANDSHAKE_FRAME_BYTES_MAX);
}

#[test]
fn the_mac_binds_every_field_of_the_transcript() {
    let (d, a) = (hello(1, 1), hello(2, 2));
    let secret = b"0123456789abcdef";
    let mac = proof_mac(secret, Direction::Dial, &d, &a);
    assert!(verify_mac(secret, Direction::Dial, &d, &a, &mac));
    assert!(!verify_mac(secret, Direction::Accept, &d, &a, &mac), "direction");
    assert!(!verify_mac(b"0123456789abcdeX", Direction::Dial, &d, &a, &mac), "secret");
    assert!(!verify_mac(secret, Direction::Dial, &hello(1, 3), &a, &mac), "dialer nonce");
    assert!(!verify_mac(secret, Direction::Dial, &d, &hello(2, 3), &mac), "acceptor nonce");
    assert!(!verify_mac(secret, Direction::Dial, &hello(3, 1), &a, &mac), "dialer id");
    assert!(!verify_mac(secret, Direction::Dial, &a, &d, &mac), "roles swapped");
    let other_cluster = Hello { cluster_id: "c2".into(), ..d.clone() };
    assert!(!verify_mac(secret, Direction::Dial, &other_cluster, &a, &mac), "cluster id");
    assert_eq!(decode_proof(&encode_proof(&mac)), Ok(&mac[..]));
}

struct Side {
    peers: BTreeMap<NodeId, SocketAddr>,
    cluster: &'static str,
    secret: &'static [u8],
}

impl Side {
    fn new(peer: u32, cluster: &'static str, secret: &'static [u8]) -> Side {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Side { peers: BTreeMap::from([(NodeId(peer), addr)]), cluster, secret }
    }

    fn identity(&self, local: u32) -> Identity<'_> {
        Identity { local: NodeId(local), cluster_id: self.cluster, secret: self.secret, peers: &self.peers }
    }
}

/// Runs node 1 dialing node 2 over loopback; returns (dialer result, acceptor result).
fn handshake_pair(dialer: Side, acceptor: Side) -> (Result<(), Refusal>, Result<NodeId, Refusal>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let timeout = Duration::from_secs(5);
    let accepting = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
        accept(&mut stream, &mut decoder, &acceptor.identity(2), [2; NONCE_BYTES], timeout)
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
    let dialed = dial(&mut stream, &mut decoder, &dialer.identity(1), NodeId(2), [1; NONCE_BYTES], timeout);
    drop(stream);
    (dialed, accepting.join().unwrap())
}

const SECRET: &[u8] = b"a shared secret of the cluster";

#[test]
fn peers_that_share_the_secret_authenticate_each_other() {
    let (dialed, accepted) = handshake_pair(Side::new(2, "c", SECRET), Side::new(1, "c", SECRET));
    assert_eq!(dialed, Ok(()));
    assert_eq!(accepted, Ok(NodeId(1)));
}

#[test]
fn each_mismatch_is_refused_with_its_reason() {
    let reason = |r: Result<NodeId, Refusal>| r.map_err(|e| e.reason);
    let (_, accepted) =
        handshake_pair(Side::new(2, "c", b"another secret, same length!!"), Side::new(1, "c", SECRET));
    assert_eq!(reason(accepted), Err(RefuseReason::BadMac));
    let (dialed, accepted) = handshake_pair(Side::new(2, "other", SECRET), Side::new(1, "c", SECRET));
    assert_eq!(reason(accepted), Err(RefuseReason::ClusterId));
    assert_eq!(dialed.map_err(|e| e.reason), Err(RefuseReason::Closed), "the acceptor hung up");
    let (_, accepted) = handshake_pair(Side::new(2, "c", SECRET), Side::new(9, "c", SECRET));
    assert_eq!(reason(accepted), Err(RefuseReason::UnknownNode));
}

#[test]
fn the_dialer_refuses_an_acceptor_whose_proof_is_wrong_or_who_is_another_node() {
    for (answer_as, proof_ok, expected) in [
        (2, false, RefuseReason::BadMac),
        (3, true, RefuseReason::WrongNode),
        (2, true, RefuseReason::Timeout),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A hand-written acceptor: answers the hello, then sends a proof that is wrong, or
        // (when the proof would be right) nothing at all, so the dialer times out.
        let fake = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
            let deadline = Instant::now() + Duration::from_secs(5);
            let theirs = Hello::decode(&read_frame(&mut stream, &mut decoder, deadline).unwrap()).unwrap();
            write_frame(&mut stream, &hello(answer_as, 5).encode(), deadline).unwrap();
            if read_frame(&mut stream, &mut decoder, deadline).is_err() {
                return;
            }
            if !proof_ok {
                let wrong = proof_mac(b"a wrong secret!!", Direction::Accept, &theirs, &hello(answer_as, 5));
                write_frame(&mut stream, &encode_proof(&wrong), deadline).unwrap();
            }
            let _ = read_frame(&mut stream, &mut decoder, deadline);
        });
        let side = Side::new(2, "c1", SECRET);
        let mut stream = TcpStream::connect(addr).unwrap();
        let mut decoder = FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX);
        let timeout = Duration::from_millis(300);
        let dialed = dial(&mut stream, &mut decoder, &side.identity(1), NodeId(2), [1; NONCE_BYTES], timeout);
        assert_eq!(dialed.map_err(|e| e.reason), Err(expected));
        drop(stream);
        fake.join().unwrap();
    }
}

/// The tables of `docs/replication.md`, "Transport (TCP)": rows of (offset, size, field).
fn doc_tables() -> Vec<Vec<(usize, String, String)>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/replication.md");
    let doc = std::fs::read_to_string(path).expect("docs/replication.md");
    let start = doc.find("## Transport (TCP)").expect("the Transport (TCP) section");
    let section = &doc[start..];
    let section = &section[..section[2..].find("\n## ").map_or(section.len(), |end| end + 2)];
    let mut tables: Vec<Vec<(usize, String, String)>> = Vec::new();
    let mut in_table = false;
    for line in section.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        let row = line.starts_with('|') && cells.len() == 3;
        match cells[0].parse::<usize>() {
            Ok(offset) if row => {
                if !in_table {
                    tables.push(Vec::new());
                }
                in_table = true;
                let field = cells[2].trim_matches('`').to_string();
                tables.last_mut().unwrap().push((offset, cells[1].to_string(), field));
            }
            _ => in_table = false,
        }
    }
    tables
}

/// Checks a documented table against encoded bytes: each field sits at its offset with its
/// size (a number, or the name of the field that holds it), and the fields cover the bytes.
fn check_table(table: &[(usize, String, String)], bytes: &[u8], fields: &[(&str, Vec<u8>)]) {
    let names: Vec<&str> = table.iter().map(|(_, _, f)| f.as_str()).collect();
    assert_eq!(names, fields.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    let mut end = 0;
    for ((offset, size, name), (_, value)) in table.iter().zip(fields) {
        if let Ok(size) = size.parse::<usize>() {
            assert_eq!(size, value.len(), "size of {name}");
        } else {
            assert!(names.contains(&size.as_str()), "{name}'s size names a field: {size}");
        }
        assert_eq!(*offset, end, "offset of {name}");
        assert_eq!(&bytes[*offset..*offset + value.len()], &value[..], "bytes of {name}");
        end = offset + value.len();
    }
    assert_eq!(end, bytes.len(), "the fields cover the encoding");
}

#[test]
fn doc_byte_maps_match_code() {
    let tables = doc_tables();
    assert_eq!(tables.len(), 3, "frame, hello and proof tables: {tables:?}");
    let mut frame = Vec::new();
    encode_frame(b"body!", &mut frame);
    let crc = crc32c::crc32c(b"body!").to_le_bytes().to_vec();
    check_table(
        &tables[0],
        &frame,
        &[("len", 5u32.to_le_bytes().to_vec()), ("crc32c", crc), ("body", b"body!".into())],
    );
    let h = Hello {
        version: PROTOCOL_VERSION,
        node: NodeId(0x0102_0304),
        nonce: [0xab; 32],
        cluster_id: "cx".into(),
    };
    let fields = [
        ("magic", b"TDLH".to_vec()),
        ("protocol_version", PROTOCOL_VERSION.to_le_bytes().to_vec()),
        ("node_id", 0x0102_0304u32.to_le_bytes().to_vec()),
        ("nonce", vec![0xab; 32]),
        ("cluster_id_len", vec![2]),
        ("cluster_id", b"cx".to_vec()),
    ];
    check_table(&tables[1], &h.encode(), &fields);
    let mac = [7u8; MAC_BYTES];
    check_table(&tables[2], &encode_proof(&mac), &[("magic", b"TDLP".to_vec()), ("mac", mac.to_vec())]);
}
