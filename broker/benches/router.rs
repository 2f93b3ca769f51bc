//! Fan-out through the router: `SubscriptionTree::for_each_match`, which `Broker::publish` runs under the
//! tree's read lock to collect one delivery per matching subscription (the queueing that follows takes
//! each session's lock and is not reachable through the public API). `cargo bench -p wasp --bench router`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wasp::router::SubscriptionTree;

fn bench_router(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    for subscribers in [1usize, 100, 10_000] {
        // Every subscriber on `bench/#` (the fan-out load of wasp-bench) ...
        let mut tree: SubscriptionTree<Arc<str>, u32> = SubscriptionTree::new();
        for s in 0..subscribers {
            tree.insert("bench/#", None, Arc::from(format!("sub-{s}")), s as u32);
        }
        // ... among 10,000 unrelated exact filters.
        for f in 0..10_000 {
            tree.insert(
                &format!("other/{f}/x"),
                None,
                Arc::from(format!("other-{f}")),
                0,
            );
        }
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(
            format!("fan-out to {subscribers} (collect like Broker::route)"),
            |b| {
                let mut targets: Vec<(Arc<str>, u32)> = Vec::with_capacity(subscribers);
                b.iter(|| {
                    targets.clear();
                    tree.for_each_match(
                        black_box("bench/7"),
                        |_, _| true,
                        |k, v| targets.push((k.clone(), *v)),
                    );
                    targets.len()
                })
            },
        );
    }
    // A shared group of 100 members: one delivery per message, round-robin.
    let mut tree: SubscriptionTree<Arc<str>, u32> = SubscriptionTree::new();
    for s in 0..100 {
        tree.insert("bench/#", Some("g"), Arc::from(format!("sub-{s}")), s);
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("shared group of 100, pick one", |b| {
        b.iter(|| {
            let mut picked = 0;
            tree.for_each_match(black_box("bench/7"), |_, _| true, |_, v| picked = *v);
            picked
        })
    });
    group.finish();
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
