//! The detection engine's throughput on the synthetic city of `detect::workload`, with
//! criterion: `cargo bench -p detect`. This is the small, repeatable configuration (10,000
//! devices, 100,000 indicators); the bar's configuration (100,000 devices, 1,000,000
//! indicators) is `citysec bench detect`, whose results are in `bench/results/`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use detect::workload::{WorkloadConfig, build};

fn engine(c: &mut Criterion) {
    let events = 100_000;
    let (engine, stream) = build(WorkloadConfig {
        devices: 10_000,
        indicators: 100_000,
        events,
        seed: 7,
    });
    let mut group = c.benchmark_group("detect");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10);
    let mut engine = engine;
    let mut out = Vec::new();
    group.bench_function("process_mix_10k_devices_100k_indicators", |b| {
        b.iter_batched_ref(
            || (),
            |()| {
                for event in &stream {
                    engine.process(event, &mut out);
                    out.clear();
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
