//! The heap an idle connection keeps, counted by this test binary's global allocator: a guard against
//! the connection task's state growing unnoticed (it once went from 3.5 KB back to 9.3 KB in a few
//! commits, see bench/README.md). Not the figure compared with other brokers: that is the broker
//! process's RSS, measured by `wasp-bench --scenarios idle` on a release build. This one is the heap
//! only, in the test profile (unoptimised futures), without a tracing subscriber (no span storage).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use wasp_tests::Broker;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// The bytes allocated and not yet freed.
fn live() -> isize {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

/// Connections measured.
const CONNECTIONS: usize = 400;

/// Opens `n` MQTT 3.1.1 connections (client ids `{prefix}-{i}`, keep alive 60 s) with blocking sockets
/// and waits for each CONNACK.
fn connect_idle(addr: SocketAddr, prefix: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let mut packet = vec![0x10, (12 + id.len()) as u8, 0, 4, b'M', b'Q', b'T', b'T'];
            packet.extend_from_slice(&[4, 0x02, 0, 60, 0, id.len() as u8]);
            packet.extend_from_slice(id.as_bytes());
            let mut socket = TcpStream::connect(addr).expect("connects");
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("read timeout");
            socket.write_all(&packet).expect("CONNECT sent");
            let mut connack = [0; 4];
            socket.read_exact(&mut connack).expect("CONNACK");
            assert_eq!(connack, [0x20, 2, 0, 0], "{id} accepted");
            socket
        })
        .collect()
}

/// The live heap once it stopped moving (sampled every 50 ms, at most 5 s): connection tasks finish
/// their handshakes after the CONNACK is on its way.
async fn settled() -> isize {
    let mut last = live();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = live();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_keeps_less_than_1800_bytes_of_heap() {
    let broker = Broker::start().await;
    let addr = broker.addr;
    // A first batch, so that what grows once (the client-id map, tokio's slabs, lazy statics) has grown.
    let warm = tokio::task::spawn_blocking(move || connect_idle(addr, "warm", CONNECTIONS))
        .await
        .expect("warm-up clients");
    let before = settled().await;
    let idle = tokio::task::spawn_blocking(move || connect_idle(addr, "idle", CONNECTIONS))
        .await
        .expect("idle clients");
    let after = settled().await;
    let per_connection = (after - before) / CONNECTIONS as isize;
    eprintln!("heap per idle connection: {per_connection} B ({CONNECTIONS} connections)");
    // 1,708 B here, the same in every run (2,435 B before the plugin state, the lease and the socket
    // halves stopped being allocated per connection, 6,515 B before that). The release build's connection
    // keeps a 1 KiB task and ~0.7 KB of session, client slot and socket registration (heaptrack,
    // bench/README.md): 1.87 KiB of RSS with malloc's overhead, against a 2 KB target. tokio allocates a
    // task in steps of 128 B; one more step (1,836 B here) fails, as it would take the release build
    // to ~2 KB.
    assert!(
        per_connection < 1800,
        "an idle connection keeps {per_connection} B of heap"
    );
    assert!(
        per_connection > 512,
        "the count saw the connections ({per_connection} B each)"
    );
    drop((warm, idle));
    broker.stop().await;
}
