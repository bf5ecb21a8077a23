//! What one password costs the server at a given `auth.scram_iterations`:
//! `make_user_record` (one PBKDF2 run per SCRAM hash, SHA-1 and SHA-256: what
//! a registration, a password change or `chorus user add` costs) and, from it,
//! the SHA-256 run alone that a PLAIN login costs. Run with
//! `cargo bench --bench scram_cost`; figures go to docs/benchmarks.md.

use std::time::Instant;

fn median_ms(iterations: u32, runs: usize) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let record = chorus::auth::make_user_record("correct horse battery staple", iterations)
                .expect("a valid password");
            std::hint::black_box(record);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[runs / 2]
}

fn main() {
    println!(
        "| iterations | make_user_record (SHA-1 + SHA-256), median of 21 | one core: records/s |"
    );
    println!("|---|---|---|");
    for iterations in [4096, 10_000, 20_000, 100_000] {
        let ms = median_ms(iterations, 21);
        println!("| {iterations} | {ms:.2} ms | {:.0} |", 1000.0 / ms);
    }
}
