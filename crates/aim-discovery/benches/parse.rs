//! T-17: parsing time is linear in the log size, even for logs full of `[` `]` noise.
//!
//! Each log is noise lines full of brackets followed by the real result array at the end; the time per
//! byte must not grow with the size (compare the 1 MiB and 8 MiB figures).

use aim_discovery::{DEFAULT_LOG_LIMIT, parse_dry_run};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const RESULT: &str = r#"[
  {
    "filename": "vllm-mi300x-fp8-tp1-latency.yaml",
    "profile": {
      "model": "Qwen/Qwen3-32B",
      "metadata": { "engine": "vllm", "gpu": "MI300X", "precision": "fp8", "gpu_count": 1, "metric": "latency", "type": "optimized" },
      "engine_args": { "tensor-parallel-size": 1, "max-num-seqs": 256 },
      "env_vars": { "VLLM_USE_TRITON_FLASH_ATTN": "0" }
    },
    "models": [
      { "name": "Qwen/Qwen3-32B", "source": "hf://Qwen/Qwen3-32B", "size_gb": 16.0 }
    ]
  }
]
"#;

/// Realistic bracket noise: balanced tags, one unclosed bracket, quotes, and a JSON-looking fragment.
const NOISE: &[&str] = &[
    "[INFO] [worker 3] ready [ok]\n",
    "[2025-06-01T12:00:00Z] [rank 0] loading shards [1/8] [2/8] [3/8]\n",
    "[WARN] unclosed [bracket in a message \"with quotes]\n",
    "[DEBUG] config = {\"tp\": [1, 2], \"dtype\": \"fp8\"}\n",
];

/// Noise lines up to about `size` bytes, then the result.
fn log_of(size: usize) -> Vec<u8> {
    let mut log = Vec::with_capacity(size + RESULT.len());
    let mut i = 0;
    while log.len() + RESULT.len() + 80 < size {
        log.extend_from_slice(NOISE[i % NOISE.len()].as_bytes());
        i += 1;
    }
    log.extend_from_slice(RESULT.as_bytes());
    log
}

/// Adversarial noise: lines that each open a bracket and never close it.
fn unclosed_log_of(size: usize) -> Vec<u8> {
    let mut log = Vec::with_capacity(size + RESULT.len());
    while log.len() + RESULT.len() + 80 < size {
        log.extend_from_slice(b"[{ \"step\": [\"a\", \"b\",\n");
    }
    log.extend_from_slice(RESULT.as_bytes());
    log
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_dry_run");
    group.sample_size(10);
    for (name, make) in [
        ("bracket_noise", log_of as fn(usize) -> Vec<u8>),
        ("unclosed_noise", unclosed_log_of),
    ] {
        for mib in [1, 8] {
            let log = make(mib * 1024 * 1024);
            assert!(log.len() <= DEFAULT_LOG_LIMIT);
            assert!(
                parse_dry_run(&log, DEFAULT_LOG_LIMIT).is_ok(),
                "{name} {mib} MiB"
            );
            group.throughput(Throughput::Bytes(log.len() as u64));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{mib}MiB")),
                &log,
                |b, log| b.iter(|| parse_dry_run(black_box(log), DEFAULT_LOG_LIMIT)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
