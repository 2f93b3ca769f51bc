//! Topic matching micro-benchmarks: one filter against a topic (`topic::matches`), validation, and a
//! `FilterTree` of many filters (what plugins' interest filters use). `cargo bench -p wasp-mqtt --bench topic`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wasp_mqtt::topic::{FilterTree, matches, validate_topic_filter, validate_topic_name};

const TOPIC: &str = "sensors/building-1/floor-2/room-17/temperature";

fn bench_topic(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic");
    for filter in [
        "sensors/building-1/floor-2/room-17/temperature",
        "sensors/+/floor-2/+/temperature",
        "sensors/#",
        "alerts/#",
    ] {
        group.bench_function(format!("matches {filter}"), |b| {
            b.iter(|| matches(black_box(filter), black_box(TOPIC)))
        });
    }
    group.bench_function("validate_topic_name", |b| {
        b.iter(|| validate_topic_name(black_box(TOPIC)))
    });
    group.bench_function("validate_topic_filter", |b| {
        b.iter(|| validate_topic_filter(black_box("sensors/+/floor-2/+/temperature")))
    });
    // 10,000 filters: 1000 buildings x (exact, one `+`, `#`) plus 7,000 exact filters on other rooms.
    let mut tree = FilterTree::new();
    for b in 0..1000 {
        tree.insert(
            &format!("sensors/building-{b}/floor-2/room-17/temperature"),
            b,
        );
        tree.insert(&format!("sensors/building-{b}/+/room-17/temperature"), b);
        tree.insert(&format!("sensors/building-{b}/#"), b);
    }
    for r in 0..7000 {
        tree.insert(
            &format!("sensors/building-1/floor-2/room-{}/humidity", r),
            r,
        );
    }
    group.bench_function("FilterTree 10k filters for_each_match (3 matches)", |b| {
        b.iter(|| {
            let mut n = 0u32;
            tree.for_each_match(black_box(TOPIC), |_| n += 1);
            n
        })
    });
    group.bench_function("FilterTree 10k filters any_match (miss)", |b| {
        b.iter(|| tree.any_match(black_box("alerts/building-1/fire")))
    });
    group.finish();
}

criterion_group!(benches, bench_topic);
criterion_main!(benches);
