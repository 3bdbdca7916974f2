//! The initial state, seeded exactly as the textbook's Python program seeds it.

use rand_mt::Mt;

use super::physics::{DENSITY, Particles};

/// Python's `random` module, for the handful of calls the textbook makes.
#[derive(Debug)]
pub struct PyRandom(Mt);

impl PyRandom {
    /// `random.seed(seed)` for a seed below 2³²: `init_by_array([seed])`.
    pub fn seed(seed: u32) -> Self {
        PyRandom(Mt::new_with_key([seed]))
    }

    /// `getrandbits(k)` for `1 <= k <= 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        debug_assert!((1..=32).contains(&k));
        self.0.next_u32() >> (32 - k)
    }

    /// `_randbelow(m)`: rejection sampling on `bit_length(m)` bits.
    fn randbelow(&mut self, m: u32) -> u32 {
        debug_assert!(m > 0);
        let k = u32::BITS - m.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < m {
                return r;
            }
        }
    }

    /// `shuffle(list)`.
    pub fn shuffle<T>(&mut self, list: &mut [T]) {
        for i in (1..list.len()).rev() {
            let j = self.randbelow(i as u32 + 1) as usize;
            list.swap(i, j);
        }
    }

    /// `random()`: 53 random bits as a float in [0, 1).
    pub fn random(&mut self) -> f64 {
        let a = f64::from(self.0.next_u32() >> 5);
        let b = f64::from(self.0.next_u32() >> 6);
        (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)
    }
}

/// The side of the square box that holds `n` particles at the textbook's density.
pub fn box_size(n: usize) -> f64 {
    (DENSITY * n as f64).sqrt()
}

/// The textbook's initial state for `n` particles: a grid, shuffled into list order, with
/// random velocities.
pub fn initial_state(n: usize) -> Particles {
    let mut rng = PyRandom::seed(1000);
    let size = box_size(n);
    let sx = (n as f64).sqrt().ceil() as usize;
    // `(n + sx - 1) // sx` in the original.
    let sy = n.div_ceil(sx);
    let mut ids: Vec<u32> = (0..n as u32).collect();
    rng.shuffle(&mut ids);
    let mut particles = Particles::with_capacity(n);
    for &id in &ids {
        let i = id as usize;
        let x = (size * (1 + i % sx) as f64) / (1 + sx) as f64;
        // The original divides `i / sx` as floats; keep the quirk.
        let y = size * (1.0 + i as f64 / sx as f64) / (1 + sy) as f64;
        let vx = rng.random() * 2.0 - 1.0;
        let vy = rng.random() * 2.0 - 1.0;
        particles.push(id, x, y, vx, vy);
    }
    particles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_state_matches_the_textbook_bit_for_bit() {
        let fixture = include_str!("../../../tests/fixtures/textbook-init-n1000.csv");
        let state = initial_state(1000);
        let mut rows = 0;
        for (slot, line) in fixture.lines().skip(1).enumerate() {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[0].parse::<usize>().unwrap(), slot);
            assert_eq!(
                fields[1].parse::<u32>().unwrap(),
                state.ids[slot],
                "id at slot {slot}"
            );
            let expect: Vec<f64> = fields[2..].iter().map(|f| f.parse().unwrap()).collect();
            let got = [state.x[slot], state.y[slot], state.vx[slot], state.vy[slot]];
            for (e, g) in expect.iter().zip(got) {
                assert_eq!(e.to_bits(), g.to_bits(), "slot {slot}: {e} != {g}");
            }
            rows += 1;
        }
        assert_eq!(rows, 1000);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut rng = PyRandom::seed(1000);
        let mut ids: Vec<u32> = (0..500).collect();
        rng.shuffle(&mut ids);
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..500).collect::<Vec<_>>());
        assert_ne!(ids, sorted);
    }
}
