//! A first program on ringleader, as a user writes it: a closure on 4 forked processes,
//! with every collective.

use ringleader::Launcher;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let results = Launcher::new().workers(4).run(|ring| {
        let rank = ring.rank();
        ring.barrier()?;
        let base: u64 = ring.broadcast(0, (rank == 0).then_some(100))?;
        let sum: f64 = ring.all_reduce(0.1 * rank as f64, |a, b| a + b)?;
        let ranks: Vec<usize> = ring.all_gather(rank)?;
        let gathered: Option<Vec<u32>> = ring.gather(0, std::process::id())?;
        let mine: u64 = ring.scatter(0, (rank == 0).then(|| vec![10, 11, 12, 13]))?;
        Ok((base, sum.to_bits(), ranks, gathered.map(|pids| pids.len()), mine))
    })?;
    let expected_sum = ((0.0 + 0.1) + 0.2 + 0.1 * 3.0_f64).to_bits();
    for (rank, (base, sum, ranks, gathered, mine)) in results.iter().enumerate() {
        assert_eq!(*base, 100);
        assert_eq!(*sum, expected_sum, "rank {rank}: the same bits in rank order");
        assert_eq!(ranks, &[0, 1, 2, 3]);
        assert_eq!(*gathered, (rank == 0).then_some(4));
        assert_eq!(*mine, 10 + rank as u64);
    }
    println!("4 forked processes agreed: {results:?}");
    Ok(())
}
